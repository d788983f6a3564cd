"""Positional encodings: sinusoidal (d2l), learned, and rotary (RoPE)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jattn import _checks


def sinusoidal_encoding(num_positions: int, d_model: int, *,
                        base: float = 10000.0, dtype=jnp.float32):
  """The fixed sinusoidal encoding of d2l's "Self-Attention and Positional
  Encoding" (Vaswani et al. 2017).

  P[i, 2j] = sin(i / base^(2j / d)),  P[i, 2j + 1] = cos(i / base^(2j / d)).

  Computed in float64 NumPy and rounded once to `dtype`, so the table is a
  compile-time constant under `jax.jit`. An odd d_model is allowed (the last
  column is a sine).

  Returns:
    (num_positions, d_model) array of `dtype`.
  """
  _checks.check_positive_int(num_positions, "num_positions", minimum=0)
  _checks.check_positive_int(d_model, "d_model")
  position_N1 = np.arange(num_positions, dtype=np.float64)[:, None]
  frequency_J = np.power(float(base),
                         -np.arange(0, d_model, 2, dtype=np.float64) / d_model)
  angle_NJ = position_N1 * frequency_J[None, :]
  table = np.empty((num_positions, d_model), dtype=np.float64)
  table[:, 0::2] = np.sin(angle_NJ)
  table[:, 1::2] = np.cos(angle_NJ[:, : d_model // 2])
  return jnp.asarray(table, dtype=dtype)


def init_learned_encoding(key, num_positions: int, d_model: int, *,
                          stddev: float = 0.02, dtype=jnp.float32):
  """Parameters of a learned absolute encoding.

  Returns:
    {"table": (num_positions, d_model)} drawn from N(0, stddev^2).
  """
  _checks.check_prng_key(key)
  _checks.check_positive_int(num_positions, "num_positions")
  _checks.check_positive_int(d_model, "d_model")
  table = stddev * jax.random.normal(key, (num_positions, d_model), dtype)
  return {"table": table}


def learned_encoding(params, positions):
  """Rows of the learned table at `positions`.

  Args:
    params: {"table": (P, D)} from `init_learned_encoding`.
    positions: integer array of any shape, values in [0, P) (checked when
      known; under `jax.jit` out-of-range indices are clamped).

  Returns:
    positions.shape + (D,).
  """
  _checks.check_params(params, "params", {"table": 2})
  _checks.check_integer(positions, "positions")
  num_positions = params["table"].shape[0]
  if _checks.is_concrete(positions):
    values = np.asarray(positions)
    if values.size and (values.min() < 0 or values.max() >= num_positions):
      raise ValueError(
          f"positions: expected values in [0, {num_positions}), got range "
          f"[{values.min()}, {values.max()}]")
  return jnp.take(params["table"], jnp.asarray(positions), axis=0,
                  mode="clip")


def apply_rope(x_LHK, positions, *, base: float = 10000.0):
  """Rotary position embedding (Su et al. 2021, RoFormer).

  Each pair of features (2i, 2i + 1) of the token at position p is rotated by
  the angle p * base^(-2i / K), so that the dot product of a rotated query at
  position p and a rotated key at position s depends on p - s only.

  Args:
    x_LHK: (L, H, K) or (L, K) floating array, K even.
    positions: (L,) integer or float positions.
    base: frequency base.

  Returns:
    array of x's shape and dtype (rotation computed in float32 or wider).
  """
  x_LHK = jnp.asarray(x_LHK)
  _checks.check_rank(x_LHK, "x_LHK", (2, 3), example=True)
  _checks.check_floating(x_LHK, "x_LHK")
  L, K = x_LHK.shape[0], x_LHK.shape[-1]
  if K % 2:
    raise ValueError(f"x_LHK: expected an even last axis K, got K={K}")
  positions = jnp.asarray(positions)
  _checks.check_shape(positions, "positions", (L,))
  if not (jnp.issubdtype(positions.dtype, jnp.integer)
          or jnp.issubdtype(positions.dtype, jnp.floating)):
    raise TypeError(
        f"positions: expected an integer or float dtype, got {positions.dtype}")

  acc = jnp.promote_types(x_LHK.dtype, jnp.float32)
  frequency_J = jnp.asarray(
      np.power(float(base), -np.arange(0, K, 2, dtype=np.float64) / K), acc)
  angle_LJ = positions.astype(acc)[:, None] * frequency_J[None, :]
  if x_LHK.ndim == 3:
    angle_LJ = angle_LJ[:, None, :]  # broadcast over heads
  cos, sin = jnp.cos(angle_LJ), jnp.sin(angle_LJ)
  x = x_LHK.astype(acc)
  even, odd = x[..., 0::2], x[..., 1::2]
  rotated_even = even * cos - odd * sin
  rotated_odd = even * sin + odd * cos
  out = jnp.stack([rotated_even, rotated_odd], axis=-1).reshape(x.shape)
  out = out.astype(x_LHK.dtype)
  chex.assert_shape(out, x_LHK.shape)
  return out
