"""Scaled dot-product attention for one example, with grouped-query heads."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import blockwise as blockwise_lib
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


IMPLEMENTATIONS = ("dense", "blockwise", "pallas")

# Automatic choice: dense up to this many (query, key) pairs per head; above
# it the O(L + M)-memory implementations (see `choose_implementation`). On the
# 2-core CPU of experiments/attention blockwise is already faster at L = 512.
DENSE_MAX_PAIRS = 256 * 256


def dot_product_attention(q, k, v, mask=None, *, bias=None, scale=None,
                          is_causal: bool = False, local_window=None,
                          key_valid_len=None, query_valid_len=None,
                          return_weights: bool = False, precision=None,
                          implementation: str | None = None,
                          block_q: int | None = None,
                          block_k: int | None = None):
  """Scaled dot-product attention, softmax(q k^T * scale + bias) v, per example.

  Multi-head form (H query heads share G key/value heads, H a multiple of G;
  query head h reads key/value head h // (H // G)):
    q: (L, H, K), k: (M, G, K), v: (M, G, V) -> out (L, H, V).
  Single-head form:
    q: (L, K), k: (M, K), v: (M, V) -> out (L, V).

  The allowed (query, key) pairs are the AND of `mask`, `is_causal`,
  `local_window`, `key_valid_len` and `query_valid_len`. Prefer the structured
  arguments to an equivalent boolean `mask`: the blockwise and Pallas
  implementations skip the tiles they exclude (causal attention costs about
  half, local attention O(L w K)), while a `mask` array is only applied.

  Args:
    q, k, v: floating arrays as above.
    mask: optional bool, True = may attend, broadcastable to (H, L, M)
      (single-head: to (L, M)). A query with nothing to attend to outputs 0.
    bias: optional float array added to the logits, broadcastable like `mask`.
    scale: logit scale; default 1 / sqrt(K).
    is_causal: query i sees keys j <= i (`jattn.causal_mask(L, M)`).
    local_window: None, an int w >= 1 (|j - i| < w) or a pair (left, right)
      (i - left <= j <= i + right), as in `jattn.local_mask`.
    key_valid_len: optional integer, scalar or (L,) (one per query): query i
      sees keys j < key_valid_len (`jattn.valid_len_mask`).
    query_valid_len: optional integer scalar: queries i >= query_valid_len
      see nothing (output 0).
    return_weights: also return the attention weights (dense only).
    precision: passed to the matmuls (e.g. `jax.lax.Precision.HIGHEST`).
    implementation: None (automatic, see `choose_implementation`), "dense"
      (materialises the (H, L, M) weights; every autodiff mode), "blockwise"
      (`jattn.blockwise`: O(L + M) memory, reverse-mode autodiff only) or
      "pallas" (`jattn.kernels`: a fused Pallas kernel on GPU/TPU, interpret
      mode elsewhere; reverse-mode autodiff only).
    block_q, block_k: tile sizes of the blockwise and Pallas implementations
      (default: tuned per implementation).

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
  window = None
  if local_window is not None:
    window = masks_lib._window_sides(local_window)  # pylint: disable=protected-access
  _check_lengths(key_valid_len, query_valid_len, L)
  _check_implementation(implementation, return_weights)
  for name, block in (("block_q", block_q), ("block_k", block_k)):
    if block is not None:
      _checks.check_positive_int(block, name)
  if single_head:
    q, k, v = q[:, None, :], k[:, None, :], v[:, None, :]
    mask = None if mask is None else jnp.asarray(mask)[None]
    bias = None if bias is None else jnp.asarray(bias)[None]
  if implementation is None:
    implementation = choose_implementation(
        L, M, return_weights=return_weights, causal=is_causal, window=window,
        mask=mask, bias=bias, key_valid_len=key_valid_len, dtype=q.dtype)

  weights_HLM = None
  if implementation == "dense":
    mask = _dense_mask(mask, L, M, is_causal, window, key_valid_len,
                       query_valid_len)
    out_LHV, weights_HLM = _attend(q, k, v, mask, bias, scale, precision)
  else:
    engine = None
    if implementation == "pallas":
      from jattn.kernels import pallas_attention  # pylint: disable=g-import-not-at-top
      if mask is not None or bias is not None:
        raise ValueError(
            "implementation: expected 'dense' or 'blockwise' with a `mask` or "
            "`bias` array (the Pallas kernel takes is_causal, local_window and "
            "key_valid_len), got 'pallas'")
      engine = pallas_attention.engine()
    out_LHV = blockwise_lib.attend(
        q, k, v, mask=mask, bias=bias, scale=scale, causal=is_causal,
        window=window, key_valid_len=key_valid_len,
        query_valid_len=query_valid_len, block_q=block_q, block_k=block_k,
        precision=precision, engine=engine)
  if single_head:
    out_LHV = out_LHV[:, 0]
    weights_HLM = None if weights_HLM is None else weights_HLM[0]
  out_shape = (L, V) if single_head else (L, H, V)
  chex.assert_shape(out_LHV, out_shape)
  chex.assert_type(out_LHV, q.dtype)
  if return_weights:
    return out_LHV, weights_HLM
  return out_LHV


def choose_implementation(L: int, M: int, *, return_weights: bool = False,
                          causal: bool = False, window=None, mask=None,
                          bias=None, key_valid_len=None, dtype=jnp.float32,
                          backend: str | None = None) -> str:
  """The implementation `dot_product_attention` uses when none is given.

  * "dense" when the weights are asked for (they are (H, L, M) by nature) or
    the problem is small, L * M <= DENSE_MAX_PAIRS (256 * 256), where one
    fused dense pass is as fast and supports every autodiff mode;
  * on GPU/TPU, "pallas" when the Pallas kernel supports the call (see
    `jattn.kernels.pallas_attention.supports`), else "blockwise";
  * on CPU, "blockwise": O(L + M) memory, faster than dense at this size.
  """
  if return_weights or L * M <= DENSE_MAX_PAIRS:
    return "dense"
  backend = jax.default_backend() if backend is None else backend
  if backend in ("gpu", "cuda", "rocm", "tpu"):
    from jattn.kernels import pallas_attention  # pylint: disable=g-import-not-at-top
    if pallas_attention.supports(mask=mask, bias=bias,
                                 key_valid_len=key_valid_len, dtype=dtype,
                                 backend=backend):
      return "pallas"
  return "blockwise"


def _check_lengths(key_valid_len, query_valid_len, L: int) -> None:
  if key_valid_len is not None:
    _checks.check_integer(key_valid_len, "key_valid_len")
    _checks.check_rank(key_valid_len, "key_valid_len", (0, 1))
    if jnp.ndim(key_valid_len) == 1:
      _checks.check_shape(key_valid_len, "key_valid_len", (L,))
    _checks.check_nonnegative_values(key_valid_len, "key_valid_len")
  if query_valid_len is not None:
    _checks.check_integer(query_valid_len, "query_valid_len")
    _checks.check_rank(query_valid_len, "query_valid_len", 0)
    _checks.check_nonnegative_values(query_valid_len, "query_valid_len")


def _check_implementation(implementation, return_weights: bool) -> None:
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation: expected None or one of {IMPLEMENTATIONS}, got "
        f"{implementation!r}")
  if return_weights and implementation not in (None, "dense"):
    raise ValueError(
        "implementation: expected None or 'dense' with return_weights=True "
        f"(only dense attention forms the (H, L, M) weights), got "
        f"{implementation!r}")


