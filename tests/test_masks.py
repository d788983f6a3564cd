"""Mask helpers against direct definitions (True = may attend)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
import pytest

import jattn

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


class MaskTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_valid_len_scalar_and_per_query(self):
    f = self.variant(lambda v: jattn.valid_len_mask(v, 5))
    np.testing.assert_array_equal(
        f(jnp.int32(3)), np.array([[1, 1, 1, 0, 0]], bool))
    per_query = f(jnp.array([0, 2, 5, 7], jnp.int32))
    expected = np.array([[j < v for j in range(5)] for v in (0, 2, 5, 7)])
    np.testing.assert_array_equal(per_query, expected)
    self.assertEqual(per_query.dtype, jnp.bool_)

  @chex.variants(with_jit=True, without_jit=True)
  def test_causal(self):
    for L, M, offset in [(4, 4, 0), (3, 5, 0), (3, 5, 2), (5, 3, -1)]:
      got = self.variant(lambda: jattn.causal_mask(L, M, offset=offset))()
      expected = np.array([[j <= i + offset for j in range(M)]
                           for i in range(L)])
      np.testing.assert_array_equal(got, expected)

  @parameterized.parameters(
      (6, 6, 1), (6, 6, 2), (5, 7, 3), (6, 6, (2, 0)), (6, 6, (0, 1)))
  def test_local(self, L, M, window):
    got = jattn.local_mask(L, M, window)
    left, right = (window - 1, window - 1) if isinstance(window, int) else window
    expected = np.array([[i - left <= j <= i + right for j in range(M)]
                         for i in range(L)])
    np.testing.assert_array_equal(got, expected)

  def test_local_and_causal_combine_to_causal_window(self):
    got = jattn.combine_masks(jattn.local_mask(6, 6, 3), jattn.causal_mask(6, 6))
    np.testing.assert_array_equal(got, jattn.local_mask(6, 6, (2, 0)))

  def test_combine_broadcasts_and_skips_none(self):
    a = jattn.valid_len_mask(2, 4)            # (1, 4)
    b = jattn.causal_mask(3, 4)               # (3, 4)
    c = jnp.array([True, False])[:, None, None]  # (2, 1, 1)
    got = jattn.combine_masks(a, None, b, c)
    expected = np.broadcast_to(np.asarray(a), (2, 3, 4)) & np.asarray(b) & \
        np.asarray(c)
    np.testing.assert_array_equal(got, expected)
    self.assertIsNone(jattn.combine_masks(None, None))

  def test_valid_len_vmaps_over_batch(self):
    lens = jnp.array([1, 3, 0], jnp.int32)
    got = jax.vmap(jattn.valid_len_mask, in_axes=(0, None))(lens, 4)
    self.assertEqual(got.shape, (3, 1, 4))
    np.testing.assert_array_equal(got, jattn.padding_mask(lens, 4))
    for b, n in enumerate([1, 3, 0]):
      np.testing.assert_array_equal(got[b, 0], np.arange(4) < n)

  def test_negative_valid_len_under_jit_masks_everything(self):
    got = jax.jit(lambda v: jattn.valid_len_mask(v, 3))(jnp.int32(-2))
    np.testing.assert_array_equal(got, np.zeros((1, 3), bool))
