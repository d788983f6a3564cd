"""The Pallas attention kernel: interpret mode on CPU against float64
oracles, and lowering for GPU (Triton) and TPU (Mosaic) from this CPU host."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax import lax
import pytest

import jattn
from jattn.attention import blockwise
from jattn.attention import pallas as pallas_attention
from tests.test_blockwise import allowed_pairs
from tests.test_blockwise import attention_vjp_oracle
from tests.test_blockwise import run_vjp
from tests import helpers
from tests import lowering

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


class PallasOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("gqa_plain", dict()),
      ("causal_key_len", dict(causal=True, key_valid_len=True)),
      ("window_query_len", dict(window=(6, 2), query_valid_len=20)),
  )
  def test_matches_oracle(self, case):
    L, M, H, G, K, V = 27, 35, 4, 2, 8, 8   # not multiples of the 16 tiles
    rng = np.random.default_rng(len(case))
    q, k, v = (rng.normal(size=s).astype(np.float32)
               for s in [(L, H, K), (M, G, K), (M, G, V)])
    d_out = rng.normal(size=(L, H, V)).astype(np.float32)
    key_len = None
    if case.get("key_valid_len"):
      key_len = rng.integers(1, M, size=(L,)).astype(np.int32)
      key_len[0] = 0                               # nothing to attend to
    kwargs = dict(is_causal=case.get("causal", False),
                  local_window=case.get("window"), key_valid_len=key_len,
                  query_valid_len=case.get("query_valid_len"))
    fn = lambda q, k, v, b: jattn.dot_product_attention(
        q, k, v, implementation="pallas", block_q=16, block_k=16, **kwargs)
    out, grads = run_vjp(fn, q, k, v, d_out)
    allowed = allowed_pairs(H, L, M, causal=kwargs["is_causal"],
                            window=kwargs["local_window"], key_valid_len=key_len,
                            query_valid_len=kwargs["query_valid_len"])
    expected = attention_vjp_oracle(q, k, v, allowed, None, 1 / math.sqrt(K),
                                    d_out)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads[:3]),
                               expected[:4]):
      self.assertLess(helpers.max_rel_error(got, want), 1e-5, name)
    empty = ~allowed.any(axis=2).T
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    self.assertTrue(np.all(np.isfinite(np.asarray(grads[0]))))

  def test_vmap_and_single_head(self):
    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.normal(size=(2, 20, 8)), jnp.float32)
    fn = lambda impl: jax.jit(jax.vmap(lambda x: jattn.dot_product_attention(
        x, x, x, is_causal=True, implementation=impl)))
    np.testing.assert_allclose(fn("pallas")(q), fn("dense")(q), rtol=1e-5,
                               atol=1e-6)

  def test_bfloat16_jit_vmap_grad(self):
    """bf16 under jit(vmap(grad)) on CPU runs and matches the oracle: the
    interpret kernel's dots and the CPU backward's tile matmuls run on
    float32 copies (without them XLA:CPU raises "Unsupported element type
    for DotThunk::Execute: BF16 x BF16 = F32" here, from the backward)."""
    B, L, H, G, K = 2, 40, 4, 2, 16
    rng = np.random.default_rng(16)
    q, k, v, d_out = (
        jnp.asarray(rng.normal(size=s), jnp.bfloat16)
        for s in [(B, L, H, K), (B, L, G, K), (B, L, G, K), (B, L, H, K)])
    key_len = rng.integers(1, L + 1, size=(B, L)).astype(np.int32)

    def loss(q, k, v, d_out, key_len):
      out = jattn.dot_product_attention(
          q, k, v, is_causal=True, key_valid_len=key_len,
          implementation="pallas")
      return jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32))

    grads = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2))))(
        q, k, v, d_out, key_len)
    for b in range(B):
      allowed = allowed_pairs(H, L, L, causal=True, key_valid_len=key_len[b])
      expected = attention_vjp_oracle(q[b], k[b], v[b], allowed, None,
                                      1 / math.sqrt(K), d_out[b])
      for name, got, want in zip(("dq", "dk", "dv"), grads, expected[1:4]):
        self.assertEqual(got.dtype, jnp.bfloat16)
        self.assertLess(helpers.max_rel_error(got[b], want), 3e-2, name)


