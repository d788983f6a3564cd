"""Splash attention (jattn.attention.splash) without a TPU.

* Numerics: on CPU the core runs jax's splash kernel in Pallas interpret
  mode; outputs and gradients (dq, dk, dv) against the float64 NumPy oracle
  of tests/test_blockwise.py, with lengths that need padding to the kernel's
  128 blocks. Rows with nothing to attend to are exactly 0, with exactly
  zero gradients.
* Lowering for "tpu" from this CPU host (tests/lowering.py: an abstract v5e
  or v6e device): vmapped per-example calls, forward and gradients in both
  orders, reach the batched splash kernels (one forward call; forward with
  residuals, dq and dkv for a gradient) and no interpret-mode emulation.
"""

import math
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn.attention import splash
from tests import helpers
from tests import lowering
from tests.test_blockwise import allowed_pairs
from tests.test_blockwise import attention_vjp_oracle

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

S = jax.ShapeDtypeStruct

# ---------------------------------------------------------------------------
# Numerics in interpret mode.


class Numerics(NamedTuple):
  """An oracle case: shapes and the core's structured arguments."""
  L: int
  M: int
  H: int
  G: int
  kwargs: dict
  K: int = 16
  V: int = 16


NUMERICS = {
    "mha_padded": Numerics(200, 150, 4, 4, dict()),
    "causal_gqa_g2": Numerics(200, 200, 4, 2, dict(is_causal=True)),
    "window_mqa_g1": Numerics(200, 180, 4, 1, dict(local_window=(20, 5))),
    "window_and_causal_mha": Numerics(
        200, 200, 4, 4, dict(local_window=(30, 10), is_causal=True)),
    "key_and_query_len_gqa": Numerics(
        200, 160, 4, 2, dict(key_valid_len=77, query_valid_len=150)),
    "key_len_0_causal": Numerics(130, 130, 2, 1, dict(key_valid_len=0,
                                                      is_causal=True)),
    "empty_query_blocks": Numerics(300, 40, 2, 2, dict(local_window=(8, 8))),
    "unused_key_blocks": Numerics(100, 300, 2, 1, dict(is_causal=True)),
    "scale_v_width_single_head": Numerics(
        140, 100, 1, 1, dict(scale=0.3, is_causal=True), K=16, V=8),
}


def _inputs(seed, case: Numerics, dtype=np.float32):
  rng = np.random.default_rng(seed)
  shapes = [(case.L, case.H, case.K), (case.M, case.G, case.K),
            (case.M, case.G, case.V), (case.L, case.H, case.V)]
  return [rng.normal(size=s).astype(dtype) for s in shapes]


def _allowed(case: Numerics):
  kw = case.kwargs
  return allowed_pairs(case.H, case.L, case.M,
                       causal=kw.get("is_causal", False),
                       window=kw.get("local_window"),
                       key_valid_len=kw.get("key_valid_len"),
                       query_valid_len=kw.get("query_valid_len"))


def _kwargs(case: Numerics):
  """The core's arguments, lengths as int32 scalars (jnp arrays)."""
  kw = dict(case.kwargs)
  for name in ("key_valid_len", "query_valid_len"):
    if name in kw:
      kw[name] = jnp.int32(kw[name])
  return kw


def _value_and_grads(case: Numerics, q, k, v, d_out, **extra):
  """Output and (dq, dk, dv) of the splash core, one jitted call."""
  single = case.H == 1 and case.G == 1
  squeeze = (lambda a: a[:, 0]) if single else (lambda a: a)
  unsqueeze = (lambda a: a[:, None]) if single else (lambda a: a)
  fn = lambda q, k, v: splash.attention(q, k, v, **_kwargs(case), **extra)

  def run(q, k, v, d_out):
    out, pullback = jax.vjp(fn, q, k, v)
    return out, pullback(d_out)

  out, grads = jax.jit(run)(*(squeeze(a) for a in (q, k, v, d_out)))
  return unsqueeze(out), [unsqueeze(g) for g in grads]


def _expected(case: Numerics, q, k, v, d_out):
  scale = case.kwargs.get("scale", 1 / math.sqrt(case.K))
  return attention_vjp_oracle(q, k, v, _allowed(case), None, scale,
                              d_out)[:4]


