"""Boolean attention masks: True means "this query may attend to this key".

Every helper returns a boolean array whose last two axes are (queries, keys),
(L, M) or (1, M), which broadcasts against attention logits of shape (H, L, M).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jattn import _checks


def valid_len_mask(valid_len, num_keys: int):
  """Mask of the first `valid_len` keys (d2l's `valid_lens`), per example.

  Careful with d2l's batched code: there a vector `valid_lens` of shape (B,)
  holds one length per EXAMPLE; here a vector holds one length per QUERY of
  one example. For one length per example of a batch use
  `jattn.padding_mask(valid_len_B, M)` (bool (B, 1, M)), or vmap this
  function over the batch with scalar lengths.

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


def zero_unattended(q_LHK, k_MGK, v_MGV, mask=None, *, key_valid_len=None,
                    query_valid_len=None):
  """q, k, v with the rows nothing uses set to exactly zero.

  A key no query may attend to (masked for every query and head, or at or
  past every query's `key_valid_len`) and a query that may attend to
  nothing (past `query_valid_len`, or fully masked) cannot change any
  output, but their values could: 0 * NaN is NaN in the weighted sums.
  Padding often holds garbage, so the attention paths zero those rows
  first (with `jnp.where`, so their gradients are exactly zero too).

  Args:
    q_LHK: (L, H, K); k_MGK: (M, G, K); v_MGV: (M, G, V).
    mask: None or bool broadcastable to (H, L, M).
    key_valid_len: None or integer, scalar or (L,).
    query_valid_len: None or integer scalar.

  Returns:
    (q_LHK, k_MGK, v_MGV), unchanged where used.
  """
  L, M = q_LHK.shape[0], k_MGK.shape[0]
  keys_M = queries_L = None
  if mask is not None:
    mask_HLM = jnp.asarray(mask).reshape((1,) * (3 - jnp.ndim(mask))
                                         + jnp.shape(mask))
    keys_M = jnp.broadcast_to(jnp.any(mask_HLM, axis=(0, 1)), (M,))
    queries_L = jnp.broadcast_to(jnp.any(mask_HLM, axis=(0, 2)), (L,))
  if key_valid_len is not None:
    longest = jnp.max(jnp.asarray(key_valid_len))
    within_M = jnp.arange(M) < longest
    keys_M = within_M if keys_M is None else keys_M & within_M
  if query_valid_len is not None:
    within_L = jnp.arange(L) < jnp.asarray(query_valid_len)
    queries_L = within_L if queries_L is None else queries_L & within_L
  keep = lambda x, rows: (x if rows is None else
                          jnp.where(rows[:, None, None], x,
                                    jnp.zeros((), x.dtype)))
  return keep(q_LHK, queries_L), keep(k_MGK, keys_M), keep(v_MGV, keys_M)
