"""Tests for jattn.stack: scanned stacks, dilated conv stacks, param counts."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from tests import oracles_layers as oracle

N, D = 6, 4
MASK = jnp.array([True, True, True, True, False, False])


def _inputs(seed, n=N, d=D, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((n, d)), dtype)


def _stacked_conv(seed, num_layers, k, d=D, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.standard_normal((num_layers, k, d, d))
                           / np.sqrt(k * d), dtype),
          "b": jnp.asarray(rng.standard_normal((num_layers, d)), dtype)}


def _layer(stacked, i):
  return jax.tree.map(lambda a: a[i], stacked)


def test_init_stack_adds_a_layer_axis_with_distinct_layers():
  stacked = jax.jit(lambda k: jattn.init_stack(
      jattn.init_conv_layer, k, 3, D, 2))(jax.random.PRNGKey(0))
  chex.assert_shape([stacked["w"], stacked["b"]], [(3, 2, D, D), (3, D)])
  assert not np.allclose(stacked["w"][0], stacked["w"][1])
  rnn = jax.eval_shape(lambda k: jattn.init_stack(
      jattn.init_rnn_layer, k, 3, D, cell="elman"), jax.random.PRNGKey(0))
  chex.assert_shape([rnn["w_x"], rnn["w_h"], rnn["b"]],
                    [(3, D, 1, D), (3, D, 1, D), (3, 1, D)])
  one = jax.eval_shape(lambda k: jattn.init_rnn_layer(k, D, cell="elman"),
                       jax.random.PRNGKey(0))
  assert jattn.count_params(rnn) == 3 * jattn.count_params(one)


def _stacked_block(seed, num_layers, d=D, h=2, f=8):
  """Random stacked transformer_block params (NumPy draws, no init)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(
      (num_layers,) + shape) / np.sqrt(shape[0]))
  k = d // h
  return {
      "attention": {"w_q": normal(d, h, k), "w_k": normal(d, h, k),
                    "w_v": normal(d, h, k), "w_o": normal(h, k, d)},
      "ffn": {"w_1": normal(d, f), "b_1": normal(f), "w_2": normal(f, d),
              "b_2": normal(d)},
      "norm_1": {"scale": 1 + normal(d), "bias": normal(d)},
      "norm_2": {"scale": 1 + normal(d), "bias": normal(d)},
  }


@pytest.mark.parametrize("unroll", [False, True])
def test_scan_stack_equals_python_loop_conv(unroll):
  stacked, x = _stacked_conv(1, 3, 3), _inputs(2)
  got = jattn.apply_stack(jattn.conv_layer, stacked, x, MASK, causal=True,
                          unroll=unroll)
  want = x
  for i in range(3):  # the NumPy oracle, layer by layer
    want = oracle.conv(_layer(stacked, i), want, MASK, causal=True)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scan_stack_equals_python_loop_rnn():
  rng = np.random.default_rng(3)
  stacked = {"w_x": rng.standard_normal((2, D, 3, D)) / 2,
             "w_h": rng.standard_normal((2, D, 3, D)) / 2,
             "b": rng.standard_normal((2, 3, D)) / 2}
  stacked = jax.tree.map(jnp.asarray, stacked)
  x = _inputs(4)
  got = jattn.apply_stack(jattn.rnn_layer, stacked, x, MASK, reverse=True)
  want = x
  for i in range(2):
    want = oracle.rnn(_layer(stacked, i), want, MASK, reverse=True)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scan_stack_equals_python_loop_transformer_with_dropout_keys():
  stacked = _stacked_block(5, 2)
  x, key = _inputs(6), jax.random.PRNGKey(7)
  kwargs = dict(pre_norm=True, dropout_rate=0.25, deterministic=False)

  @jax.jit
  def both(stacked, x, key):
    scanned = jattn.apply_stack(jattn.transformer_block, stacked, x, MASK,
                                key=key, **kwargs)
    looped = x
    for i, layer_key in enumerate(jax.random.split(key, 2)):
      looped = jattn.transformer_block(_layer(stacked, i), looped, MASK,
                                       dropout_key=layer_key, **kwargs)
    undropped = jattn.apply_stack(jattn.transformer_block, stacked, x, MASK,
                                  pre_norm=True)
    return scanned, looped, undropped

  scanned, looped, undropped = both(stacked, x, key)
  np.testing.assert_allclose(scanned, looped, rtol=1e-12, atol=1e-12)
  assert not np.allclose(scanned, undropped)  # the keys did reach the layers
  np.testing.assert_array_equal(scanned[~np.asarray(MASK)], 0.0)


def test_per_layer_kwargs_equal_python_loop():
  stacked, x = _stacked_conv(8, 3, 2), _inputs(9)
  got = jattn.apply_stack(jattn.conv_layer, stacked, x, MASK,
                          per_layer_kwargs=[{"dilation": 1}, {"dilation": 3},
                                            {"dilation": 2}], causal=True)
  want = x
  for i, dil in enumerate((1, 3, 2)):
    want = oracle.conv(_layer(stacked, i), want, MASK, causal=True,
                       dilation=dil)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(
      jattn.dilated_conv_stack(stacked, x, MASK, causal=True,
                               dilation_base=3),
      jattn.apply_stack(jattn.conv_layer, stacked, x, MASK, causal=True,
                        per_layer_kwargs=[{"dilation": d} for d in (1, 3, 9)]),
      rtol=1e-12, atol=1e-12)


def _influence(fn, x):
  """(out i, in j) total |d y_i / d x_j| of a (N, D) -> (N, D) function."""
  jac = jax.jacobian(fn)(x)
  return np.abs(np.asarray(jac)).sum(axis=(1, 3))