def _assert_empty_rows_zero(case: Numerics, out, grads):
  """Queries with nothing to attend to: output and dq exactly 0; keys no
  query attends to: dk and dv exactly 0; everything finite."""
  allowed = _allowed(case)
  empty_LH = ~allowed.any(axis=2).T
  unused_M = ~allowed.any(axis=(0, 1))
  np.testing.assert_array_equal(np.asarray(out)[empty_LH], 0.0)
  np.testing.assert_array_equal(np.asarray(grads[0])[empty_LH], 0.0)
  for g in grads[1:]:
    np.testing.assert_array_equal(np.asarray(g)[unused_M], 0.0)
  for x in (out, *grads):
    assert np.all(np.isfinite(np.asarray(x, np.float64)))
  return int(empty_LH.sum()), int(unused_M.sum())


@pytest.mark.parametrize("name", NUMERICS)
def test_float32_matches_oracle(name):
  case = NUMERICS[name]
  q, k, v, d_out = _inputs(len(name), case)
  out, grads = _value_and_grads(case, q, k, v, d_out)
  assert out.dtype == jnp.float32
  for label, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads),
                              _expected(case, q, k, v, d_out)):
    assert helpers.max_rel_error(got, want) < 1e-5, label
  empty_rows, unused_keys = _assert_empty_rows_zero(case, out, grads)
  if name in ("key_and_query_len_gqa", "key_len_0_causal",
              "empty_query_blocks"):
    assert empty_rows  # the case does exercise empty rows
  if name in ("key_and_query_len_gqa", "unused_key_blocks"):
    assert unused_keys


@pytest.mark.parametrize("name", [
    "key_and_query_len_gqa",
    pytest.param("causal_gqa_g2", marks=pytest.mark.slow),
    pytest.param("window_mqa_g1", marks=pytest.mark.slow)])
def test_bfloat16_matches_oracle(name):
  case = NUMERICS[name]
  q, k, v, d_out = (jnp.asarray(a, jnp.bfloat16)
                    for a in _inputs(len(name), case))
  out, grads = _value_and_grads(case, q, k, v, d_out)
  assert out.dtype == jnp.bfloat16
  # The oracle sees the bfloat16 inputs exactly (and the kernel's q, scaled
  # then rounded to bfloat16).
  scale = 1 / math.sqrt(case.K)
  q_scaled = np.asarray(jnp.asarray(q, jnp.float32) * scale, jnp.bfloat16)
  f64 = lambda a: np.asarray(jnp.asarray(a, jnp.float32), np.float64)
  expected = list(attention_vjp_oracle(f64(q_scaled), f64(k), f64(v),
                                       _allowed(case), None, 1.0,
                                       f64(d_out))[:4])
  expected[1] = expected[1] * scale  # dq through the scaling
  for label, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads),
                              expected):
    assert helpers.max_rel_error(f64(got), want) < 3e-2, label
  _assert_empty_rows_zero(case, out, grads)


@pytest.mark.slow
def test_float32_long_sequence_matches_oracle():
  case = Numerics(4100, 4100, 1, 1, dict(is_causal=True,
                                         key_valid_len=4000), K=8, V=8)
  q, k, v, d_out = _inputs(11, case)
  out, grads = _value_and_grads(case, q, k, v, d_out)
  for label, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads),
                              _expected(case, q, k, v, d_out)):
    assert helpers.max_rel_error(got, want) < 1e-5, label
  _assert_empty_rows_zero(case, out, grads)


def test_blocks_are_multiples_of_128_fitted_to_the_length():
  plan = splash.make_plan(200, 1000, 4, 2, block_q=100, block_k=300)
  assert (plan.block_q, plan.block_k) == (128, 384)
  assert (plan.padded_queries, plan.padded_keys) == (256, 1152)
  plan = splash.make_plan(200, 40, 1, 1, block_q=512)
  assert (plan.block_q, plan.block_k) == (256, 128)
  assert splash.make_plan(9, 9, 1, 1, window=(3, 5),
                          causal=True).kernel_window == (3, 0)


def test_block_sizes_do_not_change_the_result():
  case = Numerics(300, 300, 1, 1, dict(is_causal=True, key_valid_len=290),
                  K=8, V=8)
  q, k, v, d_out = _inputs(5, case)
  small = _value_and_grads(case, q, k, v, d_out)
  large = _value_and_grads(case, q, k, v, d_out, block_q=256, block_k=384)
  for a, b in zip((small[0], *small[1]), (large[0], *large[1])):
    assert helpers.max_rel_error(a, b) < 1e-5


# Batching: vmap(grad) and grad(vmap) equal the gradients of a Python loop.

B_SMALL, L_SMALL, H_SMALL, G_SMALL, K_SMALL = 2, 100, 4, 2, 8


