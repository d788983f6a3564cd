"""Blockwise attention against a float64 NumPy oracle of outputs and gradients.

Shapes are deliberately not multiples of the tile sizes, so every test also
covers padding; tiny tiles (16 x 8) make each call visit many tiles.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.test_util import check_grads

import jattn
from jattn import attention as attention_lib
from jattn.attention import blockwise
from tests import oracles
from tests import helpers

BLOCKS = {"block_q": 16, "block_k": 8}


def attention_vjp_oracle(q, k, v, allowed, bias, scale, d_out):
  """Float64 outputs and gradients, written from the softmax derivative.

  Args: q (L, H, K), k (M, G, K), v (M, G, V), allowed bool (H, L, M),
  bias (H, L, M) or None, d_out (L, H, V). Returns out, dq, dk, dv, dbias.
  """
  q, k, v, d_out = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
  L, H, _ = q.shape
  M, G, V = v.shape
  group = H // G
  out, dq = np.zeros((L, H, V)), np.zeros_like(q)
  dk, dv = np.zeros_like(k), np.zeros_like(v)
  dbias = np.zeros((H, L, M))
  for h in range(H):
    g = h // group
    logits = scale * q[:, h] @ k[:, g].T
    if bias is not None:
      logits = logits + np.asarray(bias, np.float64)[h]
    p = oracles.softmax_rows(logits, allowed[h])
    out[:, h] = p @ v[:, g]
    dp = d_out[:, h] @ v[:, g].T
    ds = p * (dp - np.sum(p * dp, axis=1, keepdims=True))
    dq[:, h] = scale * ds @ k[:, g]
    dk[:, g] += scale * ds.T @ q[:, h]
    dv[:, g] += p.T @ d_out[:, h]
    dbias[h] = ds
  return out, dq, dk, dv, dbias


def allowed_pairs(H, L, M, *, mask=None, causal=False, window=None,
                  key_valid_len=None, query_valid_len=None):
  """The (H, L, M) pairs a query may attend to, from the definitions."""
  allowed = np.ones((H, L, M), bool)
  if mask is not None:
    allowed &= np.broadcast_to(np.asarray(mask), (H, L, M))
  i, j = np.arange(L)[:, None], np.arange(M)[None, :]
  if causal:
    allowed &= j <= i
  if window is not None:
    left, right = (window - 1, window - 1) if np.isscalar(window) else window
    allowed &= (j >= i - left) & (j <= i + right)
  if key_valid_len is not None:
    allowed &= j < np.broadcast_to(np.asarray(key_valid_len), (L,))[:, None]
  if query_valid_len is not None:
    allowed &= i < query_valid_len
  return allowed


def _inputs(seed, L, M, H, G, K, V, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(L, H, K)).astype(dtype),
          rng.normal(size=(M, G, K)).astype(dtype),
          rng.normal(size=(M, G, V)).astype(dtype),
          rng.normal(size=(L, H, V)).astype(dtype), rng)


def run_vjp(fn, q, k, v, d_out, bias=None):
  """Output and cotangents (q, k, v[, bias]) of fn in one jitted call."""
  def value_and_cotangents(q, k, v, d_out, bias):
    out, pullback = jax.vjp(fn, q, k, v, bias)
    return out, pullback(d_out)
  return jax.jit(value_and_cotangents)(q, k, v, d_out, bias)


class BlockwiseOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("plain", dict()),
      ("causal", dict(causal=True)),
      ("window_int", dict(window=5)),
      ("window_pair_causal", dict(window=(9, 0), causal=True)),
      ("key_len_vector_query_len", dict(key_valid_len=True, query_valid_len=29)),
      ("mask_and_bias", dict(mask=True, bias=True)),
      ("key_len_scalar_bias_rows", dict(key_valid_len=17, bias="rows")),
  )
  def test_float32_matches_oracle(self, case):
    L, M, H, G, K, V = 37, 45, 4, 2, 8, 5
    q, k, v, d_out, rng = _inputs(len(str(case)), L, M, H, G, K, V)
    mask = bias = key_len = None
    if case.get("mask"):
      mask = rng.random((H, L, M)) < 0.8
      mask[1, 3] = False          # a fully masked query row
    if case.get("bias") is True:
      bias = rng.normal(size=(H, L, M)).astype(np.float32)
    elif case.get("bias") == "rows":
      bias = rng.normal(size=(1, M)).astype(np.float32)  # broadcast over H, L
    if case.get("key_valid_len") is True:
      key_len = rng.integers(0, M + 3, size=(L,)).astype(np.int32)
      key_len[4] = 0              # nothing to attend to
    elif case.get("key_valid_len") is not None:
      key_len = np.int32(case["key_valid_len"])
    window = case.get("window")
    kwargs = dict(is_causal=case.get("causal", False), local_window=window,
                  key_valid_len=key_len,
                  query_valid_len=case.get("query_valid_len"))

    def fn(q, k, v, b):
      return jattn.dot_product_attention(
          q, k, v, None if mask is None else jnp.asarray(mask), bias=b,
          implementation="blockwise", **kwargs, **BLOCKS)

    out, grads = run_vjp(fn, q, k, v, d_out, bias)
    allowed = allowed_pairs(H, L, M, mask=mask, causal=kwargs["is_causal"],
                            window=window, key_valid_len=key_len,
                            query_valid_len=kwargs["query_valid_len"])
    full_bias = None if bias is None else np.broadcast_to(bias, (H, L, M))
    expected = attention_vjp_oracle(q, k, v, allowed, full_bias,
                                    1 / math.sqrt(K), d_out)
    self.assertEqual(out.dtype, jnp.float32)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads[:3]),
                               expected[:4]):
      self.assertLess(helpers.max_rel_error(got, want), 1e-5, name)
    if bias is not None:
      want = expected[4].reshape((H, L, M))
      want = want.sum(axis=tuple(a for a, n in enumerate(
          (1,) * (3 - bias.ndim) + bias.shape) if n == 1), keepdims=True)
      self.assertLess(helpers.max_rel_error(grads[3], want.reshape(bias.shape)),
                      1e-5, "dbias")
    empty = ~allowed.any(axis=2).T                      # (L, H)
    expect_empty = bool(case.get("mask") or case.get("key_valid_len") is True)
    self.assertEqual(bool(empty.any()), expect_empty)
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    np.testing.assert_array_equal(np.asarray(grads[0])[empty], 0.0)
    for x in (out, *grads[:3]):
      self.assertTrue(np.all(np.isfinite(x)))

  def test_single_head_2d_and_default_tiles(self):
    q, k, v, d_out, _ = _inputs(3, 300, 200, 1, 1, 16, 16)
    q, k, v, d_out = q[:, 0], k[:, 0], v[:, 0], d_out[:, 0]
    fn = lambda q, k, v, b: jattn.dot_product_attention(
        q, k, v, is_causal=True, implementation="blockwise")
    out, grads = run_vjp(fn, q, k, v, d_out)
    expected = attention_vjp_oracle(
        q[:, None], k[:, None], v[:, None],
        allowed_pairs(1, 300, 200, causal=True), None, 0.25, d_out[:, None])
    self.assertEqual(out.shape, (300, 16))
    for got, want in zip((out, *grads[:3]), expected[:4]):
      self.assertLess(helpers.max_rel_error(got, want[:, 0]), 1e-5)


class BlockwiseBehaviourTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_variants_equal_dense(self):
    q, k, v, _, rng = _inputs(4, 21, 19, 6, 3, 4, 4)
    mask = jnp.asarray(rng.random((1, 21, 19)) < 0.7)
    dense = jattn.dot_product_attention(q, k, v, mask, is_causal=True)
    fast = self.variant(lambda q, k, v, m: jattn.dot_product_attention(
        q, k, v, m, is_causal=True, implementation="blockwise", **BLOCKS))(
            q, k, v, mask)
    np.testing.assert_allclose(fast, dense, rtol=1e-5, atol=1e-6)

  def test_check_grads_float64(self):
    q, k, v, _, rng = _inputs(5, 9, 11, 2, 1, 3, 2, np.float64)
    bias = rng.normal(size=(2, 9, 11))
    fn = jax.jit(lambda q, k, v, b: jattn.dot_product_attention(
        q, k, v, bias=b, local_window=(3, 1), implementation="blockwise",
        block_q=8, block_k=8))
    check_grads(fn, (q, k, v, bias), order=1, modes=("rev",))

  def test_vmap_equals_python_loop(self):
    B, L, H, G, K = 3, 20, 4, 2, 4
    rng = np.random.default_rng(6)
    q = rng.normal(size=(B, L, H, K)).astype(np.float32)
    k = rng.normal(size=(B, L, G, K)).astype(np.float32)
    v = rng.normal(size=(B, L, G, K)).astype(np.float32)
    key_len = jnp.array([20, 7, 0], jnp.int32)
    attend = lambda q, k, v, n: jattn.dot_product_attention(
        q, k, v, is_causal=True, key_valid_len=n, implementation="blockwise",
        **BLOCKS)
    batched = jax.jit(jax.vmap(attend))(q, k, v, key_len)
    one = jax.jit(attend)
    for b in range(B):
      np.testing.assert_allclose(batched[b], one(q[b], k[b], v[b], key_len[b]),
                                 rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batched[2], 0.0)

  def test_vmap_gradients_with_shared_mask_and_bias(self):
    # A mask and a bias shared by the batch (in_axes None), and both engines:
    # sequential (CPU default: one head and one example at a time) and the
    # batched form accelerators use.
    B, L, H, G, K = 2, 19, 4, 2, 4
    rng = np.random.default_rng(9)
    q = rng.normal(size=(B, L, H, K))
    k, v = rng.normal(size=(2, B, L, G, K))
    mask = jnp.asarray(rng.random((H, L, L)) < 0.8)
    bias = rng.normal(size=(H, 1, L))

    def loss(engine, q, k, v, bias):
      attend = lambda q, k, v: blockwise.attend(
          q, k, v, mask=mask, bias=bias, scale=0.5, causal=True,
          engine=engine, **BLOCKS)
      return jnp.sum(jnp.sin(jax.vmap(attend)(q, k, v)))

    engines = [None, blockwise.Engine(
        functools.partial(blockwise.make_plan, sequential=False),
        blockwise.core)]
    grads = [jax.jit(jax.grad(functools.partial(loss, e), argnums=(0, 1, 2, 3)))(
        q, k, v, bias) for e in engines]
    dense = jax.grad(lambda q, k, v, b: jnp.sum(jnp.sin(jax.vmap(
        lambda q, k, v: jattn.dot_product_attention(
            q, k, v, mask, bias=b, scale=0.5, is_causal=True,
            implementation="dense"))(q, k, v))), argnums=(0, 1, 2, 3))(
                q, k, v, bias)
    for got in grads:
      for a, b in zip(got, dense):
        self.assertLess(helpers.max_rel_error(a, b), 1e-12)

  def test_bfloat16(self):
    q, k, v, _, _ = _inputs(7, 40, 40, 2, 2, 16, 16)
    qb, kb, vb = (jnp.asarray(a, jnp.bfloat16) for a in (q, k, v))
    out = jattn.dot_product_attention(qb, kb, vb, is_causal=True,
                                      implementation="blockwise", **BLOCKS)
    self.assertEqual(out.dtype, jnp.bfloat16)
    expected, _ = oracles.attention(
        *(np.asarray(a, np.float64) for a in (qb, kb, vb)),
        allowed_pairs(2, 40, 40, causal=True))
    self.assertLess(helpers.max_rel_error(out, expected), 2e-2)

  def test_self_attention_passes_implementation(self):
    params = jattn.init_self_attention(jax.random.key(0), 8, 2)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(24, 8)), jnp.float32)
    attend = jax.jit(lambda x, impl: jattn.self_attention(
        params, x, is_causal=True, implementation=impl), static_argnums=1)
    dense, fast = attend(x, "dense"), attend(x, "blockwise")
    np.testing.assert_allclose(fast, dense, rtol=1e-5, atol=1e-6)


class TileSkippingTest(parameterized.TestCase):

  def _visited(self, plan):
    return sum(int(hi - lo) for lo, hi in (
        blockwise.key_block_range(plan, i)
        for i in range(plan.num_query_blocks)))

  def test_causal_visits_about_half(self):
    plan = blockwise.make_plan(4096, 4096, causal=True, block_q=128,
                               block_k=128)
    n = plan.num_query_blocks
    self.assertEqual(self._visited(plan), n * (n + 1) // 2)

  def test_local_window_visits_linear_in_n(self):
    for n in (2048, 4096):
      plan = blockwise.make_plan(n, n, window=(64, 64), block_q=128,
                                 block_k=128)
      self.assertLessEqual(self._visited(plan), 3 * plan.num_query_blocks)

  def test_backward_ranges_cover_the_same_tiles(self):
    plan = blockwise.make_plan(300, 170, causal=True, window=(40, 5),
                               block_q=32, block_k=24)
    forward = {(i, j) for i in range(plan.num_query_blocks)
               for j in range(*map(int, blockwise.key_block_range(plan, i)))}
    backward = {(i, j) for j in range(plan.num_key_blocks)
                for i in range(*map(int, blockwise.query_block_range(plan, j)))}
    self.assertEqual(forward, backward)
    allowed = allowed_pairs(1, 300, 170, causal=True, window=(40, 5))[0]
    needed = {(a // plan.block_q, b // plan.block_k)
              for a, b in zip(*np.nonzero(allowed))}
    self.assertEqual(forward, needed)


class MemoryTest(parameterized.TestCase):

  def _grad_fn(self, implementation, L):
    def loss(q, k, v):
      return jnp.sum(jattn.dot_product_attention(
          q, k, v, implementation=implementation) ** 2)
    q = jax.ShapeDtypeStruct((L, 1, 64), jnp.float32)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))), q

  def test_backward_jaxpr_has_no_l_by_m_array(self):
    L = 4096
    fn, q = self._grad_fn("blockwise", L)
    jaxpr = jax.make_jaxpr(fn)(q, q, q)
    largest = max(_sizes(jaxpr.jaxpr))
    self.assertLess(largest, L * L // 16)
    fn, q = self._grad_fn("dense", 64)
    self.assertGreaterEqual(max(_sizes(jax.make_jaxpr(fn)(q, q, q).jaxpr)),
                            64 * 64)   # the check does see dense's logits

  def test_compiled_temp_memory_is_linear(self):
    temp = {}
    for L in (8192, 16384):
      fn, q = self._grad_fn("blockwise", L)
      stats = fn.lower(q, q, q).compile().memory_analysis()
      if stats is None:
        self.skipTest("no memory analysis on this backend")
      temp[L] = stats.temp_size_in_bytes
      self.assertLess(temp[L], L * L * 4 // 8)   # an eighth of the logits
    self.assertLess(temp[16384] / temp[8192], 2.5)   # linear, not quadratic


def _sizes(jaxpr):
  """Element counts of every value in a jaxpr and its sub-jaxprs."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield int(np.prod(var.aval.shape)) if hasattr(var.aval, "shape") else 1
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _sizes(inner)


