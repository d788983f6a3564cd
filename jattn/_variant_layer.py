"""Shared plumbing of the sub-quadratic attention variants.

`jattn.local`, `jattn.linear` and `jattn.performer` each
provide a per-example core on (L, H, K) queries and (M, G, K) keys / values,
like `jattn.dot_product_attention`, and a self-attention layer taking the
params of `jattn.init_self_attention`. This module holds what they share: the
input checks of the core, the key-padding masks that kernelised attention can
apply, and the projection layer around a core. No attention maths here.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax.numpy as jnp
import numpy as np

from jattn import _checks
from jattn import attention as attention_lib
from jattn import multihead
from jattn import positional


def check_qkv(q, k, v):
  """Validates q, k, v as `dot_product_attention` does.

  Returns:
    (q, k, v) as multi-head arrays (a head axis of size 1 added to the
    single-head form), (L, M, H, G, K, V) and whether the input was
    single-head.
  """
  q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
  dims = attention_lib._check_qkv(q, k, v)  # pylint: disable=protected-access
  single_head = q.ndim == 2
  if single_head:
    q, k, v = q[:, None, :], k[:, None, :], v[:, None, :]
  return q, k, v, dims, single_head


def finish(out_LHV, q_dtype, single_head: bool, L: int, H: int, V: int):
  """Drops the added head axis of the single-head form; checks the result."""
  out = out_LHV.astype(q_dtype)
  if single_head:
    out = out[:, 0]
  chex.assert_shape(out, (L, V) if single_head else (L, H, V))
  chex.assert_type(out, q_dtype)
  return out


def reject_bias(bias, variant: str) -> None:
  """Kernelised attention has no logits to add a bias to."""
  if bias is not None:
    raise ValueError(
        f"bias: expected None for {variant} attention (it never forms the "
        "(H, L, M) logits a bias would be added to), got an array of shape "
        f"{tuple(np.shape(bias))}; use dot_product_attention or "
        "local_attention for biased attention")


def key_padding_mask(mask, *, H: int, L: int, M: int, single_head: bool,
                     variant: str, name: str = "mask"):
  """A mask that depends on the key (and head) only, as bool (Hx, M).

  Kernelised attention sums phi(k_j) v_j^T over the keys once for every
  query, so it can drop keys (padding) but not apply a different key set to
  each query. Accepted shapes: (M,), (1, M) and (Hx, 1, M) with Hx = 1 or H
  (multi-head form only).

  Returns:
    None or bool (Hx, M), Hx in {1, H}.
  """
  if mask is None:
    return None
  _checks.check_bool(mask, name)
  target = (L, M) if single_head else (H, L, M)
  _checks.check_broadcastable(mask, name, target)
  shape = tuple(np.shape(mask))
  if len(shape) >= 2 and shape[-2] != 1:
    allowed = "(M,) or (1, M)" if single_head else "(M,), (1, M) or (H, 1, M)"
    raise ValueError(
        f"{name}: expected a key-padding mask of shape {allowed} (query axis "
        f"of size 1): {variant} attention sums over the keys once for all "
        "queries, so it cannot apply a per-(query, key) mask; use "
        "key_valid_len (scalar), is_causal or a key-padding mask, or "
        f"dot_product_attention, got shape {shape}")
  mask = jnp.asarray(mask)
  mask_XLM = mask.reshape((1,) * (3 - mask.ndim) + shape)
  return jnp.broadcast_to(mask_XLM[:, 0, :], (mask_XLM.shape[0], M))


def scalar_key_valid_len(key_valid_len, M: int, variant: str):
  """bool (1, M) mask of the first key_valid_len keys, or None.

  Only a scalar length is accepted: one key set for all queries.
  """
  if key_valid_len is None:
    return None
  _checks.check_integer(key_valid_len, "key_valid_len")
  if np.ndim(key_valid_len) != 0:
    raise ValueError(
        "key_valid_len: expected an integer scalar (one length for every "
        f"query: {variant} attention sums over the keys once for all "
        "queries), got shape "
        f"{tuple(np.shape(key_valid_len))}; per-query lengths need "
        "dot_product_attention")
  _checks.check_nonnegative_values(key_valid_len, "key_valid_len")
  return (jnp.arange(M) < jnp.asarray(key_valid_len))[None, :]


def combine_key_masks(*masks_XM):
  """AND of (Hx, M) key masks (None entries skipped; None if all are)."""
  present = [m for m in masks_XM if m is not None]
  if not present:
    return None
  Hx = max(m.shape[0] for m in present)
  out = jnp.ones((Hx, present[0].shape[1]), bool)
  for m in present:
    out = out & jnp.broadcast_to(m, out.shape)
  return out


def check_query_valid_len(query_valid_len) -> None:
  if query_valid_len is not None:
    _checks.check_integer(query_valid_len, "query_valid_len")
    _checks.check_rank(query_valid_len, "query_valid_len", 0)
    _checks.check_nonnegative_values(query_valid_len, "query_valid_len")


def zero_queries_from(out_LHV, query_valid_len):
  """Sets the outputs of queries i >= query_valid_len to exactly zero."""
  if query_valid_len is None:
    return out_LHV
  keep_L = jnp.arange(out_LHV.shape[0]) < jnp.asarray(query_valid_len)
  return jnp.where(keep_L[:, None, None], out_LHV,
                   jnp.zeros((), out_LHV.dtype))


def self_attention_layer(core: Callable, params, x, mask, *, positions=None,
                         precision=None):
  """Projections around an attention core, as `jattn.self_attention`.

  Args:
    core: `core(q_LHK, k_MGK, v_MGV, mask) -> (L, H, V)`.
    params: dict from `init_self_attention`.
    x: (N, D) tokens.
    mask: passed to `core` as it is.
    positions: optional (N,) positions: rotary embeddings of q and k.
    precision: einsum precision of the projections.

  Returns:
    (N, Do) in x's dtype.
  """
  Dq, Dkv, _, _, _, _, Do = multihead.check_mha_params(params)
  x = jnp.asarray(x)
  _checks.check_rank(x, "x", 2)
  _checks.check_floating(x, "x")
  _checks.check_shape(x, "x", (None, Dq))
  if Dkv != Dq:
    raise ValueError(
        f"params['w_k']: expected input width {Dq} (self-attention: keys "
        f"come from x), got {Dkv}")
  N = x.shape[0]
  q_LHK, k_MGK, v_MGV = multihead.project_qkv(params, x, x,
                                              precision=precision)
  if positions is not None:
    q_LHK = positional.apply_rope(q_LHK, positions)
    k_MGK = positional.apply_rope(k_MGK, positions)
  out_LHV = core(q_LHK, k_MGK, v_MGV, mask)
  y_ND = multihead.project_output(params, out_LHV,
                                  precision=precision).astype(x.dtype)
  chex.assert_shape(y_ND, (N, Do))
  return y_ND
