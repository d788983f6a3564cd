"""jax's splash attention TPU kernel behind jattn's core signature.

`attention` runs `jax.experimental.pallas.ops.tpu.splash_attention` (a
block-sparse flash-attention kernel with its own Pallas backward, a
`jax.custom_vjp`) and keeps the semantics of every jattn core:

* scale: the kernel applies no logit scale (`make_splash_mha` / `_mqa`
  take none, on jax 0.7.2 as on 0.10.2: only `attn_logits_soft_cap`, a
  tanh cap c tanh(s / c), and `mask_value`), so q is multiplied by `scale`
  (default 1 / sqrt(K)) in float32 and cast back to its dtype first.
  Numerics (a limitation, documented, not fixed): for float32 inputs this
  is dense attention's own order (dense scales float32 q too). For
  bfloat16 the scaled q is rounded to bfloat16 before the kernel's
  bf16 x bf16 -> f32 logits, where dense attention (and
  `implementation="pallas"`) scale the float32 logits instead; at large
  logits the result is then less accurate than dense's. Measured in
  interpret mode (L = 128, H = 2, K = 16, q and k ~ N(0, 6^2), causal, max
  error against a float64 oracle over the largest entry): with scale 0.325
  out 0.036 against dense's 0.0032, dq 0.076 against 0.0042, dk 0.073
  against 0.0017. When the scale is a power of two (1 / sqrt(K) is one for
  K = 4, 16, 64, 256, not for K = 32 or 128) the pre-scaling is exact
  (unless q * scale leaves bfloat16's normal range), and out is as
  accurate as dense's; dq and dk still measured 3x dense's there (0.0095
  against 0.0030, 0.0072 against 0.0020), from the kernel's own backward.
  To keep the logits exact with another scale, fold it into the queries'
  projection and pass a power of two. dq does not overflow on the way back
  through a small scale: the kernel's dq (of the scaled q) is multiplied by
  the scale in float32, and bfloat16 has float32's exponent range (float16,
  where it could overflow, is not accepted).
* lengths: L and M are padded to whole blocks (multiples of 128, the TPU
  lane width the kernel requires). Padded keys and keys j >= key_valid_len
  are excluded through the kernel's segment ids (queries in segment 0,
  valid keys 0, excluded keys 1); padded query rows are sliced off.
* structure: `is_causal` is the kernel's CausalMask (top-left aligned: query
  i sees keys j <= i), a window (left, right) its LocalMask, and both
  together a LocalMask (left, min(right, 0)). Key blocks the structure
  excludes are skipped by the kernel.
* heads: G == H runs the multi-head kernel, G == 1 the multi-query kernel
  (all H query heads against the one key/value head), 1 < G < H the
  multi-query kernel vmapped over the G groups of R = H / G query heads.
* empty rows: a query with nothing to attend to (every key excluded, or
  i >= query_valid_len) outputs exactly 0 with exactly zero gradients. The
  kernel itself gives such a row the mean of V over the blocks it visited
  (and a query block with no block to visit may be left unwritten), so
  the output is selected with `jnp.where` (whose transpose also zeroes the
  row's cotangent before the kernel's backward), and q, k, v pass through
  `jnp.where(used, x, stop_gradient(x))` so that the rows and keys no
  allowed pair touches get exactly zero (never NaN) gradients.

Kernel or emulation: the choice is made by the platform the computation is
LOWERED for (`jax.lax.platform_dependent`), not by the backend at trace
time: lowered for TPU (also ahead of time from a CPU host) it is the Mosaic
kernel; anywhere else the same kernel in Pallas interpret mode (slow, for
tests). The TPU branch is traced with jax_enable_x64 off (forward and
backward, `traced_in_32_bits`): the kernels do not lower with 64-bit
indices.

Not supported (ValueError naming the argument): a `mask` or `bias` array,
per-query key lengths (`key_valid_len` of shape (L,)), dtypes other than
float32 and bfloat16. Only first-order reverse-mode differentiation (grad,
vjp) is defined. `precision` is accepted for the common signature but does
not reach the kernel: its matmuls run at Mosaic's default precision
(bfloat16 inputs multiply in bfloat16 with float32 accumulation).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib

from jattn import _checks
from jattn import _compat

DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128
LANES = 128  # block sizes are multiples of the TPU lane width
DTYPES = (jnp.float32, jnp.bfloat16)
_EXCLUDED = 1  # segment id of excluded keys (queries and valid keys: 0)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static description of one splash call (per example).

  Attributes:
    num_queries, num_keys: L and M before padding.
    block_q, block_k: kernel block sizes (multiples of 128); L and M are
      padded to multiples of them.
    num_heads, num_groups: H query heads over G key/value heads.
    causal: query i sees keys j <= i.
    window: None or (left, right): query i sees keys i - left <= j <= i +
      right (jattn's convention, as given).
  """
  num_queries: int
  num_keys: int
  block_q: int
  block_k: int
  num_heads: int
  num_groups: int
  causal: bool = False
  window: tuple[int, int] | None = None

  @property
  def padded_queries(self) -> int:
    return _round_up(self.num_queries, self.block_q)

  @property
  def padded_keys(self) -> int:
    return _round_up(self.num_keys, self.block_k)

  @property
  def kernel_window(self) -> tuple[int, int] | None:
    """The window the kernel's LocalMask applies (causal folded in)."""
    if self.window is None:
      return None
    left, right = self.window
    return (left, min(right, 0)) if self.causal else (left, right)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def choose_block(length: int, block: int | None, default: int) -> int:
  """`block` (default when None) rounded up to a multiple of 128, and no
  larger than `length` rounded up to 128 (a short sequence is one block)."""
  block = default if block is None else block
  return min(_round_up(block, LANES), _round_up(max(length, 1), LANES))


