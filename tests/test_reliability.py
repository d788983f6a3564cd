"""Regressions from fuzzing and bad-input testing: each case failed before
its fix (numerics of masked and padded positions, infinities, empty key
sets, and inputs that were silently accepted or gave opaque errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn import parallel
from tests import helpers
from tests.test_blockwise import allowed_pairs
from tests.test_blockwise import attention_vjp_oracle

pytestmark = pytest.mark.floor

EXACT = ("dense", "blockwise")


def _qkv(seed=0, L=6, M=7, H=2, K=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(L, H, K)).astype(np.float32),
          rng.normal(size=(M, H, K)).astype(np.float32),
          rng.normal(size=(M, H, K)).astype(np.float32))


@pytest.mark.parametrize("call", [
    lambda: jattn.dot_product_attention(jnp.zeros((5, 6, 11)),
                                        jnp.zeros((7, 3, 11)),
                                        jnp.zeros((7, 3, 11)),
                                        jnp.arange(7) <= 3),
    lambda: jattn.masked_softmax(jnp.zeros((3, 4)), jnp.arange(4) < 2),
    lambda: jattn.dot_product_attention(jnp.zeros((5, 2, 4)),
                                        jnp.zeros((5, 2, 4)),
                                        jnp.zeros((5, 2, 4)), is_causal=True),
    lambda: jattn.self_attention(
        jattn.init_self_attention(jax.random.key(0), 8, 2),
        jnp.ones((5, 8)), jattn.causal_mask(5, 5)),
])
def test_masked_calls_form_no_infinity(call):
  # jax's regression test for its issue 37422: masking must not create inf.
  with jax.debug_infs(True):
    assert np.isfinite(np.asarray(call())).all()


_TILED = {
    "blockwise": lambda q, k, v, **kw: jattn.dot_product_attention(
        q, k, v, implementation="blockwise", block_q=4, block_k=4, **kw),
    "pallas": lambda q, k, v, **kw: jattn.dot_product_attention(
        q, k, v, implementation="pallas", **kw),
    "local": lambda q, k, v, **kw: jattn.local_attention(q, k, v, (3, 3),
                                                         **kw),
    "ring": lambda q, k, v, **kw: parallel.ring_dot_product_attention(
        q, k, v, mesh=parallel.make_mesh({"seq": 2}), **kw),
}


@pytest.mark.parametrize("path", [
    # Ring attention runs eagerly op by op here (20 s): in the slow run.
    pytest.param(p, marks=pytest.mark.slow) if p == "ring" else p
    for p in sorted(_TILED)])
def test_tiled_paths_form_no_infinity_with_empty_rows(path):
  # Rows with no key to attend to (key_valid_len 0) and masked tiles used
  # -inf / +inf sentinels: FloatingPointError under jax.debug_infs (ring
  # attention: a RecursionError in jax's de-optimized rerun).
  q, k, v = _qkv(3, L=8, M=8)
  lengths = jnp.array([0, 1, 2, 0, 4, 5, 0, 8])
  fn = lambda q, k, v: _TILED[path](q, k, v, is_causal=True,
                                    key_valid_len=lengths).sum()
  with jax.debug_infs(True):
    out = fn(q, k, v)
    grads = jax.grad(fn, argnums=(0, 1, 2))(q, k, v)
  assert np.isfinite(float(out))
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("implementation", EXACT)
def test_a_bias_row_of_minus_infinity_is_a_fully_masked_row(implementation):
  q, k, v = _qkv(1, L=4, M=5)
  bias = np.zeros((2, 4, 5), np.float32)
  bias[:, 1] = -np.inf
  fn = lambda q: jattn.dot_product_attention(
      q, k, v, bias=jnp.asarray(bias), implementation=implementation)
  out = fn(q)
  dq = jax.grad(lambda q: fn(q).sum())(q)
  np.testing.assert_array_equal(out[1], 0.0)
  np.testing.assert_array_equal(dq[1], 0.0)
  assert np.isfinite(np.asarray(dq)).all()


@pytest.mark.parametrize("implementation", EXACT)
def test_nan_in_excluded_keys_values_and_queries_changes_nothing(
    implementation):
  q, k, v = _qkv(2, L=6, M=7)
  dirty_q, dirty_k, dirty_v = q.copy(), k.copy(), v.copy()
  dirty_k[4:], dirty_v[4:] = np.nan, np.nan        # past key_valid_len = 4
  dirty_q[5:] = np.nan                             # past query_valid_len = 5

  def run(q, k, v):
    fn = lambda q, k, v: jattn.dot_product_attention(
        q, k, v, key_valid_len=4, query_valid_len=5,
        implementation=implementation)
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(jnp.ones_like(out)))

  for clean, dirty in zip(run(q, k, v), run(dirty_q, dirty_k, dirty_v)):
    np.testing.assert_array_equal(np.asarray(dirty), np.asarray(clean))


@pytest.mark.parametrize("layer", [jattn.self_attention,
                                   jattn.linear_self_attention])
def test_nan_in_padded_tokens_changes_no_real_output(layer):
  params = jattn.init_self_attention(jax.random.key(0), 8, 2)
  x = np.random.default_rng(3).normal(size=(6, 8)).astype(np.float32)
  dirty = x.copy()
  dirty[4:] = np.nan
  keep = jnp.arange(6) < 4                         # key padding
  clean_y = layer(params, jnp.asarray(x), keep)
  dirty_y = layer(params, jnp.asarray(dirty), keep)
  np.testing.assert_array_equal(dirty_y[:4], clean_y[:4])
  grad = jax.grad(lambda x: layer(params, x, keep)[:4].sum())(
      jnp.asarray(dirty))
  assert np.isfinite(np.asarray(grad[:4])).all()


def test_float16_gradients_through_a_small_scale_do_not_overflow():
  # dq = scale * ds . k is moderate, but ds . k alone exceeds float16:
  # the scaled queries must not be rounded to float16 on the way.
  q = np.full((1, 1, 1), 0.5, np.float16)
  k = np.array([[[2000.0]], [[-2000.0]]], np.float16)
  v = np.array([[[300.0]], [[-300.0]]], np.float16)
  allowed = np.ones((1, 1, 2), bool)
  want = attention_vjp_oracle(q, k, v, allowed, None, 1e-3,
                              np.ones((1, 1, 1)))[1]
  assert 60 < abs(want.item()) < 65504 * 1e-3 * 10   # overflows if / 1e-3
  for implementation in EXACT:
    dq = jax.grad(lambda q: jattn.dot_product_attention(
        q, k, v, scale=1e-3, implementation=implementation
    ).astype(jnp.float32).sum())(jnp.asarray(q))
    assert helpers.max_rel_error(dq, want) < 1e-2, (implementation, dq)


@pytest.mark.parametrize("implementation", EXACT)
def test_no_keys_means_every_row_is_fully_masked(implementation):
  q = jnp.ones((4, 2, 8))
  k = jnp.ones((0, 2, 8))
  out, dq = jax.value_and_grad(lambda q: jattn.dot_product_attention(
      q, k, k, implementation=implementation).sum())(q)
  assert out == 0.0
  np.testing.assert_array_equal(dq, 0.0)
  np.testing.assert_array_equal(jattn.local_attention(q, k, k, 3), 0.0)
  np.testing.assert_array_equal(jattn.linear_attention(q, k, k), 0.0)


def test_large_logits_in_bfloat16_match_dense():
  # logits about 265, scale 0.3 (not a power of two): the case.
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=s) * f, jnp.bfloat16) for s, f in
             [((300, 2, 16), 8.0), ((300, 2, 16), 8.0), ((300, 2, 16), 1.0)])
  allowed = allowed_pairs(2, 300, 300, causal=True)
  want = attention_vjp_oracle(q, k, v, allowed, None, 0.3,
                              np.zeros((300, 2, 16)))[0]
  errors = {impl: helpers.max_rel_error(jattn.dot_product_attention(
      q, k, v, scale=0.3, is_causal=True, implementation=impl), want)
            for impl in EXACT}
  assert errors["blockwise"] <= 2 * errors["dense"] + 1e-3, errors


@pytest.mark.parametrize("call,error,words", [
    (lambda: jattn.padding_mask(np.array([3, -1]), 4), ValueError,
     ["valid_len_B", ">= 0", "-1"]),
    (lambda: jattn.dot_product_attention(*_qkv(), scale=jnp.ones(3)),
     ValueError, ["scale", "scalar"]),
    (lambda: jattn.dot_product_attention(jnp.ones((4, 2, 0)),
                                         jnp.ones((4, 2, 0)),
                                         jnp.ones((4, 2, 0))),
     ValueError, ["q", "K >= 1"]),
    (lambda: jattn.dot_product_attention(*_qkv(), mask=[[True] * 7] * 6),
     TypeError, ["mask", "list", "jnp.asarray"]),
    (lambda: jattn.init_self_attention(0, 8, 2), TypeError,
     ["key", "PRNG key", "int"]),
    (lambda: parallel.ring_attention(*(jnp.ones((2, 8, 2, 4)),) * 3,
                                     mesh=parallel.make_mesh({"seq": 2}),
                                     key_valid_len=-1),
     ValueError, ["key_valid_len", ">= 0"]),
])
def test_bad_inputs_are_named(call, error, words):
  with pytest.raises(error) as info:
    call()
  for word in words:
    assert word in str(info.value), (word, str(info.value))