@pytest.mark.parametrize("case", (
    "key_len_window", pytest.param("causal", marks=pytest.mark.slow)))
@pytest.mark.parametrize("platform", (None, "cuda", "tpu"))
def test_head_width_80_highest_matches_oracle(platform, case):
  """K = V = 80 at precision HIGHEST, by the CPU kernel and by the GPU and
  TPU layouts emulated in interpret mode: "cuda" pads the head widths to 128
  (and slices V back), "tpu" uses 128-wide key tiles over keys padded past
  the plan's, in (M, K) layout."""
  L, M, H, G, K, V = 45, 150, 4, 2, 80, 80
  rng = np.random.default_rng(80)
  q, k, v = (rng.normal(size=s).astype(np.float32)
             for s in [(L, H, K), (M, G, K), (M, G, V)])
  d_out = rng.normal(size=(L, H, V)).astype(np.float32)
  key_len, causal, window = None, False, None
  if case == "key_len_window":
    key_len = rng.integers(0, M + 1, size=(L,)).astype(np.int32)
    window = (30, 70)
  else:
    causal = True
  engine = (pallas_attention.ENGINE if platform is None
            else pallas_attention.emulated_engine(platform))

  def fn(q, k, v, b):
    del b
    return blockwise.attend(
        q, k, v, scale=1 / math.sqrt(K), causal=causal, window=window,
        key_valid_len=key_len, block_q=16, block_k=16,
        precision=lax.Precision.HIGHEST, engine=engine)

  out, grads = run_vjp(fn, q, k, v, d_out)
  allowed = allowed_pairs(H, L, M, causal=causal, window=window,
                          key_valid_len=key_len)
  expected = attention_vjp_oracle(q, k, v, allowed, None, 1 / math.sqrt(K),
                                  d_out)
  assert out.shape == (L, H, V)
  for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads[:3]),
                             expected[:4]):
    assert helpers.max_rel_error(got, want) < 1e-5, name


# Low precision at large logits: the kernel takes the unscaled q in its dtype
# and scales the float32 logits tile (as dense attention scales its float32
# logits), so neither the logits nor dq pass through a rounded q * scale.
LARGE_LOGITS_SCALE = 1.3 / math.sqrt(16)   # not a power of two


def _pallas_attention(platform, q, k, v, *, scale, is_causal=False):
  """`implementation="pallas"` (platform None), or the "cuda" / "tpu"
  kernel's layout emulated in interpret mode, with 16 x 16 tiles."""
  if platform is None:
    return jattn.dot_product_attention(
        q, k, v, scale=scale, is_causal=is_causal, implementation="pallas",
        block_q=16, block_k=16)
  return blockwise.attend(
      q, k, v, scale=scale, causal=is_causal, block_q=16, block_k=16,
      engine=pallas_attention.emulated_engine(platform))


@pytest.mark.parametrize("dtype,platform", (
    (jnp.bfloat16, None), (jnp.float16, None), (jnp.bfloat16, "cuda"),
    (jnp.float16, "tpu")))