class DispatchTest(parameterized.TestCase):

  def test_automatic_choice(self):
    choose = attention_lib.choose_implementation
    self.assertEqual(choose(256, 256, platform="cpu"), "dense")
    self.assertEqual(choose(257, 256, platform="cpu"), "blockwise")
    self.assertEqual(choose(4096, 4096, return_weights=True, platform="cpu"),
                     "dense")
    # The GPU and TPU rows of the table: tests/test_dispatch.py.

  def test_large_inputs_use_blockwise_under_jit(self):
    q = jax.ShapeDtypeStruct((1024, 1, 8), jnp.float32)
    text = str(jax.make_jaxpr(jattn.dot_product_attention)(q, q, q))
    self.assertIn("custom_vjp", text)
    q = jax.ShapeDtypeStruct((64, 1, 8), jnp.float32)
    self.assertNotIn("custom_vjp",
                     str(jax.make_jaxpr(jattn.dot_product_attention)(q, q, q)))

  @parameterized.named_parameters(
      ("bad_name", dict(implementation="flash"), ValueError, "implementation"),
      ("weights_blockwise", dict(implementation="blockwise",
                                 return_weights=True), ValueError,
       "implementation"),
      ("pallas_mask", dict(implementation="pallas",
                           mask=jnp.ones((4, 4), bool)), ValueError,
       "^mask: expected None for pallas"),
      ("window_zero", dict(local_window=0), ValueError, "window"),
      ("window_triple", dict(local_window=(1, 2, 3)), ValueError, "window"),
      ("key_len_float", dict(key_valid_len=2.0), TypeError, "key_valid_len"),
      ("key_len_shape", dict(key_valid_len=jnp.ones((3,), jnp.int32)),
       ValueError, "key_valid_len"),
      ("key_len_negative", dict(key_valid_len=-1), ValueError, "key_valid_len"),
      ("query_len_vector", dict(query_valid_len=jnp.ones((4,), jnp.int32)),
       ValueError, "query_valid_len"),
      ("block_zero", dict(block_q=0), ValueError, "block_q"),
  )
  def test_errors_name_the_argument(self, kwargs, error, name):
    q = jnp.ones((4, 2, 8), jnp.float32)
    with self.assertRaisesRegex(error, name):
      jattn.dot_product_attention(q, q, q, **kwargs)


if __name__ == "__main__":
  import absl.testing.absltest
  absl.testing.absltest.main()
