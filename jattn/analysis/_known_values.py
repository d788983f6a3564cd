"""What `jaxpr_path` knows of values without the input: integers, booleans
and floating-point zeros.

`jaxpr_path` evaluates the integer and boolean equations of a jaxpr whose
inputs are known (masks from iota, loop counters, gather indices), so that a
`select_n` reads only the case it selects, and tracks which floating-point
elements are exactly zero whatever the input (a masked attention weight, a
zero tap), so that a product does not read the factor a zero multiplies.
The value slot of a variable holds:

  None                 nothing known;
  a NumPy array        an integer or boolean value, known in full;
  Partial(data, known) an integer or boolean value known where `known`
                       (from `and` / `or` with an operand that decides an
                       element: False and anything is False);
  Zeros(mask)          a floating-point value that is 0 where `mask`.

Zeros follow the algebra of the primitives (0 * y = 0, 0 / y = 0, a sum of
zeros is 0, tanh(0) = 0), ignoring that 0 * inf is NaN: they are the
elements whose derivative with respect to every input is zero.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

# Primitives that move elements without changing them (applied to masks).
_MOVE = frozenset({"broadcast_in_dim", "reshape", "transpose", "squeeze",
                   "expand_dims", "copy", "copy_p", "slice", "rev",
                   "stop_gradient", "optimization_barrier"})
# Elementwise f with f(0) = 0 for one operand.
_KEEPS_ZERO = frozenset({"neg", "tanh", "sin", "sinh", "tan", "asin", "atan",
                         "asinh", "atanh", "abs", "sqrt", "cbrt", "sign",
                         "square", "integer_pow", "expm1", "log1p", "erf",
                         "reduce_precision", "real", "imag", "floor",
                         "ceil", "round"})


class Partial(NamedTuple):
  """data: the value where known (anything elsewhere); known: bool, same
  shape."""
  data: np.ndarray
  known: np.ndarray


class Zeros(NamedTuple):
  """mask: bool, True where a floating-point value is exactly 0."""
  mask: np.ndarray


def is_index(var) -> bool:
  """Integer and boolean variables: the only ones evaluated."""
  dtype = getattr(var.aval, "dtype", None)
  return dtype is not None and (jnp.issubdtype(dtype, jnp.integer)
                                or dtype == jnp.bool_)


def is_float(var) -> bool:
  dtype = getattr(var.aval, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def of_constant(var, value):
  """The slot of a constant or literal: the array for integers and
  booleans, its zeros for floating point."""
  if value is None:
    return None
  if is_float(var):
    mask = np.asarray(value) == 0
    return Zeros(mask) if mask.any() else None
  return value if is_index(var) else None


def parts(value, shape):
  """(data, known) of an integer or boolean value broadcast to `shape`;
  known all False when it is None."""
  if value is None or isinstance(value, Zeros):
    return np.zeros(shape, bool), np.zeros(shape, bool)
  if isinstance(value, Partial):
    return (np.broadcast_to(value.data, shape),
            np.broadcast_to(value.known, shape))
  value = np.asarray(value)
  return np.broadcast_to(value, shape), np.ones(shape, bool)


def zeros(value, shape):
  """The zero mask of a floating-point value broadcast to `shape`."""
  if isinstance(value, Zeros):
    return np.broadcast_to(value.mask, shape)
  return np.zeros(shape, bool)


def normalise(data, known):
  """A Partial, or the plain array when all known, or None when none is."""
  if known.all():
    return np.asarray(data)
  if not known.any():
    return None
  return Partial(np.asarray(data), np.asarray(known))


def _as_zeros(mask):
  mask = np.asarray(mask, bool)
  return Zeros(mask) if mask.any() else None


def whole(value):
  """The integer or boolean value if known in full, else None."""
  return None if isinstance(value, (Partial, Zeros)) else value


def take(value, i):
  """Element i along the leading axis (a scan's slice of its xs)."""
  if value is None:
    return None
  if isinstance(value, Partial):
    return normalise(value.data[i], value.known[i])
  if isinstance(value, Zeros):
    return _as_zeros(value.mask[i])
  return value[i]


def stack(values, shape):
  """A scan's stacked ys (shape: one step's)."""
  if not values:
    return None
  if all(whole(v) is not None for v in values):
    return np.stack([np.asarray(v) for v in values])
  if all(v is None or isinstance(v, Zeros) for v in values):
    return _as_zeros(np.stack([zeros(v, shape) for v in values]))
  return None


def deciding(name, values, shape):
  """Elements of an `and` (`or`) that some operand known to be False (True)
  decides, whatever the other operands are; None for other primitives."""
  if name not in ("and", "or"):
    return None
  absorbing = name == "or"
  decided = np.zeros(shape, bool)
  for value in values:
    data, known = parts(value, shape)
    decided |= known & (data.astype(bool) == absorbing)
  return decided


def evaluate(eqn, values):
  """The slots of an equation's outputs (see the module docstring)."""
  outvars = eqn.outvars
  if all(is_index(v) for v in outvars):
    return _evaluate_index(eqn, values)
  if len(outvars) == 1 and is_float(outvars[0]):
    return [_zeros_of(eqn, values)]
  return [None] * len(outvars)


def _evaluate_index(eqn, values):
  outvars = eqn.outvars
  if all(whole(v) is not None for v in values):
    try:
      out = eqn.primitive.bind(*values, **eqn.params)
    except Exception:  # pylint: disable=broad-except  (e.g. platform_index)
      return [None] * len(outvars)
    outs = out if eqn.primitive.multiple_results else [out]
    return [np.asarray(o) for o in outs]
  name = eqn.primitive.name
  shape = tuple(outvars[0].aval.shape)
  is_bool = outvars[0].aval.dtype == jnp.bool_
  if is_bool and name in ("and", "or"):
    decided = deciding(name, values, shape)
    pieces = [parts(v, shape) for v in values]
    all_known = np.logical_and.reduce([k for _, k in pieces])
    combine = np.logical_and if name == "and" else np.logical_or
    both = combine.reduce([d.astype(bool) for d, _ in pieces])
    data = np.where(decided, name == "or", both)
    return [normalise(data, decided | all_known)]
  if is_bool and name == "not" and isinstance(values[0], Partial):
    return [normalise(~values[0].data, values[0].known)]
  if name in _MOVE and isinstance(values[0], Partial):
    data = eqn.primitive.bind(values[0].data, **eqn.params)
    known = eqn.primitive.bind(values[0].known, **eqn.params)
    return [normalise(np.asarray(data), np.asarray(known))]
  return [None] * len(outvars)


def _zeros_of(eqn, values):
  """The Zeros of a floating-point output, or None."""
  name = eqn.primitive.name
  shape = tuple(eqn.outvars[0].aval.shape)
  masks = [zeros(v, tuple(a.aval.shape)) if hasattr(a, "aval") else None
           for a, v in zip(eqn.invars, values)]
  if name == "convert_element_type":
    source = values[0]
    if isinstance(source, Zeros):
      return source
    data, known = parts(source, shape)
    return _as_zeros(known & (data == 0))
  if not any(isinstance(v, Zeros) for v in values) and name != "select_n":
    return None
  if name in _MOVE:
    return _as_zeros(eqn.primitive.bind(masks[0], **eqn.params))
  if name == "concatenate":
    return _as_zeros(eqn.primitive.bind(*masks, **eqn.params))
  if name == "pad":
    return _as_zeros(eqn.primitive.bind(*masks, **eqn.params))
  if name in _KEEPS_ZERO:
    return _as_zeros(masks[0])
  if name == "mul":
    return _as_zeros(np.logical_or(*[np.broadcast_to(m, shape)
                                     for m in masks]))
  if name == "div":
    return _as_zeros(np.broadcast_to(masks[0], shape))
  if name in ("add", "sub"):
    return _as_zeros(np.logical_and(*[np.broadcast_to(m, shape)
                                      for m in masks]))
  if name == "reduce_sum":
    return _as_zeros(masks[0].all(axis=tuple(eqn.params["axes"])))
  if name == "dot_general":
    nonzero = [jnp.asarray(~m, jnp.float32) for m in masks]
    params = dict(eqn.params, preferred_element_type=jnp.float32)
    count = eqn.primitive.bind(*nonzero, **params)
    return _as_zeros(np.asarray(count) == 0)
  if name == "select_n":
    data, known = parts(values[0], shape)
    cases = np.stack([np.broadcast_to(zeros(v, tuple(a.aval.shape)), shape)
                      for a, v in zip(eqn.invars[1:], values[1:])])
    index = np.clip(data.astype(np.int64), 0, len(cases) - 1)
    picked = np.take_along_axis(cases, index[None], axis=0)[0]
    return _as_zeros(np.where(known, picked, cases.all(axis=0)))
  return None