def test_large_logits_in_low_precision_are_as_accurate_as_dense(dtype,
                                                               platform):
  """Logits up to about 100, scale 1.3 / 4: out, dq, dk, dv of the kernel
  (and of the GPU and TPU layouts emulated in interpret mode) are within
  1.5x of dense attention's error against the float64 oracle, on the same
  inputs. With q * scale rounded to bf16/f16 first they were 5 to 100x
  dense's (bf16: out 0.040 against 0.0036, dq 0.22 against 0.0022)."""
  L, H, G, K = 64, 2, 1, 16
  rng = np.random.default_rng(0)
  q, k, v, d_out = (np.asarray(jnp.asarray(rng.normal(size=s) * f, dtype))
                    for s, f in [((L, H, K), 6.0), ((L, G, K), 6.0),
                                 ((L, G, K), 1.0), ((L, H, K), 1.0)])
  want = attention_vjp_oracle(
      q, k, v, allowed_pairs(H, L, L, causal=True), None,
      LARGE_LOGITS_SCALE, d_out)[:4]
  tiled = lambda q, k, v, b: _pallas_attention(
      platform, q, k, v, scale=LARGE_LOGITS_SCALE, is_causal=True)
  dense = lambda q, k, v, b: jattn.dot_product_attention(
      q, k, v, scale=LARGE_LOGITS_SCALE, is_causal=True,
      implementation="dense")
  errors = {}
  for name, fn in (("dense", dense), ("pallas", tiled)):
    out, grads = run_vjp(fn, q, k, v, d_out)
    errors[name] = [helpers.max_rel_error(got, w)
                    for got, w in zip((out, *grads[:3]), want)]
  # Both are near the rounding of the result to the dtype (up to half an
  # epsilon of the largest entry); an eighth of an epsilon absorbs where
  # that rounding alone decides, 10x below the errors before the fix.
  floor = float(jnp.finfo(dtype).eps) / 8
  for part, err, dense_err in zip(("out", "dq", "dk", "dv"),
                                  errors["pallas"], errors["dense"]):
    assert err <= 1.5 * dense_err + floor, (part, errors)


@pytest.mark.parametrize("platform", (None, "tpu"))
def test_float16_dq_through_a_small_scale_does_not_overflow(platform):
  """q = (1000, 1000), keys (2000, -2000) and (-2000, 2000), scale 1e-3 in
  float16: dq = (800, -800), but dq / scale = ds . k = (8e5, -8e5) is past
  float16's 65504. It was (inf, -inf) when the kernel's q was the scaled q
  in float16 (its cotangent ds . k cast to float16 before the scale)."""
  q = np.full((1, 1, 2), 1000.0, np.float16)
  k = np.array([[[2000.0, -2000.0]], [[-2000.0, 2000.0]]], np.float16)
  v = np.array([[[400.0]], [[-400.0]]], np.float16)
  d_out = np.ones((1, 1, 1), np.float16)
  want = attention_vjp_oracle(q, k, v, np.ones((1, 1, 2), bool), None, 1e-3,
                              d_out)
  np.testing.assert_allclose(want[1], [[[800.0, -800.0]]], rtol=1e-12)
  fn = lambda q, k, v, b: _pallas_attention(platform, q, k, v, scale=1e-3)
  dense = lambda q, k, v, b: jattn.dot_product_attention(
      q, k, v, scale=1e-3, implementation="dense")
  _, grads = run_vjp(fn, q, k, v, d_out)
  _, dense_grads = run_vjp(dense, q, k, v, d_out)
  for name, got, dense_got, w in zip(("dq", "dk", "dv"), grads, dense_grads,
                                     want[1:4]):
    assert got.dtype == jnp.float16, name
    assert np.isfinite(np.asarray(got)).all(), (name, got)
    np.testing.assert_allclose(np.asarray(got, np.float64),
                               np.asarray(dense_got, np.float64), rtol=1e-3,
                               err_msg=name)
    assert helpers.max_rel_error(got, w) < 1e-3, (name, got)


def test_a_traced_scale_and_its_gradient_match_dense():
  """The scale reaches the kernel as data, not as a constant: jitted and
  vmapped per example (a learned temperature), the output and d loss /
  d scale (the backward's seventh cotangent, sum ds * q . k) are dense's."""
  rng = np.random.default_rng(37)
  q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32)
             for s in [(20, 4, 8), (27, 2, 8), (27, 2, 8)])
  key_len = jnp.asarray(np.arange(20) % 7 + 1, jnp.int32)

  def loss(scale, implementation):
    out = jattn.dot_product_attention(
        q, k, v, scale=scale, is_causal=True, key_valid_len=key_len,
        implementation=implementation,
        **(dict(block_q=16, block_k=16) if implementation == "pallas"
           else {}))
    return jnp.sum(jnp.sin(out))

  scales = jnp.asarray([0.3, 0.37], jnp.float32)
  got, want = (jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(0, None)),
                       static_argnums=1)(scales, impl)
               for impl in ("pallas", "dense"))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-5)


