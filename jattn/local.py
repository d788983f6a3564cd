"""Local (sliding-window) attention, per example, in O(L w K) time and memory.

Query i attends only to keys in a window around it, i - left <= j <= i +
right (an int w means left = right = w - 1, i.e. |j - i| < w, as in
`jattn.local_mask`). It is softmax attention with a local mask, but computed
by the blockwise implementation (`jattn.blockwise`) with the window as static
structure: only the (block_q x block_k) tiles that meet the band are visited,
so time is O(L (w + block) K) per head and no (L, M) array is ever formed
(memory O((L + M) K)). The tile sizes default to the window's span (up to
the blockwise defaults), so narrow windows do not pay for wide tiles.

What is traded: one layer connects positions at most w - 1 apart, so a
stack needs about n / (w - 1) layers to connect the ends of a sequence
(maximum path length O(n / w), like a CNN with kernel w).

Every mask of `dot_product_attention` applies (a boolean `mask` and a `bias`
too, though an (L, M) array of them is itself quadratic; prefer `is_causal`
and the length arguments). Only reverse-mode differentiation is defined (the
blockwise implementation's custom VJP), and the output equals
`dot_product_attention(..., local_window=window, implementation="dense")` up
to float rounding.
"""

from __future__ import annotations

from jattn import _checks
from jattn import _variant_layer
from jattn import attention as attention_lib
from jattn import blockwise as blockwise_lib
from jattn import masks as masks_lib

IMPLEMENTATIONS = ("blockwise", "pallas")


def _tile(span: int, default: int) -> int:
  """A tile size covering the window's span, at most `default`."""
  return min(default, max(16, -(-span // 16) * 16))


def default_blocks(window) -> tuple[int, int]:
  """(block_q, block_k) for a window: its span left + right + 1 rounded up
  to a multiple of 16 (at least 16), capped at the blockwise defaults."""
  left, right = masks_lib._window_sides(window)  # pylint: disable=protected-access
  span = left + right + 1
  block_k = _tile(span, blockwise_lib.DEFAULT_BLOCK_K)
  return min(_tile(span, blockwise_lib.DEFAULT_BLOCK_Q), block_k), block_k


def local_attention(q, k, v, window, mask=None, *, bias=None, scale=None,
                    is_causal: bool = False, key_valid_len=None,
                    query_valid_len=None, implementation: str | None = None,
                    block_q: int | None = None, block_k: int | None = None,
                    precision=None):
  """Sliding-window attention without an (L, M) array.

  Multi-head form: q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V), H a
  multiple of G. Single-head form: q (L, K), k (M, K), v (M, V) -> (L, V).

  Args:
    q, k, v: floating arrays as above.
    window: an int w >= 1 (query i sees |j - i| < w) or a pair
      (left, right) of ints >= 0 (i - left <= j <= i + right).
    mask, bias, scale, is_causal, key_valid_len, query_valid_len: as in
      `jattn.dot_product_attention` (ANDed with the window).
    implementation: None or "blockwise" (the pure-JAX tiles, the default)
      or "pallas" (`jattn.kernels`; pass tile sizes its kernel accepts on
      your accelerator). "dense" is refused: it forms the (H, L, M) logits.
    block_q, block_k: tile sizes (default `default_blocks(window)`).
    precision: matmul precision.

  Returns:
    (L, H, V) (single-head: (L, V)) in q's dtype.
  """
  if window is None:
    raise ValueError(
        "window: expected an int >= 1 or a pair (left, right) of ints >= 0, "
        "got None (use dot_product_attention for global attention)")
  masks_lib._window_sides(window)  # pylint: disable=protected-access
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation: expected None or one of {IMPLEMENTATIONS} (local "
        f"attention never forms the (H, L, M) logits), got {implementation!r}")
  for name, block in (("block_q", block_q), ("block_k", block_k)):
    if block is not None:
      _checks.check_positive_int(block, name)
  default_q, default_k = default_blocks(window)
  block_q = default_q if block_q is None else block_q
  block_k = default_k if block_k is None else block_k
  if implementation is None:
    implementation = "blockwise"
  return attention_lib.dot_product_attention(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len, implementation=implementation,
      block_q=block_q, block_k=block_k, precision=precision)


def local_self_attention(params, x, mask=None, *, window, positions=None,
                         bias=None, scale=None, is_causal: bool = False,
                         key_valid_len=None,
                         implementation: str | None = None,
                         block_q: int | None = None,
                         block_k: int | None = None, precision=None):
  """Self-attention whose attention is `local_attention`.

  Args:
    params: dict from `jattn.init_self_attention` (the same params as
      `jattn.self_attention`).
    x: (n, D) tokens.
    mask: optional bool broadcastable to (H, n, n), True = may attend.
    window: as in `local_attention` (required).
    positions: optional (n,) positions for rotary embeddings.
    bias, scale, is_causal, key_valid_len, implementation, block_q, block_k,
      precision: as in `local_attention`.

  Returns:
    (n, D) in x's dtype.
  """
  def core(q, k, v, mask):
    return local_attention(
        q, k, v, window, mask, bias=bias, scale=scale, is_causal=is_causal,
        key_valid_len=key_valid_len, implementation=implementation,
        block_q=block_q, block_k=block_k, precision=precision)

  return _variant_layer.self_attention_layer(core, params, x, mask,
                                             positions=positions,
                                             precision=precision)
