"""cuDNN fused attention: `jax.nn.dot_product_attention(implementation="cudnn")`
behind the jattn core signature.

`attention` is a core of `jattn.attention` (per example; batch with
`jax.vmap`): q (L, H, K), k (M, G, K), v (M, G, V) -> out (L, H, V), or the
single-head form q (L, K), k (M, K), v (M, V) -> out (L, V). It adds a batch
axis of 1 (jax's layout B, T, N, H: q (1, L, H, K), k and v (1, M, G, K)) and
calls cuDNN's flash attention kernel, so a vmapped call is ONE batched cuDNN
call (jax's batching rule folds the vmap axis into B).

What applies (`jattn.attention.choose_implementation` picks "cudnn" on an
NVIDIA GPU only then; called directly, anything else raises ValueError naming
the argument, or jax raises for the head width on the GPU at hand):
  * q, k, v bfloat16 or float16, one dtype (cuDNN multiplies them with
    float32 accumulation and a float32 softmax; `precision` is accepted for
    the core signature and changes nothing);
  * head widths K = V, a multiple of 8, <= 128 (<= 256 on compute capability
    >= 9.0); compute capability >= 8.0 (jax checks the GPU when tracing);
  * no `mask` or `bias` array;
  * `is_causal`, and a `local_window` that looks left only: (left, 0) (with
    `is_causal`, any (left, right): causal drops the right part). It is passed
    as `local_window_size=(left, 0)` with `is_causal=True`: the same pairs,
    and the only window cuDNN takes;
  * at most one key length per example: a scalar `key_valid_len` (passed as
    `key_value_seq_lengths`) and a scalar `query_valid_len` (passed as
    `query_seq_lengths`);
  * a scale known at trace time (a Python number; default 1 / sqrt(K)).

jattn semantics are kept exactly, whatever cuDNN writes into padded rows:
queries i >= query_valid_len, and every query when key_valid_len == 0, output
exactly 0 (`jnp.where`, never a multiply), and their gradients, and those of
keys j >= key_valid_len, are exactly 0 (the inputs pass through `jnp.where`;
cuDNN is given lengths >= 1, so no row of its softmax is empty).

Autodiff and batching: reverse mode (grad, vjp) through jax's cuDNN backward
kernel; vmap and grad compose in every order. Two jax limitations are worked
around: (1) jax's cuDNN batching rules need q, k, v, the lengths and the
cotangent all batched or all unbatched, so each is made batched like the
others with a batched False (`_false_like`: the sum of an empty slice, never
a read of a value, so no NaN or inf can leak); (2) jax fills a missing length
with an unbatched array, so both lengths are always passed together.

Verified by lowering only (tests/test_cudnn.py lowers for "cuda" on a CPU host
with jax's cuDNN version and compute-capability checks stubbed): the text
holds one batched `__cudnn$fmha` call for a vmapped forward. The jattn-side
logic (lengths, windows, zeroed rows, batching) is tested against a float64
oracle with the cuDNN call replaced by jax's XLA implementation. No GPU has
run this module in this project yet.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jattn import _checks

DTYPES = (jnp.bfloat16, jnp.float16)
MAX_HEAD_DIM = 256  # on compute capability >= 9.0; 128 before (jax checks)


class _Static(NamedTuple):
  """What cuDNN takes as constants: the logit scale, causality and the left
  window (None or `left`: query i sees keys i - left <= j <= i)."""
  scale: float
  is_causal: bool
  left: int | None


def attention(q, k, v, mask=None, *, bias=None, scale=None,
              is_causal: bool = False, local_window=None, key_valid_len=None,
              query_valid_len=None, precision=None):
  """cuDNN fused attention (the core signature of `jattn.attention`).

  Args:
    q, k, v: (L, H, K), (M, G, K), (M, G, K), bfloat16 or float16, H a
      multiple of G; or single-head (L, K), (M, K), (M, K).
    mask, bias: must be None (ValueError naming them otherwise).
    scale: a Python number (default 1 / sqrt(K)).
    is_causal, local_window: as in `jattn.dot_product_attention`; the window
      must look left only, (left, 0), unless `is_causal`.
    key_valid_len: None or an integer scalar (not one per query).
    query_valid_len: None or an integer scalar.
    precision: accepted and unused (cuDNN's products accumulate in float32).

  Returns:
    out (L, H, K) ((L, K) single-head) in q's dtype.
  """
  del precision  # cuDNN: bf16/f16 products with float32 accumulation.
  _checks.reject_unsupported("cudnn", mask=mask, bias=bias)
  x = _checks.attention_inputs(
      q, k, v, scale=scale, is_causal=is_causal,
      local_window=local_window, key_valid_len=key_valid_len,
      query_valid_len=query_valid_len)
  _check_arrays(x)
  _check_key_length(key_valid_len)
  static = _Static(_static_scale(x.scale), x.is_causal or x.window is not None,
                   _left_window(x.window, x.is_causal))
  if key_valid_len is None and query_valid_len is None:
    return x.output(_attend(x.q, x.k, x.v, None, None, static))
  return x.output(_attend_padded(x, static))


def _check_arrays(x) -> None:
  """bf16/f16 q with k, v of its dtype; K = V, a multiple of 8, <= 256."""
  dtype = x.q.dtype
  if dtype not in DTYPES:
    raise ValueError(
        f"q: expected dtype bfloat16 or float16 for cuDNN attention, got "
        f"{dtype} (use implementation='blockwise' for {dtype}, or cast q, k, "
        "v to bfloat16)")
  for name, array in (("k", x.k), ("v", x.v)):
    if array.dtype != dtype:
      raise ValueError(
          f"{name}: expected dtype {dtype} (that of q), got {array.dtype}")
  if x.V != x.K:
    raise ValueError(
        f"v: expected head width V = K = {x.K} (cuDNN needs equal widths), "
        f"got {x.V}")
  if x.K % 8 or x.K > MAX_HEAD_DIM:
    raise ValueError(
        f"q: expected a head width K that is a multiple of 8 and <= "
        f"{MAX_HEAD_DIM} (<= 128 before compute capability 9.0), got {x.K}")


def _check_key_length(key_valid_len) -> None:
  """One key length per example: None or a scalar, not one per query."""
  if key_valid_len is not None and jnp.ndim(key_valid_len) != 0:
    raise ValueError(
        "key_valid_len: expected None or a scalar (cuDNN takes one key length "
        f"per example), got shape {jnp.shape(key_valid_len)}")


def _static_scale(scale) -> float:
  """The logit scale as a Python float (cuDNN takes it as a constant)."""
  if not _checks.is_concrete(scale):
    raise ValueError(
        "scale: expected a number known at trace time (cuDNN takes the scale "
        "as a constant), got a traced value")
  return float(scale)


def _left_window(window, is_causal: bool) -> int | None:
  """`left` of a window that looks left only (right ignored when causal)."""
  if window is None:
    return None
  left, right = window
  if right and not is_causal:
    raise ValueError(
        "local_window: expected a window that looks left only, (left, 0) "
        "(cuDNN takes no right window without is_causal), got "
        f"(left, right) = {window}")
  return left


def _attend_padded(x, static):
  """Attention with one query and one key length: cuDNN gets lengths >= 1;
  rows and gradients of what may not attend are set to exactly 0."""
  q_len = _length(x.query_valid_len, x.L)
  kv_len = _length(x.key_valid_len, x.M)
  query_ok_L = (jnp.arange(x.L) < q_len) & (kv_len > 0)
  key_ok_M = (jnp.arange(x.M) < kv_len) & (q_len > 0)
  q_LHK = jnp.where(query_ok_L[:, None, None], x.q, 0)
  k_MGK = jnp.where(key_ok_M[:, None, None], x.k, 0)
  v_MGV = jnp.where(key_ok_M[:, None, None], x.v, 0)
  out_LHV = _attend(q_LHK, k_MGK, v_MGV, jnp.maximum(q_len, 1),
                    jnp.maximum(kv_len, 1), static)
  return jnp.where(query_ok_L[:, None, None], out_LHV, 0)


def _length(length, maximum: int):
  """An int32 scalar length in [0, maximum] (`maximum` when None)."""
  if length is None:
    return jnp.asarray(maximum, jnp.int32)
  return jnp.clip(jnp.asarray(length), 0, maximum).astype(jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attend(q_LHK, k_MGK, v_MGV, q_len, kv_len, static):
  """cuDNN attention of one example: (L, H, K), (M, G, K) x 2 -> (L, H, K);
  q_len, kv_len None or int32 scalars >= 1."""
  return _call(q_LHK, k_MGK, v_MGV, q_len, kv_len, static)


def _attend_fwd(q_LHK, k_MGK, v_MGV, q_len, kv_len, static):
  out_LHV, pullback = jax.vjp(
      lambda q, k, v: _call(q, k, v, q_len, kv_len, static),
      q_LHK, k_MGK, v_MGV)
  return out_LHV, (pullback, out_LHV)


def _attend_bwd(static, residuals, d_out_LHV):
  """Under `jax.vmap(jax.grad(...))` the cotangent can be unbatched while the
  residuals are batched, which jax's cuDNN backward batching rule refuses:
  make it batched like them (the selected value is always d_out)."""
  del static
  pullback, out_LHV = residuals
  d_out_LHV = jnp.where(_false_like(out_LHV), out_LHV, d_out_LHV)
  return (*pullback(d_out_LHV), None, None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def _call(q_LHK, k_MGK, v_MGV, q_len, kv_len, static):
  """`_fused` on one example with a batch axis of 1, every operand batched
  (under vmap) like the others."""
  batched = _false_like(q_LHK) | _false_like(k_MGK) | _false_like(v_MGV)
  like = lambda a: jnp.where(batched, a, a)
  lengths = {}
  if q_len is not None:
    lengths = dict(query_seq_lengths=like(q_len)[None],
                   key_value_seq_lengths=like(kv_len)[None])
  window = None if static.left is None else (static.left, 0)
  out_1LHK = _fused(like(q_LHK)[None], like(k_MGK)[None], like(v_MGV)[None],
                    scale=static.scale, is_causal=static.is_causal,
                    local_window_size=window, **lengths)
  return out_1LHK[0]


def _false_like(x):
  """A False scalar that is batched under `jax.vmap` exactly when x is: the
  sum of an empty slice of x (no value of x is read, so never NaN)."""
  return x[..., :0].sum() != 0


def _fused(q_BTNH, k_BSGH, v_BSGH, **options):
  """The one call to cuDNN (tests replace it with jax's XLA implementation).
  options: scale, is_causal, local_window_size and optionally
  query_seq_lengths and key_value_seq_lengths ((B,) int32)."""
  return jax.nn.dot_product_attention(q_BTNH, k_BSGH, v_BSGH,
                                      implementation="cudnn", **options)


__all__ = ["DTYPES", "attention"]
