"""FLOPs of a function from XLA's compiled cost analysis.

XLA's HloCostAnalysis counts the body of a loop once, whatever its trip
count. `xla_flops` corrects for that: for every `scan` in the traced program it
compiles the scan body on its own and adds (trip count - 1) times its FLOPs
(recursively, so nested scans -- a scan over layers of scans over time --
are counted in full).
"""

from __future__ import annotations

import functools

import jax

from jattn.analysis import _jaxpr


def _cost_dict(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # jax < 0.4.36 returns one per device
    cost = cost[0] if cost else {}
  return dict(cost or {})


def compiled_cost(fn, *args) -> dict:
  """XLA's cost analysis of `jax.jit(fn)(*args)` (loop bodies counted once).

  Returns:
    dict with at least "flops" and "transcendentals" (0.0 when absent).
  """
  cost = _cost_dict(jax.jit(fn).lower(*args).compile())
  return {"flops": float(cost.get("flops", 0.0)),
          "transcendentals": float(cost.get("transcendentals", 0.0)),
          "bytes accessed": float(cost.get("bytes accessed", 0.0))}


@functools.lru_cache(maxsize=None)
def _body_cost(body_key):
  closed_jaxpr = body_key.closed_jaxpr
  fn = _jaxpr.as_function(closed_jaxpr)
  return compiled_cost(lambda *a: fn(*a), *_jaxpr.input_structs(closed_jaxpr))


class _Key:
  """Hashes a ClosedJaxpr by identity, for the body-cost cache."""

  def __init__(self, closed_jaxpr):
    self.closed_jaxpr = closed_jaxpr

  def __hash__(self):
    return id(self.closed_jaxpr)

  def __eq__(self, other):
    return self.closed_jaxpr is other.closed_jaxpr


def jaxpr_cost(closed_jaxpr) -> dict:
  """`compiled_cost` of a ClosedJaxpr (a loop body, a branch) compiled on its
  own, cached by identity (the cache keeps the jaxpr alive)."""
  return _body_cost(_Key(closed_jaxpr))


def _missing_loop_cost(jaxpr, field: str) -> float:
  """What XLA's count misses in `jaxpr`: (trip - 1) x each scan body."""
  extra = 0.0
  for eqn in _jaxpr.open_jaxpr(jaxpr).eqns:
    if eqn.primitive.name == "scan":
      body = eqn.params["jaxpr"]
      length = eqn.params["length"]
      once = jaxpr_cost(body)[field]
      inner = _missing_loop_cost(body, field)
      extra += (length - 1) * once + length * inner
    else:
      sub = _jaxpr.call_body(eqn)
      if sub is not None:
        extra += _missing_loop_cost(sub, field)
  return extra


def xla_flops(fn, *args, field: str = "flops") -> float:
  """FLOPs XLA counts for `fn(*args)`, with every scan body times its trips.

  Args:
    fn: a JAX-traceable function.
    *args: example arguments (arrays or ShapeDtypeStructs).
    field: "flops" (adds, multiplies, compares, ...) or "transcendentals"
      (exp, tanh, ...), as XLA separates them.

  Returns:
    float, the operation count of one call.
  """
  total = compiled_cost(fn, *args)[field]
  closed_jaxpr = jax.make_jaxpr(fn)(*args)
  return total + _missing_loop_cost(closed_jaxpr, field)
