"""Pieces shared by the task generators of `jattn.tasks`.

Every task builds the same batch: a dict of (B, N) arrays

  inputs      int32    token ids
  targets     int32    the token each position must output (blank elsewhere)
  token_mask  bool     True = real token, False = right padding
  copy_mask   bool     True at the scored positions (the trainer's accuracy)
  weights     float32  loss weight: 1 on real tokens, 0 on padding

from vectorised `jax.random` draws (no Python loop over examples), so each
generator is jit-able with the task and the batch size static. The helpers
here draw random distinct positions, build right padding and assemble and
check the dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from jattn import _checks

BATCH_KEYS = ("inputs", "targets", "token_mask", "copy_mask", "weights")
BATCH_DTYPES = (jnp.int32, jnp.int32, jnp.bool_, jnp.bool_, jnp.float32)
# Sorts after every real draw of `random_subsets` (ties break by index).
_LAST = 0xFFFFFFFF


def check_fields(cls, fields: Mapping, what: str) -> None:
  """ValueError unless `fields` names only fields of dataclass `cls`."""
  names = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(fields) - set(names))
  if unknown:
    raise ValueError(
        f"task_config: expected only the fields {names} for {what}, got "
        f"unknown {unknown}")


def check_at_most(value: int, name: str, bound: int, bound_name: str) -> None:
  """ValueError unless value <= bound (both already checked ints)."""
  if value > bound:
    raise ValueError(
        f"{name}: expected an int <= {bound_name}={bound}, got {value}")


def check_disjoint(ood: tuple[int, int], train: tuple[int, int],
                   name: str) -> None:
  """ValueError unless the held-out range [lo, hi] misses the training one."""
  if ood[0] <= train[1] and train[0] <= ood[1]:
    raise ValueError(
        f"{name}: expected a held-out range outside the training range "
        f"{train[0]}..{train[1]}, got {ood[0]}..{ood[1]}")


def random_subsets(key, batch_size: int, count: int, size: int,
                   limit_B1=None, *, sort: bool):
  """(B, count) int32: per row, `count` distinct indices in [0, size).

  Row b draws from [0, limit_B1[b]) when `limit_B1` (B, 1) is given (every
  limit must be >= count). The rows are the first `count` entries of a
  random permutation (a stable argsort of random bits; entries at or past
  the limit get the largest key, so they sort last), in the permutation's
  random order, or increasing when `sort`.
  """
  bits_BP = jax.random.bits(key, (batch_size, size), jnp.uint32)
  if limit_B1 is not None:
    index_1P = jnp.arange(size, dtype=jnp.int32)[None, :]
    bits_BP = jnp.where(index_1P < limit_B1, bits_BP, jnp.uint32(_LAST))
  order_BC = jnp.argsort(bits_BP, axis=1, stable=True)[:, :count]
  order_BC = order_BC.astype(jnp.int32)
  return jnp.sort(order_BC, axis=1) if sort else order_BC


def positions(batch_size: int, seq_len: int):
  """(B, N) int32 position indices 0 .. N-1 in every row."""
  return jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32)[None, :],
                          (batch_size, seq_len))


def scatter(values_BK, where_BK, seq_len: int, fill: int = 0):
  """(B, N) int32: `fill` everywhere, values_BK[b, k] at where_BK[b, k]."""
  B, K = values_BK.shape
  rows_BK = jnp.broadcast_to(jnp.arange(B)[:, None], (B, K))
  return jnp.full((B, seq_len), fill, jnp.int32).at[rows_BK, where_BK].set(
      values_BK.astype(jnp.int32))


def assemble(inputs_BN, targets_BN, copy_mask_BN, token_mask_BN,
             pad: int) -> dict:
  """The batch dict: padding tokens where ~token_mask, weights from it.

  Targets at padding are set blank (0) and the copy mask False, so a
  generator needs to get them right on real tokens only.
  """
  inputs_BN = jnp.where(token_mask_BN, inputs_BN, jnp.asarray(pad, jnp.int32))
  targets_BN = jnp.where(token_mask_BN, targets_BN, jnp.zeros((), jnp.int32))
  batch = {"inputs": inputs_BN.astype(jnp.int32),
           "targets": targets_BN.astype(jnp.int32),
           "token_mask": token_mask_BN,
           "copy_mask": copy_mask_BN & token_mask_BN,
           "weights": token_mask_BN.astype(jnp.float32)}
  B, N = inputs_BN.shape
  chex.assert_shape([batch[k] for k in BATCH_KEYS], (B, N))
  chex.assert_type([batch[k] for k in BATCH_KEYS], list(BATCH_DTYPES))
  return batch


def check_batch_size(batch_size) -> None:
  _checks.check_positive_int(batch_size, "batch_size")