@pytest.mark.parametrize("k,n,layers", [(2, 16, 4), (3, 9, 2)])
def test_dilated_causal_stack_covers_the_sequence(k, n, layers):
  # Dilations k^i: L = log_k n layers see all n tokens; L - 1 layers do not.
  x = _inputs(10, n=n, d=2)
  assert jattn.receptive_field(k, jattn.tcn_dilations(layers, k)) == k ** layers
  full = _stacked_conv(11, layers, k, d=2)
  influence = _influence(
      lambda x: jattn.dilated_conv_stack(full, x, causal=True), x)
  assert np.all(influence[n - 1] > 0.0)                 # last sees all
  assert np.all(influence[np.triu_indices(n, 1)] == 0)  # nothing from future
  short = jax.tree.map(lambda a: a[:layers - 1], full)
  influence = _influence(
      lambda x: jattn.dilated_conv_stack(short, x, causal=True), x)
  span = k ** (layers - 1)
  assert np.all(influence[n - 1, n - span:] > 0.0)
  assert np.all(influence[n - 1, :n - span] == 0.0)


def test_dilated_symmetric_stack_centre_sees_everything():
  x = _inputs(12, n=9, d=2)
  stacked = _stacked_conv(13, 2, 3, d=2)
  influence = _influence(lambda x: jattn.dilated_conv_stack(stacked, x), x)
  assert np.all(influence[4] > 0.0)        # centre: 4 to each side
  assert np.all(influence[0, 5:] == 0.0)   # token 0 sees 0 .. 4 only
  assert np.all(influence[0, :5] > 0.0)


def test_compile_size_does_not_grow_with_depth():
  def eqn_count(num_layers):
    stacked = _stacked_conv(14, num_layers, 3, dtype=jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p, x: jattn.apply_stack(
        jattn.conv_layer, p, x, MASK))(stacked, _inputs(15, dtype=jnp.float32))
    return len(jaxpr.jaxpr.eqns)

  assert eqn_count(2) == eqn_count(16)


def test_unroll_has_one_call_per_layer_and_no_scan():
  stacked = _stacked_conv(14, 3, 3, dtype=jnp.float32)
  jaxpr = jax.make_jaxpr(lambda p, x: jattn.apply_stack(
      jattn.conv_layer, p, x, MASK, unroll=True))(
          stacked, _inputs(15, dtype=jnp.float32))
  names = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
  assert "scan" not in names
  assert names.count("conv_general_dilated") == 3


def test_no_retrace_with_same_shapes():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def stack(p, x):
    return jattn.apply_stack(jattn.conv_layer, p, x, MASK, causal=True)

  stacked = _stacked_conv(16, 4, 3, dtype=jnp.float32)
  for seed in range(3):
    stack(stacked, _inputs(seed, dtype=jnp.float32))


def test_vmap_of_stack_equals_python_loop():
  stacked = _stacked_conv(17, 2, 3)
  x_BND = jnp.stack([_inputs(18), _inputs(19)])
  mask_BN = jnp.stack([MASK, jnp.ones(N, bool)])
  got = jax.vmap(lambda x, m: jattn.apply_stack(jattn.conv_layer, stacked, x,
                                                m))(x_BND, mask_BN)
  for b in range(2):
    np.testing.assert_allclose(
        got[b], jattn.apply_stack(jattn.conv_layer, stacked, x_BND[b],
                                  mask_BN[b]), rtol=1e-12, atol=1e-12)


def test_count_params():
  assert jattn.count_params({}) == 0
  tree = {"a": jnp.ones((2, 3)), "b": [jnp.ones(4), 1.0],
          "c": jax.ShapeDtypeStruct((5, 5), jnp.float32)}
  assert jattn.count_params(tree) == 6 + 4 + 1 + 25
  tcn = jax.eval_shape(lambda k: jattn.init_stack(
      jattn.init_conv_layer, k, 4, 8, 2), jax.random.PRNGKey(0))
  assert jattn.count_params(tcn) == 4 * (2 * 8 * 8 + 8)


def test_tcn_helpers():
  assert jattn.tcn_dilations(4, 2) == [1, 2, 4, 8]
  assert jattn.receptive_field(2, [1, 2, 4, 8]) == 16
  assert jattn.receptive_field(3, [1]) == 3
  assert jattn.receptive_field(5, []) == 1


@pytest.mark.parametrize("call,name", [
    (lambda s, x: jattn.apply_stack(jattn.conv_layer, s, x,
                                    per_layer_kwargs=[{}]), "per_layer_kwargs"),
    (lambda s, x: jattn.apply_stack(jattn.conv_layer, s, x,
                                    per_layer_kwargs={"dilation": 2}),
     "per_layer_kwargs"),
    (lambda s, x: jattn.apply_stack(jattn.conv_layer,
                                    {"w": s["w"], "b": s["b"][:1]}, x),
     "stacked_params"),
    (lambda s, x: jattn.apply_stack(lambda p, x, m: x[:2], s, x), "layer_fn"),
    (lambda s, x: jattn.apply_stack(lambda p, x, m: x.astype(jnp.float32), s,
                                    x), "layer_fn"),
    (lambda s, x: jattn.dilated_conv_stack({"w": s["w"][0]}, x),
     "stacked_params"),
    (lambda s, x: jattn.init_stack(jattn.init_conv_layer,
                                   jax.random.PRNGKey(0), 0, 4, 3),
     "num_layers"),
])
def test_bad_arguments_name_the_argument(call, name):
  with pytest.raises((ValueError, TypeError), match=name):
    call(_stacked_conv(20, 2, 3), _inputs(21))
