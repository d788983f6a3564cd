"""FLOPs and critical path of one call as it executes, loops included.

XLA's cost analysis (`compiled_cost`) counts the body of every loop once and
a conditional as its most expensive branch; `xla_flops` corrects `scan`s,
whose trip counts are static. A `while` loop (the tile loops of jattn's
blockwise and local attention) makes a number of trips known only when it
runs. `executed_cost(fn, *args)` walks the jaxpr of `fn(*args)` equation by
equation on the concrete `args`, following every loop and branch as it runs:

* Only equations with integer or boolean outputs are evaluated, once all
  their inputs are known (arguments, constants, earlier such values): index
  arithmetic decides every trip count and branch in jattn's layers. No
  floating-point result is computed.
* FLOPs: XLA's count of the whole program, plus, for each body that ran more
  or less often than XLA assumed, XLA's count of that body compiled on its
  own (`jaxpr_cost`): (trips - 1) x the body of a `scan` or `while`, trips x
  the condition of a `while` (it runs trips + 1 times), and for a `cond` the
  branch taken instead of the most expensive one. Nested loops are counted
  per trip of the loops around them.
* Critical path: as `critical_path_length`, every primitive that is not pure
  data layout is one step after the latest of its inputs, but along the
  iterations that ran: a `scan` or `while` adds its body's chain per trip; a
  `while` trip's carries are ready one step after the condition that
  admitted it or when the body's chain ends, whichever is later (a `cond`'s
  outputs likewise after its index).

Units: "flops" and "xla_flops" are operation counts of one call in XLA's
convention (a multiply-add is 2, an elementwise operation 1 per element,
transcendentals such as exp are counted apart and not included);
"critical_path" is a number of steps. For a program without `while` or
`cond`, flops == xla_flops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jattn.analysis import _jaxpr
from jattn.analysis import _known_values
from jattn.analysis.critical_path import LAYOUT_PRIMITIVES
from jattn.analysis.xla_cost import compiled_cost
from jattn.analysis.xla_cost import jaxpr_cost
from jattn.analysis.xla_cost import xla_flops

# custom_vmap_call (jattn's batching rules) keeps its body in "call".
_CALL_PARAMS = _jaxpr.CALL_PARAMS + ("call",)


class _Run:
  """Evaluates jaxprs on partly known values, adding up what XLA's count of
  the whole program misses (`extra`) and the depth of every value."""

  def __init__(self, count_flops: bool):
    self.count_flops = count_flops

  def body_flops(self, closed_jaxpr) -> float:
    return jaxpr_cost(closed_jaxpr)["flops"] if self.count_flops else 0.0

  def run(self, jaxpr, args, depths):
    """(output values, output depths, extra FLOPs) of `jaxpr` on `args`
    (None where unknown) whose values are ready at step `depths`."""
    inner = _jaxpr.open_jaxpr(jaxpr)
    env = {var: (value, 0) for var, value in
           zip(inner.constvars, getattr(jaxpr, "consts", ()))}
    env.update((var, (value, depth)) for var, value, depth in
               zip(inner.invars, args, depths))

    def read(atom):
      return (atom.val, 0) if _jaxpr.is_literal(atom) else env[atom]

    extra = 0.0
    for eqn in inner.eqns:
      ins = [read(a) for a in eqn.invars]
      vals, ds = [v for v, _ in ins], [d for _, d in ins]
      name = eqn.primitive.name
      body = _jaxpr.call_body(eqn, _CALL_PARAMS)
      if name == "scan":
        outs, out_ds, more = self._scan(eqn, vals, ds)
      elif name == "while":
        outs, out_ds, more = self._while(eqn, vals, ds)
      elif name == "cond":
        outs, out_ds, more = self._cond(eqn, vals, ds)
      elif body is not None:
        outs, out_ds, more = self.run(body, vals, ds)
      else:
        outs, out_ds, more = self._primitive(eqn, vals, ds)
      extra += more
      for var, value, depth in zip(eqn.outvars, outs, out_ds):
        env[var] = (value, depth)
    outs = [read(v) for v in inner.outvars]
    return [v for v, _ in outs], [d for _, d in outs], extra

  def _primitive(self, eqn, vals, ds):
    if (all(v is not None for v in vals)
        and all(_known_values.is_index(v) for v in eqn.outvars)):
      result = eqn.primitive.bind(*vals, **eqn.params)
      outs = list(result) if eqn.primitive.multiple_results else [result]
    else:
      outs = [None] * len(eqn.outvars)
    step = 0 if eqn.primitive.name in LAYOUT_PRIMITIVES else 1
    return outs, [max(ds, default=0) + step] * len(outs), 0.0

  def _scan(self, eqn, vals, ds):
    p = eqn.params
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = vals[:nc], vals[nc:nc + nk], vals[nc + nk:]
    c_ds, k_ds, x_ds = ds[:nc], ds[nc:nc + nk], ds[nc + nk:]
    ys, y_ds = [], [0] * (len(eqn.outvars) - nk)
    extra = (length - 1) * self.body_flops(p["jaxpr"])
    for t in range(length):
      i = length - 1 - t if p["reverse"] else t
      x_t = [None if x is None else x[i] for x in xs]
      outs, out_ds, more = self.run(p["jaxpr"], consts + carry + x_t,
                                    c_ds + k_ds + x_ds)
      extra += more
      carry, k_ds = outs[:nk], out_ds[:nk]
      ys.append(outs[nk:])
      y_ds = [max(a, b) for a, b in zip(y_ds, out_ds[nk:])]
    if p["reverse"]:
      ys = ys[::-1]
    stacked = [None if any(v is None for v in column) else jnp.stack(column)
               for column in zip(*ys)] if ys else [None] * len(y_ds)
    return carry + stacked, k_ds + y_ds, extra

  def _while(self, eqn, vals, ds):
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    c_consts, b_consts, carry = vals[:nc], vals[nc:nc + nb], vals[nc + nb:]
    c_ds, b_ds, k_ds = ds[:nc], ds[nc:nc + nb], ds[nc + nb:]
    trips, extra = 0, 0.0
    while True:
      (pred,), (pred_d,), more = self.run(p["cond_jaxpr"], c_consts + carry,
                                          c_ds + k_ds)
      extra += more
      if pred is None:
        raise ValueError(
            "fn: expected while-loop conditions computed from integer or "
            "boolean values, got one that depends on floating-point values")
      if not bool(pred):
        break
      carry, out_ds, more = self.run(p["body_jaxpr"], b_consts + carry,
                                     b_ds + k_ds)
      extra += more
      k_ds = [max(d, pred_d + 1) for d in out_ds]
      trips += 1
    # XLA counted the body and the condition once each.
    extra += ((trips - 1) * self.body_flops(p["body_jaxpr"])
              + trips * self.body_flops(p["cond_jaxpr"]))
    return carry, k_ds, extra

  def _cond(self, eqn, vals, ds):
    branches = eqn.params["branches"]
    if vals[0] is None:
      raise ValueError(
          "fn: expected cond branch indices computed from integer or boolean "
          "values, got one that depends on floating-point values")
    index = min(max(int(vals[0]), 0), len(branches) - 1)  # as lax.switch
    outs, out_ds, extra = self.run(branches[index], vals[1:], ds[1:])
    # XLA charged the most expensive branch; this one ran.
    extra += (self.body_flops(branches[index])
              - max(self.body_flops(b) for b in branches))
    return outs, [max(d, ds[0] + 1) for d in out_ds], extra


def executed_cost(fn, *args, flops: bool = True) -> dict:
  """FLOPs and critical path of `fn(*args)` as it runs on these `args`.

  Args:
    fn: a JAX-traceable function.
    *args: concrete arguments (arrays, pytrees of arrays): the integer and
      boolean values computed from them decide the trip counts and branches.
    flops: False counts only the critical path (nothing is compiled).

  Returns:
    {"critical_path": int steps, and with `flops`: "flops": float executed
    FLOPs, "xla_flops": float `xla_flops(fn, *args)` (loop bodies other than
    scans counted once)}.

  Raises:
    ValueError: a while-loop condition or a cond index depends on
      floating-point values.
  """
  closed_jaxpr = jax.make_jaxpr(fn)(*args)
  counter = _Run(count_flops=flops)
  flat = jax.tree.leaves(args)
  _, out_ds, extra = counter.run(closed_jaxpr, flat, [0] * len(flat))
  result = {"critical_path": int(max(out_ds, default=0))}
  if flops:
    result.update(flops=compiled_cost(fn, *args)["flops"] + extra,
                  xla_flops=xla_flops(fn, *args))
  return result
