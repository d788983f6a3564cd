"""Sequential operations of one linear recurrence: lax.scan against
lax.associative_scan (`analysis.linear_recurrence_*`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jattn import analysis

NS = (16, 64, 256)


def _args(n, d=4):
  a = jax.random.uniform(jax.random.key(0), (n, d), jnp.float32)
  x = jax.random.normal(jax.random.key(1), (n, d), jnp.float32)
  return a, x


def test_both_compute_the_same_recurrence():
  a, x = _args(37)
  h = np.zeros(4, np.float32)
  expected = []
  for a_t, x_t in zip(np.asarray(a), np.asarray(x)):
    h = a_t * h + x_t
    expected.append(h)
  for fn in (analysis.linear_recurrence_scan,
             analysis.linear_recurrence_associative):
    np.testing.assert_allclose(fn(a, x), np.stack(expected), rtol=1e-5,
                               atol=1e-5)


def test_critical_path_linear_for_scan_logarithmic_for_associative_scan():
  scan = [analysis.critical_path_length(analysis.linear_recurrence_scan,
                                        *_args(n)) for n in NS]
  associative = [analysis.critical_path_length(
      analysis.linear_recurrence_associative, *_args(n)) for n in NS]
  assert scan == [2 * n for n in NS]  # a multiply and an add per step
  rises = np.diff(associative)  # n grows 4x each time: 2 levels of the tree
  assert rises[0] == rises[1] > 0, associative
  assert associative[-1] < scan[-1] / 5, associative


def test_shape_errors():
  with pytest.raises(ValueError, match="a_ND: expected shape"):
    analysis.linear_recurrence_scan(jnp.ones((3, 2)), jnp.ones((3, 4)))
  with pytest.raises(ValueError, match="x_ND: expected rank"):
    analysis.linear_recurrence_associative(jnp.ones(()), jnp.ones(()))
