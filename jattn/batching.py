"""Batching per-example functions: `jax.vmap` over a leading batch axis B."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import masks as masks_lib


def batched(fn, in_axes=(None, 0, 0), *, jit: bool = True, **vmap_kwargs):
  """`jax.jit(jax.vmap(fn, in_axes))`: runs a per-example function on a batch.

  The default `in_axes=(None, 0, 0)` fits `fn(params, x, mask)`: params are
  shared, x (B, n, D) and mask (B, ...) are split along the batch axis.

  Example:
    attend = jattn.batched(jattn.self_attention)
    y_BND = attend(params, x_BND, jattn.padding_mask(valid_len_B, n))
  """
  mapped = jax.vmap(fn, in_axes=in_axes, **vmap_kwargs)
  return jax.jit(mapped) if jit else mapped


def padding_mask(valid_len_B, num_keys: int):
  """Per-example key-padding masks from a batch of valid lengths.

  Args:
    valid_len_B: (B,) integer valid lengths, one per example.
    num_keys: M (Python int).

  Returns:
    bool (B, 1, M): example b may attend to its first valid_len_B[b] keys;
    broadcasts per example against (H, L, M) logits once vmapped.
  """
  _checks.check_rank(valid_len_B, "valid_len_B", 1)
  _checks.check_integer(valid_len_B, "valid_len_B")
  _checks.check_nonnegative_values(valid_len_B, "valid_len_B")
  return jax.vmap(masks_lib.valid_len_mask, in_axes=(0, None))(
      jnp.asarray(valid_len_B), num_keys)
