"""cuDNN attention (jattn.attention.cudnn) without a GPU.

* Lowering for "cuda" on this CPU host (`fake_cudnn` stubs jax's cuDNN
  version and compute-capability checks): vmapped per-example calls, forward
  and gradients in every order, reach ONE batched `__cudnn$fmha` call each
  (forward; forward with statistics + backward for a gradient), with the mask
  type, window, scale and batched shapes jattn asked for.
* jattn's side of it (lengths, windows, rows set to 0, the batching
  workarounds) against float64 oracles, with the cuDNN call (`cudnn._fused`)
  replaced by jax's float32 XLA implementation given the same arguments.
"""

import math
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn.attention import cudnn
from tests import helpers
from tests import lowering
from tests.test_blockwise import allowed_pairs
from tests.test_blockwise import attention_vjp_oracle

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

S = jax.ShapeDtypeStruct
B, H, K = 2, 4, 64  # lowering: batch, query heads, head width

# ---------------------------------------------------------------------------
# Lowering for "cuda".


class Case(NamedTuple):
  """A lowering case: G key/value heads, the core's keyword arguments from
  the length argument n, n's vmap axis (None: one n for the batch), and what
  every cuDNN call must say."""
  G: int
  kwargs: Callable
  n_axis: int | None
  mask_type: str
  window_length: int | None = None


CASES = {
    "causal": Case(4, lambda n: dict(is_causal=True), 0, "CAUSAL"),
    "left_window": Case(4, lambda n: dict(local_window=(127, 0)), 0,
                        "CAUSAL", 128),
    "key_len_batched": Case(4, lambda n: dict(key_valid_len=n), 0,
                            "PADDING"),
    "key_len_unbatched": Case(4, lambda n: dict(key_valid_len=n), None,
                              "PADDING"),
    "key_len_python_int": Case(
        4, lambda n: dict(key_valid_len=700, is_causal=True), 0,
        "PADDING_CAUSAL"),
    "query_len": Case(4, lambda n: dict(query_valid_len=n, is_causal=True), 0,
                      "PADDING_CAUSAL"),
    "gqa_g2_key_len": Case(2, lambda n: dict(key_valid_len=n, is_causal=True),
                           0, "PADDING_CAUSAL"),
    "mqa_g1": Case(1, lambda n: dict(), 0, "NO_MASK"),
}
MODES = ("vmap_fwd", "vmap_grad", "grad_vmap")
SIZES = [
    pytest.param(1024, jnp.bfloat16, id="L1024-bf16"),
    pytest.param(4100, jnp.bfloat16, id="L4100-bf16", marks=pytest.mark.slow),
    pytest.param(1024, jnp.float16, id="L1024-f16", marks=pytest.mark.slow),
    pytest.param(4100, jnp.float16, id="L4100-f16", marks=pytest.mark.slow),
]
MLIR_DTYPES = {jnp.dtype(jnp.bfloat16): "bf16", jnp.dtype(jnp.float16): "f16"}


def _batched_fn(per_example, mode: str, n_axis):
  """vmap(fwd), vmap(grad) or grad(sum(vmap)) of per_example(q, k, v, n)."""
  axes = (0, 0, 0, n_axis)
  loss = lambda *a: per_example(*a).astype(jnp.float32).sum()
  if mode == "vmap_fwd":
    return jax.vmap(per_example, in_axes=axes)
  if mode == "vmap_grad":
    return jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=axes)
  batched = jax.vmap(per_example, in_axes=axes)
  return jax.grad(lambda *a: batched(*a).astype(jnp.float32).sum(),
                  argnums=(0, 1, 2))


def _lower(case: Case, mode: str, L: int, dtype):
  """Lowered text of the case over B examples of length L."""
  q_BLHK = S((B, L, H, K), dtype)
  kv_BLGK = S((B, L, case.G, K), dtype)
  n = S((B,) if case.n_axis == 0 else (), jnp.int32)
  per_example = lambda q, k, v, n: cudnn.attention(q, k, v, **case.kwargs(n))
  fn = _batched_fn(per_example, mode, case.n_axis)
  return lowering.lower(fn, q_BLHK, kv_BLGK, kv_BLGK, n, platform="cuda")


def _backend_values(text: str, field: str) -> set[str]:
  """The values of one field of every cuDNN call's backend config."""
  return set(re.findall(rf"{field}\\22: (?:\\22)?([\w.]+)", text))


