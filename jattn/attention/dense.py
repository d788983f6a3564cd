"""Dense attention: the textbook path (read this file first).

For one example, with H query heads sharing G key/value heads (query head h
reads key/value head h // (H // G)):

  logits_HLM  = scale * q_LHK . k_MGK        (+ bias)        float32
  weights_HLM = masked_softmax(logits_HLM, allowed_HLM)      rows sum to 1
  out_LHV     = weights_HLM . v_MGV

`allowed` is the AND of the boolean `mask` and the structured arguments
(`is_causal`, `local_window`, `key_valid_len`, `query_valid_len`). A row with
nothing allowed gives a zero output and zero gradients. Memory is O(H L M):
the (H, L, M) weights exist, so this is the path that can return them and
that supports every autodiff mode (jvp, hessians); the tiled paths in this
package compute the same function in O(L + M) memory.
"""

from __future__ import annotations

import jax.numpy as jnp

from jattn import _checks
from jattn import _compat
from jattn import masks as masks_lib
from jattn import softmax as softmax_lib


def attention(q, k, v, mask=None, *, bias=None, scale=None,
              is_causal: bool = False, local_window=None, key_valid_len=None,
              query_valid_len=None, precision=None,
              return_weights: bool = False):
  """Dense scaled dot-product attention (the core signature of
  `jattn.attention`).

  Args:
    q, k, v: (L, H, K), (M, G, K), (M, G, V); or single-head (L, K), (M, K),
      (M, V).
    mask, bias, scale, is_causal, local_window, key_valid_len,
      query_valid_len, precision: as in `jattn.dot_product_attention`.
    return_weights: also return the float32 (H, L, M) weights ((L, M)
      single-head).

  Returns:
    out (L, H, V) ((L, V) single-head) in q's dtype [, weights].
  """
  x = _checks.attention_inputs(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  allowed = allowed_pairs(x.mask, x.L, x.M, causal=x.is_causal,
                          window=x.window, key_valid_len=x.key_valid_len,
                          query_valid_len=x.query_valid_len)
  q_LHK, k_MGK, v_MGV = masks_lib.zero_unattended(
      x.q, x.k, x.v, x.mask, key_valid_len=x.key_valid_len,
      query_valid_len=x.query_valid_len)
  out_LHV, weights_HLM = attend(q_LHK, k_MGK, v_MGV, allowed, x.bias,
                                x.scale, precision)
  out = x.output(out_LHV)
  if return_weights:
    return out, (weights_HLM[0] if x.single_head else weights_HLM)
  return out


def allowed_pairs(mask, L: int, M: int, *, causal: bool = False, window=None,
                  key_valid_len=None, query_valid_len=None):
  """The AND of every mask argument as one bool array broadcastable to
  (H, L, M), or None when nothing is masked."""
  query_mask = None
  if query_valid_len is not None:
    query_mask = (jnp.arange(L) < jnp.asarray(query_valid_len))[:, None]
  return masks_lib.combine_masks(
      mask,
      masks_lib.causal_mask(L, M) if causal else None,
      None if window is None else masks_lib.local_mask(L, M, window),
      None if key_valid_len is None else masks_lib.valid_len_mask(
          key_valid_len, M),
      query_mask)


def attend(q_LHK, k_MGK, v_MGV, allowed, bias, scale, precision):
  """Dense attention on validated multi-head inputs; returns (out_LHV in
  q's dtype, float32 weights_HLM)."""
  L, H, K = q_LHK.shape
  M, G, _ = k_MGK.shape
  V = v_MGV.shape[-1]
  R = H // G  # query heads per key/value head
  acc = softmax_lib.softmax_dtype(jnp.result_type(q_LHK, k_MGK))
  if M == 0:  # no keys: every row is fully masked
    return jnp.zeros((L, H, V), q_LHK.dtype), jnp.zeros((H, L, 0), acc)
  scale_logits = q_LHK.dtype != acc
  if not scale_logits:
    # Scaling q (O(L K)) rather than the logits (O(L M)) saves a pass over
    # the logits; low-precision q is scaled after the matmul instead.
    q_LHK = q_LHK * jnp.asarray(scale, acc)
  out_dtype = q_LHK.dtype
  q_dot, k_dot = _compat.dot_operands(q_LHK, k_MGK, accumulate=acc)
  if R == 1:
    # Plain multi-head attention: no group axis, so XLA needs no transposes
    # of the (H, L, M) logits and can fuse the whole attention.
    logits_HLM = jnp.einsum("lhk,mhk->hlm", q_dot, k_dot, precision=precision,
                            preferred_element_type=acc)
  else:
    q_LGRK = q_dot.reshape(L, G, R, K)
    logits_HLM = jnp.einsum("lgrk,mgk->grlm", q_LGRK, k_dot,
                            precision=precision,
                            preferred_element_type=acc).reshape(H, L, M)
  if scale_logits:
    logits_HLM = logits_HLM * jnp.asarray(scale, acc)
  if bias is not None:
    logits_HLM = logits_HLM + jnp.broadcast_to(bias, logits_HLM.shape).astype(acc)
  weights_HLM = softmax_lib.masked_softmax(logits_HLM, allowed)
  weights_HLM_v, v_dot = _compat.dot_operands(
      weights_HLM.astype(jnp.promote_types(v_MGV.dtype, out_dtype)), v_MGV,
      accumulate=acc)
  if R == 1:
    out_LHV = jnp.einsum("hlm,mhv->lhv", weights_HLM_v, v_dot,
                         precision=precision, preferred_element_type=acc)
  else:
    out_LGRV = jnp.einsum("grlm,mgv->lgrv", weights_HLM_v.reshape(G, R, L, M),
                          v_dot, precision=precision,
                          preferred_element_type=acc)
    out_LHV = out_LGRV.reshape(L, H, V)
  return out_LHV.astype(out_dtype), weights_HLM
