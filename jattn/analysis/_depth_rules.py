"""Dependency-depth rules of jaxpr primitives, for `jaxpr_path`.

A depth array of a value of shape S is a float32 array of shape S + (J,):
entry [e, j] is the fewest counted primitives on a chain from input position
j to element e of the value (`inf`: element e does not depend on position j).
None stands for an array of `inf` (a value that depends on no input
position). Every rule takes one equation, the depth arrays of its operands
and the operands' values where known (integer and boolean values computed
from constants, else None), and returns the depth arrays of its outputs:

  out[o, j] = step + min over the operand elements e that o reads of in[e, j]

with step 0 for pure data-layout primitives (`LAYOUT_PRIMITIVES`) and 1 for
every other primitive, as in `critical_path_length`. "Reads" is structural:
an element of a `dot_general` reads every element along the contracted axes
of both operands, a reduction every element along its axes, a convolution its
whole receptive field. Floating-point values are not computed, but
elements known to be exactly zero whatever the input (`_known_values.Zeros`:
a masked weight, a zero in a constant matrix) are constants that read
nothing, and a `dot_general` does not read the factor such a zero
multiplies. Where the values selecting elements are known (the predicate of
`select_n`, the indices of a `gather` or `dynamic_slice`), only the elements
selected are read.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jattn.analysis import _known_values
from jattn.analysis.critical_path import LAYOUT_PRIMITIVES

INF = np.float32(np.inf)

ELEMENTWISE = frozenset({
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2",
    "atanh", "bitcast_convert_type", "cbrt", "ceil", "clamp", "clz",
    "complex", "conj", "cos", "cosh", "digamma", "div", "eq", "erf", "erf_inv",
    "erfc", "exp", "exp2", "expm1", "floor", "ge", "gt", "igamma", "igammac",
    "imag", "integer_pow", "is_finite", "le", "lgamma", "log", "log1p",
    "logistic", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not",
    "or", "polygamma", "population_count", "pow", "real", "reduce_precision",
    "rem", "round", "rsqrt", "shift_left", "shift_right_arithmetic",
    "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square", "sub",
    "tan", "tanh", "xor", "zeta",
})

REDUCTIONS = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
    "reduce_or", "reduce_xor", "argmax", "argmin",
})

CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin",
                        "cumlogsumexp"})

# Primitives whose outputs are picked elements of their operands, computed
# by the primitive itself on the depth arrays (vmapped over the J axis). The
# tuple names the operands that carry data; the others are indices and must
# be known.
MOVEMENT = {"gather": (0,), "dynamic_slice": (0,),
            "dynamic_update_slice": (0, 1)}

# Linear primitives handled by their Jacobian's sparsity at all-ones operands
# (every entry is then a count of products of ones: non-zero exactly where an
# output reads an input).
SPARSE_LINEAR = frozenset({"conv_general_dilated"})

WINDOW_REDUCTIONS = frozenset({"reduce_window_sum", "reduce_window_max",
                               "reduce_window_min", "reduce_window"})


def step_of(name: str) -> int:
  """0 for pure data-layout primitives, 1 for the rest."""
  return 0 if name in LAYOUT_PRIMITIVES else 1


def shape_of(var) -> tuple[int, ...]:
  return tuple(var.aval.shape)


def full(shape, num_positions: int) -> np.ndarray:
  """The depth array of a value that depends on no input position."""
  return np.full(tuple(shape) + (num_positions,), INF, np.float32)


def dense(depth, shape, num_positions: int) -> np.ndarray:
  """`depth` with None replaced by `full`."""
  return full(shape, num_positions) if depth is None else depth


def _broadcast(depth, shape):
  return np.broadcast_to(depth, tuple(shape) + depth.shape[-1:])


def elementwise(eqn, depths, values):
  del values
  present = [d for d in depths if d is not None]
  if not present:
    return [None] * len(eqn.outvars)
  out = functools.reduce(np.minimum, present) + step_of(eqn.primitive.name)
  return [np.array(_broadcast(out, shape_of(v))) for v in eqn.outvars]


def identity(eqn, depths, values):
  """convert_element_type, copy, stop_gradient, optimization_barrier, ..."""
  del values
  return list(depths[:len(eqn.outvars)])


def select_n(eqn, depths, values):
  """select_n(which, *cases): where `which` is known, an element reads the
  case it selects; elsewhere every case (and `which`)."""
  which, which_depth, cases = values[0], depths[0], depths[1:]
  shape = shape_of(eqn.outvars[0])
  present = [d for d in depths if d is not None]
  if not present:
    return [None]
  data, known = _known_values.parts(which, shape)
  if not known.any():
    return elementwise(eqn, depths, values)
  j = present[0].shape[-1]
  if np.ndim(which) == 0 and not isinstance(which, _known_values.Partial):
    out = cases[int(which)]
    return [None if out is None else np.array(_broadcast(out, shape)) + 1]
  stacked = np.stack([_broadcast(dense(c, shape, j), shape) for c in cases])
  index = np.clip(data.astype(np.int64), 0, len(cases) - 1)
  picked = np.take_along_axis(stacked, index[None, ..., None], axis=0)[0]
  out = np.where(known[..., None], picked, stacked.min(axis=0))
  if which_depth is not None:  # inf wherever `which` is known
    out = np.minimum(out, _broadcast(which_depth, shape))
  return [out + 1]


def logic(eqn, depths, values):
  """and / or: an element that an operand known to be False (for `or`:
  True) decides reads nothing."""
  out, = elementwise(eqn, depths, values)
  decided = _known_values.deciding(eqn.primitive.name, values,
                                   shape_of(eqn.outvars[0]))
  if out is not None and decided.any():
    out = np.where(decided[..., None], INF, out)
  return [out]


def _arrange(x, contract, batch, free, before, after, tail):
  """Axes of a dot_general operand as (batch, [1] * before, free,
  [1] * after, contract) + `tail` trailing axes (the J axis of a depth)."""
  x = x.transpose(list(batch) + list(free) + list(contract)
                  + list(range(x.ndim - tail, x.ndim)))
  nb, nf = len(batch), len(free)
  shape = x.shape
  return x.reshape(shape[:nb] + (1,) * before + shape[nb:nb + nf]
                   + (1,) * after + shape[nb + nf:])


def dot_general(eqn, depths, values):
  """Element [batch, lhs free, rhs free] reads the contracted slices of both
  operands, except the elements whose partner in the product is a known
  zero."""
  (l_contract, r_contract), (l_batch, r_batch) = (
      eqn.params["dimension_numbers"])
  shapes = [shape_of(eqn.invars[0]), shape_of(eqn.invars[1])]
  frees = [[a for a in range(len(shape)) if a not in contract and a not in b]
           for shape, contract, b in zip(shapes, (l_contract, r_contract),
                                         (l_batch, r_batch))]
  layout_of = [(l_contract, l_batch, frees[0], 0, len(frees[1])),
               (r_contract, r_batch, frees[1], len(frees[0]), 0)]
  num_contract = len(l_contract)
  parts = []
  for k in (0, 1):
    if depths[k] is None:
      parts.append(None)
      continue
    part = _arrange(depths[k], *layout_of[k], tail=1)
    partner = _known_values.zeros(values[1 - k], shapes[1 - k])
    if partner.any():
      partner = _arrange(partner, *layout_of[1 - k], tail=0)
      part = np.where(partner[..., None], INF, part)
    axes = tuple(range(part.ndim - 1 - num_contract, part.ndim - 1))
    parts.append(part.min(axis=axes) if axes else part)
  return elementwise(eqn, parts, None)


def reduction(eqn, depths, values):
  del values
  if depths[0] is None:
    return [None] * len(eqn.outvars)
  out = depths[0].min(axis=tuple(eqn.params["axes"])) + 1
  return [out] * len(eqn.outvars)


def sort(eqn, depths, values):
  """Every output element reads the whole line along `dimension` of every
  operand."""
  del values
  present = [d for d in depths if d is not None]
  if not present:
    return [None] * len(eqn.outvars)
  dim = eqn.params["dimension"]
  line = functools.reduce(np.minimum,
                          [d.min(axis=dim, keepdims=True) for d in present])
  out = np.array(np.broadcast_to(line, present[0].shape)) + 1
  return [out] * len(eqn.outvars)


def cumulative(eqn, depths, values):
  """A cumulative reduction as one primitive: element i reads 0 .. i."""
  del values
  if depths[0] is None:
    return [None]
  axis, reverse = eqn.params["axis"], eqn.params["reverse"]
  d = np.flip(depths[0], axis) if reverse else depths[0]
  out = np.minimum.accumulate(d, axis=axis)
  return [(np.flip(out, axis) if reverse else out) + 1]


def layout(eqn, depths, values):
  """reshape, transpose, broadcast_in_dim, squeeze, expand_dims: relabel."""
  del values
  d = depths[0]
  if d is None:
    return [None]
  name, p = eqn.primitive.name, eqn.params
  out_shape = shape_of(eqn.outvars[0])
  if name == "reshape":
    if p.get("dimensions") is not None:
      raise ValueError("fn: expected reshape without `dimensions`, got "
                       f"dimensions={p['dimensions']}")
    return [d.reshape(out_shape + d.shape[-1:])]
  if name == "transpose":
    return [d.transpose(tuple(p["permutation"]) + (d.ndim - 1,))]
  if name == "broadcast_in_dim":
    placed = [1] * len(out_shape)
    for src, dst in enumerate(p["broadcast_dimensions"]):
      placed[dst] = d.shape[src]
    return [np.array(np.broadcast_to(d.reshape(tuple(placed) + d.shape[-1:]),
                                     out_shape + d.shape[-1:]))]
  if name in ("squeeze", "expand_dims"):
    return [d.reshape(out_shape + d.shape[-1:])]
  raise ValueError(f"fn: expected a layout primitive, got {name}")


def slice_(eqn, depths, values):
  del values
  d = depths[0]
  if d is None:
    return [None]
  p = eqn.params
  strides = p.get("strides") or (1,) * len(p["start_indices"])
  index = tuple(slice(s, e, k) for s, e, k in
                zip(p["start_indices"], p["limit_indices"], strides))
  return [d[index] + 1]


def concatenate(eqn, depths, values):
  del values
  if all(d is None for d in depths):
    return [None]
  j = next(d for d in depths if d is not None).shape[-1]
  parts = [dense(d, shape_of(v), j) for d, v in zip(depths, eqn.invars)]
  return [np.concatenate(parts, axis=eqn.params["dimension"]) + 1]


def split(eqn, depths, values):
  del values
  d = depths[0]
  if d is None:
    return [None] * len(eqn.outvars)
  edges = np.cumsum(eqn.params["sizes"])[:-1]
  return [part + 1 for part in np.split(d, edges, axis=eqn.params["axis"])]


def pad(eqn, depths, values):
  """pad(operand, padding_value): interior, then low and high padding
  (negative: cropping) along each axis; padding reads the padding value."""
  del values
  if all(d is None for d in depths):
    return [None]
  j = next(d for d in depths if d is not None).shape[-1]
  out = dense(depths[0], shape_of(eqn.invars[0]), j)
  fill = dense(depths[1], (), j)

  def block(like, axis, size):
    shape = list(like.shape)
    shape[axis] = size
    return np.array(np.broadcast_to(fill, shape))

  for axis, (low, high, interior) in enumerate(eqn.params["padding_config"]):
    size = out.shape[axis]
    if interior > 0 and size > 1:
      spread = block(out, axis, size + (size - 1) * interior)
      index = [slice(None)] * out.ndim
      index[axis] = slice(None, None, interior + 1)
      spread[tuple(index)] = out
      out = spread
    for amount, at_end in ((low, False), (high, True)):
      if amount > 0:
        pieces = [out, block(out, axis, amount)]
        out = np.concatenate(pieces[::-1] if not at_end else pieces, axis)
      elif amount < 0:
        index = [slice(None)] * out.ndim
        index[axis] = (slice(None, out.shape[axis] + amount) if at_end
                       else slice(-amount, None))
        out = out[tuple(index)]
  return [out + 1]


def rev(eqn, depths, values):
  del values
  d = depths[0]
  return [None if d is None else np.flip(d, eqn.params["dimensions"]) + 1]


def movement(eqn, depths, values):
  """Picks elements by running the primitive itself on the depth arrays,
  vmapped over their last (position) axis; padding and fill values that
  come from no operand read as `inf`."""
  data = MOVEMENT[eqn.primitive.name]
  present = [d for k, d in enumerate(depths) if k in data and d is not None]
  if not present:
    return [None] * len(eqn.outvars)
  j = present[0].shape[-1]
  args, axes = [], []
  for k, (var, d, v) in enumerate(zip(eqn.invars, depths, values)):
    if k in data:
      args.append(jnp.asarray(dense(d, shape_of(var), j)))
      axes.append(-1)
    elif v is None:
      raise ValueError(
          f"fn: expected the indices of {eqn.primitive.name} computed from "
          "integer constants, got indices that depend on floating-point "
          "values")
    else:
      args.append(v)
      axes.append(None)
  params = dict(eqn.params)
  if "fill_value" in params:
    params["fill_value"] = np.inf
  bind = lambda *a: eqn.primitive.bind(*a, **params)
  out = jax.vmap(bind, in_axes=tuple(axes), out_axes=-1)(*args)
  outs = out if eqn.primitive.multiple_results else [out]
  outs = [np.asarray(o, np.float32) for o in outs]
  return [np.where(np.isnan(o), INF, o) + 1 for o in outs]


def scatter(eqn, depths, values):
  """scatter / scatter-add / -mul / -min / -max (operand, indices,
  updates): an element reads its operand element (unless `scatter`
  overwrites it) and the updates that land on it."""
  operand, updates = depths[0], depths[2]
  if operand is None and updates is None:
    return [None]
  if values[1] is None:
    raise ValueError(
        f"fn: expected the indices of {eqn.primitive.name} computed from "
        "integer constants, got indices that depend on floating-point values")
  shape = shape_of(eqn.invars[0])
  j = (operand if operand is not None else updates).shape[-1]
  p = eqn.params
  kwargs = dict(dimension_numbers=p["dimension_numbers"],
                indices_are_sorted=p["indices_are_sorted"],
                unique_indices=p["unique_indices"], mode=p["mode"])

  def landing(base, upd):
    return jax.lax.scatter_min(base, values[1], upd, **kwargs)

  vmapped = jax.vmap(landing, in_axes=(-1, -1), out_axes=-1)
  upd = jnp.asarray(dense(updates, shape_of(eqn.invars[2]), j))
  landed = np.asarray(vmapped(jnp.full(shape + (j,), INF), upd))
  base = dense(operand, shape, j)
  if eqn.primitive.name == "scatter":
    hit = np.asarray(jax.vmap(landing, in_axes=(-1, -1), out_axes=-1)(
        jnp.ones(shape + (1,), jnp.float32),
        jnp.zeros(shape_of(eqn.invars[2]) + (1,), jnp.float32))) == 0
    base = np.where(hit, INF, base)
  return [np.minimum(base, landed) + 1]


def window_reduction(eqn, depths, values):
  """reduce_window*: an element reads its window (padding reads nothing)."""
  del values
  p = eqn.params
  num = len(eqn.outvars)
  present = [d for d in depths if d is not None]
  if not present:
    return [None] * num
  operands = depths[:num] if eqn.primitive.name == "reduce_window" else depths
  inits = depths[num:] if eqn.primitive.name == "reduce_window" else []

  def window_min(d):
    out = jax.lax.reduce_window(
        jnp.asarray(d), INF, jax.lax.min,
        tuple(p["window_dimensions"]) + (1,),
        tuple(p["window_strides"]) + (1,),
        tuple(tuple(x) for x in p["padding"]) + ((0, 0),),
        base_dilation=tuple(p["base_dilation"]) + (1,),
        window_dilation=tuple(p["window_dilation"]) + (1,))
    return np.asarray(out)

  reduced = [window_min(d) for d in operands if d is not None]
  reduced += [d for d in inits if d is not None]
  out_shape = shape_of(eqn.outvars[0])
  out = functools.reduce(np.minimum, [
      np.broadcast_to(r, out_shape + r.shape[-1:]) for r in reduced])
  return [np.array(out) + 1] * num


@functools.lru_cache(maxsize=256)
def _read_pairs(primitive, params_key, avals_key, operand):
  """(rows, cols) of the elements of the output that read each element of
  operand `operand`, from the Jacobian at all-ones operands."""
  params = dict(params_key)
  ones = [jnp.ones(shape, dtype) for shape, dtype in avals_key]

  def f(x):
    args = list(ones)
    args[operand] = x
    return primitive.bind(*args, **params)

  jac = np.asarray(jax.jacfwd(f)(ones[operand]))
  out_size = int(np.prod(jac.shape[:jac.ndim - len(avals_key[operand][0])]))
  rows, cols = np.nonzero(jac.reshape(out_size, -1))
  return rows, cols, out_size


def sparse_linear(eqn, depths, values):
  """A linear primitive: min over the elements its Jacobian links."""
  del values
  if all(d is None for d in depths):
    return [None]
  params_key = tuple(sorted(eqn.params.items()))
  avals_key = tuple((shape_of(v), v.aval.dtype) for v in eqn.invars)
  try:
    hash(params_key)
    read_pairs = _read_pairs
  except TypeError:  # an unhashable parameter: no caching
    read_pairs = _read_pairs.__wrapped__
  out_shape = shape_of(eqn.outvars[0])
  out = None
  for k, d in enumerate(depths):
    if d is None:
      continue
    rows, cols, out_size = read_pairs(eqn.primitive, params_key, avals_key,
                                       k)
    j = d.shape[-1]
    reached = np.full((out_size, j), INF, np.float32)
    if rows.size:
      starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
      reached[rows[starts]] = np.minimum.reduceat(
          d.reshape(-1, j)[cols], starts, axis=0)
    out = reached if out is None else np.minimum(out, reached)
  return [out.reshape(out_shape + (out.shape[-1],)) + 1]


RULES = {name: elementwise for name in ELEMENTWISE}
RULES.update({name: reduction for name in REDUCTIONS})
RULES.update({name: cumulative for name in CUMULATIVE})
RULES.update({name: movement for name in MOVEMENT})
RULES.update({name: sparse_linear for name in SPARSE_LINEAR})
RULES.update({name: window_reduction for name in WINDOW_REDUCTIONS})
RULES.update({name: scatter for name in ("scatter", "scatter-add",
                                         "scatter_add", "scatter-mul",
                                         "scatter_mul", "scatter-min",
                                         "scatter_min", "scatter-max",
                                         "scatter_max")})
RULES.update({name: layout for name in ("reshape", "transpose",
                                        "broadcast_in_dim", "squeeze",
                                        "expand_dims")})
RULES.update({name: identity for name in ("convert_element_type", "copy",
                                          "copy_p", "stop_gradient",
                                          "device_put",
                                          "optimization_barrier")})
RULES.update({"and": logic, "or": logic})
RULES.update(select_n=select_n, dot_general=dot_general, sort=sort,
             slice=slice_, concatenate=concatenate, split=split, pad=pad,
             rev=rev)
