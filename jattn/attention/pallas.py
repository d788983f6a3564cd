"""jattn's own flash-attention forward as a Pallas kernel (opt-in core).

One kernel program computes one query block of one query head: it holds the
(block_q, K) queries, walks the key blocks that the causal/local structure
allows (the same tile ranges as `jattn.attention.blockwise`), and keeps the
online softmax state (row max, row sum, output accumulator; rows as
(block_q, 1) columns) in float32. It writes the output and the per-row
softmax statistics, the row maximum m and log l (the log of the row
sum), kept apart as `jattn.attention.blockwise.forward` keeps them: in
float32 their sum m + log l rounds to the spacing of m (about 1e-3 at
logits of 1e4), an error the backward's recomputed weights exp(s - lse)
would carry. The dots run at the call's `precision` (None: the backend's
default, which is TF32 for float32 on NVIDIA Ampere and newer).

Numerics (as accurate as dense attention on the same bf16/f16 inputs): the
kernel takes bfloat16/float16 queries UNSCALED, in the inputs' dtype, and
multiplies each float32 logits tile q . k by the scale (as jax's own Pallas
`flash_attention` applies `sm_scale`, and as dense attention scales its float32
logits). The scale reaches the kernel as an (Lp, 1) float32 column, so it may
be traced (a learned temperature). A q * scale rounded to bfloat16/float16
before the kernel makes the logits, out and the gradients 5 to 25x less
accurate than dense at large logits with a scale that is not a power of two.
Float32 (or wider) queries arrive scaled in float32 with a scale of 1
(`blockwise.logit_scale_args`): a multiply after the dot, which XLA fuses into
the backward's s - m as one fused multiply-add, rounds the recomputed logits
differently from the kernel's (dv at logits of 1e4 was 17x dense's error). On
GPU and TPU the kernel's dot and XLA's recomputation may still sum in different
orders (not measured: no accelerator was lent). The output is written in
float32 and kept so as the backward's residual (cast to the inputs' dtype
outside the kernel): delta = dO . O from an output rounded to bf16/f16 cost dq
and dk 2 to 3x dense accuracy.

The backward pass is NOT a Pallas kernel: the `jax.custom_vjp` here reuses the
pure-JAX blockwise backward (`jattn.attention.blockwise.backward` with
`scale`), which recomputes tiles from the same residuals (q, k, v, out, the (m,
log l) statistics and the scale), so memory stays O(L + M). It recomputes each
logits tile as the forward does, (q . k) * scale in float32, and forms dq =
scale (ds . k) and dk = scale (ds^T . q) in float32 before casting them: in
float16, ds . k alone can be past 65504 where dq is not (q = 1000, scale 1e-3:
dq = 800 was inf). It also returns the scale's cotangent. Lowered for CPU it
runs on float32 copies of bfloat16/float16 residuals (some of its batched bf16
x bf16 -> f32 tile matmuls are dots XLA:CPU cannot run); elsewhere in the
inputs' dtype (the float32 output and its cotangent make two of its five tile
matmuls float32 ones).

Supported: causal and local-window structure, key lengths (`key_valid_len`,
scalar or per query), L and M of any size (padded to power-of-two tiles),
grouped-query heads, any float dtype. Not supported by the kernel: a boolean
`mask` array or a `bias` array (`attention` raises ValueError naming it; use
the blockwise core).

Kernel or emulation: each call stages three `pallas_call`s and
`jax.lax.platform_dependent` keeps the one for the platform the computation
is LOWERED for (also ahead of time from a CPU host), not the backend at trace
time:
  cuda, rocm  the Triton kernel (pinned by Triton compiler params: on jax >=
              0.9 a bare `pallas_call` means Mosaic GPU). Triton needs
              power-of-two blocks: the head widths K and V are padded with
              zeros to the next power of two (zero columns of q and k leave
              q.k unchanged; V's are sliced off). Key tiles: `block_k`.
  tpu         the Mosaic kernel, with 128-wide key tiles (the MXU / lane
              width; M is padded to whole tiles) or `block_k` if larger, and
              keys in (M, K) layout. Per-query key lengths travel as an
              (Lp, 1) int32 column (block (block_q, 1)), which satisfies the
              TPU rule on the last two block dims (multiples of (8, 128) or
              the whole array) also under `jax.vmap`.
              Memory limit (documented, not fixed): the kernel's K/V block
              is a head's WHOLE K and V, DMA'd into VMEM and double-buffered,
              so M is bounded by VMEM (128 MiB on v5e/v6e; the default scoped
              limit is 16 MiB on v5e, 32 MiB on v6e). In VMEM a row of K or V
              is padded to a multiple of 128 lanes: per head that is about
              2 buffers x M x (128 + 128) x 4 bytes for float32, K = V = 64,
              i.e. 128 MiB at M = 64k (96 MiB if K were kept as (K, M)), and
              the 16 MiB default is reached near M = 8k. Longer keys need a
              larger `vmem_limit_bytes` or a kernel that streams K/V blocks
              from HBM; neither is done here.
  otherwise   Pallas interpret mode (plain XLA loops; slow, for tests). Dots
              of narrow floats (bfloat16, float16) are computed on float32
              copies of the same values (products of two bf16 numbers are
              exact in float32, so the numerics match a bf16 x bf16 -> f32
              hardware dot): XLA:CPU cannot run some bf16 x bf16 -> f32
              dots.

The GPU and TPU paths are checked by lowering from a CPU host
(tests/test_pallas.py); they were not run on hardware in this project (no
accelerator was available): treat them as untested.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from jattn import _checks
from jattn import softmax as softmax_lib
from jattn.attention import blockwise

DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 64
_MIN_BLOCK = 16  # Triton matmuls need tiles of at least 16 x 16
TPU_BLOCK_K = 128  # TPU key tiles: the lane / MXU width
_TRITON_NUM_STAGES = 2


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


# ---------------------------------------------------------------------------
# The kernel (one per platform, from the same body).


def _key_block_range(plan: blockwise.Plan, i):
  """`blockwise.key_block_range` by truncating division of values >= 0.

  jnp's floor division lowers through `sign`, whose Mosaic rule asks for the
  TPU generation, which a CPU host lowering for TPU does not have; the
  kernel's indices are never negative, so `lax.div` gives the same blocks.
  """
  int32 = lambda x: jnp.asarray(x, jnp.int32)
  first_row = int32(i * plan.block_q)
  last_row = jnp.minimum(first_row + plan.block_q, plan.num_queries) - 1
  first_col, last_col = int32(0), int32(plan.num_keys - 1)
  if plan.causal:
    last_col = jnp.minimum(last_col, last_row)
  if plan.window is not None:
    left, right = plan.window
    first_col = jnp.maximum(first_col, first_row - left)
    last_col = jnp.minimum(last_col, last_row + right)
  lo = lax.div(first_col, int32(plan.block_k))
  hi = lax.div(jnp.maximum(last_col, 0), int32(plan.block_k)) + 1
  return lo, jnp.where(last_col < first_col, lo, hi)


def _kernel(q_ref, k_ref, v_ref, scale_ref, *refs, plan: blockwise.Plan,
            has_len: bool, k_transposed: bool, dot_dtype, precision):
  """One (head, query block): online softmax over the allowed key blocks.

  Refs (per program): q (bq, K) in the inputs' dtype (bf16/f16 unscaled,
  float32 pre-scaled with a scale of 1); k (K, Mk) if `k_transposed` else
  (Mk, K); v (Mk, V); the logit scale (bq, 1) in the accumulation dtype
  (float32 or wider), every row the same; [key lengths (bq, 1) int32]; out (bq, V), the row maximum m (bq, 1) and log l (bq, 1), all in
  the accumulation dtype (m = 0 and log l = `empty_row_lse` for a row with
  nothing to attend to). Each logits tile is the float32 product q . k times
  the scale.
  `dot_dtype`: None, or the float dtype both operands of every dot are cast
  to first (interpret mode). `precision`: the dots' precision.
  """
  if has_len:
    len_ref, o_ref, m_ref, log_l_ref = refs
  else:
    (o_ref, m_ref, log_l_ref), len_ref = refs, None
  bq, bk = plan.block_q, plan.block_k
  i = pl.program_id(1)
  q_QK = q_ref[...]
  acc = softmax_lib.softmax_dtype(q_QK.dtype)
  # Typed scalars: a Python float is a float64 constant under jax_enable_x64,
  # and Mosaic (jax 0.7) cannot cast float64 to float32.
  # Finite infinities (`blockwise.masked_logit`, `empty_row_lse`).
  masked, zero, one, empty = (acc.type(c) for c in (
      blockwise.masked_logit(acc), 0, 1, blockwise.empty_row_lse(acc)))
  len_Q1 = None if len_ref is None else len_ref[...]
  scale_Q1 = scale_ref[...]
  cast = (lambda x: x) if dot_dtype is None else (lambda x: x.astype(dot_dtype))
  q_QK = cast(q_QK)

  def body(j, carry):
    m_Q1, l_Q1, o_QV = carry
    start = pl.multiple_of(j * bk, bk)
    v_CV = v_ref[pl.ds(start, bk), :]
    if k_transposed:
      s_QC = jnp.dot(q_QK, cast(k_ref[:, pl.ds(start, bk)]),
                     precision=precision, preferred_element_type=acc)
    else:
      s_QC = lax.dot_general(q_QK, cast(k_ref[pl.ds(start, bk), :]),
                             (((1,), (1,)), ((), ())), precision=precision,
                             preferred_element_type=acc)
    # Scaled here, in float32, as dense attention scales its logits: a
    # q * scale rounded to bf16/f16 first loses up to 10x dense accuracy.
    s_QC = s_QC * scale_Q1
    rows_QC = i * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    cols_QC = j * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    valid_QC = blockwise.structural_valid(plan, rows_QC, cols_QC, len_Q1)
    if valid_QC is not None:
      s_QC = jnp.where(valid_QC, s_QC, masked)
    m_new = jnp.maximum(m_Q1, jnp.max(s_QC, axis=1, keepdims=True))
    shift_Q1 = jnp.where(m_new <= masked, zero, m_new)
    p_QC = jnp.exp(s_QC - shift_Q1)
    correction_Q1 = jnp.exp(m_Q1 - shift_Q1)
    l_Q1 = l_Q1 * correction_Q1 + jnp.sum(p_QC, axis=1, keepdims=True)
    pv_QV = jnp.dot(cast(p_QC.astype(v_CV.dtype)), cast(v_CV),
                    precision=precision, preferred_element_type=acc)
    return m_new, l_Q1, o_QV * correction_Q1 + pv_QV

  V = v_ref.shape[-1]
  init = (jnp.full((bq, 1), masked, acc), jnp.zeros((bq, 1), acc),
          jnp.zeros((bq, V), acc))
  lo, hi = _key_block_range(plan, i)
  m_Q1, l_Q1, o_QV = lax.fori_loop(lo, hi, body, init)
  nonempty_Q1 = l_Q1 > zero
  safe_l_Q1 = jnp.where(nonempty_Q1, l_Q1, one)
  o_ref[...] = (o_QV / safe_l_Q1).astype(o_ref.dtype)
  m_ref[...] = jnp.where(m_Q1 <= masked, zero, m_Q1).astype(m_ref.dtype)
  log_l_ref[...] = jnp.where(nonempty_Q1, jnp.log(safe_l_Q1),
                             empty).astype(log_l_ref.dtype)


def _pallas_forward(plan: blockwise.Plan, R: int, q_NLK, k, v_GMV, scale_L1,
                    len_L1, *, k_transposed: bool, dot_dtype=None,
                    precision=None, **call_kwargs):
  """out (N, Lp, V), m (N, Lp, 1) and log l (N, Lp, 1), float32 (or wider),
  from one `pl.pallas_call`.

  q_NLK (N, Lp, K), unscaled, with N = G R query heads in (g, r) order;
  k (G, K, Mk) if `k_transposed` else (G, Mk, K); v_GMV (G, Mk, V);
  scale_L1 (Lp, 1) float32, the logit scale in every row; len_L1 None or
  (Lp, 1) int32. Mk >= plan.padded_keys (keys past it are never read).
  call_kwargs: `interpret` / `compiler_params` for `pl.pallas_call`.

  The scale travels as a column like the key lengths' (block (block_q, 1),
  within the TPU rule on the last two block dims, also under `jax.vmap`):
  it may be a traced value (a learned temperature), which a kernel constant
  could not be.
  """
  N, Lp, K = q_NLK.shape
  Mk, V = v_GMV.shape[1], v_GMV.shape[2]
  bq = plan.block_q
  acc = softmax_lib.softmax_dtype(q_NLK.dtype)
  has_len = len_L1 is not None
  k_block = (None, K, Mk) if k_transposed else (None, Mk, K)
  kv_head = lambda n, i: (lax.div(n, jnp.int32(R)), 0, 0)   # n // R
  in_specs = [
      pl.BlockSpec((None, bq, K), lambda n, i: (n, i, 0)),
      pl.BlockSpec(k_block, kv_head),
      pl.BlockSpec((None, Mk, V), kv_head),
      pl.BlockSpec((bq, 1), lambda n, i: (i, 0)),
  ]
  args = [q_NLK, k, v_GMV, scale_L1]
  if has_len:
    in_specs.append(pl.BlockSpec((bq, 1), lambda n, i: (i, 0)))
    args.append(len_L1)
  kernel = functools.partial(
      _kernel, plan=plan, has_len=has_len, k_transposed=k_transposed,
      dot_dtype=dot_dtype, precision=precision)
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((N, Lp, V), acc),
                 jax.ShapeDtypeStruct((N, Lp, 1), acc),
                 jax.ShapeDtypeStruct((N, Lp, 1), acc)),
      grid=(N, plan.num_query_blocks),
      in_specs=in_specs,
      out_specs=(pl.BlockSpec((None, bq, V), lambda n, i: (n, i, 0)),
                 pl.BlockSpec((None, bq, 1), lambda n, i: (n, i, 0)),
                 pl.BlockSpec((None, bq, 1), lambda n, i: (n, i, 0))),
      **call_kwargs,
  )(*args)


def _pad_axis(x, axis: int, size: int):
  """x zero-padded at the end of `axis` to `size` (unchanged if as long)."""
  extra = size - x.shape[axis]
  if extra <= 0:
    return x
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, extra)
  return jnp.pad(x, pad)


def _interpret_params(dtype):
  """`_pallas_forward` arguments for interpret mode: narrow-float dots in
  float32 (XLA:CPU cannot run some bf16 x bf16 -> f32 dots)."""
  narrow = jnp.finfo(dtype).bits < 32
  return dict(interpret=True, dot_dtype=jnp.float32 if narrow else None)


def _triton_forward(plan, R, emulate, q_NLK, kT_GKM, v_GMV, scale_L1,
                    len_L1):
  """GPU: the Triton kernel on head widths padded to powers of two.

  emulate: run the same padded layout in interpret mode (tests on CPU).
  """
  K, V = q_NLK.shape[-1], v_GMV.shape[-1]
  Kp, Vp = pl.next_power_of_2(K), pl.next_power_of_2(V)
  if emulate:
    call = _interpret_params(q_NLK.dtype)
  else:
    call = dict(compiler_params=pltriton.CompilerParams(
        num_warps=4 if max(Kp, Vp) <= 64 else 8,
        num_stages=_TRITON_NUM_STAGES))
  out_NLV, m_NL1, log_l_NL1 = _pallas_forward(
      plan, R, _pad_axis(q_NLK, 2, Kp), _pad_axis(kT_GKM, 1, Kp),
      _pad_axis(v_GMV, 2, Vp), scale_L1, len_L1, k_transposed=True,
      precision=plan.precision, **call)
  return out_NLV[..., :V], m_NL1, log_l_NL1


def _tpu_precision(precision):
  """`precision` as Mosaic takes it (DEFAULT or HIGHEST for both operands):
  HIGH becomes HIGHEST (never less precise than asked). Anything else (a
  `lax.DotAlgorithmPreset`) is passed on for Mosaic to accept or refuse."""
  if precision is None:
    return None
  pair = precision if isinstance(precision, tuple) else (precision, precision)
  order = (lax.Precision.DEFAULT, lax.Precision.HIGH, lax.Precision.HIGHEST)
  try:
    pair = [lax.Precision.DEFAULT if p is None else lax.Precision(p)
            for p in pair]
  except (TypeError, ValueError):
    return precision
  best = max(pair, key=order.index)
  return lax.Precision.HIGHEST if best == lax.Precision.HIGH else best


def _mosaic_forward(plan, R, emulate, q_NLK, kT_GKM, v_GMV, scale_L1,
                    len_L1):
  """TPU: the Mosaic kernel with >= 128-wide key tiles, keys as (M, K).

  emulate: run the same layout and tiles in interpret mode (tests on CPU).
  """
  tpu_plan = dataclasses.replace(plan,
                                 block_k=max(TPU_BLOCK_K, plan.block_k))
  Mk = tpu_plan.padded_keys   # >= plan.padded_keys: both are powers of two
  k_GMK = _pad_axis(kT_GKM.transpose(0, 2, 1), 1, Mk)
  if emulate:
    call = _interpret_params(q_NLK.dtype)
  else:
    call = dict(compiler_params=pltpu.CompilerParams(
        dimension_semantics=("parallel", "arbitrary")))
  return _pallas_forward(
      tpu_plan, R, q_NLK, k_GMK, _pad_axis(v_GMV, 1, Mk), scale_L1, len_L1,
      k_transposed=False, precision=_tpu_precision(plan.precision), **call)


def _interpret_forward(plan, R, q_NLK, kT_GKM, v_GMV, scale_L1, len_L1):
  """Other platforms (CPU): the kernel in Pallas interpret mode."""
  return _pallas_forward(plan, R, q_NLK, kT_GKM, v_GMV, scale_L1, len_L1,
                         k_transposed=True, precision=plan.precision,
                         **_interpret_params(q_NLK.dtype))


def forward(plan: blockwise.Plan, q, kT, v, bias, mask, key_len, scale, *,
            emulate: str | None = None):
  """`blockwise.forward` computed by the Pallas kernel (same layouts, but q
  unscaled): q (G, Lp, R, K) and kT (G, K, Mp) in the inputs' dtype,
  v (G, Mp, V), key_len None or (Lp,), scale a float32 (or wider) scalar ->
  out (G, Lp, R, V) and stats (G, Lp, R, 2), `blockwise.forward`'s (m,
  log l) statistics, of the logits scale * q . k, both float32 (or wider:
  the softmax dtype of q's).

  The kernel is the lowering platform's (`lax.platform_dependent`); with
  `emulate` = "cuda" or "tpu" it is that platform's layout and tiles run in
  interpret mode on any host instead (tests).
  """
  if bias is not None or mask is not None:
    raise ValueError(
        "implementation: expected no `mask` or `bias` array with "
        "implementation='pallas' (use is_causal, local_window, key_valid_len, "
        "or implementation='blockwise'), got "
        f"{'mask' if mask is not None else 'bias'}")
  G, Lp, R, K = q.shape
  V = v.shape[2]
  q_NLK = q.transpose(0, 2, 1, 3).reshape(G * R, Lp, K)
  len_L1 = None if key_len is None else key_len.astype(jnp.int32).reshape(
      Lp, 1)
  acc = softmax_lib.softmax_dtype(q.dtype)
  scale_L1 = jnp.broadcast_to(jnp.asarray(scale, acc), (Lp, 1))
  args = (q_NLK, kT, v, scale_L1, len_L1)
  if emulate is None:
    triton = functools.partial(_triton_forward, plan, R, False)
    out_NLV, m_NL1, log_l_NL1 = lax.platform_dependent(
        *args, cuda=triton, rocm=triton,
        tpu=functools.partial(_mosaic_forward, plan, R, False),
        default=functools.partial(_interpret_forward, plan, R))
  else:
    branches = {"cuda": _triton_forward, "tpu": _mosaic_forward}
    out_NLV, m_NL1, log_l_NL1 = branches[emulate](plan, R, True, *args)
  out = out_NLV.reshape(G, R, Lp, V).transpose(0, 2, 1, 3)
  stats_NL2 = jnp.concatenate([m_NL1, log_l_NL1], axis=-1)
  stats = stats_NL2.reshape(G, R, Lp, 2).transpose(0, 2, 1, 3)
  return out, stats


def _widen(x):
  """x in float32 if it is a narrower float (bfloat16, float16), else x."""
  if x is None or not jnp.issubdtype(x.dtype, jnp.floating):
    return x
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _backward(plan: blockwise.Plan, res, scale, d_out):
  """`blockwise.backward` of the kernel's logits scale * q . k: cotangents
  of (q, kT, v, bias, mask, key_len, scale)."""
  return blockwise.backward(plan, res, d_out, scale=scale)


def _backward_in_float32(plan: blockwise.Plan, res, scale, d_out):
  """`_backward` on float32 copies of narrow-float residuals, the
  cotangents cast back: on CPU. The tile matmuls of this (non-sequential)
  plan, bf16 x bf16 -> f32 with batch dimensions, can be ones XLA:CPU's dot
  cannot run ("Unsupported element type for DotThunk"). The copies are
  exact, and dq, dk are scaled in float32 before either cast."""
  grads = _backward(plan, tuple(_widen(x) for x in res), scale, _widen(d_out))
  return tuple(None if g is None else g.astype(x.dtype)
               for g, x in zip(grads, res[:6] + (scale,)))


def _make_core(emulate: str | None):
  """The custom-VJP core for `forward(..., emulate=emulate)`."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def pallas_core(plan: blockwise.Plan, q, kT, v, bias, mask, key_len, scale):
    """`blockwise.core` with the Pallas forward (backward: blockwise), on
    unscaled q and the scale (`blockwise.Engine.scales_logits`)."""
    out, stats = forward(plan, q, kT, v, bias, mask, key_len, scale,
                         emulate=emulate)
    return out, blockwise.lse_from_stats(stats)

  def core_fwd(plan, q, kT, v, bias, mask, key_len, scale):
    out, stats = forward(plan, q, kT, v, bias, mask, key_len, scale,
                         emulate=emulate)
    return ((out, blockwise.lse_from_stats(stats)),
            ((q, kT, v, bias, mask, key_len, out, stats), scale))

  def core_bwd(plan, residuals, cotangents):
    res, scale = residuals
    d_out, _ = cotangents
    return lax.platform_dependent(
        res, scale, d_out, cpu=functools.partial(_backward_in_float32, plan),
        default=functools.partial(_backward, plan))

  pallas_core.defvjp(core_fwd, core_bwd)
  return pallas_core


core = _make_core(None)


def emulated_engine(platform: str) -> blockwise.Engine:
  """An engine whose forward is the `platform` ("cuda" or "tpu") kernel's
  layout (head-width padding, key tiles, key layout) in interpret mode, for
  checking that layout numerically on a host without the accelerator."""
  if platform not in ("cuda", "tpu"):
    raise ValueError(f"platform: expected 'cuda' or 'tpu', got {platform!r}")
  return blockwise.Engine(make_plan, _make_core(platform), scales_logits=True)


ENGINE = blockwise.Engine(make_plan, core, scales_logits=True)


def attention(q, k, v, mask=None, *, bias=None, scale=None,
              is_causal: bool = False, local_window=None, key_valid_len=None,
              query_valid_len=None, precision=None,
              block_q: int | None = None, block_k: int | None = None):
  """Attention with the Pallas forward kernel (the core signature of
  `jattn.attention`; `dot_product_attention(implementation="pallas")`).

  q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V) (single-head: (L, V)),
  in q's dtype. A `mask` or `bias` array raises ValueError (the kernel takes
  is_causal, local_window and the valid lengths); block_q / block_k are
  rounded down to powers of two (default 128 x 64; on TPU the kernel's key
  tiles are at least 128 wide).
  """
  x = _checks.attention_inputs(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  _checks.reject_unsupported("pallas", mask=mask, bias=bias)
  _checks.check_optional_positive_int(block_q, "block_q")
  _checks.check_optional_positive_int(block_k, "block_k")
  return x.output(blockwise.attend(
      x.q, x.k, x.v, scale=x.scale, causal=x.is_causal, window=x.window,
      key_valid_len=x.key_valid_len, query_valid_len=x.query_valid_len,
      block_q=block_q, block_k=block_k, precision=precision, engine=ENGINE))
