"""Autoregressive decoding of causal self-attention with a key/value cache.

A cache holds the projected keys and values of the tokens seen so far, in
fixed-size buffers so that a jitted decode step keeps one shape:

  cache = {"k": (max_len, G, K), "v": (max_len, G, V), "length": int32 ()}

Rows [0, length) are filled; the rest are zeros and never attended to.
`cached_self_attention` appends L new tokens and attends each of them
causally to everything cached up to and including itself. The same function
does the prefill (a prompt of any length L) and the decode steps (L = 1):

  cache = init_kv_cache(params, max_len)
  y_prompt, cache = cached_self_attention(params, prompt_LD, cache)
  step = jax.jit(cached_self_attention, static_argnames=("rope",))
  y_1D, cache = step(params, x_1D, cache)       # repeat, one token at a time

`rope` and `return_weights` choose the computation, so keep them static
under `jax.jit` (`static_argnames` or `functools.partial`).

Row by row the outputs equal `self_attention(params, x, is_causal=True)` over
the whole prefix (with `positions=arange(n)` when `rope=True`). A batch of
caches (possibly at different lengths) is decoded with `jax.vmap`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jattn import _checks
from jattn import attention as attention_lib
from jattn import multihead

_CACHE_KEYS = ("k", "v", "length")


def _check_self_attention_params(params):
  """Validates multi-head params used for self-attention; returns the dims."""
  Dq, _, H, G, K, V, Do = _checks.check_attention_params(
      params, self_attention=True)
  return Dq, H, G, K, V, Do


def init_kv_cache(params, max_len: int, *, dtype=None):
  """An empty key/value cache for `cached_self_attention`.

  Args:
    params: dict from `init_self_attention` (w_q (D, H, K), w_k (D, G, K),
      w_v (D, G, V), w_o (H, V, D), optional b_*); only shapes are read.
    max_len: the number of tokens the cache can hold (a Python int >= 1).
    dtype: floating dtype of the stored keys and values (default: the dtype
      of params["w_k"]).

  Returns:
    {"k": zeros (max_len, G, K), "v": zeros (max_len, G, V),
     "length": int32 scalar 0}.
  """
  _, _, G, K, V, _ = _check_self_attention_params(params)
  _checks.check_positive_int(max_len, "max_len")
  dtype = jnp.dtype(params["w_k"].dtype if dtype is None else dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")
  return {
      "k": jnp.zeros((max_len, G, K), dtype),
      "v": jnp.zeros((max_len, G, V), dtype),
      "length": jnp.zeros((), jnp.int32),
  }


def _check_cache(cache, G, K, V):
  """Validates a cache against the params' head shapes; returns max_len."""
  if not isinstance(cache, dict):
    raise TypeError(
        f"cache: expected a dict with keys {list(_CACHE_KEYS)} (from "
        f"init_kv_cache), got {type(cache).__name__}")
  missing = [key for key in _CACHE_KEYS if key not in cache]
  if missing:
    raise ValueError(
        f"cache: expected keys {list(_CACHE_KEYS)} (from init_kv_cache), got "
        f"keys {sorted(cache)}")
  _checks.check_rank(cache["k"], "cache['k']", 3)
  _checks.check_floating(cache["k"], "cache['k']")
  max_len = np.shape(cache["k"])[0]
  _checks.check_shape(cache["k"], "cache['k']", (max_len, G, K))
  _checks.check_shape(cache["v"], "cache['v']", (max_len, G, V))
  _checks.check_floating(cache["v"], "cache['v']")
  _checks.check_rank(cache["length"], "cache['length']", 0)
  _checks.check_integer(cache["length"], "cache['length']")
  return max_len


def _check_fits(length, L, max_len):
  """Raises ValueError when L new tokens do not fit (length if concrete)."""
  if L > max_len:
    raise ValueError(
        f"x_LD: expected at most max_len={max_len} tokens (the first axis of "
        f"cache['k']), got L={L}")
  if _checks.is_concrete(length):
    filled = int(length)
    if filled < 0:
      raise ValueError(f"cache['length']: expected a value >= 0, got {filled}")
    if filled + L > max_len:
      raise ValueError(
          f"x_LD: expected at most {max_len - filled} new tokens to fit in the "
          f"cache (cache['length']={filled}, max_len={max_len}), got L={L}; "
          "make the cache larger with init_kv_cache(params, max_len)")


