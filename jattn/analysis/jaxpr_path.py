"""Maximum path length, measured on the jaxpr of the computation itself.

Definition. Trace y = fn(x) to its jaxpr and unroll it: every `scan` trip,
every `while` trip that runs and the `cond` branch taken become copies of
their bodies, and calls (jit, custom_jvp/vjp, remat) are inlined. The graph
has one node per element of every value and an edge from each element an
equation reads to each element it writes; an edge costs 1, or 0 when the
equation only relabels data (reshape, transpose, broadcast_in_dim, squeeze,
dtype casts: `critical_path.LAYOUT_PRIMITIVES`), so one matmul, one
softmax reduction or one slice is one step, as in `critical_path_length`.
For input position j (an index along `axis` of x) and output position i
(along `out_axis` of y), the distance

  dist[i, j] = the fewest steps on any chain from an element of x at
               position j to an element of y at position i

(-1 when no chain exists: y_i does not depend on x_j). The maximum path
length is the largest dist[i, j] over connected pairs. It is a shortest
chain, not the longest (that is the critical path, which bounds it from
above): output i depends on input j after dist[i, j] dependent operations,
however many more the rest of the program takes.

What an element "reads" is structural (`_depth_rules`): a `dot_general`
element reads every element of the contracted axes, a reduction every
element of its axes, a convolution its receptive field. Integer and boolean
values computed from constants (masks, loop counters, gather indices) are
evaluated, so a `select_n` with a known predicate reads only the case it
selects, a `gather` only the rows it picks, and while loops and conds run as
they would. Floating-point values are not computed, except which elements
are exactly zero whatever the input (a masked attention weight, a zero of a
constant matrix): those read nothing, and a matmul does not read the factor
they multiply, so causal layers connect the pairs their Jacobians connect.
Zeros that arise only numerically (exp of a large negative logit) are not
known, and reads stay structural where values decide (the maximum of a
`reduce_max`, a `sort`): the connected pairs are then a superset of the
Jacobian's non-zeros at any one input.

Cumulative reductions (`cumsum`, `cumprod`, `cummax`, `cummin`,
`cumlogsumexp`; `jnp.cumsum` is one such primitive) are by default expanded
into `lax.associative_scan` of the same combining function, a parallel
prefix of depth O(log n), which is how JAX differentiates them (JAX lowers
the primitive itself to one `reduce_window` over a window of n, which XLA
may rewrite; on GPU `cumsum` is a library scan). `expand_cumulative=False`
counts such a primitive as one step instead, like a sum over positions.

Exactness and cost. The distances are exact for the traced shapes: nothing
is sampled. Each value carries a float32 depth array of its shape + (n,), so
memory is (elements of the largest value) x n and time grows with the
unrolled length; n <= 64 (and 128 for a small attention layer) runs in
seconds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jattn.analysis import _depth_rules
from jattn.analysis import _jaxpr
from jattn.analysis import _known_values

_CALL_PARAMS = _jaxpr.CALL_PARAMS + ("call",)  # custom_vmap_call: "call"

_COMBINE = {"cumsum": jax.lax.add, "cumprod": jax.lax.mul,
            "cummax": jax.lax.max, "cummin": jax.lax.min,
            "cumlogsumexp": jnp.logaddexp}


@functools.lru_cache(maxsize=128)
def _prefix_scan_jaxpr(name, shape, dtype, axis, reverse):
  """The ClosedJaxpr of `lax.associative_scan` standing for a cumulative
  reduction primitive."""
  scan = functools.partial(jax.lax.associative_scan, _COMBINE[name],
                           axis=axis, reverse=reverse)
  return jax.make_jaxpr(scan)(jax.ShapeDtypeStruct(shape, dtype))


class _Walk:
  """Runs a jaxpr on (depth array, known value) pairs, loops unrolled."""

  def __init__(self, num_positions: int, expand_cumulative: bool):
    self.num_positions = num_positions
    self.expand_cumulative = expand_cumulative

  def run(self, jaxpr, depths, values):
    """(output depths, output values) of `jaxpr`; depth None = no input
    position reaches the value, value None = not known."""
    inner = _jaxpr.open_jaxpr(jaxpr)
    env = {var: (None, _known_values.of_constant(var, const)) for var, const
           in zip(inner.constvars, getattr(jaxpr, "consts", ()))}
    env.update((var, (d, v)) for var, d, v in
               zip(inner.invars, depths, values))

    def read(atom):
      if _jaxpr.is_literal(atom):
        return None, _known_values.of_constant(atom, np.asarray(atom.val))
      return env.get(atom, (None, None))

    for eqn in inner.eqns:
      pairs = [read(a) for a in eqn.invars]
      ds, vs = [d for d, _ in pairs], [v for _, v in pairs]
      out_ds, out_vs = self.equation(eqn, ds, vs)
      for var, d, v in zip(eqn.outvars, out_ds, out_vs):
        env[var] = (d, v)
    outs = [read(v) for v in inner.outvars]
    return [d for d, _ in outs], [v for _, v in outs]

  def equation(self, eqn, ds, vs):
    name = eqn.primitive.name
    if name == "scan":
      return self.scan(eqn, ds, vs)
    if name == "while":
      return self.while_loop(eqn, ds, vs)
    if name == "cond":
      return self.cond(eqn, ds, vs)
    body = _jaxpr.call_body(eqn, _CALL_PARAMS)
    if body is not None:
      return self.run(body, ds, vs)
    if name in _depth_rules.CUMULATIVE and self.expand_cumulative:
      aval = eqn.invars[0].aval
      expanded = _prefix_scan_jaxpr(name, tuple(aval.shape), aval.dtype,
                                    eqn.params["axis"], eqn.params["reverse"])
      return self.run(expanded, ds, vs)
    out_vs = _known_values.evaluate(eqn, vs)
    if all(d is None for d in ds):
      return [None] * len(eqn.outvars), out_vs
    rule = _depth_rules.RULES.get(name)
    if rule is None:
      raise ValueError(
          "fn: expected primitives with a dependency rule "
          f"(jattn.analysis._depth_rules.RULES), got {name} on a value that "
          "depends on the input")
    out_ds = rule(eqn, ds, vs)
    # An element known to be zero is a constant: it depends on nothing.
    for k, v in enumerate(out_vs):
      if isinstance(v, _known_values.Zeros) and out_ds[k] is not None:
        out_ds[k] = np.where(v.mask[..., None], _depth_rules.INF, out_ds[k])
    return out_ds, out_vs

  def scan(self, eqn, ds, vs):
    p = eqn.params
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    c_ds, k_ds, x_ds = ds[:nc], ds[nc:nc + nk], ds[nc + nk:]
    c_vs, k_vs, x_vs = vs[:nc], vs[nc:nc + nk], vs[nc + nk:]
    ys = []
    for t in range(length):
      i = length - 1 - t if p["reverse"] else t
      x_d = [None if d is None else d[i] for d in x_ds]
      x_v = [_known_values.take(v, i) for v in x_vs]
      out_ds, out_vs = self.run(p["jaxpr"], c_ds + k_ds + x_d,
                                c_vs + k_vs + x_v)
      k_ds, k_vs = out_ds[:nk], out_vs[:nk]
      ys.append((out_ds[nk:], out_vs[nk:]))
    if p["reverse"]:
      ys = ys[::-1]
    y_vars = eqn.outvars[nk:]
    y_ds, y_vs = [], []
    for col, var in enumerate(y_vars):
      column_d = [y[0][col] for y in ys]
      column_v = [y[1][col] for y in ys]
      if all(d is None for d in column_d):
        y_ds.append(None)
      else:
        step_shape = _depth_rules.shape_of(var)[1:]
        y_ds.append(np.stack([_depth_rules.dense(d, step_shape,
                                                 self.num_positions)
                              for d in column_d]))
      y_vs.append(_known_values.stack(column_v,
                                      _depth_rules.shape_of(var)[1:]))
    return k_ds + y_ds, k_vs + y_vs

  def while_loop(self, eqn, ds, vs):
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    c_ds, b_ds, k_ds = ds[:nc], ds[nc:nc + nb], ds[nc + nb:]
    c_vs, b_vs, k_vs = vs[:nc], vs[nc:nc + nb], vs[nc + nb:]
    while True:
      _, (pred,) = self.run(p["cond_jaxpr"], c_ds + k_ds, c_vs + k_vs)
      pred = _known_values.whole(pred)
      if pred is None:
        if all(d is None for d in ds):  # touches no input: skip it
          return [None] * len(eqn.outvars), [None] * len(eqn.outvars)
        raise ValueError(
            "fn: expected while-loop conditions computed from integer "
            "constants, got one that depends on floating-point values")
      if not bool(pred):
        return k_ds, k_vs
      k_ds, k_vs = self.run(p["body_jaxpr"], b_ds + k_ds, b_vs + k_vs)

  def cond(self, eqn, ds, vs):
    branches = eqn.params["branches"]
    if _known_values.whole(vs[0]) is None:
      if all(d is None for d in ds):
        return [None] * len(eqn.outvars), [None] * len(eqn.outvars)
      raise ValueError(
          "fn: expected cond branch indices computed from integer constants, "
          "got one that depends on floating-point values")
    index = min(max(int(vs[0]), 0), len(branches) - 1)  # as lax.switch
    return self.run(branches[index], ds[1:], vs[1:])


def jaxpr_distances(fn, x, *, axis: int = 0, out_axis: int = 0,
                    expand_cumulative: bool = True) -> np.ndarray:
  """Fewest counted primitives from input position j to output position i.

  Args:
    fn: a JAX-traceable function of one array returning one array (bind
      parameters by closure).
    x: the input, e.g. (N, D) tokens; only its shape and dtype matter, a
      floating-point dtype.
    axis: the sequence axis of x (positions j).
    out_axis: the sequence axis of fn(x) (positions i).
    expand_cumulative: run cumulative reductions as `lax.associative_scan`
      (default) rather than as one step.

  Returns:
    int64 (N_out, N): dist[i, j] as defined in the module docstring, -1 where
    output i does not depend on input j.

  Raises:
    ValueError: a primitive without a dependency rule touches the input, or
      a loop condition, branch index or gather index depends on it.
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x: expected a floating-point dtype, got {x.dtype}")
  if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
    raise ValueError(f"axis: expected an int in [-{x.ndim}, {x.ndim}), got "
                     f"{axis!r}")
  axis %= x.ndim
  closed = jax.make_jaxpr(fn)(x)
  out_avals = closed.out_avals
  if len(out_avals) != 1:
    raise ValueError(f"fn: expected one output array, got {len(out_avals)}")
  rank = len(out_avals[0].shape)
  if not isinstance(out_axis, int) or not -rank <= out_axis < rank:
    raise ValueError(f"out_axis: expected an int in [-{rank}, {rank}) for an "
                     f"output of shape {out_avals[0].shape}, got {out_axis!r}")
  out_axis %= rank
  n = x.shape[axis]
  start_NN = np.where(np.eye(n, dtype=bool), np.float32(0), _depth_rules.INF)
  placed = [1] * x.ndim + [n]
  placed[axis] = n
  start = np.array(np.broadcast_to(start_NN.reshape(placed), x.shape + (n,)))
  walk = _Walk(n, expand_cumulative)
  (depth,), _ = walk.run(closed, [start], [None])
  n_out = out_avals[0].shape[out_axis]
  if depth is None:
    return np.full((n_out, n), -1, np.int64)
  others = tuple(a for a in range(rank) if a != out_axis)
  dist = depth.min(axis=others) if others else depth
  return np.where(np.isinf(dist), -1, dist).astype(np.int64)


def jaxpr_path_length(fn, x, **kwargs) -> int:
  """The largest `jaxpr_distances(fn, x, **kwargs)` over connected pairs
  (-1 if no output depends on any input)."""
  dist = jaxpr_distances(fn, x, **kwargs)
  return int(dist.max()) if (dist >= 0).any() else -1
