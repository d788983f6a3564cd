"""Input checks at the public boundary.

Every public function checks what a user hands it at trace time (shapes and
dtypes are static under `jax.jit`), and a mistake raises a `ValueError` or
`TypeError` whose message names the argument and says "expected ..., got ...".
Outputs are checked with chex, which catches internal mistakes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _dtype(x):
  return jnp.result_type(x)


def check_rank(x, name: str, ranks: int | Sequence[int]) -> None:
  """Raises ValueError unless `x.ndim` is one of `ranks`."""
  ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
  ndim = len(_shape(x))
  if ndim not in ranks:
    want = " or ".join(str(r) for r in ranks)
    raise ValueError(
        f"{name}: expected rank {want}, got rank {ndim} with shape {_shape(x)}")


def check_shape(x, name: str, expected: Sequence[int | None]) -> None:
  """Raises ValueError unless `x.shape` matches `expected` (None = any)."""
  shape = _shape(x)
  ok = len(shape) == len(expected) and all(
      e is None or e == s for s, e in zip(shape, expected))
  if not ok:
    items = ["*" if e is None else str(e) for e in expected]
    want = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise ValueError(f"{name}: expected shape {want}, got shape {shape}")


def check_floating(x, name: str) -> None:
  """Raises TypeError unless `x` has a floating-point dtype."""
  dtype = _dtype(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating-point dtype, got {dtype}")


def check_integer(x, name: str) -> None:
  """Raises TypeError unless `x` has an integer dtype."""
  dtype = _dtype(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{name}: expected an integer dtype, got {dtype}")


def check_bool(x, name: str) -> None:
  """Raises TypeError unless `x` is boolean (masks: True = may attend)."""
  dtype = _dtype(x)
  if dtype != jnp.bool_:
    raise TypeError(
        f"{name}: expected a boolean array (True = may attend), got dtype "
        f"{dtype}; convert with `{name}.astype(bool)` or build it with "
        "jattn's mask helpers")


def check_broadcastable(x, name: str, target: Sequence[int]) -> None:
  """Raises ValueError unless `x` broadcasts to `target` without growing it."""
  shape = _shape(x)
  target = tuple(target)
  ok = len(shape) <= len(target)
  if ok:
    for s, t in zip(reversed(shape), reversed(target)):
      if s not in (1, t):
        ok = False
        break
  if not ok:
    raise ValueError(
        f"{name}: expected a shape broadcastable to {target}, got {shape}")


def check_positive_int(value, name: str, minimum: int = 1) -> None:
  """Raises TypeError/ValueError unless `value` is a Python int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected a Python int, got {type(value).__name__}")
  if value < minimum:
    raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")


def is_concrete(x) -> bool:
  """True when `x` holds known values (not a tracer inside jit/vmap/grad)."""
  return not isinstance(x, jax.core.Tracer)


def check_nonnegative_values(x, name: str) -> None:
  """Raises ValueError if concrete `x` holds a negative value.

  Under `jax.jit` the values are unknown at trace time; the caller's
  documented fallback (clipping) applies then.
  """
  if is_concrete(x):
    values = np.asarray(x)
    if values.size and values.min() < 0:
      raise ValueError(
          f"{name}: expected values >= 0, got minimum {values.min()}")


def check_params(params, name: str, expected: dict[str, int]) -> None:
  """Checks a params dict holds floating arrays of the expected ranks."""
  if not isinstance(params, dict):
    raise TypeError(
        f"{name}: expected a dict of arrays, got {type(params).__name__}")
  for key, rank in expected.items():
    if key not in params:
      raise ValueError(
          f"{name}: expected key {key!r}, got keys {sorted(params)}")
    check_rank(params[key], f"{name}[{key!r}]", rank)
    check_floating(params[key], f"{name}[{key!r}]")


def check_token_mask(mask, num_tokens: int, name: str = "mask"):
  """Validates a (N,) bool token-validity mask; returns it as an array."""
  check_bool(mask, name)
  check_shape(mask, name, (num_tokens,))
  return jnp.asarray(mask)