def _dense_mask(mask, L, M, causal, window, key_valid_len, query_valid_len):
  """The AND of every mask argument as one boolean array (or None)."""
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


def _attend(q_LHK, k_MGK, v_MGV, mask, bias, scale, precision):
  """Dense attention on validated multi-head inputs."""
  L, H, K = q_LHK.shape
  M, G, _ = k_MGK.shape
  V = v_MGV.shape[-1]
  R = H // G  # query heads per key/value head
  acc = softmax_lib.softmax_dtype(jnp.result_type(q_LHK, k_MGK))
  scale_logits = q_LHK.dtype != acc
  if not scale_logits:
    # Scaling q (O(L K)) rather than the logits (O(L M)) saves a pass over
    # the logits; low-precision q is scaled after the matmul instead.
    q_LHK = q_LHK * jnp.asarray(scale, acc)
  if R == 1:
    # Plain multi-head attention: no group axis, so XLA needs no transposes
    # of the (H, L, M) logits and can fuse the whole attention.
    logits_HLM = jnp.einsum("lhk,mhk->hlm", q_LHK, k_MGK, precision=precision,
                            preferred_element_type=acc)
  else:
    q_LGRK = q_LHK.reshape(L, G, R, K)
    logits_HLM = jnp.einsum("lgrk,mgk->grlm", q_LGRK, k_MGK,
                            precision=precision,
                            preferred_element_type=acc).reshape(H, L, M)
  if scale_logits:
    logits_HLM = logits_HLM * jnp.asarray(scale, acc)
  if bias is not None:
    logits_HLM = logits_HLM + jnp.broadcast_to(bias, logits_HLM.shape).astype(acc)
  weights_HLM = softmax_lib.masked_softmax(logits_HLM, mask)
  weights_HLM_v = weights_HLM.astype(jnp.promote_types(v_MGV.dtype,
                                                       q_LHK.dtype))
  if R == 1:
    out_LHV = jnp.einsum("hlm,mhv->lhv", weights_HLM_v, v_MGV,
                         precision=precision, preferred_element_type=acc)
  else:
    out_LGRV = jnp.einsum("grlm,mgv->lgrv", weights_HLM_v.reshape(G, R, L, M),
                          v_MGV, precision=precision,
                          preferred_element_type=acc)
    out_LHV = out_LGRV.reshape(L, H, V)
  return out_LHV.astype(q_LHK.dtype), weights_HLM
