"""jattn.analysis.executed_cost against counts worked out by hand.

XLA's convention: a matrix product (M, K) @ (K, N) is 2 M K N FLOPs, an
elementwise operation (add, multiply, compare) 1 per element. The loops run
h_1D <- h_1D @ w_DD, 2 D^2 = 32 FLOPs and one step of critical path a trip.
"""

import jax.numpy as jnp
import pytest
from jax import lax

from jattn import analysis

D = 4
MATMUL_FLOPS = 2 * 1 * D * D  # (1, D) @ (D, D)


def _h_1D():
  return jnp.ones((1, D), jnp.float32)


def _w_DD():
  return jnp.full((D, D), 0.5, jnp.float32)


def _while(h_1D, w_DD, n):
  """n trips of (i + 1, h @ w) while i < n."""
  def body(carry):
    i, h = carry
    return i + 1, h @ w_DD
  return lax.while_loop(lambda carry: carry[0] < n, body,
                        (jnp.int32(0), h_1D))[1]


def test_matmul_is_2mkn_flops_in_one_step():
  a_MK = jnp.ones((3, 4), jnp.float32)
  b_KN = jnp.ones((4, 5), jnp.float32)
  cost = analysis.executed_cost(lambda a, b: a @ b, a_MK, b_KN)
  assert cost == {"flops": 2 * 3 * 4 * 5, "xla_flops": 2 * 3 * 4 * 5,
                  "critical_path": 1}


def test_scan_counts_every_trip():
  def scan(h_1D, w_DD, length):
    return lax.scan(lambda h, _: (h @ w_DD, None), h_1D, None,
                    length=length)[0]

  by_length = {t: analysis.executed_cost(
      lambda h, w, t=t: scan(h, w, t), _h_1D(), _w_DD()) for t in (3, 7)}
  for t, cost in by_length.items():
    assert cost["critical_path"] == t
    assert cost["flops"] == cost["xla_flops"]  # xla_flops corrects scans
    # t products, and the loop counter's add and compare XLA counts once.
    assert t * MATMUL_FLOPS <= cost["flops"] <= t * MATMUL_FLOPS + 2
  assert by_length[7]["flops"] - by_length[3]["flops"] == 4 * MATMUL_FLOPS


def test_fori_loop_with_static_bounds_counts_every_trip():
  def fori(h_1D, w_DD, upper):
    return lax.fori_loop(0, upper, lambda i, h: h @ w_DD, h_1D)

  by_trips = {t: analysis.executed_cost(
      lambda h, w, t=t: fori(h, w, t), _h_1D(), _w_DD()) for t in (2, 6)}
  assert [c["critical_path"] for c in by_trips.values()] == [2, 6]
  # Each trip: the product and the index increment.
  assert (by_trips[6]["flops"] - by_trips[2]["flops"]
          == 4 * (MATMUL_FLOPS + 1))


@pytest.mark.parametrize("n", [0, 1, 5])
def test_while_loop_counts_the_trips_it_runs(n):
  cost = analysis.executed_cost(_while, _h_1D(), _w_DD(), jnp.int32(n))
  # n bodies (product + increment) and n + 1 conditions (one compare).
  assert cost["flops"] == n * (MATMUL_FLOPS + 1) + (n + 1) * 1
  # XLA's cost analysis (and so xla_flops) counts body and condition once.
  assert cost["xla_flops"] == (MATMUL_FLOPS + 1) + 1
  # Each trip waits for its condition, then runs the product.
  assert cost["critical_path"] == 2 * n


def test_loops_nested_in_a_scan_count_per_outer_trip():
  def nested(h_1D, w_DD, n):
    return lax.scan(lambda h, _: (_while(h, w_DD, n), None), h_1D, None,
                    length=3)[0]

  by_n = {n: analysis.executed_cost(nested, _h_1D(), _w_DD(), jnp.int32(n))
          for n in (2, 5)}
  # Three outer trips of three more inner trips (product, increment and
  # compare each).
  assert (by_n[5]["flops"] - by_n[2]["flops"]
          == 3 * 3 * (MATMUL_FLOPS + 1 + 1))
  for n, cost in by_n.items():
    # The first inner loop: 2 steps a trip (condition, product). The later
    # ones restart their counter from a constant, so their conditions are
    # ready ahead of h: 1 step (the product) a trip.
    assert cost["critical_path"] == 2 * n + 2 * n


def test_cond_counts_the_branch_taken():
  def cond(h_1D, w_DD, i):
    return lax.cond(i > 0, lambda h: h @ w_DD @ w_DD @ w_DD,
                    lambda h: h * 2.0, h_1D)

  cheap, costly = (analysis.executed_cost(cond, _h_1D(), _w_DD(),
                                          jnp.int32(i)) for i in (0, 1))
  assert costly["flops"] - cheap["flops"] == 3 * MATMUL_FLOPS - D
  # XLA charges the most expensive branch whichever runs.
  assert cheap["xla_flops"] == costly["xla_flops"] == costly["flops"]
  # The index (one compare), then one step after it or the branch's chain.
  assert cheap["critical_path"] == 2
  assert costly["critical_path"] == 3


def test_without_flops_only_the_critical_path():
  cost = analysis.executed_cost(_while, _h_1D(), _w_DD(), jnp.int32(4),
                                flops=False)
  assert cost == {"critical_path": 8}


def test_a_loop_decided_by_floating_point_values_raises():
  def doubling(h_1D):
    return lax.while_loop(lambda h: jnp.sum(h) < 100.0, lambda h: h * 2.0,
                          h_1D)

  with pytest.raises(ValueError, match="fn: expected while-loop conditions"):
    analysis.executed_cost(doubling, _h_1D())