def _batch_inputs():
  rng = np.random.default_rng(21)
  q = rng.normal(size=(B_SMALL, L_SMALL, H_SMALL, K_SMALL))
  k, v = rng.normal(size=(2, B_SMALL, L_SMALL, G_SMALL, K_SMALL))
  w = rng.normal(size=(B_SMALL, L_SMALL, H_SMALL, K_SMALL))
  lengths = np.array([100, 0], np.int32)  # the second example sees nothing
  return [a.astype(np.float32) for a in (q, k, v, w)] + [lengths]


def _loss(q, k, v, w, n):
  out = splash.attention(q, k, v, is_causal=True, key_valid_len=n)
  return jnp.sum(out * w)


def test_vmap_grad_and_grad_vmap_equal_a_loop():
  q, k, v, w, n = _batch_inputs()
  grad = jax.grad(_loss, argnums=(0, 1, 2))
  loop = [jax.jit(grad)(q[b], k[b], v[b], w[b], n[b]) for b in range(B_SMALL)]
  loop = [np.stack(g) for g in zip(*loop)]
  vmap_grad = jax.jit(jax.vmap(grad))(q, k, v, w, n)
  grad_vmap = jax.jit(jax.grad(
      lambda *a: jnp.sum(jax.vmap(_loss)(*a)), argnums=(0, 1, 2)))(
          q, k, v, w, n)
  for got in (vmap_grad, grad_vmap):
    for a, b in zip(got, loop):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for g in loop:
    np.testing.assert_array_equal(g[1], 0.0)  # key_valid_len 0: all zero


def test_public_dispatch_runs_splash():
  case = NUMERICS["causal_gqa_g2"]
  q, k, v, _ = _inputs(2, case)
  attend = jax.jit(lambda q, k, v, impl: jattn.dot_product_attention(
      q, k, v, is_causal=True, implementation=impl), static_argnums=3)
  got, want = attend(q, k, v, "splash"), attend(q, k, v, "dense")
  assert helpers.max_rel_error(got, want) < 1e-5


# ---------------------------------------------------------------------------
# Errors.

