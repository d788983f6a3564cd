"""Attention cores and the dispatch between them.

Every core in this package has one signature (per example; batch with
`jax.vmap`):

  core(q, k, v, mask=None, *, bias=None, scale=None, is_causal=False,
       local_window=None, key_valid_len=None, query_valid_len=None,
       precision=None, **its_own_options) -> out

  q (L, H, K), k (M, G, K), v (M, G, V) -> out (L, H, V), H a multiple of G
  (single-head form: q (L, K), k (M, K), v (M, V) -> out (L, V)).

A core that cannot honour an argument raises ValueError naming it; none
drops one silently. `jattn.multi_head_attention(..., attention_fn=core)` and
`jattn.transformer_block(..., attention_fn=core)` plug any of them (or your
own function with this signature) into the projection layer.

Exact softmax attention, chosen by `implementation=` here:
  dense.py      the textbook path: (H, L, M) logits, masked softmax, values
  blockwise.py  the same function in O(L + M) memory (online softmax tiles)
  cudnn.py      NVIDIA GPUs: cuDNN's fused attention via jax.nn
  splash.py     TPUs: jax's splash-attention Pallas kernel
  pallas.py     jattn's own fused Pallas forward kernel (opt-in)
The sub-quadratic family (different trade-offs, each its own public core):
  local.py      sliding-window attention, O(L w K)
  linear.py     linear attention (elu + 1 features), O(n K^2)
  performer.py  FAVOR+ random-feature softmax estimate, O(n P K)
Ring attention over a device mesh is in `jattn.parallel`.

This file holds the dispatch only: `dot_product_attention`,
`choose_implementation` and the implementation names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jattn import _checks
from jattn.attention import blockwise
from jattn.attention import dense

IMPLEMENTATIONS = ("dense", "blockwise", "pallas", "cudnn", "splash")

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
  One example per call: batch with `jax.vmap` (a rank-4 q gets an error
  saying so). A batch of single-head arrays, (B, L, K), cannot be told
  apart from one multi-head example and is read as (L, H, K): vmap it,
  `jax.vmap(jattn.dot_product_attention)(q_BLK, k_BMK, v_BMV)`.

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
    scale: logit scale (a scalar); default 1 / sqrt(K).
    is_causal: query i sees keys j <= i (`jattn.causal_mask(L, M)`); a
      Python bool (static under jit).
    local_window: None, an int w >= 1 (|j - i| < w) or a pair (left, right)
      (i - left <= j <= i + right), as in `jattn.local_mask`.
    key_valid_len: optional integer, scalar or (L,) (one per query): query i
      sees keys j < key_valid_len (`jattn.valid_len_mask`).
    query_valid_len: optional integer scalar: queries i >= query_valid_len
      see nothing (output 0).
    return_weights: also return the attention weights (dense only).
    precision: passed to the matmuls (e.g. `jax.lax.Precision.HIGHEST`).
    implementation: None (automatic, see `choose_implementation`), "dense"
      (`jattn.attention.dense`: materialises the (H, L, M) weights; every
      autodiff mode), "blockwise" (`jattn.attention.blockwise`: O(L + M)
      memory, reverse-mode autodiff only), "cudnn"
      (`jattn.attention.cudnn`: NVIDIA's fused kernel through
      `jax.nn.dot_product_attention`; bf16/f16, GPU only), "splash"
      (`jattn.attention.splash`: jax's TPU splash-attention kernel) or
      "pallas" (`jattn.attention.pallas`: jattn's own fused Pallas forward
      kernel, opt-in; reverse-mode autodiff only). The kernels raise a
      ValueError naming any argument they cannot express.
    block_q, block_k: tile sizes of the blockwise, Pallas and splash
      implementations (default: tuned per implementation; cuDNN takes none).

  Returns:
    out with q's dtype, shape (L, H, V) (single-head: (L, V)); and, if
    `return_weights`, weights in float32 of shape (H, L, M) (single-head:
    (L, M)).
  """
  x = _checks.attention_inputs(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  return_weights = _checks.check_static_bool(return_weights, "return_weights")
  _check_implementation(implementation, return_weights)
  _checks.check_optional_positive_int(block_q, "block_q")
  _checks.check_optional_positive_int(block_k, "block_k")
  if implementation is None:
    implementation = choose_implementation(
        x.L, x.M, return_weights=return_weights,
        dtype=jnp.result_type(x.q, x.k), head_dim=x.K, value_dim=x.V,
        is_causal=x.is_causal, local_window=x.window,
        has_mask=x.mask is not None, has_bias=x.bias is not None,
        key_valid_len_ndim=(None if key_valid_len is None
                            else jnp.ndim(key_valid_len)))
  common = dict(bias=bias, scale=scale, is_causal=is_causal,
                local_window=local_window, key_valid_len=key_valid_len,
                query_valid_len=query_valid_len, precision=precision)
  if implementation == "dense":
    return dense.attention(q, k, v, mask, return_weights=return_weights,
                           **common)
  if implementation == "cudnn":
    _checks.reject_unsupported("cudnn", block_q=block_q, block_k=block_k)
  else:
    common.update(block_q=block_q, block_k=block_k)
  return _core(implementation)(q, k, v, mask, **common)


def _core(implementation: str):
  """The core function of an implementation; the kernel modules are
  imported when first used (they pull in jax.experimental.pallas)."""
  if implementation == "pallas":
    from jattn.attention import pallas  # pylint: disable=g-import-not-at-top
    return pallas.attention
  if implementation == "cudnn":
    from jattn.attention import cudnn  # pylint: disable=g-import-not-at-top
    return cudnn.attention
  if implementation == "splash":
    from jattn.attention import splash  # pylint: disable=g-import-not-at-top
    return splash.attention
  return blockwise.attention


def choose_implementation(L: int, M: int, *, return_weights: bool = False,
                          dtype=jnp.float32, head_dim: int = 64,
                          value_dim: int | None = None,
                          is_causal: bool = False, local_window=None,
                          has_mask: bool = False, has_bias: bool = False,
                          key_valid_len_ndim: int | None = None,
                          platform: str | None = None,
                          compute_capability: tuple[int, int] | None = None
                          ) -> str:
  """The implementation `dot_product_attention` uses when none is given.

  The rule (docs/DESIGN.md has the same table):

  | case                                               | implementation |
  |----------------------------------------------------|----------------|
  | weights asked for, or L * M <= DENSE_MAX_PAIRS      | "dense"        |
  | NVIDIA GPU and cuDNN applies (see below)            | "cudnn"        |
  | TPU and splash attention applies (see below)        | "splash"       |
  | anything else (CPU; GPU/TPU cases the kernels lack) | "blockwise"    |

  cuDNN applies (`jax.nn.dot_product_attention(implementation="cudnn")`):
  bfloat16 or float16; head width K = V, a multiple of 8, <= 128 (<= 256 on
  compute capability >= 9.0); compute capability >= 8.0; no mask or bias
  array; a window only if it looks left (right = 0); at most one key length
  per example (a scalar `key_valid_len`).
  Splash attention applies (jax's TPU kernel, `jattn.attention.splash`):
  float32 or bfloat16; K = V; no mask or bias array; at most one key length
  per example. jattn's own Pallas kernel is never chosen: it runs only when
  asked for (`implementation="pallas"`), since it has not been recorded
  correct and faster on hardware (`experiments/accelerator_check.py`).

  Args:
    L, M: query and key lengths.
    return_weights: whether the weights are asked for.
    dtype: the inputs' dtype.
    head_dim, value_dim: K and V (V defaults to K).
    is_causal, local_window: the structure (local_window None, an int w or
      (left, right)).
    has_mask, has_bias: whether a mask / bias array is given.
    key_valid_len_ndim: None (no key lengths), 0 (one per example) or 1
      (one per query).
    platform: "cpu", "gpu" or "tpu"; compute_capability: (major, minor) of
      an NVIDIA GPU. Both default to the facts of `jax.devices()[0]`
      (`device_facts`); pass them to ask about another machine.

  Returns:
    One of IMPLEMENTATIONS.
  """
  if return_weights or L * M <= DENSE_MAX_PAIRS:
    return "dense"
  if platform is None:
    platform, default_capability = device_facts()
    if compute_capability is None:
      compute_capability = default_capability
  value_dim = head_dim if value_dim is None else value_dim
  window = (None if local_window is None
            else _checks.check_window(local_window))
  dtype = jnp.dtype(dtype)
  plain = not has_mask and not has_bias and key_valid_len_ndim in (None, 0)
  if (platform in ("gpu", "cuda") and plain and compute_capability is not None
      and tuple(compute_capability) >= (8, 0)
      and dtype in (jnp.bfloat16, jnp.float16) and head_dim == value_dim
      and head_dim % 8 == 0
      and head_dim <= (256 if tuple(compute_capability) >= (9, 0) else 128)
      and (window is None or window[1] == 0)):
    return "cudnn"
  if (platform == "tpu" and plain and dtype in (jnp.float32, jnp.bfloat16)
      and head_dim == value_dim):
    return "splash"
  return "blockwise"


def device_facts() -> tuple[str, tuple[int, int] | None]:
  """(platform, compute capability or None) of `jax.devices()[0]`: the
  platform "cpu", "gpu" or "tpu", and (major, minor) for an NVIDIA GPU."""
  device = jax.devices()[0]
  capability = None
  text = getattr(device, "compute_capability", None)
  if text is not None:
    try:
      capability = tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:  # not an NVIDIA version number (e.g. ROCm's gfx90a)
      capability = None
  return device.platform, capability


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


__all__ = [
    "DENSE_MAX_PAIRS",
    "IMPLEMENTATIONS",
    "choose_implementation",
    "dot_product_attention",
]
