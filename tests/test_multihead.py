"""Multi-head attention and self-attention against the float64 oracle."""

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


def _randomise(params, seed):
  """Non-zero biases so the oracle also checks them."""
  rng = np.random.default_rng(seed)
  return {n: jnp.asarray(rng.normal(size=a.shape) * 0.5, a.dtype)
          for n, a in params.items()}


class MultiHeadAttentionTest(chex.TestCase, parameterized.TestCase):

  def test_init_shapes(self):
    p = jattn.init_self_attention(jax.random.key(0), 12, 4, num_kv_heads=2,
                                  use_bias=True)
    self.assertEqual({n: a.shape for n, a in p.items()}, {
        "w_q": (12, 4, 3), "w_k": (12, 2, 3), "w_v": (12, 2, 3),
        "w_o": (4, 3, 12), "b_q": (4, 3), "b_k": (2, 3), "b_v": (2, 3),
        "b_o": (12,)})
    p = jattn.init_self_attention(jax.random.key(0), 8, 2, head_dim=5,
                                  dtype=jnp.bfloat16)
    self.assertEqual(p["w_q"].shape, (8, 2, 5))
    self.assertEqual(p["w_q"].dtype, jnp.bfloat16)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("mha_bias", 4, None, True), ("gqa", 4, 2, False), ("mqa", 4, 1, True))
  def test_self_attention_matches_oracle(self, H, G, use_bias):
    params = _randomise(jattn.init_self_attention(
        jax.random.key(1), 8, H, num_kv_heads=G, use_bias=use_bias), 1)
    x = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    mask = jattn.combine_masks(jattn.causal_mask(6, 6),
                               jattn.valid_len_mask(4, 6))
    y, w = self.variant(lambda p, x, m: jattn.self_attention(
        p, x, m, return_weights=True))(params, x, mask)
    expected, expected_w = oracles.multi_head_attention(params, x, x,
                                                        np.asarray(mask))
    self.assertEqual(y.shape, (6, 8))
    self.assertEqual(w.shape, (H, 6, 6))
    self.assertLess(helpers.max_rel_error(y, expected), 1e-5)
    self.assertLess(helpers.max_rel_error(w, expected_w), 1e-5)

  def test_cross_attention_widths(self):
    params = jattn.init_multi_head_attention(
        jax.random.key(3), 6, 3, kv_dim=4, out_dim=5, head_dim=2)
    rng = np.random.default_rng(3)
    x_q = rng.normal(size=(2, 6)).astype(np.float32)
    x_kv = rng.normal(size=(7, 4)).astype(np.float32)
    y = jattn.multi_head_attention(params, x_q, x_kv)
    expected, _ = oracles.multi_head_attention(params, x_q, x_kv)
    self.assertEqual(y.shape, (2, 5))
    self.assertLess(helpers.max_rel_error(y, expected), 1e-5)

  def test_rotary_positions_equal_rotating_by_hand(self):
    params = jattn.init_self_attention(jax.random.key(4), 8, 2)
    x = np.random.default_rng(4).normal(size=(5, 8))
    positions = np.arange(5) + 3
    y = jattn.self_attention(params, x, positions=positions)
    p = {n: np.asarray(a, np.float64) for n, a in params.items()}
    q = oracles.rope(np.einsum("ld,dhk->lhk", x, p["w_q"]), positions)
    k = oracles.rope(np.einsum("ld,dhk->lhk", x, p["w_k"]), positions)
    v = np.einsum("ld,dhk->lhk", x, p["w_v"])
    heads, _ = oracles.attention(q, k, v)
    expected = np.einsum("lhv,hvo->lo", heads, p["w_o"])
    self.assertLess(helpers.max_rel_error(y, expected), 1e-5)

  def test_check_grads(self):
    params = jax.tree.map(lambda a: a.astype(jnp.float64), _randomise(
        jattn.init_self_attention(jax.random.key(5), 4, 2, use_bias=True), 5))
    x = np.random.default_rng(5).normal(size=(3, 4))
    check_grads(jax.jit(lambda p, x: jattn.self_attention(p, x, is_causal=True)),
                (params, x), order=2, modes=("rev",))

  def test_batched_with_padding_equals_python_loop(self):
    params = jattn.init_self_attention(jax.random.key(6), 8, 4)
    x_BND = jnp.asarray(np.random.default_rng(6).normal(size=(3, 5, 8)),
                        jnp.float32)
    valid_len_B = jnp.array([5, 3, 1])
    attend = jattn.batched(jattn.self_attention)
    y = attend(params, x_BND, jattn.padding_mask(valid_len_B, 5))
    for b, n in enumerate([5, 3, 1]):
      expected, _ = oracles.multi_head_attention(
          params, x_BND[b], x_BND[b], np.arange(5)[None, :] < n)
      self.assertLess(helpers.max_rel_error(y[b], expected), 1e-5)
      # Valid queries see only valid keys: same as running on the prefix.
      prefix = jattn.self_attention(params, x_BND[b, :n])
      np.testing.assert_allclose(y[b, :n], prefix, rtol=1e-5, atol=1e-6)

  def test_jit_does_not_retrace(self):
    params = jattn.init_self_attention(jax.random.key(7), 8, 2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(p, x):
      return jattn.self_attention(p, x)

    for seed in range(3):
      f(params, jax.random.normal(jax.random.key(seed), (4, 8), jnp.float32))