@pytest.mark.parametrize("L, dtype", SIZES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_lowers_to_one_batched_cudnn_call(fake_cudnn, name, mode, L, dtype):
  del fake_cudnn
  case = CASES[name]
  text = _lower(case, mode, L, dtype)
  want = (["__cudnn$fmhaSoftmax"] if mode == "vmap_fwd"
          else ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"])
  calls = [c for c in lowering.custom_calls(text) if "cudnn" in c]
  assert calls == want
  assert lowering.count(text, "cudnn") == len(want)  # each once: batched
  t = MLIR_DTYPES[jnp.dtype(dtype)]
  assert f"tensor<{B}x{L}x{H}x{K}x{t}>" in text
  assert f"tensor<{B}x{L}x{case.G}x{K}x{t}>" in text
  for emulation in ("interpret_callback", "triton", "mosaic_gpu"):
    assert lowering.count(text, emulation) == 0, emulation
  assert "dot_general" not in text  # no XLA attention next to the kernel
  assert _backend_values(text, "mask_type") == {case.mask_type}
  assert _backend_values(text, "fmha_scale") == {str(1 / math.sqrt(K))}
  if case.window_length is not None:
    assert _backend_values(text, "sliding_window_length") == {
        str(case.window_length)}


@pytest.mark.parametrize("mode", ("vmap_fwd", "vmap_grad"))
def test_shared_keys_and_values_lower_to_one_call(fake_cudnn, mode):
  """vmap over queries only (k, v shared by the batch, in_axes None): k and
  v are made batched like q, so jax's batching rule accepts them."""
  del fake_cudnn
  per_example = lambda q, k, v: cudnn.attention(q, k, v, is_causal=True,
                                                key_valid_len=700)
  loss = lambda *a: per_example(*a).astype(jnp.float32).sum()
  fn = (per_example if mode == "vmap_fwd"
        else jax.grad(loss, argnums=(0, 1, 2)))
  q_BLHK = S((B, 1024, H, K), jnp.bfloat16)
  kv_LGK = S((1024, 2, K), jnp.bfloat16)
  text = lowering.lower(jax.vmap(fn, in_axes=(0, None, None)), q_BLHK,
                        kv_LGK, kv_LGK, platform="cuda")
  assert lowering.count(text, "cudnn") == (1 if mode == "vmap_fwd" else 2)
  assert f"tensor<{B}x1024x2x{K}xbf16>" in text


def test_nested_vmap_is_one_call(fake_cudnn):
  del fake_cudnn
  per_example = lambda q, n: cudnn.attention(q, q, q, key_valid_len=n)
  fn = jax.vmap(jax.vmap(per_example, in_axes=(0, None)))
  text = lowering.lower(fn, S((3, B, 1024, H, K), jnp.bfloat16),
                        S((3,), jnp.int32), platform="cuda")
  assert lowering.count(text, "cudnn") == 1
  assert f"tensor<{3 * B}x1024x{H}x{K}xbf16>" in text


def test_lengths_reach_cudnn_batched(fake_cudnn):
  """Both lengths are passed, as (B,) int32 operands of the one call."""
  del fake_cudnn
  text = _lower(CASES["key_len_unbatched"], "vmap_fwd", 1024, jnp.bfloat16)
  call = next(line for line in text.splitlines()
              if "custom_call @__cudnn$fmha" in line)
  assert call.count(f"tensor<{B}xi32>") == 2


def test_public_dispatch_lowers_to_cudnn(fake_cudnn):
  del fake_cudnn
  choice = jattn.attention.choose_implementation(
      4100, 4100, dtype=jnp.bfloat16, head_dim=K, is_causal=True,
      key_valid_len_ndim=0, platform="gpu", compute_capability=(9, 0))
  assert choice == "cudnn"
  fn = jax.vmap(lambda q, k, v: jattn.dot_product_attention(
      q, k, v, is_causal=True, implementation="cudnn"))
  x = S((B, 1024, H, K), jnp.bfloat16)
  text = lowering.lower(fn, x, x, x, platform="cuda")
  assert lowering.count(text, "cudnn") == 1


ERROR_L = 1024
ERRORS = {  # name: (dtype, the core's keyword arguments from n, message)
    "float32": (jnp.float32, lambda n: {},
                "q: expected dtype bfloat16 or float16 for cuDNN attention, "
                "got float32 (use implementation='blockwise'"),
    "mask": (jnp.bfloat16,
             lambda n: dict(mask=jnp.ones((ERROR_L, ERROR_L), bool)),
             "mask: expected None for cudnn attention"),
    "bias": (jnp.bfloat16,
             lambda n: dict(bias=jnp.zeros((H, ERROR_L, ERROR_L))),
             "bias: expected None for cudnn attention"),
    "per_query_key_len": (jnp.bfloat16,
                          lambda n: dict(key_valid_len=jnp.full((ERROR_L,), n)),
                          "key_valid_len: expected None or a scalar"),
    "right_window": (jnp.bfloat16, lambda n: dict(local_window=(127, 4)),
                     "local_window: expected a window that looks left only"),
}


@pytest.mark.parametrize("name", ERRORS)
@pytest.mark.parametrize("mode", ("vmap_fwd", "vmap_grad"))
def test_unsupported_arguments_raise_by_name(fake_cudnn, name, mode):
  del fake_cudnn
  dtype, kwargs, message = ERRORS[name]
  with pytest.raises(ValueError, match="^" + re.escape(message)):
    _lower(Case(H, kwargs, 0, "NO_MASK"), mode, ERROR_L, dtype)


# ---------------------------------------------------------------------------
# jattn's side, with cuDNN replaced by jax's XLA implementation.


class Fake(NamedTuple):
  """What the fake cuDNN call saw: the options of every call, and every
  (query length, key length) pair it was given."""
  options: list
  lengths: list


@pytest.fixture
def xla_cudnn(monkeypatch):
  """Replaces the cuDNN call with jax's float32 XLA implementation given the
  same arguments, made adversarial where a kernel's results are undefined:
  output rows of padded queries are NaN, and so are the gradients of padded
  query and key/value rows. jattn must still give exact results. Yields the
  `Fake` record."""
  fake = Fake([], [])

  def fused(q_BTNH, k_BSGH, v_BSGH, **options):
    fake.options.append(options)
    f32 = [a.astype(jnp.float32) for a in (q_BTNH, k_BSGH, v_BSGH)]
    q_len = options.get("query_seq_lengths")
    kv_len = options.get("key_value_seq_lengths")
    if q_len is not None:
      jax.debug.callback(_record(fake), q_len, kv_len)
      pad_q = _padded(q_len, f32[0].shape[1])
      pad_k = _padded(kv_len, f32[1].shape[1])
      f32 = [_nan_gradient(f32[0], pad_q)] + [_nan_gradient(a, pad_k)
                                              for a in f32[1:]]
    out = jax.nn.dot_product_attention(*f32, implementation="xla", **options)
    if q_len is not None:
      out = jnp.where(pad_q, jnp.nan, out)
    return out.astype(q_BTNH.dtype)

  monkeypatch.setattr(cudnn, "_fused", fused)
  yield fake


def _record(fake):
  def record(q_len, kv_len):
    fake.lengths.extend(zip(np.ravel(q_len).tolist(),
                            np.ravel(kv_len).tolist()))
  return record


def _padded(length_B, T: int):
  """(B, T, 1, 1): positions at or past the length."""
  return (jnp.arange(T)[None, :] >= length_B[:, None])[:, :, None, None]


def _nan_gradient(x, rows):
  """x with its rows zeroed, and NaN gradients there."""
  return jnp.where(rows, 0.0, x * jnp.where(rows, jnp.nan, 1.0))


def _inputs(seed, L, M, G, dtype=np.float16, heads=4, width=8, batch=()):
  """q (*batch, L, heads, width), k, v (*batch, M, G, width), d_out like q."""
  rng = np.random.default_rng(seed)
  shapes = [(L, heads, width), (M, G, width), (M, G, width), (L, heads, width)]
  return [rng.normal(size=batch + s).astype(dtype) for s in shapes]


def _vjp(fn, q, k, v, d_out):
  """out and (dq, dk, dv) of fn at q, k, v for the cotangent d_out."""
  def run(q, k, v, d_out):
    out, pullback = jax.vjp(fn, q, k, v)
    return out, pullback(d_out)
  return jax.jit(run)(q, k, v, d_out)


def _oracle(q, k, v, d_out, *, is_causal=False, local_window=None,
            key_valid_len=None, query_valid_len=None, scale=None):
  """Float64 out, dq, dk, dv and the (H, L, M) allowed pairs."""
  L, heads, width = q.shape
  allowed = allowed_pairs(heads, L, k.shape[0], causal=is_causal,
                          window=local_window, key_valid_len=key_valid_len,
                          query_valid_len=query_valid_len)
  scale = 1 / math.sqrt(width) if scale is None else scale
  out, dq, dk, dv, _ = attention_vjp_oracle(q, k, v, allowed, None, scale,
                                            d_out)
  return (out, dq, dk, dv), allowed


def _assert_matches(got, want, allowed, names=("out", "dq", "dk", "dv"),
                    tol=3e-3):
  """got/want: tuples in the order of names. Relative errors below tol; rows
  with nothing to attend to (and keys nothing attends to) exactly 0."""
  empty_LH = ~allowed.any(axis=2).T
  unused_M = ~allowed.any(axis=(0, 1))
  zero_rows = dict(out=empty_LH, dq=empty_LH, dk=unused_M, dv=unused_M)
  for name, g, w in zip(names, got, want):
    g = np.asarray(g, np.float64)
    assert helpers.max_rel_error(g, w) < tol, name
    assert np.all(np.isfinite(g)), name
    np.testing.assert_array_equal(g[zero_rows[name]], 0.0, err_msg=name)


ORACLE_CASES = {
    "causal_gqa": dict(G=2, is_causal=True),
    "left_window": dict(G=4, local_window=(5, 0)),
    "causal_drops_right_window": dict(G=2, is_causal=True,
                                      local_window=(4, 3)),
    "key_len": dict(G=2, key_valid_len=17),
    "key_len_zero": dict(G=2, key_valid_len=0, is_causal=True),
    "key_len_past_end": dict(G=1, key_valid_len=99),
    "query_len": dict(G=2, query_valid_len=13, is_causal=True),
    "query_len_zero": dict(G=2, query_valid_len=0),
    "lengths_and_window": dict(G=4, local_window=(6, 0), key_valid_len=15,
                               query_valid_len=20),
    "cross_causal_key_len": dict(G=2, L=20, M=28, is_causal=True,
                                 key_valid_len=23),
    "mqa_scale": dict(G=1, scale=0.3),
}


@pytest.mark.parametrize("name", ORACLE_CASES)
def test_matches_oracle(xla_cudnn, name):
  case = dict(ORACLE_CASES[name])
  G, L, M = case.pop("G"), case.pop("L", 24), case.pop("M", 24)
  q, k, v, d_out = _inputs(len(name), L, M, G)
  fn = lambda q, k, v: cudnn.attention(q, k, v, precision="highest", **case)
  got = _vjp(fn, q, k, v, d_out)
  want, allowed = _oracle(q, k, v, d_out, **case)
  _assert_matches((got[0], *got[1]), want, allowed)
  options = xla_cudnn.options[-1]
  assert options["is_causal"] == (case.get("is_causal", False)
                                  or "local_window" in case)
  window = case.get("local_window")
  assert options["local_window_size"] == (None if window is None
                                          else (window[0], 0))
  has_lengths = "key_valid_len" in case or "query_valid_len" in case
  assert ("query_seq_lengths" in options) == has_lengths
  assert ("key_value_seq_lengths" in options) == has_lengths
  assert bool(xla_cudnn.lengths) == has_lengths
  assert all(n >= 1 for pair in xla_cudnn.lengths for n in pair)  # not empty


def test_bfloat16_and_single_head(xla_cudnn):
  del xla_cudnn
  q, k, v, d_out = _inputs(5, 24, 24, 1, dtype=jnp.bfloat16, heads=1)
  fn = lambda q, k, v: cudnn.attention(q[:, 0], k[:, 0], v[:, 0],
                                       is_causal=True, key_valid_len=19)
  out, grads = _vjp(fn, q, k, v, d_out[:, 0])
  assert out.shape == (24, 8) and out.dtype == jnp.bfloat16
  want, allowed = _oracle(*(np.asarray(a, np.float64)
                            for a in (q, k, v, d_out)),
                          is_causal=True, key_valid_len=19)
  _assert_matches((out[:, None], *grads), want, allowed, tol=2e-2)


LENGTH_FORMS = ("batched", "unbatched_array", "python_int")


@pytest.mark.parametrize("form", LENGTH_FORMS)
def test_vmap_and_grad_orders_agree(xla_cudnn, form):
  """vmap(grad), grad(vmap) (and, batched, a loop of plain grads) give the
  oracle's gradients; key lengths batched (one example has none), one array
  for the batch, or a Python int closed over."""
  del xla_cudnn
  L, G, batch = 24, 2, 3
  q, k, v, d_out = _inputs(11, L, L, G, batch=(batch,))
  key_lens = {"batched": np.array([17, 0, 24], np.int32),
              "unbatched_array": np.int32(9), "python_int": 9}[form]
  n_axis = 0 if form == "batched" else None

  def per_example(q, k, v, d_out, n):
    n = 9 if form == "python_int" else n
    out = cudnn.attention(q, k, v, is_causal=True, key_valid_len=n,
                          query_valid_len=20)
    return jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32))

  axes = (0, 0, 0, 0, n_axis)
  grad = jax.grad(per_example, argnums=(0, 1, 2))
  grad_of_sum = jax.grad(
      lambda *a: jax.vmap(per_example, in_axes=axes)(*a).sum(),
      argnums=(0, 1, 2))
  both = jax.jit(lambda *a: (jax.vmap(grad, in_axes=axes)(*a),
                             grad_of_sum(*a)))
  vmap_grad, grad_vmap = both(q, k, v, d_out, key_lens)
  lens = np.broadcast_to(np.asarray(key_lens), (batch,))
  orders = [[tuple(g[b] for g in vmap_grad) for b in range(batch)],
            [tuple(g[b] for g in grad_vmap) for b in range(batch)]]
  if form == "batched":  # and a loop of plain grads
    orders.append([jax.jit(grad)(q[b], k[b], v[b], d_out[b], lens[b])
                   for b in range(batch)])
  for b in range(batch):
    want, allowed = _oracle(q[b], k[b], v[b], d_out[b], is_causal=True,
                            key_valid_len=int(lens[b]), query_valid_len=20)
    for grads in orders:
      _assert_matches(grads[b], want[1:], allowed, names=("dq", "dk", "dv"))