class PallasPlanTest(parameterized.TestCase):

  def test_power_of_two_tiles(self):
    plan = pallas_attention.make_plan(27, 300, block_q=128, block_k=64)
    self.assertEqual((plan.block_q, plan.block_k), (32, 64))
    self.assertEqual((plan.padded_queries, plan.padded_keys), (32, 320))
    plan = pallas_attention.make_plan(5, 5)
    self.assertEqual((plan.block_q, plan.block_k), (16, 16))

  def test_mask_and_bias_arrays_are_refused_by_name(self):
    x = jnp.ones((4, 1, 8))
    for name, value in (("mask", jnp.ones((4, 4), bool)),
                        ("bias", jnp.ones((4, 4)))):
      with self.assertRaisesRegex(ValueError, f"^{name}: expected None"):
        pallas_attention.attention(x, x, x, **{name: value})

  def test_emulated_engine_refuses_other_platforms(self):
    with self.assertRaisesRegex(ValueError, "^platform: expected"):
      pallas_attention.emulated_engine("rocm")

  @parameterized.parameters(
      (None, None, None),
      ("highest", lax.Precision.HIGHEST, lax.Precision.HIGHEST),
      (lax.Precision.HIGH, lax.Precision.HIGH, lax.Precision.HIGHEST))
  def test_precision_reaches_every_kernel_dot(self, precision, want, want_tpu):
    """Both dots of each of the three kernels (Triton, Mosaic, interpret)
    run at the call's precision (Mosaic has only DEFAULT and HIGHEST)."""
    q = jnp.zeros((40, 2, 16), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda q: jattn.dot_product_attention(
        q, q, q, implementation="pallas", precision=precision))(q)
    per_kernel = _kernel_dot_precisions(jaxpr.jaxpr)
    self.assertEqual([p for p, _ in per_kernel],
                     [("cuda", "rocm"), ("tpu",), None])
    pair = lambda p: None if p is None else (p, p)
    self.assertEqual([dots for _, dots in per_kernel],
                     [[pair(want)] * 2, [pair(want_tpu)] * 2,
                      [pair(want)] * 2])


def _sub_jaxprs(params):
  """The jaxprs among an equation's parameters (cond branches, loop bodies,
  pallas_call kernels)."""
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(getattr(item, "jaxpr", None), "eqns"):
        yield item.jaxpr


def _dot_precisions(jaxpr):
  """The `precision` of every dot_general in `jaxpr`, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for sub in _sub_jaxprs(eqn.params):
      found += _dot_precisions(sub)
  return found


def _kernel_dot_precisions(jaxpr):
  """[(platforms, dot precisions)] for the pallas_call in each branch of
  the `platform_dependent` conditional in `jaxpr`."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "cond" and eqn.params.get("branches_platforms"):
      result = []
      for platforms, branch in zip(eqn.params["branches_platforms"],
                                   eqn.params["branches"]):
        kernels = [e for e in branch.jaxpr.eqns
                   if e.primitive.name == "pallas_call"]
        assert len(kernels) == 1, kernels
        result.append((platforms, _dot_precisions(kernels[0].params["jaxpr"])))
      return result
    for sub in _sub_jaxprs(eqn.params):
      result = _kernel_dot_precisions(sub)
      if result:
        return result
  return []


# ---------------------------------------------------------------------------
# Lowering for the accelerators from this CPU host.

PLATFORMS = (("cuda", None), ("tpu", "v5e"), ("tpu", "v6e"))
KINDS = ("causal", "window", "key_len_scalar", "key_len_per_query", "gqa")
SHAPES = tuple(itertools.product((1024, 4100), (jnp.bfloat16, jnp.float32),
                                 (64, 80)))   # (L, dtype, head width K = V)
BATCH = 2


