"""Linear attention (Katharopoulos et al. 2020), per example.

Softmax attention weighs value j for query i by exp(q_i . k_j); linear
attention replaces that by phi(q_i) . phi(k_j) for a positive feature map phi
(here elu(x) + 1), so the sum over keys factors out of the query loop:

  out_i = phi(q_i)^T S / (phi(q_i) . z),   S = sum_j phi(k_j) v_j^T  (P x V),
                                           z = sum_j phi(k_j)        (P,)

Each head costs O(M P V) to build S and O(L P V) to read it: O(n d^2 / H) for
self-attention of width d = H K (O(n d^2) with the projections), no (L, M)
array, and every output depends on every input in one layer (path length 1).
The price: the keys are summarised in a fixed-size state (S, z) per head,
whatever n is, and the weights are no longer a sharp softmax.

Causal attention (query i sees keys j <= i) needs a prefix of the sums per
query. `linear_attention` computes it as a chunked prefix sum: queries and
keys are cut into chunks of C positions; within a chunk the C x C masked
quadratic form is used, and the state of all earlier chunks comes from an
exclusive prefix sum (`jnp.cumsum`) over the chunks' states. No sequential
loop: memory O(n C H + (n / C) H P V), FLOPs O(n C H (P + V) + n H P V).
`linear_attention_quadratic` forms the (H, L, M) weights instead: the
reference the tests hold the chunked form to, and the only form that takes
arbitrary masks.

Masks. Summing over keys once for all queries allows dropping keys (key
padding: a `mask` of shape (M,), (1, M) or (H, 1, M), a scalar
`key_valid_len`), causal masks (prefix sums) and dropping queries
(`query_valid_len`). A general (L, M) mask, per-query key lengths and a logit
`bias` raise ValueError naming the argument. A query with no key to attend to
outputs 0 (and gets zero gradients), as everywhere in jattn.

P is the feature width (K for elu + 1; the number of random features for
`jattn.attention.performer`). `feature_attention` is the shared core on features; the
Performer calls it with its random features.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jattn import _checks
from jattn import softmax as softmax_lib
from jattn.attention import dense

DEFAULT_CHUNK_SIZE = 64


def elu_feature_map(x):
  """phi(x) = elu(x) + 1 > 0, the feature map of Katharopoulos et al."""
  return jax.nn.elu(x) + 1.0


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _safe_ratio(num, den):
  """num / den where den > 0, else 0 (and zero gradients there)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.zeros((), num.dtype))


def key_padding_mask(mask, *, H: int, L: int, M: int, core: str):
  """A checked mask (broadcastable to (H, L, M)) that depends on the key
  (and head) only, as bool (Hx, M), Hx in {1, H}; None stays None.

  Kernelised attention sums phi(k_j) v_j^T over the keys once for every
  query, so it can drop keys (padding) but not apply a different key set to
  each query: the mask's query axis must have size 1.
  """
  if mask is None:
    return None
  shape = tuple(np.shape(mask))
  if len(shape) >= 2 and shape[-2] != 1:
    raise ValueError(
        f"mask: expected a key-padding mask of shape (M,), (1, M) or "
        f"(H, 1, M) (query axis of size 1): {core} attention sums over the "
        "keys once for all queries, so it cannot apply a per-(query, key) "
        "mask; use key_valid_len (scalar), is_causal or a key-padding mask, "
        f"or dot_product_attention, got shape {shape}")
  mask_XLM = mask.reshape((1,) * (3 - mask.ndim) + shape)
  return jnp.broadcast_to(mask_XLM[:, 0, :], (mask_XLM.shape[0], M))


def scalar_key_valid_len(key_valid_len, M: int, core: str):
  """bool (1, M) mask of the first key_valid_len keys (a checked integer),
  or None. Only a scalar length is accepted: one key set for all queries."""
  if key_valid_len is None:
    return None
  if np.ndim(key_valid_len) != 0:
    raise ValueError(
        "key_valid_len: expected an integer scalar (one length for every "
        f"query: {core} attention sums over the keys once for all "
        "queries), got shape "
        f"{tuple(np.shape(key_valid_len))}; per-query lengths need "
        "dot_product_attention")
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


def zero_queries_from(out_LHV, query_valid_len):
  """Sets the outputs of queries i >= query_valid_len to exactly zero."""
  if query_valid_len is None:
    return out_LHV
  keep_L = jnp.arange(out_LHV.shape[0]) < jnp.asarray(query_valid_len)
  return jnp.where(keep_L[:, None, None], out_LHV,
                   jnp.zeros((), out_LHV.dtype))