def make_plan(num_queries: int, num_keys: int, num_heads: int,
              num_groups: int, *, block_q: int | None = None,
              block_k: int | None = None, causal: bool = False,
              window=None) -> Plan:
  """A `Plan` with block sizes fitted to L and M (defaults 128 x 128)."""
  return Plan(num_queries, num_keys,
              choose_block(num_queries, block_q, DEFAULT_BLOCK_Q),
              choose_block(num_keys, block_k, DEFAULT_BLOCK_K),
              num_heads, num_groups, bool(causal),
              None if window is None else (int(window[0]), int(window[1])))


# ---------------------------------------------------------------------------
# Building the kernel.


def _structure(plan: Plan):
  """The kernel's mask of one head, on the padded (Lp, Mp) grid."""
  shape = (plan.padded_queries, plan.padded_keys)
  window = plan.kernel_window
  if window is not None:
    return splash_lib.LocalMask(shape, window_size=window, offset=0)
  if plan.causal:
    return splash_lib.CausalMask(shape)
  return splash_lib.FullMask(shape)


def _block_sizes(plan: Plan):
  bq, bk = plan.block_q, plan.block_k
  return splash_lib.BlockSizes(
      block_q=bq, block_kv=bk, block_kv_compute=bk,
      block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk,
      block_q_dq=bq, block_kv_dq=bk)


def interpret_mode():
  """What `interpret=` emulates the kernel with off TPU: True, Pallas's
  generic interpreter. jax's TPU interpreter (`pltpu.InterpretParams()`)
  fails on a vmapped splash kernel (a batch, or GQA's groups) in jax 0.7.2
  and 0.10.2: the grid gains the batch axis but the kernel's dimension
  semantics do not ("safe_zip() argument 1 has length 3 but argument 0 has
  length 4")."""
  return True


def make_kernel(plan: Plan, *, interpret):
  """The splash kernel for one example of `plan` (multi-head when G == H,
  else multi-query over the H / G query heads of one group).

  Built when the core is traced: building runs eager jnp ops on the mask
  tables (jax caches the mask processing per shape and block sizes).
  """
  mha = plan.num_groups == plan.num_heads and plan.num_heads > 1
  heads = plan.num_heads if mha else plan.num_heads // plan.num_groups
  make = splash_lib.make_splash_mha if mha else splash_lib.make_splash_mqa
  return make(splash_lib.MultiHeadMask([_structure(plan)] * heads),
              block_sizes=_block_sizes(plan), head_shards=1, q_seq_shards=1,
              interpret=interpret)


# ---------------------------------------------------------------------------
# Running it.


def _segment_ids(plan: Plan, key_valid_len):
  """Kernel segment ids excluding padded keys and keys j >= key_valid_len;
  None when every key is valid (the kernel then skips the comparison)."""
  Lp, Mp, M = plan.padded_queries, plan.padded_keys, plan.num_keys
  if key_valid_len is None and Mp == M:
    return None
  limit = M if key_valid_len is None else jnp.clip(
      jnp.asarray(key_valid_len, jnp.int32), 0, M)
  kv_M = jnp.where(jnp.arange(Mp, dtype=jnp.int32) < limit, 0, _EXCLUDED)
  return splash_lib.SegmentIds(q=jnp.zeros((Lp,), jnp.int32),
                                  kv=kv_M.astype(jnp.int32))


