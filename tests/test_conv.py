"""Tests for jattn.conv: 1-D convolution layer against a NumPy loop oracle."""

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

N, D = 7, 4


def _inputs(seed, n=N, d=D, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((n, d)), dtype)


def _params(seed, k, d=D, dtype=jnp.float64, use_bias=True):
  # NumPy draws (not init_conv_layer) keep the tests free of per-shape
  # random-number compilations; non-zero biases so they are tested too.
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.standard_normal((k, d, d)) / np.sqrt(k * d),
                             dtype)}
  if use_bias:
    params["b"] = jnp.asarray(rng.standard_normal(d), dtype)
  return params




_CONFIGS = [  # (k, causal, dilation)
    (1, False, 1), (2, False, 1), (3, False, 1), (4, False, 2),
    (3, False, 2), (2, True, 1), (3, True, 3)]


@pytest.mark.parametrize("k,causal,dilation", _CONFIGS)
def test_matches_oracle_f64(k, causal, dilation):
  params, x = _params(0, k), _inputs(1)
  mask = jnp.array([True] * 5 + [False] * 2)
  for m in (None, mask):
    got = jattn.conv_layer(params, x, m, causal=causal, dilation=dilation)
    want = oracle.conv(params, x, m, causal=causal, dilation=dilation)
    chex.assert_type(got, jnp.float64)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


class ConvVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_dilated_f64(self):
    params, x = _params(0, 3), _inputs(1)
    mask = jnp.array([True, False, True, True, True, False, False])
    got = self.variant(lambda p, x, m: jattn.conv_layer(
        p, x, m, causal=True, dilation=2))(params, x, mask)
    want = oracle.conv(params, x, mask, causal=True, dilation=2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_float32_relative_error(self):
    params, x = _params(2, 4, dtype=jnp.float32), _inputs(3, dtype=jnp.float32)
    got = self.variant(lambda p, x: jattn.conv_layer(
        p, x, precision=jax.lax.Precision.HIGHEST))(params, x)
    chex.assert_type(got, jnp.float32)
    self.assertLess(helpers.max_rel_error(got, oracle.conv(params, x)), 1e-5)


def test_no_bias_matches_oracle():
  params, x = _params(4, 3, use_bias=False), _inputs(5)
  assert set(params) == {"w"}
  np.testing.assert_allclose(jattn.conv_layer(params, x),
                             oracle.conv(params, x), rtol=1e-12, atol=1e-12)


def test_taps_read_documented_positions():
  # w[j] = identity picks input i - left + j * dilation for output i.
  x = _inputs(6)
  eye = jnp.eye(D, dtype=jnp.float64)

  def picked(k, j, **kw):
    w = jnp.zeros((k, D, D), jnp.float64).at[j].set(eye)
    return jattn.conv_layer({"w": w}, x, **kw)

  shifted = lambda s: jnp.roll(x, -s, axis=0).at[
      (N - s if s > 0 else 0):(N if s > 0 else -s)].set(0.0)
  # odd k: centred window i-1, i, i+1
  np.testing.assert_array_equal(picked(3, 0), shifted(-1))
  np.testing.assert_array_equal(picked(3, 1), x)
  np.testing.assert_array_equal(picked(3, 2), shifted(1))
  # even k: the extra tap is on the right: taps i, i+1 for k = 2
  np.testing.assert_array_equal(picked(2, 0), x)
  np.testing.assert_array_equal(picked(2, 1), shifted(1))
  # causal with dilation 2: taps i-4, i-2, i
  np.testing.assert_array_equal(picked(3, 0, causal=True, dilation=2),
                                shifted(-4))
  np.testing.assert_array_equal(picked(3, 2, causal=True, dilation=2), x)


def test_causal_output_ignores_future_inputs():
  params = _params(7, 3)
  x = _inputs(8)
  jac = jax.jacobian(lambda x: jattn.conv_layer(params, x, causal=True,
                                                dilation=2))(x)
  influence = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # (out i, in j)
  for i in range(N):
    for j in range(N):
      if j > i or (i - j) % 2 or i - j > 4:
        assert influence[i, j] == 0.0, (i, j)
      else:
        assert influence[i, j] > 0.0, (i, j)


def test_padded_garbage_does_not_leak():
  params = _params(9, 3)
  x = _inputs(10)
  mask = jnp.array([True, True, False, True, True, False, False])
  garbage = jnp.where(mask[:, None], x, 1e6 * _inputs(11))
  for kw in ({}, {"causal": True}, {"dilation": 2}):
    y_clean = jattn.conv_layer(params, x, mask, **kw)
    y_dirty = jattn.conv_layer(params, garbage, mask, **kw)
    np.testing.assert_array_equal(y_clean, y_dirty)
    np.testing.assert_array_equal(y_dirty[~np.asarray(mask)], 0.0)


def test_gradients():
  params, x = _params(12, 3, d=3), _inputs(13, n=4, d=3)
  mask = jnp.array([True, True, True, False])
  check_grads(jax.jit(lambda p, x: jattn.conv_layer(p, x, mask, causal=True)),
              (params, x), order=1, modes=("fwd", "rev"))
  check_grads(jax.jit(lambda p, x: jattn.conv_layer(p, x, dilation=2)),
              (params, x), order=1, modes=("rev",))


def test_vmap_equals_python_loop():
  params = _params(14, 3, dtype=jnp.float32)
  x_BND = jnp.asarray(np.random.default_rng(15).standard_normal((3, N, D)),
                      jnp.float32)
  mask_BN = jattn.padding_mask(jnp.array([7, 4, 1]), N)[:, 0]
  got = jattn.batched(jattn.conv_layer)(params, x_BND, mask_BN)
  for b in range(3):
    np.testing.assert_allclose(got[b],
                               jattn.conv_layer(params, x_BND[b], mask_BN[b]),
                               rtol=1e-6, atol=1e-6)


def test_no_retrace_with_same_shapes():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def layer(p, x, m):
    return jattn.conv_layer(p, x, m, causal=True)

  params = _params(16, 2, dtype=jnp.float32)
  mask = jnp.ones((N,), bool)
  for seed in range(3):
    layer(params, _inputs(seed, dtype=jnp.float32), mask)


@pytest.mark.parametrize("d,k,use_bias,expected",
                         [(4, 3, True, 52), (8, 3, True, 200),
                          (8, 3, False, 192), (16, 1, True, 272)])
def test_param_counts(d, k, use_bias, expected):
  params = jax.eval_shape(lambda key: jattn.init_conv_layer(
      key, d, k, use_bias=use_bias), jax.random.PRNGKey(0))
  assert jattn.count_params(params) == expected
  chex.assert_shape(params["w"], (k, d, d))


def test_init_dtype_and_scale():
  params = jattn.init_conv_layer(jax.random.PRNGKey(0), 32, 3,
                                 dtype=jnp.bfloat16)
  chex.assert_type(params["w"], jnp.bfloat16)
  chex.assert_type(params["b"], jnp.bfloat16)
  std = float(jnp.std(params["w"].astype(jnp.float32)))
  assert 0.8 / np.sqrt(3 * 32) < std < 1.2 / np.sqrt(3 * 32)


def test_bfloat16_input_keeps_dtype():
  params = _params(17, 3, dtype=jnp.float32)
  y = jattn.conv_layer(params, _inputs(18, dtype=jnp.bfloat16))
  chex.assert_type(y, jnp.bfloat16)


@pytest.mark.parametrize("call,name", [
    (lambda p, x: jattn.conv_layer(p, x, jnp.ones(N, jnp.int32)), "mask"),
    (lambda p, x: jattn.conv_layer(p, x, jnp.ones(N - 1, bool)), "mask"),
    (lambda p, x: jattn.conv_layer(p, x[:, :3]), "x_ND"),
    (lambda p, x: jattn.conv_layer(p, x[0]), "x_ND"),
    (lambda p, x: jattn.conv_layer(p, x, dilation=0), "dilation"),
    (lambda p, x: jattn.conv_layer({"w": p["w"][:, :, :3]}, x), "params['w']"),
    (lambda p, x: jattn.conv_layer(dict(p, b=p["b"][:2]), x), "params['b']"),
    (lambda p, x: jattn.conv_layer(p, x.astype(jnp.int32)), "x_ND"),
])
def test_bad_arguments_name_the_argument(call, name):
  params, x = _params(19, 3), _inputs(20)
  with pytest.raises((ValueError, TypeError), match=name.replace("[", r"\[")):
    call(params, x)