def _lowering_cases():
  """Every (platform, chip, L, dtype, K, kind, grad); per platform one case
  per (kind, fwd/grad), the shapes rotating through SHAPES, runs by default
  (30 cases); the other 210 are marked slow."""
  cases = []
  for p, (platform, chip) in enumerate(PLATFORMS):
    for s, (L, dtype, K) in enumerate(SHAPES):
      for k, kind in enumerate(KINDS):
        for grad in (False, True):
          default = s == (2 * k + grad + 3 * p) % len(SHAPES)
          name = (f"{platform}{'_' + chip if chip else ''}-L{L}-"
                  f"{jnp.dtype(dtype).name}-K{K}-{kind}-"
                  f"{'grad' if grad else 'fwd'}")
          cases.append(pytest.param(
              platform, chip, L, dtype, K, kind, grad, id=name,
              marks=() if default else pytest.mark.slow))
  return cases


def _vmapped_attention(L, dtype, K, kind, grad):
  """jax.vmap (batch BATCH) of the attention (or its grad in q, k, v) and
  abstract arguments for it."""
  H, G = (4, 2) if kind == "gqa" else (2, 2)
  args = (jax.ShapeDtypeStruct((BATCH, L, H, K), dtype),
          jax.ShapeDtypeStruct((BATCH, L, G, K), dtype),
          jax.ShapeDtypeStruct((BATCH, L, G, K), dtype),
          jax.ShapeDtypeStruct((BATCH, L), jnp.int32))
  options = dict(causal=dict(is_causal=True),
                 window=dict(local_window=(100, 0)),
                 key_len_scalar=dict(key_valid_len=L - 3),
                 gqa=dict(is_causal=True)).get(kind, {})

  def attention(q, k, v, key_len):
    if kind == "key_len_per_query":
      options["key_valid_len"] = key_len
    return jattn.dot_product_attention(q, k, v, implementation="pallas",
                                       **options)

  def loss_grad(q, k, v, key_len):
    loss = lambda q, k, v: jnp.sum(attention(q, k, v, key_len).astype(
        jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  return jax.vmap(loss_grad if grad else attention), args


@pytest.mark.parametrize("platform,chip,L,dtype,K,kind,grad",
                         _lowering_cases())
def test_lowers_to_the_platform_kernel(platform, chip, L, dtype, K, kind,
                                       grad):
  """Lowered for "cuda" the module holds the Triton kernel, for "tpu" the
  Mosaic kernel, and neither Mosaic GPU nor the interpret emulation (a
  forward has no loop outside the kernel)."""
  fn, args = _vmapped_attention(L, dtype, K, kind, grad)
  text = lowering.lower(fn, *args, platform=platform, chip=chip or "v5e")
  kernel = "triton" if platform == "cuda" else "tpu"
  assert lowering.count(text, kernel) == 1, lowering.custom_calls(text)
  for absent in ("mosaic_gpu", "interpret_callback"):
    assert lowering.MARKERS[absent] not in text, absent
  if not grad:
    assert "stablehlo.while" not in text


def test_cpu_lowering_is_the_interpreter():
  """The same traced function lowered for "cpu" keeps the interpret-mode
  emulation (loops), no accelerator kernel."""
  fn, args = _vmapped_attention(1024, jnp.float32, 64, "causal", False)
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cpu",)).as_text()
  assert "stablehlo.while" in text
  for kernel in ("triton", "tpu", "mosaic_gpu"):
    assert lowering.count(text, kernel) == 0, kernel


@pytest.mark.parametrize("platform", ("cuda", "tpu"))
def test_lowering_a_mask_array_raises_naming_mask(platform):
  q = jax.ShapeDtypeStruct((128, 2, 64), jnp.float32)
  mask = jnp.ones((128, 128), bool)
  with pytest.raises(ValueError, match="^mask: expected None"):
    lowering.lower(lambda q: jattn.dot_product_attention(
        q, q, q, mask, implementation="pallas"), q, platform=platform)


if __name__ == "__main__":
  import absl.testing.absltest
  absl.testing.absltest.main()
