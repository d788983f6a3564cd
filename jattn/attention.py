"""Scaled dot-product attention for one example, with grouped-query heads."""

from __future__ import annotations

import math

import chex
import jax.numpy as jnp

from jattn import _checks
from jattn import masks as masks_lib
from jattn import softmax as softmax_lib


def _check_qkv(q, k, v):
  """Validates q, k, v; returns (L, M, H, G, K, V)."""
  for name, x in (("q", q), ("k", k), ("v", v)):
    _checks.check_floating(x, name)
  _checks.check_rank(q, "q", (2, 3))
  rank = q.ndim
  _checks.check_rank(k, "k", rank)
  _checks.check_rank(v, "v", rank)
  if rank == 2:
    (L, K), (M, Kk), (Mv, V) = q.shape, k.shape, v.shape
    H = G = 1
    Gv = 1
  else:
    (L, H, K), (M, G, Kk), (Mv, Gv, V) = q.shape, k.shape, v.shape
  if Kk != K:
    raise ValueError(
        f"k: expected head width K={K} (the last axis of q), got {Kk} "
        f"(q shape {q.shape}, k shape {k.shape})")
  if Mv != M:
    raise ValueError(
        f"v: expected M={M} keys/values (the first axis of k), got {Mv} "
        f"(k shape {k.shape}, v shape {v.shape})")
  if Gv != G:
    raise ValueError(
        f"v: expected G={G} key/value heads (axis 1 of k), got {Gv}")
  if H % G:
    raise ValueError(
        f"q: expected a number of query heads H that is a multiple of the "
        f"number of key/value heads G={G}, got H={H}")
  return L, M, H, G, K, V


def dot_product_attention(q, k, v, mask=None, *, bias=None, scale=None,
                          is_causal: bool = False, return_weights: bool = False,
                          precision=None):
  """Scaled dot-product attention, softmax(q k^T * scale + bias) v, per example.

  Multi-head form (H query heads share G key/value heads, H a multiple of G;
  query head h reads key/value head h // (H // G)):
    q: (L, H, K), k: (M, G, K), v: (M, G, V) -> out (L, H, V).
  Single-head form:
    q: (L, K), k: (M, K), v: (M, V) -> out (L, V).

  Args:
    q, k, v: floating arrays as above.
    mask: optional bool, True = may attend, broadcastable to (H, L, M)
      (single-head: to (L, M)). A query with nothing to attend to outputs 0.
    bias: optional float array added to the logits, broadcastable like `mask`.
    scale: logit scale; default 1 / sqrt(K).
    is_causal: also apply `causal_mask(L, M)` (query i sees keys j <= i).
    return_weights: also return the attention weights.
    precision: passed to the two einsums (e.g. `jax.lax.Precision.HIGHEST`).

  Returns:
    out with q's dtype, shape (L, H, V) (single-head: (L, V)); and, if
    `return_weights`, weights in float32 of shape (H, L, M) (single-head:
    (L, M)).
  """
  q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
  L, M, H, G, K, V = _check_qkv(q, k, v)
  single_head = q.ndim == 2
  logits_shape = (L, M) if single_head else (H, L, M)
  if mask is not None:
    _checks.check_bool(mask, "mask")
    _checks.check_broadcastable(mask, "mask", logits_shape)
  if bias is not None:
    _checks.check_floating(bias, "bias")
    _checks.check_broadcastable(bias, "bias", logits_shape)
  if scale is None:
    scale = 1.0 / math.sqrt(K)
  if is_causal:
    mask = masks_lib.combine_masks(mask, masks_lib.causal_mask(L, M))

  if single_head:
    q, k, v = q[:, None, :], k[:, None, :], v[:, None, :]
    mask = None if mask is None else jnp.asarray(mask)[None]
    bias = None if bias is None else jnp.asarray(bias)[None]
  out_LHV, weights_HLM = _attend(q, k, v, mask, bias, scale, precision)
  if single_head:
    out_LHV, weights_HLM = out_LHV[:, 0], weights_HLM[0]
  out_shape = (L, V) if single_head else (L, H, V)
  chex.assert_shape(out_LHV, out_shape)
  chex.assert_type(out_LHV, q.dtype)
  if return_weights:
    return out_LHV, weights_HLM
  return out_LHV


def _attend(q_LHK, k_MGK, v_MGV, mask, bias, scale, precision):
  """Dense attention on validated multi-head inputs."""
  L, H, K = q_LHK.shape
  M, G, _ = k_MGK.shape
  R = H // G  # query heads per key/value head
  acc = softmax_lib.softmax_dtype(jnp.result_type(q_LHK, k_MGK))
  q_LGRK = q_LHK.reshape(L, G, R, K)
  logits_GRLM = jnp.einsum("lgrk,mgk->grlm", q_LGRK, k_MGK,
                           precision=precision, preferred_element_type=acc)
  logits_HLM = logits_GRLM.reshape(H, L, M) * jnp.asarray(scale, acc)
  if bias is not None:
    logits_HLM = logits_HLM + jnp.broadcast_to(bias, logits_HLM.shape).astype(acc)
  weights_HLM = softmax_lib.masked_softmax(logits_HLM, mask)
  weights_GRLM = weights_HLM.reshape(G, R, L, M).astype(
      jnp.promote_types(v_MGV.dtype, q_LHK.dtype))
  out_LGRV = jnp.einsum("grlm,mgv->lgrv", weights_GRLM, v_MGV,
                        precision=precision, preferred_element_type=acc)
  out_LHV = out_LGRV.reshape(L, H, v_MGV.shape[-1]).astype(q_LHK.dtype)
  return out_LHV, weights_HLM
