"""Positional encodings against float64 definitions."""

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


class PositionalTest(chex.TestCase):

  def test_sinusoidal_matches_d2l_definition(self):
    for n, d in [(7, 8), (50, 32), (5, 7)]:
      got = jattn.sinusoidal_encoding(n, d)
      self.assertEqual(got.shape, (n, d))
      self.assertEqual(got.dtype, jnp.float32)
      expected = oracles.sinusoidal(n, d)
      # Rounded once from float64: within half an ulp of float32.
      np.testing.assert_array_equal(got, expected.astype(np.float32))

  @chex.variants(with_jit=True, without_jit=True)
  def test_rope_matches_oracle(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 8)).astype(np.float32)
    positions = jnp.arange(6) * 7
    got = self.variant(jattn.apply_rope)(x, positions)
    self.assertEqual(got.dtype, jnp.float32)
    self.assertLess(helpers.max_rel_error(got, oracles.rope(x, positions)), 1e-5)
    got_2d = self.variant(jattn.apply_rope)(x[:, 0], positions)
    self.assertLess(helpers.max_rel_error(got_2d, oracles.rope(x[:, 0], positions)),
                    1e-5)

  def test_rope_dot_products_depend_on_offset_only(self):
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(2, 1, 8))
    def score(p, s):
      qr = jattn.apply_rope(q[None], jnp.array([p]))[0]
      kr = jattn.apply_rope(k[None], jnp.array([s]))[0]
      return float(jnp.dot(qr[0], kr[0]))
    self.assertAlmostEqual(score(5, 2), score(103, 100), places=10)
    self.assertNotAlmostEqual(score(5, 2), score(5, 3), places=3)

  def test_learned_encoding(self):
    params = jattn.init_learned_encoding(jax.random.key(0), 10, 4)
    self.assertEqual(params["table"].shape, (10, 4))
    got = jattn.learned_encoding(params, jnp.array([[3, 0], [9, 3]]))
    self.assertEqual(got.shape, (2, 2, 4))
    np.testing.assert_array_equal(got[1, 1], params["table"][3])
    grad = jax.grad(lambda p: jattn.learned_encoding(p, jnp.array([3, 3])).sum())(
        params)
    np.testing.assert_array_equal(grad["table"][3], 2.0)
    np.testing.assert_array_equal(grad["table"][4], 0.0)

  def test_check_grads(self):
    x = np.random.default_rng(2).normal(size=(4, 2, 6))
    positions = np.array([0.0, 1.5, 2.0, 7.0])
    check_grads(jax.jit(jattn.apply_rope), (x, positions), order=2, modes=("fwd", "rev"))
    params = {"table": np.random.default_rng(3).normal(size=(5, 3))}
    check_grads(jax.jit(lambda p: jattn.learned_encoding(p, jnp.array([1, 4]))),
                (params,), order=2, modes=("rev",))