ERRORS = {
    "mask": (dict(mask=True), "mask: expected None for splash attention"),
    "bias": (dict(bias=True), "bias: expected None for splash attention"),
    "per_query_key_len": (dict(per_query=True),
                          "key_valid_len: expected None or a scalar"),
    "float16": (dict(dtype=jnp.float16),
                "q: expected dtype float32 or bfloat16 for splash attention, "
                "got float16"),
    "float64": (dict(dtype=jnp.float64),
                "q: expected dtype float32 or bfloat16 for splash attention, "
                "got float64"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_unsupported_arguments_raise_by_name(name):
  spec, message = ERRORS[name]
  L, H = 256, 2
  extra = {}
  if spec.get("mask"):
    extra["mask"] = jnp.ones((L, L), bool)
  if spec.get("bias"):
    extra["bias"] = jnp.zeros((H, L, L), jnp.float32)
  if spec.get("per_query"):
    extra["key_valid_len"] = jnp.full((L,), 7, jnp.int32)
  x = S((L, H, 16), spec.get("dtype", jnp.float32))
  fn = lambda q, k, v: splash.attention(q, k, v, **extra)
  with pytest.raises(ValueError, match="^" + re.escape(message)):
    jax.jit(fn).trace(x, x, x)
  with pytest.raises(ValueError, match="^" + re.escape(message)):
    jattn.dot_product_attention(jnp.zeros(x.shape, x.dtype),
                                jnp.zeros(x.shape, x.dtype),
                                jnp.zeros(x.shape, x.dtype),
                                implementation="splash", **extra)


# ---------------------------------------------------------------------------
# Lowering for "tpu".

B, H, K = 2, 4, 128  # lowering: batch, query heads, head width


class Case(NamedTuple):
  """A lowering case: G key/value heads, the core's keyword arguments from
  the length argument n, and whether the kernel is the segmented one."""
  G: int
  kwargs: Callable
  segmented: bool


CASES = {
    "causal": Case(4, lambda n: dict(is_causal=True), False),
    "local_window": Case(4, lambda n: dict(local_window=(256, 0)), False),
    "key_len": Case(4, lambda n: dict(key_valid_len=n), True),
    "gqa_g2_causal_key_len": Case(
        2, lambda n: dict(is_causal=True, key_valid_len=n,
                          query_valid_len=n), True),
    "mqa_g1_window": Case(1, lambda n: dict(local_window=(100, 50)), False),
}
MODES = ("vmap_fwd", "vmap_grad", "grad_vmap")
MLIR_DTYPES = {jnp.dtype(jnp.bfloat16): "bf16", jnp.dtype(jnp.float32): "f32"}
# The default run lowers every case and mode once (v5e, bfloat16, L = 1024)
# and each other chip / dtype / length once; the full grid is slow.
DEFAULT = {("v5e", "bf16", 1024), ("v6e", "f32", 1024), ("v6e", "bf16", 4100)}
DEFAULT_CASES = {"causal", "gqa_g2_causal_key_len"}


def _grid():
  for chip in ("v5e", "v6e"):
    for dtype in (jnp.bfloat16, jnp.float32):
      for L in (1024, 4100):
        for name in CASES:
          for mode in MODES:
            key = (chip, MLIR_DTYPES[jnp.dtype(dtype)], L)
            fast = key == ("v5e", "bf16", 1024) or (
                key in DEFAULT and name in DEFAULT_CASES)
            yield pytest.param(chip, dtype, L, name, mode,
                               id=f"{chip}-{key[1]}-L{L}-{name}-{mode}",
                               marks=() if fast else pytest.mark.slow)


def _batched_fn(per_example, mode: str):
  """vmap(fwd), vmap(grad) or grad(sum(vmap)) of per_example(q, k, v, n)."""
  loss = lambda *a: per_example(*a).astype(jnp.float32).sum()
  if mode == "vmap_fwd":
    return jax.vmap(per_example)
  if mode == "vmap_grad":
    return jax.vmap(jax.grad(loss, argnums=(0, 1, 2)))
  batched = jax.vmap(per_example)
  return jax.grad(lambda *a: batched(*a).astype(jnp.float32).sum(),
                  argnums=(0, 1, 2))


def _lower(case: Case, mode: str, L: int, dtype, chip: str) -> str:
  q_BLHK = S((B, L, H, K), dtype)
  kv_BLGK = S((B, L, case.G, K), dtype)
  n_B = S((B,), jnp.int32)
  per_example = lambda q, k, v, n: splash.attention(q, k, v, **case.kwargs(n))
  return lowering.lower(_batched_fn(per_example, mode), q_BLHK, kv_BLGK,
                        kv_BLGK, n_B, platform="tpu", chip=chip)


@pytest.mark.parametrize("chip, dtype, L, name, mode", list(_grid()))
def test_lowers_to_the_batched_splash_kernels(chip, dtype, L, name, mode):
  case = CASES[name]
  text = _lower(case, mode, L, dtype, chip)
  kind = "mha" if case.G == H else "mqa"
  segmented = case.segmented or L % 128 != 0  # key_valid_len or padding
  phases = ["fwd"] if mode == "vmap_fwd" else ["fwd", "dq", "dkv"]
  names = set(re.findall(r'kernel_name = "([^"]+)"', text))
  for phase in phases:
    assert any(n.startswith(f"splash_{kind}_{phase}_")
               and ("_segmented" in n) == segmented for n in names), (
                   phase, names)
  # One call per kernel: the batch (and GQA's groups) are grid axes of it.
  assert lowering.count(text, "tpu") == len(phases) >= 1
  assert lowering.count(text, "interpret_callback") == 0
  # The interpreter branch of platform_dependent is pruned: its emulation
  # would be a grid loop of XLA ops around the kernel body.
  assert "stablehlo.while" not in text
  t = MLIR_DTYPES[jnp.dtype(dtype)]
  Lp = -(-L // 128) * 128
  assert f"{Lp}x{K}x{t}>" in text
  if mode == "vmap_fwd":
    assert "dot_general" not in text  # no XLA attention next to the kernel


def test_public_dispatch_lowers_to_splash():
  assert jattn.attention.choose_implementation(
      4100, 4100, dtype=jnp.bfloat16, head_dim=K, is_causal=True,
      key_valid_len_ndim=0, platform="tpu") == "splash"
  fn = jax.vmap(lambda q, k, v: jattn.dot_product_attention(
      q, k, v, is_causal=True, implementation="splash"))
  x = S((B, 1024, H, K), jnp.bfloat16)
  text = lowering.lower(fn, x, x, x, platform="tpu", chip="v6e")
  assert lowering.count(text, "tpu") == 1
  assert "splash_mha_fwd" in text


def test_lowers_and_runs_with_x64_off(x32):
  """As users run it (conftest turns x64 on for the rest of this file)."""
  del x32
  text = _lower(CASES["gqa_g2_causal_key_len"], "vmap_grad", 1024,
                jnp.bfloat16, "v5e")
  assert lowering.count(text, "tpu") == 3
  case = Numerics(100, 100, 2, 1, dict(is_causal=True, key_valid_len=60))
  q, k, v, d_out = _inputs(8, case)
  out, grads = _value_and_grads(case, q, k, v, d_out)
  for got, want in zip((out, *grads), _expected(case, q, k, v, d_out)):
    assert helpers.max_rel_error(got, want) < 1e-5
