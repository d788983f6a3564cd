"""Flash-attention forward as a Pallas kernel, behind the blockwise API.

One kernel program computes one query block of one query head: it holds the
(block_q, K) queries, walks the key blocks that the causal/local structure
allows (the same tile ranges as `jattn.blockwise`), and keeps the online
softmax state (row max, row sum, output accumulator) in float32. It writes the
output and the per-row log-sum-exp.

The backward pass is NOT a Pallas kernel: the `jax.custom_vjp` here reuses the
pure-JAX blockwise backward (`jattn.blockwise.backward`), which recomputes
tiles from the same residuals (q, k, v, out, lse), so memory stays O(L + M).

Supported: causal and local-window structure, key lengths (`key_valid_len`),
L and M of any size (padded to power-of-two tiles), grouped-query heads, any
float dtype. Not supported by the kernel: a boolean `mask` array or a `bias`
array (`supports` says so; the automatic dispatch then uses blockwise, and an
explicit `implementation="pallas"` raises ValueError).

Platforms: on CPU the kernel runs in Pallas interpret mode (slow; for tests).
The GPU (Triton) and TPU (Mosaic) paths use the same kernel but were not run
on hardware in this project (no accelerator was available when it was
written): treat them as untested.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jattn import blockwise
from jattn import softmax as softmax_lib

DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 64
_MIN_BLOCK = 16  # Triton matmuls need tiles of at least 16 x 16


def _pow2_block(length: int, block: int) -> int:
  """Largest power of two <= `block` needed to cover `length` (>= 16)."""
  cap = max(_MIN_BLOCK, pl.next_power_of_2(max(int(length), 1)))
  size = _MIN_BLOCK
  while size * 2 <= min(block, cap):
    size *= 2
  return size


def make_plan(num_queries: int, num_keys: int, *, block_q: int | None = None,
              block_k: int | None = None, causal: bool = False, window=None,
              precision=None) -> blockwise.Plan:
  """A `blockwise.Plan` with power-of-two tiles (what Triton requires)."""
  block_q = DEFAULT_BLOCK_Q if block_q is None else block_q
  block_k = DEFAULT_BLOCK_K if block_k is None else block_k
  return blockwise.Plan(
      num_queries, num_keys, _pow2_block(num_queries, block_q),
      _pow2_block(num_keys, block_k), bool(causal),
      None if window is None else (int(window[0]), int(window[1])), precision,
      sequential=False)


def supports(*, mask=None, bias=None, key_valid_len=None, dtype=jnp.float32,
             backend: str | None = None) -> bool:
  """Whether the kernel handles a call with these arguments."""
  del key_valid_len, backend
  return (mask is None and bias is None
          and jnp.issubdtype(dtype, jnp.floating))


def _interpret() -> bool:
  return jax.default_backend() not in ("gpu", "cuda", "rocm", "tpu")


def _kernel(q_ref, kT_ref, v_ref, *refs, plan: blockwise.Plan, has_len: bool):
  """One (head, query block): online softmax over the allowed key blocks."""
  if has_len:
    len_ref, o_ref, lse_ref = refs
  else:
    (o_ref, lse_ref), len_ref = refs, None
  bq, bk = plan.block_q, plan.block_k
  i = pl.program_id(1)
  q = q_ref[...]                                   # (bq, K)
  acc = softmax_lib.softmax_dtype(q.dtype)
  len_rows = None if len_ref is None else len_ref[...][:, None]

  def body(j, carry):
    m, l, o = carry
    start = pl.multiple_of(j * bk, bk)
    kT = kT_ref[:, pl.ds(start, bk)]               # (K, bk)
    v = v_ref[pl.ds(start, bk), :]                 # (bk, V)
    s = jnp.dot(q, kT, preferred_element_type=acc)
    rows = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    cols = j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    valid = blockwise.structural_valid(plan, rows, cols, len_rows)
    if valid is not None:
      s = jnp.where(valid, s, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new).astype(acc)
    p = jnp.exp(s - shift[:, None])
    correction = jnp.exp(m - shift)
    l = l * correction + jnp.sum(p, axis=1)
    o = o * correction[:, None] + jnp.dot(p.astype(v.dtype), v,
                                          preferred_element_type=acc)
    return m_new, l, o

  V = v_ref.shape[-1]
  init = (jnp.full((bq,), -jnp.inf, acc), jnp.zeros((bq,), acc),
          jnp.zeros((bq, V), acc))
  lo, hi = blockwise.key_block_range(plan, i)
  m, l, o = lax.fori_loop(lo, hi, body, init)
  nonempty = l > 0
  safe_l = jnp.where(nonempty, l, 1.0)
  o_ref[...] = (o / safe_l[:, None]).astype(o_ref.dtype)
  shift = jnp.where(m == -jnp.inf, 0.0, m)
  lse_ref[...] = jnp.where(nonempty, shift + jnp.log(safe_l),
                           jnp.inf)[:, None].astype(lse_ref.dtype)


def forward(plan: blockwise.Plan, q, kT, v, bias, mask, key_len):
  """`blockwise.forward` computed by the Pallas kernel (same layouts)."""
  if bias is not None or mask is not None:
    raise ValueError(
        "implementation: expected no `mask` or `bias` array with "
        "implementation='pallas' (use is_causal, local_window, key_valid_len, "
        "or implementation='blockwise'), got "
        f"{'mask' if mask is not None else 'bias'}")
  G, Lp, R, K = q.shape
  Mp, V = v.shape[1], v.shape[2]
  N, bq = G * R, plan.block_q
  acc = softmax_lib.softmax_dtype(q.dtype)
  q_NLK = q.transpose(0, 2, 1, 3).reshape(N, Lp, K)
  has_len = key_len is not None
  in_specs = [
      pl.BlockSpec((None, bq, K), lambda n, i: (n, i, 0)),
      pl.BlockSpec((None, K, Mp), lambda n, i: (n // R, 0, 0)),
      pl.BlockSpec((None, Mp, V), lambda n, i: (n // R, 0, 0)),
  ]
  args = [q_NLK, kT, v]
  if has_len:
    in_specs.append(pl.BlockSpec((bq,), lambda n, i: (i,)))
    args.append(key_len)
  out_NLV, lse_NL1 = pl.pallas_call(
      functools.partial(_kernel, plan=plan, has_len=has_len),
      out_shape=(jax.ShapeDtypeStruct((N, Lp, V), q.dtype),
                 jax.ShapeDtypeStruct((N, Lp, 1), acc)),
      grid=(N, plan.num_query_blocks),
      in_specs=in_specs,
      out_specs=(pl.BlockSpec((None, bq, V), lambda n, i: (n, i, 0)),
                 pl.BlockSpec((None, bq, 1), lambda n, i: (n, i, 0))),
      interpret=_interpret(),
  )(*args)
  out = out_NLV.reshape(G, R, Lp, V).transpose(0, 2, 1, 3)
  lse = lse_NL1.reshape(G, R, Lp).transpose(0, 2, 1)
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def core(plan: blockwise.Plan, q, kT, v, bias, mask, key_len):
  """`blockwise.core` with the Pallas forward (backward: blockwise)."""
  return forward(plan, q, kT, v, bias, mask, key_len)


def _core_fwd(plan, q, kT, v, bias, mask, key_len):
  out, lse = forward(plan, q, kT, v, bias, mask, key_len)
  return (out, lse), (q, kT, v, bias, mask, key_len, out, lse)


def _core_bwd(plan, res, cotangents):
  d_out, _ = cotangents
  return blockwise.backward(plan, res, d_out)


core.defvjp(_core_fwd, _core_bwd)


def engine() -> blockwise.Engine:
  """The tile engine `dot_product_attention(implementation="pallas")` uses."""
  return blockwise.Engine(make_plan, core)
