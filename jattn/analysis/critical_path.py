"""Sequential operations: the critical path of a computation's jaxpr.

Every primitive is one step that can start once all its inputs are ready;
operations on whole arrays (a matmul, a softmax over a row) are one step each
however large, because their elements are computed in parallel. The critical
path is the longest chain of dependent steps from any input to any output.
Pure data-layout primitives (reshape, transpose, broadcast, dtype casts) cost
nothing. A `scan` is unrolled: its carries flow through the body once per
trip, so a recurrence of length n contributes n times its body's depth.
"""

from __future__ import annotations

import jax

from jattn.analysis import _jaxpr

# Primitives that only move or relabel data: zero depth.
LAYOUT_PRIMITIVES = frozenset({
    "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose",
    "convert_element_type", "copy", "copy_p", "stop_gradient",
    "device_put", "optimization_barrier",
})


def _depths(jaxpr, in_depths):
  """Depth of each output of `jaxpr` given the depths of its inputs."""
  jaxpr = _jaxpr.open_jaxpr(jaxpr)
  depth = {}
  for var, d in zip(jaxpr.invars, in_depths):
    depth[var] = d
  for var in jaxpr.constvars:
    depth[var] = 0

  def read(atom):
    return 0 if _jaxpr.is_literal(atom) else depth.get(atom, 0)

  for eqn in jaxpr.eqns:
    ins = [read(a) for a in eqn.invars]
    name = eqn.primitive.name
    if name == "scan":
      outs = _scan_depths(eqn, ins)
    elif name == "cond":
      # Input 0 is the branch index; every branch takes the rest.
      branch_outs = [_depths(b, ins[1:]) for b in eqn.params["branches"]]
      outs = [max(ds) + 0 for ds in zip(*branch_outs)]
      outs = [max(o, ins[0] + 1) for o in outs]
    elif name == "while":
      outs = _while_depths(eqn, ins)
    elif _jaxpr.call_body(eqn) is not None:
      outs = _depths(_jaxpr.call_body(eqn), ins)
    else:
      step = 0 if name in LAYOUT_PRIMITIVES else 1
      outs = [max(ins, default=0) + step] * len(eqn.outvars)
    for var, d in zip(eqn.outvars, outs):
      depth[var] = d
  return [read(v) for v in jaxpr.outvars]


def _scan_depths(eqn, ins):
  params = eqn.params
  num_consts, num_carry = params["num_consts"], params["num_carry"]
  consts = ins[:num_consts]
  carry = ins[num_consts:num_consts + num_carry]
  xs = ins[num_consts + num_carry:]
  num_ys = len(eqn.outvars) - num_carry
  ys = [0] * num_ys
  for _ in range(params["length"]):
    outs = _depths(params["jaxpr"], consts + carry + xs)
    carry = outs[:num_carry]
    ys = [max(a, b) for a, b in zip(ys, outs[num_carry:])]
  return carry + ys


def _while_depths(eqn, ins):
  """A while loop's trip count is unknown when traced: count the body once."""
  params = eqn.params
  n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
  body_consts = ins[n_cond:n_cond + n_body]
  carry = ins[n_cond + n_body:]
  outs = _depths(params["body_jaxpr"], body_consts + carry)
  return [max(a, b) + 1 for a, b in zip(outs, carry)]


def critical_path_length(fn, *args) -> int:
  """Length of the longest chain of dependent operations in `fn(*args)`.

  Args:
    fn: a JAX-traceable function.
    *args: example arguments (arrays or ShapeDtypeStructs).

  Returns:
    int: the number of non-layout primitives on the critical path, with scans
    unrolled (each trip adds its body's depth along the carry).
  """
  closed_jaxpr = jax.make_jaxpr(fn)(*args)
  num_in = len(closed_jaxpr.jaxpr.invars)
  return int(max(_depths(closed_jaxpr, [0] * num_in), default=0))
