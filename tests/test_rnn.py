"""Tests for jattn.rnn: Elman, GRU and LSTM layers against per-step oracles."""

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

N, D = 6, 4
MASK = jnp.array([True, True, False, True, True, False])
GATES = {"elman": 1, "gru": 3, "lstm": 4}


def _inputs(seed, n=N, d=D, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((n, d)), dtype)


def _direction(rng, d, hd, s, dtype, w_out=False):
  scale = lambda fan_in: 1.0 / np.sqrt(fan_in)
  p = {
      "w_x": rng.standard_normal((d, s, hd)) * scale(d),
      "w_h": rng.standard_normal((hd, s, hd)) * scale(hd),
      "b": rng.standard_normal((s, hd)) * 0.5,
  }
  if w_out:
    p["w_out"] = rng.standard_normal((hd, d)) * scale(hd)
  return {k: jnp.asarray(v, dtype) for k, v in p.items()}


def _params(seed, cell, d=D, *, bidirectional=False, hidden_dim=None,
            dtype=jnp.float64):
  """Random params in the layout of init_rnn_layer, drawn with NumPy."""
  rng = np.random.default_rng(seed)
  s = GATES[cell]
  if bidirectional:
    return {"forward": _direction(rng, d, d // 2, s, dtype),
            "backward": _direction(rng, d, d // 2, s, dtype)}
  hd = d if hidden_dim is None else hidden_dim
  return _direction(rng, d, hd, s, dtype, w_out=hd != d)




@pytest.mark.parametrize("cell,variant,mask", [
    ("elman", "forward", None), ("gru", "forward", None),
    ("lstm", "forward", None),
    ("elman", "bidirectional", MASK), ("gru", "bidirectional", MASK),
    ("lstm", "bidirectional", MASK),
    ("gru", "reverse", MASK), ("elman", "projected", MASK),
    ("lstm", "projected", None),
])
def test_matches_oracle_f64(cell, variant, mask):
  params = _params(0, cell, bidirectional=variant == "bidirectional",
                   hidden_dim=3 if variant == "projected" else None)
  reverse = variant == "reverse"
  x = _inputs(1)
  got = jattn.rnn_layer(params, x, mask, reverse=reverse)
  want = oracle.rnn(params, x, mask, reverse=reverse)
  chex.assert_type(got, jnp.float64)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


class RnnVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_gru_masked_f64(self):
    params, x = _params(2, "gru"), _inputs(3)
    got = self.variant(jattn.rnn_layer)(params, x, MASK)
    np.testing.assert_allclose(got, oracle.rnn(params, x, MASK),
                               rtol=1e-12, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_lstm_bidirectional_float32(self):
    params = _params(4, "lstm", bidirectional=True, dtype=jnp.float32)
    x = _inputs(5, dtype=jnp.float32)
    got = self.variant(lambda p, x, m: jattn.rnn_layer(
        p, x, m, precision=jax.lax.Precision.HIGHEST))(params, x, MASK)
    chex.assert_type(got, jnp.float32)
    self.assertLess(helpers.max_rel_error(got, oracle.rnn(params, x, MASK)), 1e-5)


def test_padded_steps_keep_the_state():
  # Valid outputs equal those of the sequence with the padding removed, and
  # padded garbage changes nothing.
  params = _params(6, "lstm", bidirectional=True)
  x = _inputs(7)
  dirty = jnp.where(MASK[:, None], x, 1e3 * _inputs(8))
  y = jattn.rnn_layer(params, dirty, MASK)
  valid = np.asarray(MASK)
  y_packed = jattn.rnn_layer(params, x[valid])
  np.testing.assert_allclose(y[valid], y_packed, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(y[~valid], 0.0)
  np.testing.assert_array_equal(y, jattn.rnn_layer(params, x, MASK))


def test_gradients_rev_mode_bidirectional_lstm():
  params = _params(13, "lstm", d=2, bidirectional=True)
  x = _inputs(14, n=3, d=2)
  mask = jnp.array([True, True, False])
  check_grads(jax.jit(lambda p, x: jattn.rnn_layer(p, x, mask)), (params, x),
              order=1, modes=("rev",))


def test_gradients_fwd_mode_projected_gru():
  params = _params(15, "gru", d=2, hidden_dim=3)
  check_grads(jax.jit(jattn.rnn_layer), (params, _inputs(16, n=3, d=2)),
              order=1, modes=("fwd",))


def test_vmap_equals_python_loop():
  params = _params(17, "gru", dtype=jnp.float32)
  x_BND = jnp.asarray(np.random.default_rng(18).standard_normal((3, N, D)),
                      jnp.float32)
  mask_BN = jattn.padding_mask(jnp.array([6, 3, 1]), N)[:, 0]
  got = jattn.batched(jattn.rnn_layer)(params, x_BND, mask_BN)
  for b in range(3):
    np.testing.assert_allclose(got[b],
                               jattn.rnn_layer(params, x_BND[b], mask_BN[b]),
                               rtol=1e-5, atol=1e-6)


def test_no_retrace_with_same_shapes():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def layer(p, x, m):
    return jattn.rnn_layer(p, x, m)

  params = _params(19, "lstm", dtype=jnp.float32)
  for seed in range(3):
    layer(params, _inputs(seed, dtype=jnp.float32), MASK)


@pytest.mark.parametrize("kwargs,expected", [
    ({"cell": "gru"}, 3 * (4 * 4 + 4 * 4 + 4)),                # 108
    ({"cell": "elman"}, 4 * 4 + 4 * 4 + 4),                    # 36
    ({"cell": "lstm", "bidirectional": True},
     2 * 4 * (4 * 2 + 2 * 2 + 2)),                             # 112
    ({"cell": "elman", "hidden_dim": 5}, 20 + 25 + 5 + 20),    # 70
])
def test_param_counts(kwargs, expected):
  params = jax.eval_shape(lambda key: jattn.init_rnn_layer(key, 4, **kwargs),
                          jax.random.PRNGKey(0))
  assert jattn.count_params(params) == expected


def test_init_layout_defaults_to_gru():
  params = jax.eval_shape(lambda k: jattn.init_rnn_layer(k, 4),
                          jax.random.PRNGKey(0))
  assert set(params) == {"w_x", "w_h", "b"}
  chex.assert_shape([params["w_x"], params["w_h"], params["b"]],
                    [(4, 3, 4), (4, 3, 4), (3, 4)])


def test_init_bidirectional_bfloat16_runs():
  # A real initialisation (the orthogonal one needs float32 QR inside).
  bi = jax.jit(lambda k: jattn.init_rnn_layer(
      k, 8, cell="gru", bidirectional=True, dtype=jnp.bfloat16))(
          jax.random.PRNGKey(0))
  assert set(bi) == {"forward", "backward"}
  chex.assert_shape(bi["backward"]["w_h"], (4, 3, 4))
  chex.assert_type(bi["forward"]["w_x"], jnp.bfloat16)
  w_h = np.asarray(bi["forward"]["w_h"], np.float32)
  for s in range(3):  # each recurrent gate block is orthogonal
    np.testing.assert_allclose(w_h[:, s].T @ w_h[:, s], np.eye(4), atol=3e-2)
  assert not np.allclose(w_h, np.asarray(bi["backward"]["w_h"], np.float32))
  y = jattn.rnn_layer(bi, _inputs(20, d=8, dtype=jnp.bfloat16))
  chex.assert_type(y, jnp.bfloat16)


@pytest.mark.parametrize("call,name", [
    (lambda: jattn.init_rnn_layer(jax.random.PRNGKey(0), 4, cell="tanh"),
     "cell"),
    (lambda: jattn.init_rnn_layer(jax.random.PRNGKey(0), 5,
                                  bidirectional=True), "d_model"),
    (lambda: jattn.init_rnn_layer(jax.random.PRNGKey(0), 4, hidden_dim=4,
                                  bidirectional=True), "hidden_dim"),
    (lambda: jattn.rnn_layer(_params(0, "gru"), _inputs(0),
                             jnp.ones(N, jnp.float32)), "mask"),
    (lambda: jattn.rnn_layer(_params(0, "gru"), _inputs(0, d=3)), "w_x"),
    (lambda: jattn.rnn_layer(_params(0, "gru", hidden_dim=3) | {"w_out": None},
                             _inputs(0)), "w_out"),
    (lambda: jattn.rnn_layer(
        {k: v[:, :2] if k != "b" else v[:2]
         for k, v in _params(0, "gru").items()}, _inputs(0)), "gates"),
    (lambda: jattn.rnn_layer(_params(0, "gru", bidirectional=True),
                             _inputs(0), reverse=True), "reverse"),
    (lambda: jattn.rnn_layer(
        {"forward": _params(0, "gru", bidirectional=True)["forward"]},
        _inputs(0)), "params"),
    (lambda: jattn.rnn_layer(
        {"forward": _params(0, "gru", bidirectional=True)["forward"],
         "backward": _params(0, "lstm", bidirectional=True)["backward"]},
        _inputs(0)), "backward"),
])
def test_bad_arguments_name_the_argument(call, name):
  with pytest.raises((ValueError, TypeError), match=name):
    call()
