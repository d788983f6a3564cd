"""Property-based checks with random shapes, masks and valid lengths."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import jattn
from tests import oracles
from tests import helpers

# Shapes are drawn from small sets so that few distinct programs compile.
SHAPE = st.tuples(st.sampled_from([1, 3, 5]),   # L
                  st.sampled_from([1, 4, 6]),   # M
                  st.sampled_from([(2, 1), (2, 2), (4, 2)]),  # (H, G)
                  st.sampled_from([2, 4]))      # K


@jax.jit
def _attend_and_grad(q, k, v, mask):
  def loss(q, k, v):
    out, w = jattn.dot_product_attention(q, k, v, mask, return_weights=True)
    return jnp.sum(out ** 2), (out, w)
  grads, (out, w) = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  return out, w, grads


@settings(max_examples=8, deadline=None)
@given(shape=SHAPE, seed=st.integers(0, 2**31 - 1),
       density=st.sampled_from([0.0, 0.3, 0.8, 1.0]))
def test_random_masks_give_finite_normalised_weights(shape, seed, density):
  L, M, (H, G), K = shape
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(L, H, K)).astype(np.float32) * 3
  k = rng.normal(size=(M, G, K)).astype(np.float32) * 3
  v = rng.normal(size=(M, G, K)).astype(np.float32)
  mask = rng.random((H, L, M)) < density
  out, w, grads = _attend_and_grad(q, k, v, jnp.asarray(mask))
  for a in (out, w, *grads):
    assert np.all(np.isfinite(a))
  w = np.asarray(w)
  assert np.all(w[~mask] == 0.0)
  row_sums = w.sum(-1)
  has_key = mask.any(-1)
  np.testing.assert_allclose(row_sums[has_key], 1.0, rtol=1e-5)
  assert np.all(row_sums[~has_key] == 0.0)
  # Fully masked queries output exactly zero.
  for h in range(H):
    assert np.all(np.asarray(out)[~has_key[h], h] == 0.0)
  expected, _ = oracles.attention(q, k, v, mask)
  assert helpers.max_rel_error(out, expected) < 1e-5


@settings(max_examples=8, deadline=None)
@given(M=st.sampled_from([3, 7]),
       valid_len=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_random_valid_lengths(M, valid_len, seed):
  L = len(valid_len)
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(L, 4)).astype(np.float32)
  k = rng.normal(size=(M, 4)).astype(np.float32)
  v = rng.normal(size=(M, 2)).astype(np.float32)
  mask = jattn.valid_len_mask(jnp.asarray(valid_len, jnp.int32), M)
  out, w = jattn.dot_product_attention(q, k, v, mask, return_weights=True)
  w = np.asarray(w)
  for i, n in enumerate(valid_len):
    assert np.all(w[i, n:] == 0.0)
    if n == 0:
      assert np.all(np.asarray(out)[i] == 0.0)
    else:
      np.testing.assert_allclose(w[i].sum(), 1.0, rtol=1e-5)
