"""Linear attention against a float64 NumPy oracle; the chunked causal prefix
sums against the quadratic form; masks it takes and masks it refuses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax.test_util import check_grads

import jattn
from jattn.attention import linear as linear_lib
from tests.helpers import norm_rel_error
from tests.helpers import random_params
from tests.helpers import random_qkv as _qkv


def phi(x):
  """elu(x) + 1 in float64."""
  x = np.asarray(x, np.float64)
  return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def linear_oracle(q, k, v, *, causal=False, key_keep=None,
                  query_valid_len=None):
  """Float64 loops: out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)
  over the keys j query i may see. key_keep: None or bool (H or 1, M)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, H, _ = q.shape
  M, G, V = v.shape
  out = np.zeros((L, H, V))
  for h in range(H):
    g = h // (H // G)
    for i in range(L):
      if query_valid_len is not None and i >= query_valid_len:
        continue
      num, den = np.zeros(V), 0.0
      for j in range(M):
        if causal and j > i:
          continue
        if key_keep is not None and not key_keep[h % key_keep.shape[0], j]:
          continue
        w = phi(q[i, h]) @ phi(k[j, g])
        num += w * v[j, g]
        den += w
      if den > 0:
        out[i, h] = num / den
  return out


class LinearAttentionTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_float64_oracle(self):
    q, k, v = _qkv(0, 21, 17, 4, 2, 6)
    keep = np.random.default_rng(0).random((4, 1, 17)) > 0.3
    plain = self.variant(lambda q, k, v, mask: jattn.linear_attention(
        q, k, v, mask, query_valid_len=19))(q, k, v, keep)
    self.assertEqual(plain.dtype, jnp.float32)
    self.assertLess(norm_rel_error(plain, linear_oracle(
        q, k, v, key_keep=keep[:, 0], query_valid_len=19)), 1e-5)
    np.testing.assert_array_equal(plain[19:], 0.0)

  def test_causal_matches_float64_oracle(self):
    q, k, v = _qkv(0, 21, 17, 4, 2, 6)
    keep = np.random.default_rng(0).random((4, 1, 17)) > 0.3
    causal = jax.jit(lambda q, k, v, mask: jattn.linear_attention(
        q, k, v, mask, is_causal=True, chunk_size=8))(q, k, v, keep)
    self.assertLess(norm_rel_error(causal, linear_oracle(
        q, k, v, causal=True, key_keep=keep[:, 0])), 1e-5)

  @parameterized.named_parameters(
      ("chunk_does_not_divide", 23, 23, 5),
      ("more_queries", 30, 19, 8),
      ("more_keys", 14, 27, 4),
      ("one_chunk", 9, 9, 64))
  def test_causal_prefix_sums_equal_quadratic_form(self, L, M, chunk):
    q, k, v = (a.astype(np.float64) for a in _qkv(1, L, M, 4, 2, 5))
    fn = jax.jit(lambda q, k, v: (
        jattn.linear_attention(q, k, v, is_causal=True, chunk_size=chunk,
                               key_valid_len=M - 2),
        linear_lib.linear_attention_quadratic(q, k, v, is_causal=True,
                                              key_valid_len=M - 2)))
    chunked, quadratic = fn(q, k, v)
    self.assertLess(norm_rel_error(chunked, quadratic), 1e-12)
    self.assertLess(norm_rel_error(quadratic, linear_oracle(
        q, k, v, causal=True, key_keep=np.arange(M)[None] < M - 2)), 1e-12)

  def test_quadratic_form_takes_any_mask_and_returns_weights(self):
    q, k, v = (a.astype(np.float64) for a in _qkv(2, 6, 7, 2, 2, 3))
    mask = np.random.default_rng(2).random((6, 7)) > 0.4
    mask[3] = False                                   # a row with no key
    out, w = linear_lib.linear_attention_quadratic(q, k, v, mask,
                                                   return_weights=True)
    expected_w = np.zeros((2, 6, 7))
    for h in range(2):
      s = (phi(q[:, h]) @ phi(k[:, h]).T) * mask
      rows = s.sum(axis=1, keepdims=True)
      expected_w[h] = np.divide(s, rows, out=np.zeros_like(s), where=rows > 0)
    self.assertLess(norm_rel_error(w, expected_w), 1e-12)
    np.testing.assert_array_equal(out[3], 0.0)

  def test_key_padding_mask_shapes_and_single_head(self):
    q, k, v = _qkv(3, 10, 10, 2, 1, 4)
    keep = np.arange(10) < 7
    fn = jax.jit(lambda q, k, v: (
        jattn.linear_attention(q, k, v, keep),
        jattn.linear_attention(q, k, v, keep[None]),
        jattn.linear_attention(q, k, v, keep[None, None]),
        jattn.linear_attention(q, k, v, key_valid_len=7),
        jattn.linear_attention(q[:, 0], k[:, 0], v[:, 0], keep)))
    a, b, c, d, single = fn(q, k, v)
    expected = linear_oracle(q, k, v, key_keep=keep[None])
    for out in (a, b, c, d):
      self.assertLess(norm_rel_error(out, expected), 1e-5)
    self.assertEqual(single.shape, (10, 4))
    self.assertLess(norm_rel_error(single, expected[:, 0]), 1e-5)

  def test_gradients_float64_and_zero_for_empty_rows(self):
    q, k, v = (a.astype(np.float64) for a in _qkv(4, 7, 7, 2, 1, 3))
    fn = jax.jit(lambda q, k, v: jattn.linear_attention(
        q, k, v, is_causal=True, chunk_size=3))
    check_grads(fn, (q, k, v), order=1, modes=("rev",))
    # No key at all: zero output, zero gradients (never NaN).
    empty = jax.jit(jax.grad(lambda q, k, v: jnp.sum(jattn.linear_attention(
        q, k, v, key_valid_len=0)), argnums=(0, 1, 2)))(q, k, v)
    for g in empty:
      np.testing.assert_array_equal(g, 0.0)

  def test_vmap_equals_loop(self):
    q, k, v = _qkv(5, 12, 12, 2, 2, 4)
    batch = [np.stack([a, 0.5 * a[::-1]]) for a in (q, k, v)]
    out = jax.jit(jax.vmap(lambda q, k, v: jattn.linear_attention(
        q, k, v, is_causal=True, chunk_size=5)))(*batch)
    for b in range(2):
      expected = linear_oracle(*(a[b] for a in batch), causal=True)
      self.assertLess(norm_rel_error(out[b], expected), 1e-5)

  def test_self_attention_layer(self):
    D, H = 8, 2
    params = random_params(lambda key: jattn.init_self_attention(
        key, D, H, use_bias=True))
    x = np.random.default_rng(6).normal(size=(9, D)).astype(np.float32)
    keep = np.arange(9) < 8
    y = jax.jit(lambda p, x: jattn.linear_self_attention(
        p, x, keep, is_causal=True))(params, x)
    p = {n: np.asarray(a, np.float64) for n, a in params.items()}
    q = np.einsum("nd,dhk->nhk", x, p["w_q"]) + p["b_q"]
    k = np.einsum("nd,dhk->nhk", x, p["w_k"]) + p["b_k"]
    v = np.einsum("nd,dhk->nhk", x, p["w_v"]) + p["b_v"]
    heads = linear_oracle(q, k, v, causal=True, key_keep=keep[None])
    expected = np.einsum("nhv,hvo->no", heads, p["w_o"]) + p["b_o"]
    # A (n,) mask marks token validity: the padded token's own output is
    # that of a zeroed input, so only real rows are compared.
    self.assertLess(norm_rel_error(y[:8], expected[:8]), 1e-5)

  def test_refused_masks_name_the_argument(self):
    q, k, v = _qkv(7, 6, 6, 2, 2, 4)
    with self.assertRaisesRegex(ValueError, "mask: expected a key-padding"):
      jattn.linear_attention(q, k, v, jattn.causal_mask(6, 6))
    with self.assertRaisesRegex(ValueError, "bias: expected None"):
      jattn.linear_attention(q, k, v, bias=jnp.zeros((6, 6)))
    with self.assertRaisesRegex(ValueError, "key_valid_len: expected an "
                                "integer scalar"):
      jattn.linear_attention(q, k, v, key_valid_len=jnp.arange(6))
    with self.assertRaisesRegex(ValueError, "chunk_size"):
      jattn.linear_attention(q, k, v, is_causal=True, chunk_size=0)
    with self.assertRaisesRegex(TypeError, "mask: expected a boolean"):
      jattn.linear_attention(q, k, v, jnp.ones((6,)))


class MemoryTest(parameterized.TestCase):

  def test_causal_form_has_no_quadratic_array(self):
    L = 8192
    q = jax.ShapeDtypeStruct((L, 1, 16), jnp.float32)
    fn = jax.grad(lambda q, k, v: jnp.sum(jattn.linear_attention(
        q, k, v, is_causal=True)), argnums=(0, 1, 2))
    jaxpr = jax.make_jaxpr(fn)(q, q, q).jaxpr
    largest = max(int(np.prod(var.aval.shape)) for eqn in jaxpr.eqns
                  for var in eqn.outvars)
    self.assertLess(largest, L * L // 64)
    self.assertGreaterEqual(largest, L * 16)   # it does see the inputs
