"""Boolean attention masks: True means "this query may attend to this key".

Every helper returns a boolean array whose last two axes are (queries, keys),
(L, M) or (1, M), which broadcasts against attention logits of shape (H, L, M).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jattn import _checks


def valid_len_mask(valid_len, num_keys: int):
  """Mask of the first `valid_len` keys (d2l's `valid_lens`).

  Args:
    valid_len: integer scalar (the same length for every query) or integer
      vector of shape (L,) (one length per query). Lengths above `num_keys`
      mean "all keys". Negative lengths raise ValueError when the value is
      known; under `jax.jit` they are clipped to 0 (nothing to attend to).
    num_keys: M, the number of keys (a Python int).

  Returns:
    bool (1, M) for a scalar `valid_len`, bool (L, M) for a vector.
  """
  _checks.check_positive_int(num_keys, "num_keys", minimum=0)
  _checks.check_rank(valid_len, "valid_len", (0, 1))
  _checks.check_integer(valid_len, "valid_len")
  _checks.check_nonnegative_values(valid_len, "valid_len")
  valid_len_L = jnp.atleast_1d(jnp.asarray(valid_len))
  return jnp.arange(num_keys)[None, :] < valid_len_L[:, None]


def _check_offset(offset, name: str = "offset") -> None:
  if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
    raise TypeError(f"{name}: expected a Python int, got {type(offset).__name__}")


def causal_mask(num_queries: int, num_keys: int, *, offset: int = 0):
  """Mask letting query i attend to keys j <= i + offset.

  With the default offset 0 the mask is aligned at the top-left corner, as in
  `jax.nn.dot_product_attention(is_causal=True)`. For queries that continue a
  cached prefix (decoding), use `offset = num_keys - num_queries`.

  Returns:
    bool (L, M) with L = num_queries, M = num_keys.
  """
  _checks.check_positive_int(num_queries, "num_queries", minimum=0)
  _checks.check_positive_int(num_keys, "num_keys", minimum=0)
  _check_offset(offset)
  query_L = jnp.arange(num_queries)[:, None]
  key_M = jnp.arange(num_keys)[None, :]
  return key_M <= query_L + offset


def local_mask(num_queries: int, num_keys: int, window, *, offset: int = 0):
  """Sliding-window mask.

  Args:
    num_queries: L.
    num_keys: M.
    window: an int w >= 1, letting query i attend to keys with
      |j - (i + offset)| < w (w = 1: the aligned key only); or a pair
      (left, right) of ints >= 0, letting query i attend to keys
      i + offset - left <= j <= i + offset + right, the convention of
      `jax.nn.dot_product_attention(local_window_size=(left, right))`.
      Combine with `causal_mask` (or use right = 0) for causal local attention.
    offset: shifts the diagonal, as in `causal_mask`.

  Returns:
    bool (L, M).
  """
  _checks.check_positive_int(num_queries, "num_queries", minimum=0)
  _checks.check_positive_int(num_keys, "num_keys", minimum=0)
  _check_offset(offset)
  left, right = _checks.check_window(window, "window")
  centre_L = jnp.arange(num_queries)[:, None] + offset
  key_M = jnp.arange(num_keys)[None, :]
  return (key_M >= centre_L - left) & (key_M <= centre_L + right)


def combine_masks(*masks):
  """Logical AND of boolean masks, broadcasting their shapes.

  `None` entries are skipped; returns None when every entry is None.
  """
  present = [m for m in masks if m is not None]
  for i, m in enumerate(masks):
    if m is not None:
      _checks.check_bool(m, f"masks[{i}]")
  if not present:
    return None
  try:
    shape = np.broadcast_shapes(*(np.shape(m) for m in present))
  except ValueError as err:
    raise ValueError(
        "masks: expected shapes that broadcast together, got "
        f"{[tuple(np.shape(m)) for m in present]}") from err
  out = jnp.ones(shape, dtype=bool)
  for m in present:
    out = out & jnp.broadcast_to(m, shape)
  return out


def zero_padded_rows(x_ND, mask_N):
  """x with the rows where the (N,) token mask is False set to exactly zero
  (x unchanged when mask_N is None)."""
  if mask_N is None:
    return x_ND
  return jnp.where(mask_N[:, None], x_ND, jnp.zeros((), x_ND.dtype))