def feature_attention(phi_q_LHP, phi_k_MGP, v_MGV, *, key_mask=None,
                      is_causal: bool = False, query_valid_len=None,
                      chunk_size: int | None = None, precision=None):
  """Kernelised attention on given non-negative features.

  out_i = sum_j (phi_q_i . phi_k_j) v_j / sum_j (phi_q_i . phi_k_j) over the
  keys j that query i may attend to; 0 where that sum is 0.

  Args:
    phi_q_LHP: (L, H, P) query features, >= 0.
    phi_k_MGP: (M, G, P) key features, >= 0 (G divides H; query head h reads
      key/value head h // (H // G)).
    v_MGV: (M, G, V) values.
    key_mask: None or bool (Hx, M) with Hx in {1, H}: keys to keep.
    is_causal: query i sees keys j <= i (chunked prefix sums).
    query_valid_len: None or integer scalar: queries i >= it output 0.
    chunk_size: C of the causal form (default DEFAULT_CHUNK_SIZE, at most
      the padded length).
    precision: einsum precision.

  Returns:
    (L, H, V) in float32 (or wider for float64 inputs).
  """
  L, H, P = phi_q_LHP.shape
  M, G, _ = phi_k_MGP.shape
  V = v_MGV.shape[-1]
  acc = softmax_lib.softmax_dtype(jnp.result_type(phi_q_LHP, phi_k_MGP, v_MGV))
  phi_q = phi_q_LHP.astype(acc)
  phi_k = phi_k_MGP.astype(acc)
  v = v_MGV.astype(acc)
  if key_mask is not None:
    if key_mask.shape[0] != 1 and G != H:
      # A different key set per query head: give every query head its own
      # copy of its key/value head (query head h reads h // (H // G)).
      phi_k = jnp.repeat(phi_k, H // G, axis=1)
      v = jnp.repeat(v, H // G, axis=1)
      G = H
    keep_MX1 = key_mask.T[:, :, None]
    # Dropped keys add nothing, whatever their keys and values hold (0 *
    # NaN would be NaN in the sums).
    phi_k = jnp.where(keep_MX1, phi_k, jnp.zeros((), acc))
    v = jnp.where(keep_MX1, v, jnp.zeros((), acc))
  R = H // G
  phi_q = phi_q.reshape(L, G, R, P)
  einsum = lambda spec, *xs: jnp.einsum(spec, *xs, precision=precision,
                                        preferred_element_type=acc)
  if not is_causal:
    kv_GPV = einsum("mgp,mgv->gpv", phi_k, v)
    z_GP = jnp.sum(phi_k, axis=0)
    num_LGRV = einsum("lgrp,gpv->lgrv", phi_q, kv_GPV)
    den_LGR = einsum("lgrp,gp->lgr", phi_q, z_GP)
  else:
    num_LGRV, den_LGR = _causal_sums(phi_q, phi_k, v, chunk_size, einsum)
  out_LGRV = _safe_ratio(num_LGRV, den_LGR[..., None])
  out_LHV = zero_queries_from(out_LGRV.reshape(L, H, V),
                                             query_valid_len)
  chex.assert_shape(out_LHV, (L, H, V))
  return out_LHV


def _causal_sums(phi_q_LGRP, phi_k_MGP, v_MGV, chunk_size, einsum):
  """Numerator (L, G, R, V) and denominator (L, G, R) over keys j <= i."""
  L, G, R, P = phi_q_LGRP.shape
  M, _, V = v_MGV.shape
  length = max(L, M)
  C = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
  C = min(C, _round_up(length, 8))
  T = _round_up(length, C)
  N = T // C
  pad = lambda x, n: jnp.pad(x, [(0, T - n)] + [(0, 0)] * (x.ndim - 1))
  # Padded keys have zero features, so they add nothing; padded queries are
  # dropped at the end.
  q_NCGRP = pad(phi_q_LGRP, L).reshape(N, C, G, R, P)
  k_NCGP = pad(phi_k_MGP, M).reshape(N, C, G, P)
  v_NCGV = pad(v_MGV, M).reshape(N, C, G, V)

  # Inter-chunk: the state of every earlier chunk, an exclusive prefix sum.
  kv_NGPV = einsum("ncgp,ncgv->ngpv", k_NCGP, v_NCGV)
  z_NGP = jnp.sum(k_NCGP, axis=1)
  shift = lambda x: jnp.concatenate(
      [jnp.zeros((1,) + x.shape[1:], x.dtype), jnp.cumsum(x, axis=0)[:-1]],
      axis=0)
  num_NCGRV = einsum("ncgrp,ngpv->ncgrv", q_NCGRP, shift(kv_NGPV))
  den_NCGR = einsum("ncgrp,ngp->ncgr", q_NCGRP, shift(z_NGP))

  # Intra-chunk: the masked quadratic form on C x C blocks.
  s_NGRCD = einsum("ncgrp,ndgp->ngrcd", q_NCGRP, k_NCGP)
  lower_CD = jnp.arange(C)[:, None] >= jnp.arange(C)[None, :]
  s_NGRCD = jnp.where(lower_CD[None, None, None], s_NGRCD,
                      jnp.zeros((), s_NGRCD.dtype))
  num_NCGRV = num_NCGRV + einsum("ngrcd,ndgv->ncgrv", s_NGRCD, v_NCGV)
  den_NCGR = den_NCGR + jnp.sum(s_NGRCD, axis=-1).transpose(0, 3, 1, 2)
  return (num_NCGRV.reshape(T, G, R, V)[:L],
          den_NCGR.reshape(T, G, R)[:L])


def linear_attention(q, k, v, mask=None, *, bias=None, scale=None,
                     is_causal: bool = False, local_window=None,
                     key_valid_len=None, query_valid_len=None,
                     feature_map: Callable = elu_feature_map,
                     chunk_size: int | None = None, precision=None):
  """Linear attention, softmax replaced by phi(q_i) . phi(k_j), per example
  (a core of `jattn.attention`).

  Multi-head form: q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V), H a
  multiple of G (grouped-query heads as in `dot_product_attention`).
  Single-head form: q (L, K), k (M, K), v (M, V) -> (L, V).

  Args:
    q, k, v: floating arrays as above.
    mask: optional bool key-padding mask, True = may attend, of shape (M,),
      (1, M) or (H, 1, M) (single-head: (M,) or (1, M)). A mask with a query
      axis larger than 1 raises ValueError (see the module docstring).
    bias, scale, local_window: must be None (ValueError otherwise: there
      are no logits to bias or scale, and no window).
    is_causal: query i sees keys j <= i (chunked prefix sums).
    key_valid_len: optional integer scalar: keys j >= it are dropped.
    query_valid_len: optional integer scalar: queries i >= it output 0.
    feature_map: phi, elementwise and positive (default elu(x) + 1).
    chunk_size: chunk length C of the causal form (default 64).
    precision: einsum precision.

  Returns:
    (L, H, V) (single-head: (L, V)) in q's dtype; sums run in float32 or
    wider.
  """
  _checks.reject_unsupported("linear", bias=bias, scale=scale,
                             local_window=local_window)
  x = _checks.attention_inputs(q, k, v, mask, is_causal=is_causal,
                               key_valid_len=key_valid_len,
                               query_valid_len=query_valid_len)
  key_mask = combine_key_masks(
      key_padding_mask(x.mask, H=x.H, L=x.L, M=x.M, core="linear"),
      scalar_key_valid_len(key_valid_len, x.M, "linear"))
  _checks.check_optional_positive_int(chunk_size, "chunk_size")
  if not callable(feature_map):
    raise TypeError(
        f"feature_map: expected a callable, got {type(feature_map).__name__}")
  acc = softmax_lib.softmax_dtype(x.q.dtype)
  out_LHV = feature_attention(
      feature_map(x.q.astype(acc)), feature_map(x.k.astype(acc)), x.v,
      key_mask=key_mask, is_causal=x.is_causal,
      query_valid_len=query_valid_len, chunk_size=chunk_size,
      precision=precision)
  return x.output(out_LHV)


def linear_attention_quadratic(q, k, v, mask=None, *, is_causal: bool = False,
                               key_valid_len=None, query_valid_len=None,
                               feature_map: Callable = elu_feature_map,
                               return_weights: bool = False, precision=None):
  """The same attention through the (H, L, M) weights: O(L M) time and memory.

  w_ij = phi(q_i) . phi(k_j) over the allowed pairs, normalised per query
  row (rows with nothing allowed are 0); out = w v. The reference for
  `linear_attention` (and its causal prefix sums), and the form that takes
  any mask: `mask` is a bool broadcastable to (H, L, M) ((L, M) single-head)
  and `key_valid_len` may be a scalar or one length per query (L,).

  Returns:
    (L, H, V) in q's dtype (single-head: (L, V)), and, if `return_weights`,
    float32 (or wider) weights (H, L, M) ((L, M) single-head).
  """
  x = _checks.attention_inputs(q, k, v, mask, is_causal=is_causal,
                               key_valid_len=key_valid_len,
                               query_valid_len=query_valid_len)
  L, M, H, G, K, V = x.L, x.M, x.H, x.G, x.K, x.V
  allowed = dense.allowed_pairs(x.mask, L, M, causal=x.is_causal,
                                key_valid_len=key_valid_len,
                                query_valid_len=query_valid_len)
  q, k, v = x.q, x.k, x.v
  acc = softmax_lib.softmax_dtype(q.dtype)
  R = H // G
  phi_q = feature_map(q.astype(acc)).reshape(L, G, R, K)
  phi_k = feature_map(k.astype(acc))
  s_HLM = jnp.einsum("lgrk,mgk->grlm", phi_q, phi_k, precision=precision,
                     preferred_element_type=acc).reshape(H, L, M)
  if allowed is not None:
    s_HLM = jnp.where(jnp.broadcast_to(allowed, s_HLM.shape), s_HLM,
                      jnp.zeros((), acc))
  w_HLM = _safe_ratio(s_HLM, jnp.sum(s_HLM, axis=-1, keepdims=True))
  out_LGRV = jnp.einsum("grlm,mgv->lgrv", w_HLM.reshape(G, R, L, M),
                        v.astype(acc), precision=precision,
                        preferred_element_type=acc)
  out = x.output(out_LGRV.reshape(L, H, V))
  if return_weights:
    return out, (w_HLM[0] if x.single_head else w_HLM)
  return out
