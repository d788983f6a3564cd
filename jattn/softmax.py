"""Masked softmax in float32 with zero rows where nothing may be attended."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks


def masked_softmax(logits, mask=None):
  """Softmax over the last axis, computed in float32 (float64 stays float64).

  Args:
    logits: floating array (..., M), any float dtype.
    mask: optional bool array broadcastable to `logits.shape`; True = keep.
      Masked entries (and logits of -inf) get weight exactly 0, whatever
      they hold. A row whose entries are all masked gets all-zero weights
      (never NaN), and its gradient is zero.

  Returns:
    float32 (float64 for float64 logits) array of `logits.shape`; each row
    sums to 1, or to 0 if fully masked.
  """
  _checks.check_floating(logits, "logits")
  if len(logits.shape) < 1:
    raise ValueError(f"logits: expected rank >= 1, got shape {logits.shape}")
  logits = logits.astype(softmax_dtype(logits.dtype))
  if mask is None:
    return _softmax_where(logits, jnp.ones(logits.shape, bool))
  _checks.check_bool(mask, "mask")
  _checks.check_broadcastable(mask, "mask", logits.shape)
  return _softmax_where(logits, jnp.broadcast_to(mask, logits.shape))


def softmax_dtype(dtype):
  """The dtype softmax runs in: float32, or wider if the input is wider."""
  return jnp.promote_types(dtype, jnp.float32)


def _softmax_where(logits, mask):
  """Float32 softmax of `logits` restricted to `mask` (already validated).

  No infinity is ever formed (so `jax.debug_infs` stays quiet): masked
  entries are filled with the dtype's lowest finite value and their weights
  set to exactly 0, and a logit of -inf (e.g. from a bias) counts as masked.
  Whatever a masked entry holds (NaN, inf) reaches neither the weights nor
  the gradients.
  """
  mask = mask & ~(jnp.isinf(logits) & (logits < 0))
  lowest = jnp.finfo(logits.dtype).min
  kept = jnp.where(mask, logits, lowest)
  row_max = jnp.max(kept, axis=-1, keepdims=True)
  # Softmax does not depend on the shift, so its gradient can be dropped.
  exp = jnp.where(mask, jnp.exp(kept - jax.lax.stop_gradient(row_max)), 0.0)
  total = jnp.sum(exp, axis=-1, keepdims=True)
  weights = exp / jnp.where(total > 0, total, 1.0)
  chex.assert_shape(weights, logits.shape)
  return weights
