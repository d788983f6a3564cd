"""Additive (Bahdanau) attention against the float64 oracle."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import jattn
from tests import oracles
from tests import helpers


class AdditiveAttentionTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.params = jattn.init_additive_attention(jax.random.key(0), 5, 3, 7)
    self.q = rng.normal(size=(4, 5)).astype(np.float32)
    self.k = rng.normal(size=(6, 3)).astype(np.float32)
    self.v = rng.normal(size=(6, 2)).astype(np.float32)

  def test_init_shapes(self):
    self.assertEqual({n: a.shape for n, a in self.params.items()},
                     {"w_q": (5, 7), "w_k": (3, 7), "w_v": (7,)})

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_oracle(self):
    mask = jattn.valid_len_mask(jnp.array([2, 6, 0, 4]), 6)
    out, w = self.variant(lambda *a: jattn.additive_attention(
        *a, return_weights=True))(self.params, self.q, self.k, self.v, mask)
    expected, expected_w = oracles.additive_attention(
        self.params, self.q, self.k, self.v, np.asarray(mask))
    self.assertEqual(out.shape, (4, 2))
    self.assertLess(helpers.max_rel_error(out, expected), 1e-5)
    self.assertLess(helpers.max_rel_error(w, expected_w), 1e-5)
    np.testing.assert_array_equal(out[2], 0.0)

  def test_check_grads(self):
    params64 = jax.tree.map(lambda a: a.astype(np.float64), self.params)
    mask = jattn.valid_len_mask(3, 6)
    check_grads(jax.jit(lambda p, q, k, v: jattn.additive_attention(p, q, k, v, mask)),
                (params64, self.q.astype(np.float64), self.k.astype(np.float64),
                 self.v.astype(np.float64)), order=2, modes=("rev",))
