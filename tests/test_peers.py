"""Agreement with jax.nn.dot_product_attention and flax.linen's attention.

Peers take batched (B, L, H, K) inputs; jattn's per-example function is
vmapped over B.
"""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

import jattn
from tests import helpers


def _inputs(seed, B=2, L=5, M=7, H=4, G=4, K=8):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, L, H, K)).astype(np.float32)
  k = rng.normal(size=(B, M, G, K)).astype(np.float32)
  v = rng.normal(size=(B, M, G, K)).astype(np.float32)
  return rng, q, k, v


def _jattn_batched(q, k, v, mask=None, bias=None, **kwargs):
  fn = lambda q, k, v, m, b: jattn.dot_product_attention(q, k, v, m, bias=b,
                                                         **kwargs)
  axes = (0, 0, 0, None if mask is None else 0, None if bias is None else 0)
  return jax.vmap(fn, in_axes=axes)(q, k, v, mask, bias)


class PeerAgreementTest(parameterized.TestCase):

  def test_jax_nn_mask_and_bias(self):
    rng, q, k, v = _inputs(0)
    mask = rng.random((2, 4, 5, 7)) < 0.7
    mask[..., 0] = True  # jax.nn does not zero fully masked rows
    bias = rng.normal(size=(2, 4, 5, 7)).astype(np.float32)
    expected = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    got = _jattn_batched(q, k, v, jnp.asarray(mask), jnp.asarray(bias))
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)

  def test_jax_nn_gqa_causal(self):
    _, q, k, v = _inputs(1, L=6, M=6, H=6, G=2)
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    got = _jattn_batched(q, k, v, is_causal=True)
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)

  @parameterized.parameters(((2, 1),), ((0, 3),), ((1, 1),))
  def test_jax_nn_local_window(self, window):
    _, q, k, v = _inputs(2, L=7, M=7)
    expected = jax.nn.dot_product_attention(q, k, v, local_window_size=window)
    mask = jattn.local_mask(7, 7, window)
    got = _jattn_batched(q, k, v, jnp.broadcast_to(mask, (2, 7, 7)))
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)

  def test_jax_nn_sequence_lengths(self):
    _, q, k, v = _inputs(3)
    kv_len = jnp.array([3, 7], jnp.int32)
    expected = jax.nn.dot_product_attention(q, k, v,
                                            key_value_seq_lengths=kv_len)
    got = _jattn_batched(q, k, v, jattn.padding_mask(kv_len, 7))
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)

  def test_flax_linen_mask_and_bias(self):
    rng, q, k, v = _inputs(4)
    mask = rng.random((2, 1, 5, 7)) < 0.6
    mask[..., 2] = True
    bias = rng.normal(size=(2, 4, 5, 7)).astype(np.float32)
    expected = flax_nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    got = _jattn_batched(q, k, v, jnp.asarray(mask), jnp.asarray(bias))
    self.assertLess(helpers.max_rel_error(got, expected), 1e-5)
