"""Blockwise (flash-style) attention in pure JAX, O(L + M) memory.

Queries are visited in blocks of `block_q` rows and keys/values in blocks of
`block_k`; an online softmax (running row maximum and row sum, in float32 or
wider) accumulates each query block's output, so the (H, L, M) logits are
never formed. The backward pass is a `jax.custom_vjp` that saves only q, k, v,
the output and the per-row log-sum-exp (O(L + M) memory) and recomputes each
tile.

Masks known at trace time (causal, a local window, and the padding of L and M
up to whole blocks) decide which tiles are visited: a tile with nothing to
attend to is never computed, and a tile where everything may be attended to
skips the mask arithmetic. Masks that are data (a boolean `mask` sliced per
tile, key lengths) are applied in every visited tile.

CPU speed comes from the layout: every matmul is a plain (rows x inner) @
(inner x cols) product (operands are transposed once, outside the loops, so no
tile matmul needs a transposed operand; XLA's CPU matmuls run 2-3x slower on
transposed operands), and the query heads that share a key/value head are
stacked into one matmul (grouped-query attention). On CPU the plan is
"sequential": key/value heads are visited by a loop and a `jax.vmap` batch by
`jax.custom_batching.sequential_vmap`, so each tile is one head's
(block_q x block_k) and stays in cache (25% faster than making the batch and
heads batch dimensions of every tile op). On accelerators the batch and heads
are batch dimensions of the tile matmuls.

`attention` is the core (the signature of every core in `jattn.attention`);
`jattn.dot_product_attention(..., implementation="blockwise")` calls it. Only first-order reverse-mode differentiation
(grad, vjp, jacrev) is defined; forward mode (jvp, jacfwd, hessian) needs
`implementation="dense"`.

Internal layout (per example; vmap adds a leading batch axis):
  q (G, Lp, R, K), k (G, Mp, K), kT (G, K, Mp), v (G, Mp, V),
  out (G, Lp, R, V), lse (G, Lp, R), mask/bias (Gx, Lx, Rx, Mx) with each of
  Gx/Rx equal to G/R or 1 and Lx/Mx equal to Lp/Mp or 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.custom_batching
import jax.numpy as jnp
from jax import lax

from jattn import _checks
from jattn import masks as masks_lib
from jattn import softmax as softmax_lib

# Tile sizes tuned on the 2-core AVX-512 CPU of experiments/attention (K = 64,
# float32; 128 x 256 to 512 x 512 were within noise of each other): large
# enough for efficient matmuls, small enough that one head's tile of logits
# (128 KiB) stays in the L2 cache.
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 256


# Finite stand-ins for the infinities of the textbook online softmax, so that
# no infinity is ever formed (`jax.debug_infs` stays quiet, as it does for
# jax.nn's attention; jax issue 37422). A masked logit, and the row maximum
# of a query that has seen nothing yet, is MASKED_LOGIT; the log-normaliser
# (and so the log-sum-exp) of a query with nothing to attend to is
# EMPTY_ROW_LSE. Both are a quarter of the dtype's extremes: exp of either
# less any real logit is exactly 0, and no sum of two of them overflows.


def masked_logit(dtype):
  """The finite -inf of `dtype` (float32 or wider): finfo.min / 4."""
  return jnp.finfo(dtype).min / 4


def empty_row_lse(dtype):
  """The finite +inf of `dtype` marking an empty row: finfo.max / 4."""
  return jnp.finfo(dtype).max / 4


def is_masked_logit(x):
  """True where x is MASKED_LOGIT or below (also a user's -inf bias)."""
  return x <= masked_logit(x.dtype)


def is_empty_row(lse):
  """True where an lse (or log-normaliser) marks a query with nothing to
  attend to."""
  return lse >= empty_row_lse(lse.dtype)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static description of one blockwise attention call.

  Attributes:
    num_queries, num_keys: L and M before padding.
    block_q, block_k: tile sizes; L and M are padded to multiples of them.
    causal: query i sees keys j <= i.
    window: None or (left, right): query i sees keys i - left <= j <= i + right.
    precision: matmul precision.
    sequential: process one key/value head and one batch element at a time
      (heads by a loop, a vmapped batch by `jax.custom_batching.
      sequential_vmap`) instead of as batch dimensions of every tile matmul.
      On CPU this keeps each tile small enough for the caches and is ~25%
      faster; accelerators want the parallel form.
  """
  num_queries: int
  num_keys: int
  block_q: int
  block_k: int
  causal: bool = False
  window: tuple[int, int] | None = None
  precision: Any = None
  sequential: bool = False

  @property
  def padded_queries(self) -> int:
    return _round_up(self.num_queries, self.block_q)

  @property
  def padded_keys(self) -> int:
    return _round_up(self.num_keys, self.block_k)

  @property
  def num_query_blocks(self) -> int:
    return self.padded_queries // self.block_q

  @property
  def num_key_blocks(self) -> int:
    return self.padded_keys // self.block_k


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def choose_block(length: int, block: int, multiple: int = 8) -> int:
  """A tile size near `block` that splits `length` into near-equal tiles.

  With t = ceil(length / block) tiles, each is ceil(length / t) rounded up to
  `multiple`, so padding wastes less than `multiple` rows per tile instead of
  up to a whole block.
  """
  if length <= 0:
    return multiple
  tiles = -(-length // block)
  return _round_up(-(-length // tiles), multiple)


def make_plan(num_queries: int, num_keys: int, *, block_q: int | None = None,
              block_k: int | None = None, causal: bool = False,
              window: tuple[int, int] | None = None, precision=None,
              sequential: bool | None = None) -> Plan:
  """A `Plan` with tile sizes fitted to L and M (defaults when None).

  `sequential` defaults to True on CPU (see `Plan`).
  """
  block_q = DEFAULT_BLOCK_Q if block_q is None else block_q
  block_k = DEFAULT_BLOCK_K if block_k is None else block_k
  if sequential is None:
    sequential = jax.default_backend() == "cpu"
  return Plan(num_queries, num_keys, choose_block(num_queries, block_q),
              choose_block(num_keys, block_k), bool(causal),
              None if window is None else (int(window[0]), int(window[1])),
              precision, bool(sequential))


# ---------------------------------------------------------------------------
# Which tiles to visit, and which need a mask.


def key_block_range(plan: Plan, i):
  """[first, last) key blocks holding a key that query block i may attend to."""
  first_row = i * plan.block_q
  last_row = jnp.minimum(first_row + plan.block_q, plan.num_queries) - 1
  first_col, last_col = 0, plan.num_keys - 1
  if plan.causal:
    last_col = jnp.minimum(last_col, last_row)
  if plan.window is not None:
    left, right = plan.window
    first_col = jnp.maximum(first_col, first_row - left)
    last_col = jnp.minimum(last_col, last_row + right)
  return _block_span(first_col, last_col, plan.block_k)


def query_block_range(plan: Plan, j):
  """[first, last) query blocks holding a query that may attend to key
  block j."""
  first_col = j * plan.block_k
  last_col = jnp.minimum(first_col + plan.block_k, plan.num_keys) - 1
  first_row, last_row = 0, plan.num_queries - 1
  if plan.causal:
    first_row = jnp.maximum(first_row, first_col)
  if plan.window is not None:
    left, right = plan.window
    first_row = jnp.maximum(first_row, first_col - right)
    last_row = jnp.minimum(last_row, last_col + left)
  return _block_span(first_row, last_row, plan.block_q)


def _block_span(first, last, block: int):
  """Blocks [lo, hi) covering indices first..last (empty when last < first)."""
  lo = jnp.asarray(first, jnp.int32) // block
  hi = jnp.asarray(last, jnp.int32) // block + 1
  return lo, jnp.where(last < first, lo, hi)


def tile_is_full(plan: Plan, i, j):
  """Whether the static structure allows every pair of tile (i, j).

  Python True when no tile ever needs a mask; else a traced bool.
  """
  full = True
  first_row, first_col = i * plan.block_q, j * plan.block_k
  last_row = first_row + plan.block_q - 1
  last_col = first_col + plan.block_k - 1
  if plan.padded_keys != plan.num_keys:
    full = full & (last_col < plan.num_keys)
  if plan.causal:
    full = full & (last_col <= first_row)
  if plan.window is not None:
    left, right = plan.window
    full = full & (last_row - left <= first_col)
    full = full & (last_col <= first_row + right)
  return full


def structural_valid(plan: Plan, rows, cols, key_len_rows):
  """Allowed pairs from the static structure and key lengths, or None."""
  valid = None

  def both(a, b):
    return b if a is None else a & b

  if plan.padded_keys != plan.num_keys:
    valid = both(valid, cols < plan.num_keys)
  if plan.causal:
    valid = both(valid, cols <= rows)
  if plan.window is not None:
    left, right = plan.window
    valid = both(valid, (cols >= rows - left) & (cols <= rows + right))
  if key_len_rows is not None:
    valid = both(valid, cols < key_len_rows)
  return valid


def tile(plan: Plan, x, i, j):
  """Tile (i, j) of a (Gx, Lx, Rx, Mx) mask/bias whose L/M axes are full or 1."""
  if x.shape[1] != 1:
    x = lax.dynamic_slice_in_dim(x, i * plan.block_q, plan.block_q, axis=1)
  if x.shape[3] != 1:
    x = lax.dynamic_slice_in_dim(x, j * plan.block_k, plan.block_k, axis=3)
  return x


def _block(x, index, size, axis):
  return lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _visit(plan, i, j, has_dynamic_mask: bool, step, carry):
  """`step(carry, apply_mask)` for tile (i, j), masking only where needed."""
  if has_dynamic_mask:
    return step(carry, True)
  full = tile_is_full(plan, i, j)
  if full is True:
    return step(carry, False)
  return lax.cond(full, functools.partial(step, apply_mask=False),
                  functools.partial(step, apply_mask=True), carry)


# ---------------------------------------------------------------------------
# Forward: outer loop over query blocks, inner loop over key blocks.


def _logits(plan, q_i, kT_j, bias, mask, key_len, i, j, acc, apply_mask):
  """Logits (G, bq, R, bk) of tile (i, j), `masked_logit` where masked."""
  bq, bk = plan.block_q, plan.block_k
  s = jnp.einsum("gqrk,gkc->gqrc", q_i, kT_j, precision=plan.precision,
                 preferred_element_type=acc)
  if bias is not None:
    s = s + tile(plan, bias, i, j).astype(acc)
  if apply_mask:
    rows = i * bq + lax.broadcasted_iota(jnp.int32, (bq, 1, bk), 0)
    cols = j * bk + lax.broadcasted_iota(jnp.int32, (bq, 1, bk), 2)
    len_rows = None
    if key_len is not None:
      len_rows = _block(key_len, i, bq, 0)[:, None, None]
    valid = structural_valid(plan, rows, cols, len_rows)
    valid = None if valid is None else valid[None]
    if mask is not None:
      mask_t = tile(plan, mask, i, j)
      valid = mask_t if valid is None else valid & mask_t
    if valid is not None:
      s = jnp.where(valid, s, masked_logit(acc))
  return s


def forward(plan: Plan, q, kT, v, bias, mask, key_len):
  """out (G, Lp, R, V) in q's dtype and stats (G, Lp, R, 2): each query's
  row maximum m and log of its softmax normaliser log l, kept apart (their
  sum is the log-sum-exp, `lse_from_stats`); m = 0 and log l =
  `empty_row_lse` mark a query with nothing to attend to (its output is 0).

  Kept apart because at large logits the float32 sum m + log l rounds to
  the spacing of m (about 1e-3 at logits of 1e4), and the backward pass's
  exp(s - lse) would carry that error into every recomputed weight; s - m is
  exact there, so exp((s - m) - log l) is as accurate as dense softmax."""
  G, Lp, R, _ = q.shape
  V = v.shape[-1]
  bq, bk = plan.block_q, plan.block_k
  acc = softmax_lib.softmax_dtype(q.dtype)
  dynamic = mask is not None or key_len is not None

  def query_block(i, carry):
    out, stats = carry
    q_i = _block(q, i, bq, 1)

    def key_block(j, state):
      kT_j = _block(kT, j, bk, 2)
      v_j = _block(v, j, bk, 1)

      def step(state, apply_mask):
        m, l, o = state
        s = _logits(plan, q_i, kT_j, bias, mask, key_len, i, j, acc, apply_mask)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        # A row with nothing allowed so far keeps m = masked_logit: shift it
        # by 0 (exp(masked_logit) is exactly 0).
        shift = jnp.where(is_masked_logit(m_new), 0.0, m_new).astype(acc)
        p = jnp.exp(s - shift[..., None])
        correction = jnp.exp(m - shift)
        l = l * correction + jnp.sum(p, axis=-1)
        pv = jnp.einsum("gqrc,gcv->gqrv", p.astype(v.dtype), v_j,
                        precision=plan.precision, preferred_element_type=acc)
        return m_new, l, o * correction[..., None] + pv

      return _visit(plan, i, j, dynamic, step, state)

    init = (jnp.full((G, bq, R), masked_logit(acc), acc),
            jnp.zeros((G, bq, R), acc),
            jnp.zeros((G, bq, R, V), acc))
    m, l, o = lax.fori_loop(*key_block_range(plan, i), key_block, init)
    nonempty = l > 0
    safe_l = jnp.where(nonempty, l, 1.0)
    out_i = (o / safe_l[..., None]).astype(out.dtype)
    shift = jnp.where(is_masked_logit(m), 0.0, m)
    stats_i = jnp.stack(
        [shift, jnp.where(nonempty, jnp.log(safe_l), empty_row_lse(acc))],
        axis=-1)
    out = lax.dynamic_update_slice_in_dim(out, out_i, i * bq, axis=1)
    stats = lax.dynamic_update_slice_in_dim(stats, stats_i, i * bq, axis=1)
    return out, stats

  init = (jnp.zeros((G, Lp, R, V), q.dtype), jnp.zeros((G, Lp, R, 2), acc))
  return lax.fori_loop(0, plan.num_query_blocks, query_block, init)


def lse_from_stats(stats):
  """(G, Lp, R) log-sum-exp m + log l of `forward`'s (G, Lp, R, 2) stats
  (`empty_row_lse` for a query with nothing to attend to)."""
  return stats[..., 0] + stats[..., 1]


def _split_stats(stats_or_lse, ndim: int):
  """(m, log l) of stats (ndim + 1 dimensions), or (lse, 0) of an lse
  (ndim dimensions: ring attention merges hops into one lse)."""
  if stats_or_lse.ndim == ndim + 1:
    return stats_or_lse[..., 0], stats_or_lse[..., 1]
  return stats_or_lse, jnp.zeros_like(stats_or_lse)


# ---------------------------------------------------------------------------
# Backward: outer loop over key blocks, inner loop over query blocks, on
# transposed tiles (key rows, query columns) so that all five matmuls are
# plain products.


def _logits_t(plan, q_i, kT_j, bias, mask, key_len, i, j, acc, apply_mask,
              scale=None):
  """Transposed logits (G, bk, bq, R) of tile (i, j), `masked_logit` where
  masked.

  The product is the forward's own (`_logits`), transposed after: a
  differently ordered product rounds differently, and at logits of 1e4 in
  float32 that rounding (about 1e-3) would make every recomputed weight
  disagree with the forward's normaliser by as much. `scale`: None (q is
  pre-scaled), or the scale the float32 product is multiplied by (as a
  kernel that takes unscaled q does, `Engine.scales_logits`)."""
  bq, bk = plan.block_q, plan.block_k
  s = jnp.einsum("gqrk,gkc->gqrc", q_i, kT_j, precision=plan.precision,
                 preferred_element_type=acc)
  if scale is not None:
    s = s * scale
  s_t = s.transpose(0, 3, 1, 2)
  if bias is not None:
    s_t = s_t + tile(plan, bias, i, j).transpose(0, 3, 1, 2).astype(acc)
  if apply_mask:
    cols = j * bk + lax.broadcasted_iota(jnp.int32, (bk, bq), 0)
    rows = i * bq + lax.broadcasted_iota(jnp.int32, (bk, bq), 1)
    len_rows = None
    if key_len is not None:
      len_rows = _block(key_len, i, bq, 0)[None, :]
    valid = structural_valid(plan, rows, cols, len_rows)
    valid = None if valid is None else valid[None, :, :, None]
    if mask is not None:
      mask_t = tile(plan, mask, i, j).transpose(0, 3, 1, 2)
      valid = mask_t if valid is None else valid & mask_t
    if valid is not None:
      s_t = jnp.where(valid, s_t, masked_logit(acc))
  return s_t


def _sum_to(x, shape):
  """Sums x over the axes where `shape` has size 1, keeping them."""
  axes = tuple(a for a, (n, s) in enumerate(zip(shape, x.shape))
               if n == 1 and s != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _add_tile(plan: Plan, x, t, i, j):
  """x (Gx, Lx, Rx, Mx) with its tile (i, j) incremented by t."""
  zero = jnp.zeros((), jnp.int32)
  starts = [zero, zero, zero, zero]
  if x.shape[1] != 1:
    starts[1] = jnp.asarray(i * plan.block_q, jnp.int32)
  if x.shape[3] != 1:
    starts[3] = jnp.asarray(j * plan.block_k, jnp.int32)
  current = lax.dynamic_slice(x, starts, t.shape)
  return lax.dynamic_update_slice(x, current + t.astype(x.dtype), starts)


def backward(plan: Plan, res, d_out, scale=None, in_float32: bool = False):
  """Cotangents of (q, kT, v, bias, mask, key_len), recomputing each tile.

  res ends with `forward`'s stats (the Pallas forward writes the same), or
  with a (G, Lp, R) log-sum-exp, as ring attention passes it.

  scale: None when q is the pre-scaled queries (this module's `core`, ring
  attention). Else the logit scale, a float32 (or wider) scalar, for a core
  that takes unscaled q (`Engine.scales_logits`): the logits are recomputed
  as (q . k) * scale in float32, like that core's forward; dq = scale *
  (ds . k) and dk = scale * (ds^T . q) are scaled in float32 before they are
  cast to the inputs' dtype (ds . k alone can be past float16's range where
  dq is not), and a seventh cotangent, the scale's, sum(ds * q . k), is
  returned after the six.

  in_float32: return dq, dk, dv (and dbias) in the accumulation dtype
  (float32 or wider), not cast to the inputs' dtypes: for a caller that
  sums several backward passes (ring attention's hops), where a bf16/f16
  rounding per pass doubled dv's error."""
  q, kT, v, bias, mask, key_len, out, stats = res
  row_max, log_l = _split_stats(stats, q.ndim - 1)
  G, Lp, R, K = q.shape
  Mp, V = v.shape[1], v.shape[2]
  bq, bk = plan.block_q, plan.block_k
  acc = softmax_lib.softmax_dtype(q.dtype)
  dynamic = mask is not None or key_len is not None
  d_out = d_out.astype(out.dtype)
  # delta_i = sum_v dO_iv O_iv = sum_j P_ij dP_ij (the softmax Jacobian term).
  delta = jnp.sum(d_out.astype(acc) * out.astype(acc), axis=-1)
  k = kT.transpose(0, 2, 1)              # (G, Mp, K)
  qT = q.transpose(0, 3, 1, 2)           # (G, K, Lp, R)
  d_outT = d_out.transpose(0, 3, 1, 2)   # (G, V, Lp, R)

  def key_block(j, carry):
    dqT, dk, dv, dbias = carry
    k_j = _block(k, j, bk, 1)
    kT_j = _block(kT, j, bk, 2)
    v_j = _block(v, j, bk, 1)

    def query_block(i, state):
      dk_j, dv_j, dqT, dbias = state
      q_i = _block(q, i, bq, 1)
      qT_i = _block(qT, i, bq, 2)
      do_i = _block(d_out, i, bq, 1)
      doT_i = _block(d_outT, i, bq, 2)
      m_i = _block(row_max, i, bq, 1)[:, None]
      log_l_i = _block(log_l, i, bq, 1)[:, None]
      delta_i = _block(delta, i, bq, 1)[:, None]

      def step(partial, apply_mask):
        dk_j, dv_j = partial
        s_t = _logits_t(plan, q_i, kT_j, bias, mask, key_len, i, j, acc,
                        apply_mask, scale)
        p_t = jnp.exp((s_t - m_i) - log_l_i)              # (G, bk, bq, R)
        dv_j = dv_j + jnp.einsum("gcqr,gqrv->gcv", p_t.astype(do_i.dtype),
                                 do_i, precision=plan.precision,
                                 preferred_element_type=acc)
        dp_t = jnp.einsum("gcv,gvqr->gcqr", v_j, doT_i,
                          precision=plan.precision, preferred_element_type=acc)
        ds_t = p_t * (dp_t - delta_i)
        dk_j = dk_j + jnp.einsum("gcqr,gqrk->gck", ds_t.astype(q_i.dtype), q_i,
                                 precision=plan.precision,
                                 preferred_element_type=acc)
        dqT_i = jnp.einsum("gkc,gcqr->gkqr", kT_j, ds_t.astype(kT_j.dtype),
                           precision=plan.precision, preferred_element_type=acc)
        dbias_t = None
        if bias is not None:
          shape = tile(plan, bias, i, j).shape
          t_shape = (shape[0], shape[3], shape[1], shape[2])
          dbias_t = _sum_to(ds_t, t_shape).transpose(0, 2, 3, 1)
        return (dk_j, dv_j), dqT_i, dbias_t

      (dk_j, dv_j), dqT_i, dbias_t = _visit(plan, i, j, dynamic, step,
                                            (dk_j, dv_j))
      dqT = lax.dynamic_update_slice_in_dim(
          dqT, _block(dqT, i, bq, 2) + dqT_i, i * bq, axis=2)
      if dbias is not None:
        dbias = _add_tile(plan, dbias, dbias_t, i, j)
      return dk_j, dv_j, dqT, dbias

    init = (jnp.zeros((G, bk, K), acc), jnp.zeros((G, bk, V), acc), dqT, dbias)
    dk_j, dv_j, dqT, dbias = lax.fori_loop(*query_block_range(plan, j),
                                           query_block, init)
    dk = lax.dynamic_update_slice_in_dim(dk, dk_j, j * bk, axis=1)
    dv = lax.dynamic_update_slice_in_dim(dv, dv_j, j * bk, axis=1)
    return dqT, dk, dv, dbias

  init = (jnp.zeros((G, K, Lp, R), acc), jnp.zeros((G, Mp, K), acc),
          jnp.zeros((G, Mp, V), acc),
          None if bias is None else jnp.zeros(bias.shape, acc))
  dqT, dk, dv, dbias = lax.fori_loop(0, plan.num_key_blocks, key_block, init)
  d_scale = None
  if scale is not None:
    # s = scale (q . k): d scale = sum_ij ds_ij (q_i . k_j) = sum q * (ds . k).
    d_scale = jnp.sum(dqT * qT.astype(acc)).astype(jnp.result_type(scale))
    dqT, dk = dqT * scale, dk * scale      # in float32, before the casts
  cast = (lambda x, like: x) if in_float32 else (
      lambda x, like: x.astype(like.dtype))
  dq = cast(dqT.transpose(0, 2, 3, 1), q)
  dkT = cast(dk.transpose(0, 2, 1), kT)
  dbias = None if bias is None else cast(dbias, bias)
  grads = (dq, dkT, cast(dv, v), dbias, None, None)
  return grads if scale is None else grads + (d_scale,)


def _head(x, g):
  """Key/value head g of a (G or 1, ...) array, keeping the axis (or None)."""
  if x is None or x.shape[0] == 1:
    return x
  return lax.dynamic_slice_in_dim(x, g, 1, axis=0)


def _forward_by_head(plan: Plan, q, kT, v, bias, mask, key_len):
  """`forward`, one key/value head (with its R query heads) at a time."""
  G = q.shape[0]
  if G == 1:
    return forward(plan, q, kT, v, bias, mask, key_len)

  def body(g, carry):
    out, stats = carry
    out_g, stats_g = forward(plan, _head(q, g), _head(kT, g), _head(v, g),
                             _head(bias, g), _head(mask, g), key_len)
    return (lax.dynamic_update_slice_in_dim(out, out_g, g, axis=0),
            lax.dynamic_update_slice_in_dim(stats, stats_g, g, axis=0))

  acc = softmax_lib.softmax_dtype(q.dtype)
  init = (jnp.zeros(q.shape[:3] + v.shape[-1:], q.dtype),
          jnp.zeros(q.shape[:3] + (2,), acc))
  return lax.fori_loop(0, G, body, init)


def _backward_by_head(plan: Plan, res, d_out, in_float32: bool = False):
  """`backward`, one key/value head at a time."""
  q, kT, v, bias, mask, key_len, out, stats = res
  G = q.shape[0]
  if G == 1:
    return backward(plan, res, d_out, in_float32=in_float32)

  def body(g, carry):
    dq, dkT, dv, dbias = carry
    res_g = (_head(q, g), _head(kT, g), _head(v, g), _head(bias, g),
             _head(mask, g), key_len, _head(out, g), _head(stats, g))
    dq_g, dkT_g, dv_g, dbias_g, _, _ = backward(plan, res_g, _head(d_out, g),
                                                in_float32=in_float32)
    put = lambda x, x_g: lax.dynamic_update_slice_in_dim(x, x_g, g, axis=0)
    if dbias is not None:
      dbias = put(dbias, dbias_g) if bias.shape[0] == G else dbias + dbias_g
    return put(dq, dq_g), put(dkT, dkT_g), put(dv, dv_g), dbias

  acc = softmax_lib.softmax_dtype(q.dtype)
  zeros = lambda x: jnp.zeros(x.shape, acc if in_float32 else x.dtype)
  init = (zeros(q), zeros(kT), zeros(v), None if bias is None else zeros(bias))
  dq, dkT, dv, dbias = lax.fori_loop(0, G, body, init)
  return dq, dkT, dv, dbias, None, None


def _forward_stats_core(plan: Plan, q, kT, v, bias, mask, key_len):
  """`forward` (out, stats), per head and per batch element when
  `plan.sequential`."""
  if not plan.sequential:
    return forward(plan, q, kT, v, bias, mask, key_len)
  run = jax.custom_batching.sequential_vmap(
      functools.partial(_forward_by_head, plan))
  return run(q, kT, v, bias, mask, key_len)


def forward_core(plan: Plan, q, kT, v, bias, mask, key_len):
  """(out, lse): the undifferentiated forward, per head and per batch
  element when `plan.sequential` (`jattn.parallel` runs it per ring hop)."""
  out, stats = _forward_stats_core(plan, q, kT, v, bias, mask, key_len)
  return out, lse_from_stats(stats)


def backward_core(plan: Plan, res, d_out, in_float32: bool = False):
  """`backward`, per head and per batch element when `plan.sequential`."""
  if not plan.sequential:
    return backward(plan, res, d_out, in_float32=in_float32)
  run = jax.custom_batching.sequential_vmap(
      functools.partial(_backward_by_head, plan, in_float32=in_float32))
  return run(res, d_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def core(plan: Plan, q, kT, v, bias, mask, key_len):
  """Blockwise attention on padded, head-major, pre-scaled inputs.

  Args:
    plan: static tile plan.
    q: (G, Lp, R, K) queries already multiplied by the logit scale (float32
      or wider for low-precision inputs, see `attend`).
    kT: (G, K, Mp) keys, transposed, in the inputs' dtype.
    v: (G, Mp, V).
    bias: None or float (Gx, Lx, Rx, Mx) (see the module docstring).
    mask: None or bool, laid out like bias; True = may attend.
    key_len: None or int32 (Lp,): query i sees keys j < key_len[i].

  Returns:
    out (G, Lp, R, V) in q's dtype and lse (G, Lp, R) float32 or wider
    (`empty_row_lse` for a query with nothing to attend to). Only `out` is
    differentiable: lse's cotangent is ignored.
  """
  return forward_core(plan, q, kT, v, bias, mask, key_len)


def _core_fwd(plan, q, kT, v, bias, mask, key_len):
  out, stats = _forward_stats_core(plan, q, kT, v, bias, mask, key_len)
  return (out, lse_from_stats(stats)), (q, kT, v, bias, mask, key_len, out,
                                        stats)


def _core_bwd(plan, res, cotangents):
  d_out, _ = cotangents
  return backward_core(plan, res, d_out)


core.defvjp(_core_fwd, _core_bwd)


# ---------------------------------------------------------------------------
# Entry point on validated (L, H, K) inputs.


def as_tiled(x, H: int, G: int, plan: Plan, fill):
  """A mask/bias broadcastable to (H, L, M) -> padded (Gx, Lx, Rx, Mx)."""
  if x is None:
    return None
  x = jnp.asarray(x)
  x = x.reshape((1,) * (3 - x.ndim) + x.shape)
  Hx, Lx, Mx = x.shape
  if Hx == H and H > 1:
    x = x.reshape(G, H // G, Lx, Mx)
  else:
    x = x.reshape(1, 1, Lx, Mx)
  x = x.transpose(0, 2, 1, 3)
  pad = [(0, 0), (0, plan.padded_queries - Lx if Lx != 1 else 0), (0, 0),
         (0, plan.padded_keys - Mx if Mx != 1 else 0)]
  return jnp.pad(x, pad, constant_values=fill)


def _narrow(dtype) -> bool:
  """True for floats narrower than float32 (bfloat16, float16)."""
  return jnp.finfo(dtype).bits < 32


def logit_scale_args(engine: "Engine", dtype, scale) -> tuple:
  """The scale argument `engine.core` takes after key_len: () for a core
  on pre-scaled q; (scale,) for a kernel that scales its float32 logits,
  on bf16/f16 inputs; (1,) on float32 or wider inputs, whose q is scaled
  in float32 first as for any core. That keeps a multiply out of the
  kernel's logits and of the backward's recomputation of them: XLA fuses
  (q . k) * scale - m into one fused multiply-add there, a differently
  rounded logit than the kernel's, and at logits of 1e4 in float32 that
  made dv 17x less accurate than dense (5.4e-4 against 3.2e-5)."""
  if not engine.scales_logits:
    return ()
  return (scale,) if _narrow(dtype) else (jnp.ones((), scale.dtype),)


class Engine(NamedTuple):
  """A tile engine: how to plan tiles and the function that runs them.

  Attributes:
    make_plan: `make_plan`-like (L, M, *, block_q, block_k, causal, window,
      precision) -> Plan.
    core: `core`-like (plan, q, kT, v, bias, mask, key_len) -> (out, lse),
      differentiable in q, kT, v and bias; with `scales_logits`, (plan, q,
      kT, v, bias, mask, key_len, scale), differentiable in scale too.
    scales_logits: False: `attend` passes q multiplied by the scale in
      float32 (`core`: its float32 logits are then as accurate as dense
      attention's). True: the core also takes a scale, a float32 (or wider)
      scalar, and multiplies its float32 logits by it (a kernel whose dots
      take operands of the inputs' dtype, `jattn.attention.pallas`). For
      bf16/f16 inputs `attend` passes the unscaled q in the inputs' dtype
      and the scale (a q * scale rounded to bfloat16 or float16 would cost
      dense accuracy, and dq could overflow float16). For float32 or wider
      inputs it passes q * scale and a scale of 1 (`logit_scale_args`).
  """
  make_plan: Callable[..., Plan]
  core: Callable[..., Any]
  scales_logits: bool = False


ENGINE = Engine(make_plan, core)


def attend(q_LHK, k_MGK, v_MGV, *, mask=None, bias=None, scale,
           causal: bool = False, window=None, key_valid_len=None,
           query_valid_len=None, block_q: int | None = None,
           block_k: int | None = None, precision=None,
           engine: Engine | None = None):
  """Blockwise attention on validated multi-head inputs.

  Args:
    q_LHK: (L, H, K); k_MGK: (M, G, K); v_MGV: (M, G, V).
    mask: None or bool broadcastable to (H, L, M) (rank <= 3).
    bias: None or float broadcastable to (H, L, M) (rank <= 3).
    scale: logit scale (Python float or scalar array).
    causal: query i sees keys j <= i.
    window: None or (left, right) ints >= 0.
    key_valid_len: None or int, scalar or (L,): query i sees keys j < len.
    query_valid_len: None or int scalar: queries i >= len output 0.
    block_q, block_k: tile sizes (default: the engine's).
    precision: matmul precision.
    engine: the tile engine (default `ENGINE`, pure JAX); the Pallas
      implementation passes its own. Either way the logits are scale * q . k
      formed in float32 (see `Engine.scales_logits`): as accurate as dense
      attention's on bf16/f16 inputs, and dq cannot overflow float16 on its
      way back through a small scale.

  Returns:
    (L, H, V) in q's dtype.
  """
  L, H, K = q_LHK.shape
  M, G, _ = k_MGK.shape
  V = v_MGV.shape[-1]
  R = H // G
  out_dtype = q_LHK.dtype
  if M == 0:  # no keys: every row is fully masked (as in dense attention)
    return jnp.zeros((L, H, V), out_dtype)
  engine = ENGINE if engine is None else engine
  plan = engine.make_plan(L, M, block_q=block_q, block_k=block_k,
                          causal=causal, window=window, precision=precision)
  dtype = jnp.result_type(q_LHK, k_MGK)
  acc = softmax_lib.softmax_dtype(dtype)
  q_LHK, k_MGK, v_MGV = masks_lib.zero_unattended(
      q_LHK, k_MGK, v_MGV, mask, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  scale = jnp.asarray(scale, acc)
  if engine.scales_logits and _narrow(dtype):
    q_LHK = q_LHK.astype(dtype)   # the core scales its float32 logits
  else:
    # Folding the scale into q costs O(L K) instead of O(L M) per call; the
    # scaled q stays in float32 (rounding it to bf16 costs dense accuracy).
    q_LHK = q_LHK.astype(acc) * scale
  v_MGV = v_MGV.astype(jnp.promote_types(v_MGV.dtype, dtype))

  Lp, Mp = plan.padded_queries, plan.padded_keys
  q = jnp.pad(q_LHK.reshape(L, G, R, K).transpose(1, 0, 2, 3),
              [(0, 0), (0, Lp - L), (0, 0), (0, 0)])
  kT = jnp.pad(k_MGK.astype(dtype).transpose(1, 2, 0),
               [(0, 0), (0, 0), (0, Mp - M)])
  v = jnp.pad(v_MGV.transpose(1, 0, 2), [(0, 0), (0, Mp - M), (0, 0)])
  mask = as_tiled(mask, H, G, plan, False)
  bias = as_tiled(bias, H, G, plan, 0)
  key_len = None
  if key_valid_len is not None:
    key_len = jnp.asarray(key_valid_len).astype(jnp.int32).reshape(-1)
    key_len = jnp.pad(jnp.broadcast_to(key_len, (L,)), (0, Lp - L))
  scale_args = logit_scale_args(engine, dtype, scale)
  out, _ = engine.core(plan, q, kT, v, bias, mask, key_len, *scale_args)
  out_LHV = out[:, :L].transpose(1, 0, 2, 3).reshape(L, H, V)
  if query_valid_len is not None:
    keep_L = jnp.arange(L) < jnp.asarray(query_valid_len)
    out_LHV = jnp.where(keep_L[:, None, None], out_LHV,
                        jnp.zeros((), out_LHV.dtype))
  return out_LHV.astype(out_dtype)


def attention(q, k, v, mask=None, *, bias=None, scale=None,
              is_causal: bool = False, local_window=None, key_valid_len=None,
              query_valid_len=None, precision=None,
              block_q: int | None = None, block_k: int | None = None):
  """Blockwise attention (the core signature of `jattn.attention`).

  q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V) (single-head: (L, K),
  (M, K), (M, V) -> (L, V)), in q's dtype. Arguments as in
  `jattn.dot_product_attention`; `block_q`, `block_k` are the tile sizes
  (default DEFAULT_BLOCK_Q x DEFAULT_BLOCK_K, fitted to L and M).
  """
  x = _checks.attention_inputs(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  _checks.check_optional_positive_int(block_q, "block_q")
  _checks.check_optional_positive_int(block_k, "block_k")
  return x.output(attend(
      x.q, x.k, x.v, mask=x.mask, bias=x.bias, scale=x.scale,
      causal=x.is_causal, window=x.window, key_valid_len=x.key_valid_len,
      query_valid_len=x.query_valid_len, block_q=block_q, block_k=block_k,
      precision=precision))
