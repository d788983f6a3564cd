"""Tests for jattn.feedforward and jattn.transformer against NumPy oracles."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jattn
from tests import oracles_layers as oracle
from tests import helpers

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

N, D, H, F = 5, 8, 2, 12
MASK = jnp.array([True, True, True, False, True])


def _inputs(seed, n=N, d=D, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((n, d)), dtype)


def _params(seed, d=D, h=H, f=F, *, g=None, use_bias=True,
            dtype=jnp.float64):
  """Random block params in the layout of init_transformer_block (NumPy)."""
  rng = np.random.default_rng(seed)
  g = h if g is None else g
  k = d // h
  normal = lambda *shape: rng.standard_normal(shape)
  attn = {"w_q": normal(d, h, k), "w_k": normal(d, g, k),
          "w_v": normal(d, g, k), "w_o": normal(h, k, d)}
  attn = {name: w / np.sqrt(d) for name, w in attn.items()}
  ffn = {"w_1": normal(d, f) / np.sqrt(d), "w_2": normal(f, d) / np.sqrt(f)}
  if use_bias:
    attn |= {"b_q": normal(h, k) * 0.1, "b_k": normal(g, k) * 0.1,
             "b_v": normal(g, k) * 0.1, "b_o": normal(d) * 0.1}
    ffn |= {"b_1": normal(f) * 0.1, "b_2": normal(d) * 0.1}
  params = {
      "attention": attn, "ffn": ffn,
      "norm_1": {"scale": 1 + 0.1 * normal(d), "bias": 0.1 * normal(d)},
      "norm_2": {"scale": 1 + 0.1 * normal(d), "bias": 0.1 * normal(d)},
  }
  return jax.tree.map(lambda a: jnp.asarray(a, dtype), params)




# ------------------------------------------------------ feed-forward and norm


def test_layer_norm_matches_oracle():
  params = _params(0)["norm_1"]
  x = 3.0 + 5.0 * _inputs(1)
  np.testing.assert_allclose(jattn.layer_norm(params, x),
                             oracle.layer_norm(params, x), rtol=1e-10,
                             atol=1e-10)
  np.testing.assert_allclose(jattn.layer_norm(params, x, eps=0.5),
                             oracle.layer_norm(params, x, eps=0.5),
                             rtol=1e-10, atol=1e-10)


def test_layer_norm_low_precision_input():
  params = jattn.init_layer_norm(D, dtype=jnp.float32)
  # A large offset: statistics in bfloat16 would lose the small variations.
  x = 100.0 + _inputs(2, dtype=jnp.float32)
  y = jattn.layer_norm(params, x.astype(jnp.bfloat16))
  chex.assert_type(y, jnp.bfloat16)
  want = oracle.layer_norm(params, np.asarray(x.astype(jnp.bfloat16),
                                               np.float64))
  np.testing.assert_allclose(np.asarray(y, np.float64), want, atol=2e-2)


def test_layer_norm_leading_axes():
  params = _params(3)["norm_2"]
  x_BND = _inputs(4, n=2 * N).reshape(2, N, D)
  y_BND = jattn.layer_norm(params, x_BND)
  np.testing.assert_allclose(y_BND[1], oracle.layer_norm(params, x_BND[1]),
                             rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_bias", [True, False])
def test_feed_forward_matches_oracle(use_bias):
  params = _params(5, use_bias=use_bias)["ffn"]
  x = _inputs(6)
  np.testing.assert_allclose(jattn.feed_forward(params, x),
                             oracle.feed_forward(params, x), rtol=1e-12,
                             atol=1e-12)
  np.testing.assert_allclose(
      jattn.feed_forward(params, x, activation=jnp.tanh),
      oracle.feed_forward(params, x, activation=np.tanh), rtol=1e-12,
      atol=1e-12)


def test_init_feed_forward_and_layer_norm():
  ffn = jax.eval_shape(lambda k: jattn.init_feed_forward(
      k, 4, 6, dtype=jnp.bfloat16), jax.random.PRNGKey(0))
  chex.assert_shape([ffn["w_1"], ffn["b_1"], ffn["w_2"], ffn["b_2"]],
                    [(4, 6), (6,), (6, 4), (4,)])
  assert ffn["w_1"].dtype == jnp.bfloat16
  no_bias = jax.eval_shape(lambda k: jattn.init_feed_forward(
      k, 4, 6, use_bias=False), jax.random.PRNGKey(0))
  assert set(no_bias) == {"w_1", "w_2"}
  norm = jattn.init_layer_norm(4)
  np.testing.assert_array_equal(norm["scale"], 1.0)
  np.testing.assert_array_equal(norm["bias"], 0.0)


# ------------------------------------------------------------ the block


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("mask,is_causal", [(None, False), (MASK, False),
                                            (None, True), (MASK, True)])
def test_block_matches_oracle_f64(pre_norm, mask, is_causal):
  params, x = _params(7), _inputs(8)
  y, w = jattn.transformer_block(params, x, mask, pre_norm=pre_norm,
                                 is_causal=is_causal, return_weights=True)
  want_y, want_w = oracle.transformer_block(params, x, mask,
                                            pre_norm=pre_norm,
                                            is_causal=is_causal)
  chex.assert_type(y, jnp.float64)
  np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(w, want_w, rtol=1e-10, atol=1e-10)


def test_block_grouped_query_no_bias_matches_oracle():
  params, x = _params(9, g=1, use_bias=False), _inputs(10)
  np.testing.assert_allclose(jattn.transformer_block(params, x, MASK),
                             oracle.transformer_block(params, x, MASK)[0],
                             rtol=1e-10, atol=1e-10)


def test_custom_attention_fn_replaces_the_attention_sublayer():
  params, x = _params(9), _inputs(10)
  calls = []

  def doubled(q_LHK, k_MGK, v_MGV, mask=None, **core_args):
    """An attention core (jattn.attention's signature) giving 2x softmax."""
    calls.append(np.shape(mask))
    return 2 * jattn.dot_product_attention(q_LHK, k_MGK, v_MGV, mask,
                                           **core_args)

  # Doubling the attention core's output = doubling w_o (not b_o) in the
  # oracle's block.
  doubled_params = dict(params, attention=dict(
      params["attention"], w_o=2 * params["attention"]["w_o"]))
  got = jattn.transformer_block(params, x, MASK, attention_fn=doubled)
  want = oracle.transformer_block(doubled_params, x, MASK)[0]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
  assert calls == [(1, N)]  # a token mask arrives as (1, N) key validity
  with pytest.raises(ValueError, match="return_weights: expected False"):
    jattn.transformer_block(params, x, attention_fn=doubled,
                            return_weights=True)


def test_attention_mask_is_passed_through():
  # A rank-3 mask goes straight to attention: outputs are not zeroed.
  params, x = _params(11), _inputs(12)
  rng = np.random.default_rng(13)
  mask_HNN = jnp.asarray(rng.random((H, N, N)) < 0.6)
  mask_HNN = mask_HNN.at[0, 1].set(False)  # one row attends to nothing
  y = jattn.transformer_block(params, x, mask_HNN)
  np.testing.assert_allclose(y, oracle.transformer_block(params, x,
                                                         mask_HNN)[0],
                             rtol=1e-10, atol=1e-10)
  assert np.all(np.abs(np.asarray(y)).sum(-1) > 0)
  mask_NN = jnp.tril(jnp.ones((N, N), bool))
  np.testing.assert_allclose(
      jattn.transformer_block(params, x, mask_NN, pre_norm=True),
      jattn.transformer_block(params, x, pre_norm=True, is_causal=True),
      rtol=1e-12, atol=1e-12)


class BlockVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_post_norm_float32(self):
    params = _params(14, dtype=jnp.float32)
    x = _inputs(15, dtype=jnp.float32)
    got = self.variant(lambda p, x, m: jattn.transformer_block(
        p, x, m, precision=jax.lax.Precision.HIGHEST))(params, x, MASK)
    chex.assert_type(got, jnp.float32)
    self.assertLess(helpers.max_rel_error(got, oracle.transformer_block(params, x,
                                                           MASK)[0]), 1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_dropout_placement(self):
    # Reproduce the block's keep masks (the documented key split) and check
    # them against the oracle's residual dropout, post-LN and pre-LN.
    params, x, rate = _params(16), _inputs(17), 0.3
    key = jax.random.PRNGKey(18)
    key_1, key_2 = jax.random.split(key)
    keep_1 = np.asarray(jax.random.bernoulli(key_1, 1 - rate, (N, D)))
    keep_2 = np.asarray(jax.random.bernoulli(key_2, 1 - rate, (N, D)))
    assert not keep_1.all() and keep_1.any()
    got_post, got_pre = self.variant(lambda p, x, k: [
        jattn.transformer_block(p, x, dropout_rate=rate, dropout_key=k,
                                deterministic=False, pre_norm=pre_norm)
        for pre_norm in (False, True)])(params, x, key)
    for pre_norm, got in ((False, got_post), (True, got_pre)):
      want, _ = oracle.transformer_block(params, x, pre_norm=pre_norm,
                                         keep_1=keep_1, keep_2=keep_2,
                                         rate=rate)
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_dropout_switches():
  params, x = _params(19), _inputs(20)
  key = jax.random.PRNGKey(21)
  plain = jattn.transformer_block(params, x)
  # deterministic (the default) ignores the rate and the key
  np.testing.assert_array_equal(
      jattn.transformer_block(params, x, dropout_rate=0.5, dropout_key=key),
      plain)
  np.testing.assert_array_equal(
      jattn.transformer_block(params, x, deterministic=False), plain)
  dropped = jattn.transformer_block(params, x, dropout_rate=0.5,
                                    dropout_key=key, deterministic=False)
  assert not np.allclose(dropped, plain)
  with pytest.raises(ValueError, match="dropout_key"):
    jattn.transformer_block(params, x, dropout_rate=0.5, deterministic=False)
  with pytest.raises(ValueError, match="dropout_rate"):
    jattn.transformer_block(params, x, dropout_rate=1.0, dropout_key=key,
                            deterministic=False)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_padded_garbage_does_not_leak(pre_norm):
  params, x = _params(22), _inputs(23)
  dirty = jnp.where(MASK[:, None], x, 1e4 * _inputs(24))
  dirty = dirty.at[3, 0].set(jnp.inf)
  y_clean = jattn.transformer_block(params, x, MASK, pre_norm=pre_norm)
  y_dirty = jattn.transformer_block(params, dirty, MASK, pre_norm=pre_norm)
  np.testing.assert_array_equal(y_clean, y_dirty)
  np.testing.assert_array_equal(y_dirty[~np.asarray(MASK)], 0.0)


def test_rotary_positions_are_used():
  params, x = _params(25), _inputs(26)
  pos = jnp.arange(N)
  y_rope = jattn.transformer_block(params, x, positions=pos)
  assert not np.allclose(y_rope, jattn.transformer_block(params, x))
  # rotary attention depends on relative positions only
  np.testing.assert_allclose(
      jattn.transformer_block(params, x, positions=pos + 7), y_rope,
      rtol=1e-9, atol=1e-9)


def test_gradients():
  params = _params(27, d=4, h=2, f=6)
  x = _inputs(28, n=3, d=4)
  mask = jnp.array([True, True, False])

  block = jax.jit(lambda p, x: jattn.transformer_block(p, x, mask,
                                                       is_causal=True))
  check_grads(block, (params, x), order=1, modes=("rev",))


def test_vmap_equals_python_loop():
  params = _params(29, dtype=jnp.float32)
  x_BND = jnp.asarray(np.random.default_rng(30).standard_normal((3, N, D)),
                      jnp.float32)
  mask_BN = jattn.padding_mask(jnp.array([5, 2, 1]), N)[:, 0]
  got = jattn.batched(jattn.transformer_block)(params, x_BND, mask_BN)
  for b in range(3):
    np.testing.assert_allclose(
        got[b], jattn.transformer_block(params, x_BND[b], mask_BN[b]),
        rtol=1e-5, atol=1e-5)


def test_no_retrace_with_same_shapes():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def block(p, x, m, k):
    return jattn.transformer_block(p, x, m, dropout_rate=0.1, dropout_key=k,
                                   deterministic=False)

  params = _params(31, dtype=jnp.float32)
  for seed in range(3):
    block(params, _inputs(seed, dtype=jnp.float32), MASK,
          jax.random.PRNGKey(seed))


@pytest.mark.parametrize("kwargs,expected", [
    # attention 4 * 8 * 8 + biases 3 * 8 + 8; norms 2 * 16;
    # ffn 8 * 16 + 16 + 16 * 8 + 8
    ({}, 288 + 32 + 280),
    ({"use_bias": False}, 256 + 32 + 256),
    # G = 1: w_q 64, w_k 32, w_v 32, w_o 64, biases 8 + 4 + 4 + 8
    ({"num_kv_heads": 1}, 216 + 32 + 280),
])
def test_param_counts(kwargs, expected):
  params = jax.eval_shape(
      lambda key: jattn.init_transformer_block(key, 8, 2, 16, **kwargs),
      jax.random.PRNGKey(0))
  assert set(params) == {"attention", "norm_1", "ffn", "norm_2"}
  assert jattn.count_params(params) == expected


def test_init_runs_and_is_usable():
  @jax.jit  # one compilation for init and block
  def init_and_apply(key, x):
    params = jattn.init_transformer_block(key, 4, 2, 8, dtype=jnp.float32)
    return params, jattn.transformer_block(params, x)

  params, y = init_and_apply(jax.random.PRNGKey(0),
                             _inputs(32, d=4, dtype=jnp.float32))
  chex.assert_type(params["ffn"]["w_1"], jnp.float32)
  assert float(jnp.std(params["ffn"]["w_1"])) > 0.1
  chex.assert_shape(y, (N, 4))
  # post-LN with unit scale and zero bias: each row is normalised
  np.testing.assert_allclose(np.mean(np.asarray(y), -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.std(np.asarray(y), -1), 1.0, atol=1e-3)


@pytest.mark.parametrize("call,name", [
    (lambda p, x: jattn.transformer_block(p, x, jnp.ones(N, jnp.int32)),
     "mask"),
    (lambda p, x: jattn.transformer_block(p, x, jnp.ones(N + 1, bool)),
     "mask"),
    (lambda p, x: jattn.transformer_block(p, x, jnp.ones((1, 1, N, N), bool)),
     "mask"),
    (lambda p, x: jattn.transformer_block(p, x[:, :6]), "x"),
    (lambda p, x: jattn.transformer_block(p, x[0]), "x_ND"),
    (lambda p, x: jattn.transformer_block({"attention": p["attention"]}, x),
     "params"),
    (lambda p, x: jattn.transformer_block(p, x, deterministic=0),
     "deterministic"),
    (lambda p, x: jattn.feed_forward(p["ffn"], x[:, :6]), "x_ND"),
    (lambda p, x: jattn.feed_forward(
        {k: v for k, v in p["ffn"].items() if k != "b_2"}, x), "b_2"),
    (lambda p, x: jattn.layer_norm(p["norm_1"], x[:, :6]), "x"),
])
def test_bad_arguments_name_the_argument(call, name):
  with pytest.raises((ValueError, TypeError), match=name):
    call(_params(33), _inputs(34))
