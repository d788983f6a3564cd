"""masked_softmax against the float64 oracle, extremes and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
import pytest

import jattn
from tests import oracles
from tests import helpers

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


class MaskedSoftmaxTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.logits = rng.normal(size=(3, 4, 6)) * 3
    self.mask = rng.random((3, 4, 6)) < 0.6
    self.mask[0, 1] = False  # one fully masked row
    self.mask[2, 3] = True   # one full row

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_oracle_float32(self):
    got = self.variant(jattn.masked_softmax)(
        jnp.asarray(self.logits, jnp.float32), jnp.asarray(self.mask))
    self.assertEqual(got.dtype, jnp.float32)
    expected = oracles.softmax_rows(self.logits.astype(np.float32), self.mask)
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~self.mask], 0.0)
    np.testing.assert_array_equal(got[0, 1], np.zeros(6))

  @chex.variants(with_jit=True, without_jit=True)
  def test_no_mask(self):
    got = self.variant(jattn.masked_softmax)(jnp.asarray(self.logits))
    self.assertLess(helpers.max_rel_error(got, oracles.softmax_rows(self.logits)),
                    1e-12)

  def test_bfloat16_input_computes_in_float32(self):
    logits = jnp.asarray(self.logits, jnp.bfloat16)
    got = jattn.masked_softmax(logits, jnp.asarray(self.mask))
    self.assertEqual(got.dtype, jnp.float32)
    expected = oracles.softmax_rows(np.asarray(logits, np.float64), self.mask)
    self.assertLess(helpers.max_rel_error(got, expected), 1e-6)

  def test_huge_logits_stay_finite(self):
    logits = jnp.asarray(self.logits * 1e4 / 9, jnp.float32)
    got = jattn.masked_softmax(logits, jnp.asarray(self.mask))
    self.assertTrue(np.all(np.isfinite(got)))
    expected = oracles.softmax_rows(np.asarray(logits, np.float64), self.mask)
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)

  def test_fully_masked_row_has_zero_finite_gradient(self):
    mask = jnp.asarray(self.mask)

    def loss(logits):
      return jnp.sum(jattn.masked_softmax(logits, mask) * jnp.arange(6.0)[None, None])

    grad = jax.grad(loss)(jnp.asarray(self.logits, jnp.float32))
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[0, 1], np.zeros(6))
    np.testing.assert_array_equal(np.asarray(grad)[~self.mask], 0.0)

  def test_check_grads_order_2(self):
    mask = jnp.asarray(self.mask)
    check_grads(jax.jit(lambda x: jattn.masked_softmax(x, mask)), (self.logits,),
                order=2, modes=("fwd", "rev"))