def cached_self_attention(params, x_LD, cache, *, rope: bool = False,
                          scale=None, return_weights: bool = False,
                          precision=None):
  """Causal self-attention of L new tokens that continue a cached sequence.

  The new tokens take the absolute positions length .. length + L - 1, where
  length = cache["length"]. Their keys and values are written into the cache
  at those rows (`jax.lax.dynamic_update_slice`, so `length` may be traced
  under `jax.jit`); then the query at position p attends to the cached keys
  at positions 0 .. p (rows at or beyond length + L are masked out).

  Args:
    params: dict from `init_self_attention` (D = Dq = Dkv; GQA allowed).
    x_LD: (L, D) new tokens; any L >= 0 (a whole prompt for the prefill,
      L = 1 for a decode step).
    cache: dict from `init_kv_cache` (or returned by this function).
    rope: rotate queries and keys with `apply_rope` at their absolute
      positions; keys are stored rotated, so use the same `rope` for every
      call on one cache.
    scale: logit scale, default 1 / sqrt(K).
    return_weights: also return the attention weights.
    precision: einsum precision.

  Returns:
    (y_LD, new_cache): y_LD (L, Do) in x_LD's dtype; new_cache with the new
    keys/values (cast to the cache's dtype) written and "length" increased
    by L. With `return_weights`, (y_LD, weights_HLM, new_cache), weights in
    float32 (float64 for float64 inputs) of shape (H, L, M) over all
    M = max_len cache rows, zero at rows a query may not see.

  Raises:
    ValueError: if the L tokens do not fit, length + L > max_len, when
      `length` is concrete (eager calls); L > max_len always raises.

  Under `jax.jit` (or vmap) the length is a tracer and cannot be checked.
  An overflowing call then returns y_LD (and the weights) filled with NaN,
  the new "length" is still length + L (> max_len, so a caller can test
  `new_cache["length"] <= max_len`), and the cache rows are unspecified
  (the write start is clamped by `dynamic_update_slice`).
  """
  D, H, G, K, V, Do = _check_self_attention_params(params)
  x_LD = _checks.check_tokens(x_LD, "x_LD", D)
  for name, flag in (("rope", rope), ("return_weights", return_weights)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(
          f"{name}: expected a Python bool (mark it static under jax.jit, "
          f"e.g. functools.partial), got {type(flag).__name__}")
  max_len = _check_cache(cache, G, K, V)
  L = x_LD.shape[0]
  length = cache["length"]
  _check_fits(length, L, max_len)
  length = jnp.asarray(length).astype(jnp.int32)
  if L == 0:  # nothing to append or attend
    y_LD = jnp.zeros((0, Do), x_LD.dtype)
    new_cache = {"k": cache["k"], "v": cache["v"], "length": length}
    if return_weights:
      dtype = jnp.promote_types(
          jnp.result_type(x_LD, params["w_q"], cache["k"]), jnp.float32)
      weights_HLM = jnp.zeros((H, 0, max_len), dtype)
      return y_LD, weights_HLM, new_cache
    return y_LD, new_cache

  position_L = length + jnp.arange(L, dtype=jnp.int32)
  written = {}

  def cache_core(q_LHK, k_LGK, v_LGV):
    """Writes the new keys/values at rows length .. length + L - 1, then
    attends query p (absolute position) to cached rows 0 .. p: per-query
    key lengths p + 1, which the automatic dispatch can tile (rows past the
    filled length lie beyond every new query's position)."""
    zero = jnp.zeros((), jnp.int32)
    start = (length, zero, zero)
    k_MGK = jax.lax.dynamic_update_slice(
        cache["k"], k_LGK.astype(cache["k"].dtype), start)
    v_MGV = jax.lax.dynamic_update_slice(
        cache["v"], v_LGV.astype(cache["v"].dtype), start)
    written["k"], written["v"] = k_MGK, v_MGV
    return attention_lib.dot_product_attention(
        q_LHK, k_MGK, v_MGV, scale=scale, key_valid_len=position_L + 1,
        return_weights=return_weights, precision=precision)

  positions = position_L if rope else None
  y_LD = multihead.attention_layer(
      params, x_LD, x_LD, cache_core, q_positions=positions,
      kv_positions=positions, precision=precision, has_aux=return_weights,
      self_attention=True, names=("x_LD", "x_LD"))
  y_LD, weights_HLM = y_LD if return_weights else (y_LD, None)
  k_MGK, v_MGV = written["k"], written["v"]

  new_length = length + jnp.asarray(L, jnp.int32)
  if not _checks.is_concrete(new_length):
    overflow = new_length > max_len
    y_LD = jnp.where(overflow, jnp.asarray(jnp.nan, y_LD.dtype), y_LD)
    if return_weights:
      weights_HLM = jnp.where(overflow,
                              jnp.asarray(jnp.nan, weights_HLM.dtype),
                              weights_HLM)
  new_cache = {"k": k_MGK, "v": v_MGV, "length": new_length}
  chex.assert_shape(y_LD, (L, Do))
  chex.assert_type(new_cache["length"], jnp.int32)
  if return_weights:
    chex.assert_shape(weights_HLM, (H, L, max_len))
    return y_LD, weights_HLM, new_cache
  return y_LD, new_cache
