"""Performer (FAVOR+) attention against its own random-feature formula in
float64 NumPy with a fixed key, and against exact softmax attention as the
number of features grows."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.test_util import check_grads

import jattn
from jattn.attention import performer
from tests.helpers import norm_rel_error
from tests.helpers import random_qkv as _qkv


def favor_oracle(q, k, v, projection, *, scale=None, causal=False,
                 key_keep=None):
  """Float64 FAVOR+ from the definition, no stabilising shifts:
  phi(x)_p = exp(w_p . x' - |x'|^2 / 2) / sqrt(P), x' = sqrt(scale) x, and
  out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)."""
  q, k, v, w = (np.asarray(a, np.float64) for a in (q, k, v, projection))
  L, H, K = q.shape
  M, G, V = v.shape
  P = w.shape[0]
  scale = 1.0 / np.sqrt(K) if scale is None else scale

  def features(x):
    x = np.sqrt(scale) * x
    return np.exp(x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)) \
        / np.sqrt(P)

  out = np.zeros((L, H, V))
  for h in range(H):
    g = h // (H // G)
    fq, fk = features(q[:, h]), features(k[:, g])
    for i in range(L):
      num, den = np.zeros(V), 0.0
      for j in range(M):
        if (causal and j > i) or (key_keep is not None and not key_keep[j]):
          continue
        a = fq[i] @ fk[j]
        num, den = num + a * v[j, g], den + a
      out[i, h] = num / den if den > 0 else 0.0
  return out


def softmax_oracle(q, k, v):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, H, K = q.shape
  G = k.shape[1]
  out = np.zeros((L, H, v.shape[-1]))
  for h in range(H):
    g = h // (H // G)
    s = q[:, h] @ k[:, g].T / np.sqrt(K)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out[:, h] = (e / e.sum(axis=1, keepdims=True)) @ v[:, g]
  return out


class RandomFeaturesTest(parameterized.TestCase):

  def test_orthogonal_blocks_gaussian_lengths_and_redraw(self):
    w = np.asarray(performer.random_features(jax.random.key(0), 10, 4,
                                             dtype=jnp.float64))
    self.assertEqual(w.shape, (10, 4))
    for start in (0, 4, 8):   # rows orthogonal within each block of K
      block = w[start:start + 4]
      gram = block @ block.T
      np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0,
                                 atol=1e-12)
    self.assertGreater(np.abs(w[0] @ w[4]), 1e-3)   # not across blocks
    again = performer.random_features(jax.random.key(0), 10, 4,
                                      dtype=jnp.float64)
    np.testing.assert_array_equal(w, again)          # fixed key: same draw
    other = performer.random_features(jax.random.key(1), 10, 4,
                                      dtype=jnp.float64)
    self.assertGreater(np.abs(w - np.asarray(other)).max(), 0.1)  # redraw
    # Lengths are chi_K distributed, as for Gaussian rows: E|w|^2 = K.
    many = np.asarray(performer.random_features(jax.random.key(2), 4096, 8,
                                                dtype=jnp.float64))
    self.assertAlmostEqual(np.mean(np.sum(many ** 2, axis=1)), 8.0,
                           delta=0.3)


class PerformerAttentionTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_its_random_feature_formula(self):
    q, k, v = _qkv(0, 11, 9, 4, 2, 6)
    keep = np.arange(9) < 8
    w = performer.random_features(jax.random.key(3), 16, 6)
    plain = self.variant(lambda q, k, v, w: jattn.performer_attention(
        q, k, v, keep, projection=w))(q, k, v, w)
    self.assertEqual(plain.dtype, jnp.float32)
    self.assertLess(norm_rel_error(plain, favor_oracle(q, k, v, w, key_keep=keep)),
                    1e-5)

  def test_causal_matches_its_random_feature_formula(self):
    q, k, v = _qkv(0, 11, 9, 4, 2, 6)
    w = performer.random_features(jax.random.key(3), 16, 6)
    causal = jax.jit(lambda q, k, v, w: jattn.performer_attention(
        q, k, v, projection=w, is_causal=True, chunk_size=4, scale=0.3))(
            q, k, v, w)
    self.assertLess(norm_rel_error(causal, favor_oracle(q, k, v, w, scale=0.3,
                                                   causal=True)), 1e-5)

  def test_key_draws_the_features(self):
    q, k, v = (a.astype(np.float64) for a in _qkv(1, 7, 7, 2, 2, 4))
    fn = jax.jit(lambda q, k, v, key: jattn.performer_attention(
        q, k, v, key=key, num_features=12))
    out = fn(q, k, v, jax.random.key(7))
    w = performer.random_features(jax.random.key(7), 12, 4,
                                  dtype=jnp.float64)
    self.assertLess(norm_rel_error(out, favor_oracle(q, k, v, w)), 1e-12)
    redrawn = fn(q, k, v, jax.random.key(8))
    self.assertGreater(norm_rel_error(redrawn, out), 1e-3)

  def test_large_logits_stay_finite_in_float32(self):
    # exp(w . x) overflows float32 for |x| ~ 100 without the shifts.
    q, k, v = _qkv(2, 8, 8, 2, 2, 4, std=30.0)
    w = performer.random_features(jax.random.key(4), 8, 4)
    out = jax.jit(lambda q, k, v: jattn.performer_attention(
        q, k, v, projection=w, scale=0.5))(q, k, v)
    self.assertTrue(np.isfinite(np.asarray(out)).all())
    expected = _stable_favor(q, k, v, np.asarray(w, np.float64), 0.5)
    self.assertLess(norm_rel_error(out, expected), 1e-4)

  def test_approaches_softmax_attention_with_many_features(self):
    # The estimator is unbiased per (query, key) pair; with small logits its
    # variance is small, and the error falls as P grows.
    q, k, v = (a.astype(np.float64) for a in _qkv(5, 12, 12, 2, 2, 8,
                                                  std=0.4))
    exact = softmax_oracle(q, k, v)
    draws = [performer.random_features(jax.random.key(i), P, 8,
                                       dtype=jnp.float64)
             for i, P in ((0, 16), (1, 16), (2, 16), (3, 4096))]
    fn = jax.jit(lambda w: jattn.performer_attention(q, k, v, projection=w))
    outs = [fn(w) for w in draws]
    few = np.mean([norm_rel_error(o, exact) for o in outs[:3]])
    many = norm_rel_error(outs[3], exact)
    self.assertLess(many, 0.03)
    self.assertLess(many, few / 5)

  def test_gradients_float64(self):
    q, k, v = (a.astype(np.float64) for a in _qkv(6, 5, 5, 2, 1, 3,
                                                  std=0.5))
    w = performer.random_features(jax.random.key(5), 6, 3, dtype=jnp.float64)
    fn = jax.jit(lambda q, k, v: jattn.performer_attention(
        q, k, v, projection=w, is_causal=True, chunk_size=2))
    check_grads(fn, (q, k, v), order=1, modes=("rev",))
    # No key at all: zero output and zero gradients (never NaN).
    out, grads = jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(jattn.performer_attention(
            q, k, v, projection=w, key_valid_len=0)), argnums=(0, 1, 2)))(
                q, k, v)
    self.assertEqual(float(out), 0.0)
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)

  def test_vmap_equals_loop_and_self_attention_layer(self):
    q, k, v = _qkv(7, 6, 6, 2, 2, 4)
    w = performer.random_features(jax.random.key(6), 8, 4)
    batch = [np.stack([a, 0.5 * a]) for a in (q, k, v)]
    out = jax.jit(jax.vmap(lambda q, k, v: jattn.performer_attention(
        q, k, v, projection=w)))(*batch)
    for b in range(2):
      self.assertLess(norm_rel_error(out[b], favor_oracle(
          *(a[b] for a in batch), w)), 1e-5)
    params = {n: jnp.asarray(0.4 * np.random.default_rng(8).normal(
        size=s), jnp.float32) for n, s in (("w_q", (8, 2, 4)),
                                           ("w_k", (8, 2, 4)),
                                           ("w_v", (8, 2, 4)),
                                           ("w_o", (2, 4, 8)))}
    x = np.random.default_rng(9).normal(size=(6, 8)).astype(np.float32)
    y = jax.jit(lambda p, x: jattn.performer_self_attention(
        p, x, projection=w))(params, x)
    p = {n: np.asarray(a, np.float64) for n, a in params.items()}
    heads = favor_oracle(np.einsum("nd,dhk->nhk", x, p["w_q"]),
                         np.einsum("nd,dhk->nhk", x, p["w_k"]),
                         np.einsum("nd,dhk->nhk", x, p["w_v"]), w)
    self.assertLess(norm_rel_error(y, np.einsum("nhv,hvo->no", heads, p["w_o"])),
                    1e-5)

  def test_errors_name_the_argument(self):
    q, k, v = _qkv(8, 5, 5, 2, 2, 4)
    w = performer.random_features(jax.random.key(0), 8, 4)
    with self.assertRaisesRegex(ValueError, "key, projection: expected "
                                "exactly one"):
      jattn.performer_attention(q, k, v)
    with self.assertRaisesRegex(ValueError, "key, projection"):
      jattn.performer_attention(q, k, v, projection=w, key=jax.random.key(0))
    with self.assertRaisesRegex(ValueError, "projection: expected shape"):
      jattn.performer_attention(q, k, v, projection=w[:, :3])
    with self.assertRaisesRegex(ValueError, "mask: expected a key-padding"):
      jattn.performer_attention(q, k, v, jnp.ones((5, 5), bool), projection=w)
    with self.assertRaisesRegex(ValueError, "bias: expected None"):
      jattn.performer_attention(q, k, v, projection=w, bias=jnp.zeros((5, 5)))
    with self.assertRaisesRegex(ValueError, "num_features: expected None or 8"):
      jattn.performer_attention(q, k, v, projection=w, num_features=9)


def _stable_favor(q, k, v, w, scale):
  """favor_oracle with features computed in log space (large inputs): each
  query's and each head's key features divided by their maximum (the ratio
  is unchanged)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, H, K = q.shape
  out = np.zeros(q.shape[:2] + v.shape[-1:])
  for h in range(H):
    xq, xk = np.sqrt(scale) * q[:, h], np.sqrt(scale) * k[:, h]
    lq = xq @ w.T - 0.5 * np.sum(xq * xq, axis=1, keepdims=True)
    lk = xk @ w.T - 0.5 * np.sum(xk * xk, axis=1, keepdims=True)
    fq = np.exp(lq - lq.max(axis=1, keepdims=True))
    fk = np.exp(lk - lk.max())
    a = fq @ fk.T
    out[:, h] = (a / a.sum(axis=1, keepdims=True)) @ v[:, h]
  return out
