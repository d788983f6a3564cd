"""The measuring instruments of jattn.analysis on the real layers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn import analysis

KEY = jax.random.key(0)


def _x(n, d, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, d), jnp.float32)


def test_xla_flops_counts_every_scan_trip():
  w = jnp.ones((8, 8), jnp.float32) * 0.1

  def looped(h, xs):
    return jax.lax.scan(lambda h, x: (jnp.tanh(h @ w + x),) * 2, h, xs)[0]

  def unrolled(h, xs):
    for t in range(xs.shape[0]):
      h = jnp.tanh(h @ w + xs[t])
    return h

  args = (jnp.ones((8,), jnp.float32), jnp.ones((12, 8), jnp.float32))
  once = analysis.compiled_cost(looped, *args)["flops"]
  corrected = analysis.xla_flops(looped, *args)
  expected = analysis.compiled_cost(unrolled, *args)["flops"]
  assert once < expected / 5          # XLA alone counts the body once
  assert abs(corrected / expected - 1) < 0.02


@pytest.mark.slow  # six layers compiled and costed: 14 s
@pytest.mark.parametrize("n,d", [(24, 40)])
def test_closed_form_flops_match_xla(n, d):
  x = _x(n, d)
  cases = [
      (jattn.self_attention, jattn.init_self_attention(KEY, d, 4),
       analysis.attention_flops(n, d, 4)),
      (jattn.conv_layer, jattn.init_conv_layer(KEY, d, 3),
       analysis.conv_flops(n, d, 3)),
      (lambda p, x: jattn.conv_layer(p, x, causal=True, dilation=2),
       jattn.init_conv_layer(KEY, d, 5),
       analysis.conv_flops(n, d, 5, causal=True, dilation=2)),
  ] + [(jattn.rnn_layer, jattn.init_rnn_layer(KEY, d, cell=cell),
        analysis.rnn_flops(n, d, cell)) for cell in ("elman", "gru", "lstm")]
  for fn, params, closed in cases:
    measured = analysis.xla_flops(fn, params, x)
    assert abs(measured / closed - 1) < 0.10, (fn, measured, closed)


def test_critical_path_grows_with_n_only_for_the_rnn():
  d = 8
  layers = {
      "attention": (jattn.self_attention, jattn.init_self_attention(KEY, d, 2)),
      "cnn": (jattn.conv_layer, jattn.init_conv_layer(KEY, d, 3)),
      "rnn": (jattn.rnn_layer, jattn.init_rnn_layer(KEY, d, cell="elman")),
  }
  depth = {name: [analysis.critical_path_length(fn, p, _x(n, d))
                  for n in (16, 32)] for name, (fn, p) in layers.items()}
  assert depth["attention"][0] == depth["attention"][1]
  assert depth["cnn"][0] == depth["cnn"][1]
  ratio = depth["rnn"][1] / depth["rnn"][0]
  assert 1.9 < ratio < 2.1, depth["rnn"]


def test_one_attention_layer_connects_every_pair_in_one_hop():
  params = jattn.init_self_attention(KEY, 8, 2)
  pattern = analysis.dependency_pattern(
      lambda x: jattn.self_attention(params, x), _x(10, 8))
  assert pattern.all()
  assert (analysis.hops(pattern) == 1).all()
  causal = analysis.dependency_pattern(
      lambda x: jattn.self_attention(params, x, is_causal=True), _x(10, 8))
  np.testing.assert_array_equal(causal, np.tril(np.ones((10, 10), bool)))
  assert analysis.max_path_length(causal) == 1


@pytest.mark.parametrize("n,k", [(16, 3), (17, 5), (20, 4)])
def test_conv_stack_path_length(n, k):
  params = jattn.init_conv_layer(KEY, 4, k)
  symmetric = analysis.dependency_pattern(
      lambda x: jattn.conv_layer(params, x), _x(n, 4))
  causal = analysis.dependency_pattern(
      lambda x: jattn.conv_layer(params, x, causal=True), _x(n, 4))
  if k % 2:  # even kernels reach one token further on one side
    assert analysis.max_path_length(symmetric) == math.ceil(2 * (n - 1) / (k - 1))
  assert analysis.max_path_length(causal) == math.ceil((n - 1) / (k - 1))


def test_hops_agree_with_the_jacobian_of_a_real_stack():
  n, k = 12, 3
  params = [jattn.init_conv_layer(jax.random.key(i), 4, k) for i in range(3)]
  dilations = [1, 3, 9]
  patterns = [analysis.dependency_pattern(
      lambda x, p=p, r=r: jattn.conv_layer(p, x, causal=True, dilation=r),
      _x(n, 4)) for p, r in zip(params, dilations)]
  counts = analysis.hops(patterns, max_layers=3)

  def stack(x, depth):
    for p, r in zip(params[:depth], dilations[:depth]):
      x = jattn.conv_layer(p, x, causal=True, dilation=r)
    return x

  for depth in (1, 2, 3):
    reach = analysis.dependency_pattern(lambda x: stack(x, depth), _x(n, 4))
    np.testing.assert_array_equal(reach, (counts >= 0) & (counts <= depth))
  # A dilated stack with dilations 1, k, k^2 covers k^3 > n tokens.
  assert (counts[np.tril_indices(n)] > 0).all()


def test_rnn_path_length_is_n_minus_1_steps():
  n = 9
  for reverse in (False, True):
    params = jattn.init_rnn_layer(KEY, 4, cell="gru")
    layer = lambda x: jattn.rnn_layer(params, x, reverse=reverse)
    pair = analysis.dependency_pattern(layer, _x(2, 4))
    steps = analysis.recurrence_steps(analysis.recurrence_step_graph(pair, n))
    full = analysis.dependency_pattern(layer, _x(n, 4))
    np.testing.assert_array_equal(steps >= 0, full)  # same connected pairs
    assert steps.max() == n - 1
    i, j = (n - 1, 0) if not reverse else (0, n - 1)
    assert steps[i, j] == n - 1


def test_growth_exponent():
  n = np.array([16, 32, 64, 128])
  assert abs(analysis.growth_exponent(n, 3 * n ** 2.0) - 2.0) < 1e-12
  assert abs(analysis.growth_exponent(n, 5 + 0 * n) - 0.0) < 1e-12
  assert math.isnan(analysis.growth_exponent([4], [2]))


def test_time_layer_reports_positive_seconds():
  params = jattn.init_conv_layer(KEY, 4, 3)
  times = analysis.time_layer(jattn.conv_layer, params, _x(8, 4), repeats=2,
                              min_seconds=0.001)
  assert times["forward"] > 0 and times["forward_backward"] > 0
  for name in ("forward", "forward_backward"):
    assert times[name + "_min"] <= times[name] <= times[name + "_max"]