def test_vmapped_forward_matches_loop(xla_cudnn):
  del xla_cudnn
  q, k, v, _ = _inputs(3, 24, 24, 2, batch=(3,))
  lens = np.array([5, 0, 30], np.int32)
  fn = lambda q, k, v, n: cudnn.attention(q, k, v, key_valid_len=n,
                                          local_window=(3, 0))
  batched = np.asarray(jax.jit(jax.vmap(fn))(q, k, v, lens), np.float64)
  for b in range(3):
    one = np.asarray(jax.jit(fn)(q[b], k[b], v[b], lens[b]), np.float64)
    np.testing.assert_allclose(batched[b], one, rtol=2e-3, atol=2e-3)
  np.testing.assert_array_equal(batched[1], 0.0)  # key length 0


# ---------------------------------------------------------------------------
# Errors that need no lowering.


def test_argument_errors_name_the_argument():
  x = jnp.ones((16, 2, 8), jnp.bfloat16)
  cases = [
      (dict(k=x.astype(jnp.float16)), "k: expected dtype bfloat16 (that of q)"),
      (dict(v=jnp.ones((16, 2, 16), jnp.bfloat16)),
       "v: expected head width V = K = 8"),
      (dict(q=jnp.ones((16, 2, 12), jnp.bfloat16),
            k=jnp.ones((16, 2, 12), jnp.bfloat16),
            v=jnp.ones((16, 2, 12), jnp.bfloat16)),
       "q: expected a head width K that is a multiple of 8"),
      (dict(local_window=3), "local_window: expected a window that looks "
       "left only"),
      (dict(key_valid_len=jnp.arange(16)), "key_valid_len: expected None or "
       "a scalar"),
  ]
  for change, message in cases:
    args = dict(q=x, k=x, v=x) | change
    kwargs = {n: args.pop(n) for n in list(args) if n not in ("q", "k", "v")}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
      cudnn.attention(args["q"], args["k"], args["v"], **kwargs)


def test_traced_scale_is_refused():
  x = jnp.ones((16, 2, 8), jnp.bfloat16)
  with pytest.raises(ValueError, match="^scale: expected a number known"):
    jax.jit(lambda s: cudnn.attention(x, x, x, scale=s))(0.5)
