"""dot_product_attention against the float64 oracle."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.test_util import check_grads
import pytest

import jattn
from tests import oracles
from tests import helpers

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


def _qkv(rng, L, M, H, G, K, V, dtype=np.float32):
  q = rng.normal(size=(L, H, K)).astype(dtype)
  k = rng.normal(size=(M, G, K)).astype(dtype)
  v = rng.normal(size=(M, G, V)).astype(dtype)
  return q, k, v


class DotProductAttentionTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("mha", 5, 7, 4, 4, 8, 8),
      ("gqa", 6, 6, 6, 2, 4, 3),
      ("mqa", 3, 9, 4, 1, 8, 5),
      ("one_query", 1, 4, 2, 2, 4, 4),
  )
  def test_matches_oracle_float32(self, L, M, H, G, K, V):
    rng = np.random.default_rng(L * 100 + M)
    q, k, v = _qkv(rng, L, M, H, G, K, V)
    mask = rng.random((H, L, M)) < 0.7
    mask[0, 0] = False  # fully masked query row in head 0
    bias = rng.normal(size=(1, L, M)).astype(np.float32)
    out, weights = self.variant(
        lambda *a: jattn.dot_product_attention(*a, bias=bias,
                                               return_weights=True))(
                                                   q, k, v, jnp.asarray(mask))
    self.assertEqual(out.dtype, jnp.float32)
    self.assertEqual(out.shape, (L, H, V))
    self.assertEqual(weights.shape, (H, L, M))
    expected_out, expected_w = oracles.attention(q, k, v, mask, bias)
    self.assertLess(helpers.max_rel_error(out, expected_out), 1e-5)
    self.assertLess(helpers.max_rel_error(weights, expected_w), 1e-5)
    np.testing.assert_array_equal(out[0, 0], np.zeros(V))

  @chex.variants(with_jit=True, without_jit=True)
  def test_single_head_2d(self):
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=s).astype(np.float32)
               for s in [(4, 6), (5, 6), (5, 3)])
    mask = jattn.valid_len_mask(jnp.array([1, 2, 3, 5]), 5)
    out, w = self.variant(
        lambda *a: jattn.dot_product_attention(*a, return_weights=True))(
            q, k, v, mask)
    self.assertEqual(out.shape, (4, 3))
    self.assertEqual(w.shape, (4, 5))
    expected, _ = oracles.attention(q[:, None], k[:, None], v[:, None],
                                    np.asarray(mask)[None])
    self.assertLess(helpers.max_rel_error(out, expected[:, 0]), 1e-5)

  def test_scale_and_causal(self):
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, 5, 5, 2, 2, 4, 4)
    out = jattn.dot_product_attention(q, k, v, scale=0.3, is_causal=True)
    causal = np.tril(np.ones((5, 5), bool))
    expected, _ = oracles.attention(q, k, v, causal, scale=0.3)
    self.assertLess(helpers.max_rel_error(out, expected), 1e-5)

  def test_bfloat16_inputs(self):
    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(a, jnp.bfloat16) for a in _qkv(rng, 8, 8, 4, 2, 16, 16))
    mask = jattn.causal_mask(8, 8)
    out = jattn.dot_product_attention(q, k, v, mask)
    self.assertEqual(out.dtype, jnp.bfloat16)
    expected, _ = oracles.attention(*(np.asarray(a, np.float64) for a in (q, k, v)),
                                    np.asarray(mask))
    self.assertLess(helpers.max_rel_error(out, expected), 2e-2)

  def test_huge_logits_stay_finite(self):
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 4, 6, 2, 2, 4, 4)
    q = q * 2000.0  # scaled logits of magnitude ~1e4
    out, w = jattn.dot_product_attention(q, k, v, return_weights=True)
    self.assertGreater(np.abs(np.einsum("lhk,mhk->hlm", q, k)).max() / 2, 5e3)
    self.assertTrue(np.all(np.isfinite(out)) and np.all(np.isfinite(w)))
    expected, _ = oracles.attention(q, k, v)
    self.assertLess(helpers.max_rel_error(out, expected), 1e-5)

  def test_check_grads_order_2(self):
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng, 3, 4, 4, 2, 3, 2, np.float64)
    mask = jnp.asarray(rng.random((4, 3, 4)) < 0.7)
    bias = rng.normal(size=(4, 3, 4))
    check_grads(jax.jit(lambda q, k, v, b: jattn.dot_product_attention(
        q, k, v, mask, bias=b)), (q, k, v, bias), order=2, modes=("fwd", "rev"))

  def test_vmap_equals_python_loop(self):
    rng = np.random.default_rng(6)
    B, L, H, K = 3, 5, 4, 4
    q = rng.normal(size=(B, L, H, K)).astype(np.float32)
    k = rng.normal(size=(B, L, 2, K)).astype(np.float32)
    v = rng.normal(size=(B, L, 2, K)).astype(np.float32)
    mask = jattn.padding_mask(jnp.array([5, 2, 0]), L)
    batched = jax.jit(jax.vmap(jattn.dot_product_attention))(q, k, v, mask)
    for b in range(B):
      np.testing.assert_allclose(
          batched[b], jattn.dot_product_attention(q[b], k[b], v[b], mask[b]),
          rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batched[2], 0.0)

  def test_causality_of_gradients(self):
    rng = np.random.default_rng(7)
    params = jattn.init_self_attention(jax.random.key(0), 8, 2)
    x = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    jac = jax.jacobian(lambda x: jattn.self_attention(params, x, is_causal=True))(x)
    jac = np.asarray(jac)  # (n, D, n, D)
    for i in range(6):
      for j in range(6):
        block_norm = np.abs(jac[i, :, j, :]).max()
        if j > i:
          self.assertEqual(block_norm, 0.0, (i, j))
        else:
          self.assertGreater(block_norm, 0.0, (i, j))
