"""Local (sliding-window) attention, per example, in O(L w K) time and memory.

Query i attends only to keys in a window around it, i - left <= j <= i +
right (an int w means left = right = w - 1, i.e. |j - i| < w, as in
`jattn.local_mask`). It is softmax attention with a local mask, but computed
by the blockwise implementation (`jattn.attention.blockwise`) with the window as static
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
from jattn.attention import blockwise

IMPLEMENTATIONS = ("blockwise", "pallas")


def _tile(span: int, default: int) -> int:
  """A tile size covering the window's span, at most `default`."""
  return min(default, max(16, -(-span // 16) * 16))


def default_blocks(window) -> tuple[int, int]:
  """(block_q, block_k) for a window: its span left + right + 1 rounded up
  to a multiple of 16 (at least 16), capped at the blockwise defaults."""
  left, right = _checks.check_window(window, "window")
  span = left + right + 1
  block_k = _tile(span, blockwise.DEFAULT_BLOCK_K)
  return min(_tile(span, blockwise.DEFAULT_BLOCK_Q), block_k), block_k


def local_attention(q, k, v, window=None, mask=None, *, bias=None,
                    scale=None, is_causal: bool = False, local_window=None,
                    key_valid_len=None, query_valid_len=None,
                    implementation: str | None = None,
                    block_q: int | None = None, block_k: int | None = None,
                    precision=None):
  """Sliding-window attention without an (L, M) array (a core of
  `jattn.attention`; bind the window with `functools.partial(local_attention,
  window=w)` to plug it in as `attention_fn`).

  Multi-head form: q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V), H a
  multiple of G. Single-head form: q (L, K), k (M, K), v (M, V) -> (L, V).

  Args:
    q, k, v: floating arrays as above.
    window: an int w >= 1 (query i sees |j - i| < w) or a pair
      (left, right) of ints >= 0 (i - left <= j <= i + right). Required
      (here or as `local_window`, the core-signature name).
    mask, bias, scale, is_causal, key_valid_len, query_valid_len: as in
      `jattn.dot_product_attention` (ANDed with the window).
    local_window: the window under its core-signature name; give one of
      `window` and `local_window` (or the same value for both).
    implementation: None or "blockwise" (the pure-JAX tiles, the default)
      or "pallas" (`jattn.attention.pallas`; pass tile sizes its kernel
      accepts on your accelerator). "dense" is refused: it forms the
      (H, L, M) logits.
    block_q, block_k: tile sizes (default `default_blocks(window)`).
    precision: matmul precision.

  Returns:
    (L, H, V) (single-head: (L, V)) in q's dtype.
  """
  if window is None:
    window = local_window
  elif local_window is not None and (_checks.check_window(local_window)
                                     != _checks.check_window(window,
                                                             "window")):
    raise ValueError(
        f"local_window: expected None or the same window as window={window!r}"
        f" (local attention has one window), got {local_window!r}")
  if window is None:
    raise ValueError(
        "window: expected an int >= 1 or a pair (left, right) of ints >= 0, "
        "got None (use dot_product_attention for global attention)")
  _checks.check_window(window, "window")
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation: expected None or one of {IMPLEMENTATIONS} (local "
        f"attention never forms the (H, L, M) logits), got {implementation!r}")
  _checks.check_optional_positive_int(block_q, "block_q")
  _checks.check_optional_positive_int(block_k, "block_k")
  default_q, default_k = default_blocks(window)
  block_q = default_q if block_q is None else block_q
  block_k = default_k if block_k is None else block_k
  if implementation == "pallas":
    from jattn.attention import pallas  # pylint: disable=g-import-not-at-top
    core = pallas.attention
  else:
    core = blockwise.attention
  return core(q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
              local_window=window, key_valid_len=key_valid_len,
              query_valid_len=query_valid_len, block_q=block_q,
              block_k=block_k, precision=precision)
