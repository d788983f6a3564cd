"""Maximum path length measured on the jaxpr (`analysis.jaxpr_distances`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn import analysis

KEY = jax.random.key(0)


def _x(n, d=4, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, d), jnp.float32)


def _a(n, d=4):
  return jnp.full((n, d), 0.9, jnp.float32)


def _scan(n):
  a = _a(n)
  return lambda x: analysis.linear_recurrence_scan(a, x)


def _associative(n):
  a = _a(n)
  return lambda x: analysis.linear_recurrence_associative(a, x)


def _cumsum(n):
  del n
  return lambda x: jnp.cumsum(x, axis=0)


def _tril(n):
  return np.tril(np.ones((n, n), bool))


def test_recurrence_and_parallel_prefix_sum_differ():
  n = 32
  scan = analysis.jaxpr_distances(_scan(n), _x(n))
  associative = analysis.jaxpr_distances(_associative(n), _x(n))
  cumsum = analysis.jaxpr_distances(_cumsum(n), _x(n))
  # The same pairs are connected (output i sees inputs 0 .. i) ...
  for dist in (scan, associative, cumsum):
    np.testing.assert_array_equal(dist >= 0, _tril(n))
  # ... but not through chains of the same length: h_j = a h_{j-1} + x_j is
  # one add from x_j, and every later step is a multiply and an add.
  i, j = np.tril_indices(n)
  np.testing.assert_array_equal(scan[i, j], 1 + 2 * (i - j))
  assert scan.max() == 2 * n - 1
  assert associative.max() < scan.max() / 1.5
  assert cumsum.max() < scan.max() / 1.5


def test_growth_in_n_linear_for_the_scan_logarithmic_for_prefix_sums():
  ns = (8, 16, 32, 64)
  lengths = {name: [analysis.jaxpr_path_length(make(n), _x(n)) for n in ns]
             for name, make in (("scan", _scan), ("associative", _associative),
                                ("cumsum", _cumsum))}
  assert lengths["scan"] == [2 * n - 1 for n in ns]
  for name in ("associative", "cumsum"):
    rises = np.diff(lengths[name])
    # The same increase for every doubling of n: a log2(n) + b.
    assert len(set(rises.tolist())) == 1 and rises[0] > 0, lengths[name]
    assert lengths[name][-1] < 3 * lengths[name][0], lengths[name]  # n: 8x


def test_cumsum_as_one_primitive():
  n = 16
  dist = analysis.jaxpr_distances(_cumsum(n), _x(n), expand_cumulative=False)
  np.testing.assert_array_equal(dist, np.where(_tril(n), 1, -1))


def test_one_matmul_over_positions_is_one_step():
  n = 10
  w = jax.random.normal(KEY, (n, n), jnp.float32)
  np.testing.assert_array_equal(
      analysis.jaxpr_distances(lambda x: w @ x, _x(n)), np.ones((n, n)))
  # Known zeros of a constant weight are not read: a causal weight matrix.
  causal = jnp.asarray(np.tril(np.asarray(w)))
  np.testing.assert_array_equal(
      analysis.jaxpr_distances(lambda x: causal @ x, _x(n)),
      np.where(_tril(n), 1, -1))


def test_attention_path_is_constant_in_n():
  params = jattn.init_self_attention(KEY, 8, 2)
  lengths = []
  for n in (8, 16, 32):
    dist = analysis.jaxpr_distances(
        lambda x: jattn.self_attention(params, x, implementation="dense"),
        _x(n, 8))
    assert (dist >= 0).all()
    lengths.append(int(dist.max()))
  # Through the values: value projection, weights x values, output projection.
  assert lengths == [3, 3, 3]


def test_causal_attention_connects_the_jacobians_pairs():
  params = jattn.init_self_attention(KEY, 8, 2)
  layer = lambda x: jattn.self_attention(params, x, is_causal=True)
  dist = analysis.jaxpr_distances(layer, _x(12, 8))
  np.testing.assert_array_equal(dist >= 0,
                                analysis.dependency_pattern(layer, _x(12, 8)))
  assert dist.max() == 3


@pytest.mark.parametrize("n,k", [(16, 3), (17, 5)])
def test_conv_stack_path_grows_as_n_over_k(n, k):
  params = jattn.init_conv_layer(KEY, 4, k)
  conv = lambda x: jattn.conv_layer(params, x, causal=True)

  def plain(x, depth):
    for _ in range(depth):
      x = conv(x)
    return x

  def residual(x, depth):
    for _ in range(depth):
      x = x + conv(x)
    return x

  layers = math.ceil((n - 1) / (k - 1))
  short = analysis.jaxpr_distances(lambda x: plain(x, layers - 1), _x(n))
  assert short[n - 1, 0] == -1
  dist = analysis.jaxpr_distances(lambda x: plain(x, layers), _x(n))
  # Each layer is a convolution and a bias add; every chain crosses all.
  np.testing.assert_array_equal(dist, np.where(_tril(n), 2 * layers, -1))
  # With skip connections a pair i - j apart needs only ceil((i - j)/(k - 1))
  # convolutions (3 steps each: conv, bias, residual add; a skip is 1 step).
  skip = analysis.jaxpr_distances(lambda x: residual(x, layers), _x(n))
  i, j = np.tril_indices(n)
  np.testing.assert_array_equal(skip[i, j],
                                layers + 2 * np.ceil((i - j) / (k - 1)))


def test_rnn_layer_path_grows_linearly():
  params = jattn.init_rnn_layer(KEY, 4, cell="elman")
  layer = lambda x: jattn.rnn_layer(params, x)
  lengths = [analysis.jaxpr_path_length(layer, _x(n)) for n in (8, 16, 32)]
  per_step = (lengths[1] - lengths[0]) / 8
  assert per_step == (lengths[2] - lengths[1]) / 16 and per_step >= 2, lengths
  dist = analysis.jaxpr_distances(layer, _x(8))
  np.testing.assert_array_equal(dist >= 0,
                                analysis.dependency_pattern(layer, _x(8)))


def test_gru_and_dilated_conv_connect_the_jacobians_pairs():
  gru = jattn.init_rnn_layer(KEY, 4, cell="gru")
  conv = jattn.init_conv_layer(KEY, 4, 3)
  for layer in (lambda x: jattn.rnn_layer(gru, x, reverse=True),
                lambda x: jattn.conv_layer(conv, x, causal=True, dilation=2)):
    np.testing.assert_array_equal(
        analysis.jaxpr_distances(layer, _x(9)) >= 0,
        analysis.dependency_pattern(layer, _x(9)))


def test_known_masks_and_indices_select_what_is_read():
  n = 6
  masked = lambda x: jnp.where(jnp.arange(n)[:, None] < 3, x, 0.0)
  np.testing.assert_array_equal(
      analysis.jaxpr_distances(masked, _x(n)),
      np.where(np.eye(n, dtype=bool) & (np.arange(n) < 3)[:, None], 1, -1))
  perm = np.array([3, 1, 0, 5, 4, 2])
  dist = analysis.jaxpr_distances(lambda x: x[jnp.asarray(perm)], _x(n))
  np.testing.assert_array_equal(dist >= 0, np.eye(n, dtype=bool)[perm])


def test_path_is_at_most_the_critical_path():
  n = 16
  for fn in (_scan(n), _associative(n)):
    assert (analysis.jaxpr_path_length(fn, _x(n))
            <= analysis.critical_path_length(fn, _x(n)))


def test_errors():
  with pytest.raises(TypeError, match="x: expected a floating-point"):
    analysis.jaxpr_distances(lambda x: x, jnp.ones((4, 2), jnp.int32))
  with pytest.raises(ValueError, match="axis: expected"):
    analysis.jaxpr_distances(lambda x: x, _x(4), axis=2)
  with pytest.raises(ValueError, match="fn: expected one output"):
    analysis.jaxpr_distances(lambda x: (x, x), _x(4))
  data_dependent = lambda x: jax.lax.while_loop(
      lambda h: h.sum() < 10.0, lambda h: h + 1.0, x)
  with pytest.raises(ValueError, match="fn: expected while-loop conditions"):
    analysis.jaxpr_distances(data_dependent, _x(4))