def _run(kernel, plan: Plan, q_HLK, k_GMK, v_GMV, segment_ids):
  """The kernel on padded q (H, Lp, K), k (G, Mp, K), v (G, Mp, V) ->
  (H, Lp, V)."""
  H, G = plan.num_heads, plan.num_groups
  call = lambda q, k, v: kernel(q, k, v, segment_ids=segment_ids)
  if G == H and H > 1:
    return call(q_HLK, k_GMK, v_GMV)
  if G == 1:
    return call(q_HLK, k_GMK[0], v_GMV[0])
  _, Lp, K = q_HLK.shape
  q_GRLK = q_HLK.reshape(G, H // G, Lp, K)
  out_GRLV = jax.vmap(call)(q_GRLK, k_GMK, v_GMV)
  return out_GRLV.reshape(H, Lp, -1)


def traced_in_32_bits(fn):
  """`fn` (array arguments, arrays out) with its forward AND backward traced
  with 64-bit types off.

  The splash kernels do not lower for TPU with jax_enable_x64 on (their loop
  indices become int64: "'arith.muli' op requires the same type for all
  operands"). A context around the call alone would not reach the kernel's
  backward, which is traced when the enclosing grad transposes, so this
  custom_vjp traces both halves (the pullback of `jax.vjp`, a pytree of its
  residuals, is the custom_vjp residual) inside the context.
  """
  @jax.custom_vjp
  def wrapped(*args):
    with _compat.without_x64():
      return fn(*args)

  def forward(*args):
    with _compat.without_x64():
      return jax.vjp(fn, *args)

  def backward(pullback, d_out):
    with _compat.without_x64():
      return pullback(d_out)

  wrapped.defvjp(forward, backward)
  return wrapped


def _build_and_run(plan: Plan, interpret, q_HLK, k_GMK, v_GMV, segment_ids):
  """`_run` with a kernel built now (in the caller's x64 context)."""
  kernel = make_kernel(plan, interpret=interpret)
  return _run(kernel, plan, q_HLK, k_GMK, v_GMV, segment_ids)


def kernel_call(plan: Plan, q_HLK, k_GMK, v_GMV, segment_ids):
  """The splash kernel on padded q (H, Lp, K), k (G, Mp, K), v (G, Mp, V)
  -> (H, Lp, V): Mosaic when lowered for TPU (traced in 32 bits), jax's
  interpreter elsewhere (traced as the caller's x64 setting says: the
  interpreter is lowered later, under that setting)."""
  on_tpu = traced_in_32_bits(functools.partial(_build_and_run, plan, False))
  emulated = functools.partial(_build_and_run, plan, interpret_mode())
  return lax.platform_dependent(q_HLK, k_GMK, v_GMV, segment_ids,
                                tpu=on_tpu, default=emulated)


# ---------------------------------------------------------------------------
# Which queries and keys take part.


def _query_limit(plan: Plan, query_valid_len):
  """Number of queries that may attend (min(L, query_valid_len))."""
  if query_valid_len is None:
    return plan.num_queries
  return jnp.clip(jnp.asarray(query_valid_len, jnp.int32), 0,
                  plan.num_queries)


def _key_limit(plan: Plan, key_valid_len):
  """Number of keys that may be attended to (min(M, key_valid_len))."""
  if key_valid_len is None:
    return plan.num_keys
  return jnp.clip(jnp.asarray(key_valid_len, jnp.int32), 0, plan.num_keys)


def used_queries(plan: Plan, key_valid_len, query_valid_len):
  """(L,) bool: query i has at least one key to attend to."""
  i = jnp.arange(plan.num_queries, dtype=jnp.int32)
  first = jnp.zeros_like(i)
  last = jnp.full_like(i, _key_limit(plan, key_valid_len) - 1)
  if plan.causal:
    last = jnp.minimum(last, i)
  if plan.window is not None:
    left, right = plan.window
    first = jnp.maximum(first, i - left)
    last = jnp.minimum(last, i + right)
  return (first <= last) & (i < _query_limit(plan, query_valid_len))


def used_keys(plan: Plan, key_valid_len, query_valid_len):
  """(M,) bool: key j is attended to by at least one query."""
  j = jnp.arange(plan.num_keys, dtype=jnp.int32)
  first = jnp.zeros_like(j)
  last = jnp.full_like(j, _query_limit(plan, query_valid_len) - 1)
  if plan.causal:
    first = jnp.maximum(first, j)
  if plan.window is not None:
    left, right = plan.window
    first = jnp.maximum(first, j - right)
    last = jnp.minimum(last, j + left)
  return (first <= last) & (j < _key_limit(plan, key_valid_len))


def _gradient_only_where(used, x):
  """x itself, whose gradient is zero (exactly, NaN-safe) outside `used`
  (rows of x's first axis)."""
  used = used.reshape(used.shape + (1,) * (x.ndim - 1))
  return jnp.where(used, x, lax.stop_gradient(x))


def _pad_rows(x_HNK, padded: int):
  """(H, N, K) -> (H, padded, K), zeros appended along N."""
  extra = padded - x_HNK.shape[1]
  return x_HNK if not extra else jnp.pad(x_HNK, ((0, 0), (0, extra), (0, 0)))


# ---------------------------------------------------------------------------
# The core.


def attend(plan: Plan, q_LHK, k_MGK, v_MGV, scale, key_valid_len=None,
           query_valid_len=None):
  """Splash attention on validated multi-head inputs of one dtype:
  q (L, H, K), k (M, G, K), v (M, G, V) -> out (L, H, V)."""
  L = plan.num_queries
  rows = used_queries(plan, key_valid_len, query_valid_len)
  keys = used_keys(plan, key_valid_len, query_valid_len)
  q_LHK = _gradient_only_where(rows, q_LHK)
  k_MGK = _gradient_only_where(keys, k_MGK)
  v_MGV = _gradient_only_where(keys, v_MGV)
  q_LHK = (q_LHK.astype(jnp.float32) * jnp.asarray(scale, jnp.float32)
           ).astype(q_LHK.dtype)
  q_HLK = _pad_rows(q_LHK.transpose(1, 0, 2), plan.padded_queries)
  k_GMK = _pad_rows(k_MGK.transpose(1, 0, 2), plan.padded_keys)
  v_GMV = _pad_rows(v_MGV.transpose(1, 0, 2), plan.padded_keys)
  out_HLV = kernel_call(plan, q_HLK, k_GMK, v_GMV,
                        _segment_ids(plan, key_valid_len))
  out_LHV = out_HLV[:, :L].transpose(1, 0, 2)
  return jnp.where(rows[:, None, None], out_LHV, jnp.zeros_like(out_LHV))


def _check_dtypes(x) -> None:
  for name, array in (("q", x.q), ("k", x.k), ("v", x.v)):
    if array.dtype not in DTYPES:
      raise ValueError(
          f"{name}: expected dtype float32 or bfloat16 for splash attention, "
          f"got {array.dtype} (the kernel's dtypes; use another "
          "implementation of jattn.dot_product_attention)")


def _check_key_valid_len(key_valid_len) -> None:
  if key_valid_len is not None and np.ndim(key_valid_len) != 0:
    raise ValueError(
        "key_valid_len: expected None or a scalar (one key length per "
        "example) for splash attention, got an array of shape "
        f"{np.shape(key_valid_len)} (the kernel's segment ids cannot give "
        "each query its own length; use another implementation of "
        "jattn.dot_product_attention)")


def attention(q, k, v, mask=None, *, bias=None, scale=None,
              is_causal: bool = False, local_window=None, key_valid_len=None,
              query_valid_len=None, precision=None,
              block_q: int | None = None, block_k: int | None = None):
  """Attention with jax's splash TPU kernel (the core signature of
  `jattn.attention`; `dot_product_attention(implementation="splash")`).

  q (L, H, K), k (M, G, K), v (M, G, V) -> out (L, H, V) (single-head: q
  (L, K), k (M, K), v (M, V) -> (L, V)), in q's dtype; q, k, v float32 or
  bfloat16 (computed in their common dtype).

  Args:
    q, k, v, scale, is_causal, local_window, query_valid_len: as in
      `jattn.dot_product_attention`.
    mask, bias: must be None (ValueError otherwise).
    key_valid_len: None or an integer scalar (queries see keys j <
      key_valid_len); per-query lengths (L,) raise ValueError.
    precision: accepted, not used: the kernel's matmuls run at Mosaic's
      default precision (see the module docstring).
    block_q, block_k: kernel block sizes, rounded up to multiples of 128 and
      capped at the padded length (default 128 x 128).
  """
  x = _checks.attention_inputs(
      q, k, v, mask, bias=bias, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  _checks.reject_unsupported("splash", mask=mask, bias=bias)
  _check_key_valid_len(key_valid_len)
  _check_dtypes(x)
  _checks.check_optional_positive_int(block_q, "block_q")
  _checks.check_optional_positive_int(block_k, "block_k")
  del precision  # see the docstring
  plan = make_plan(x.L, x.M, x.H, x.G, block_q=block_q, block_k=block_k,
                   causal=x.is_causal, window=x.window)
  dtype = jnp.result_type(x.q, x.k, x.v)
  out_LHV = attend(plan, x.q.astype(dtype), x.k.astype(dtype),
                   x.v.astype(dtype), x.scale, x.key_valid_len,
                   x.query_valid_len)
  return x.output(out_LHV)
