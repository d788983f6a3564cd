"""Local (sliding-window) attention against a float64 NumPy oracle, against
dense attention with a local mask, and its memory at a long length."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

import jattn
from jattn.attention import local as local_lib
from jattn import models
from tests.helpers import norm_rel_error
from tests.helpers import random_params
from tests.helpers import random_qkv as _qkv


def local_oracle(q, k, v, left, right, *, causal=False, key_valid_len=None,
                 query_valid_len=None, scale=None):
  """Float64 loops: query i attends to keys i - left <= j <= i + right.

  q (L, H, K), k (M, G, K), v (M, G, V); head h reads key head h // (H / G).
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, H, K = q.shape
  M, G, V = v.shape
  scale = 1.0 / np.sqrt(K) if scale is None else scale
  out = np.zeros((L, H, V))
  for h in range(H):
    g = h // (H // G)
    for i in range(L):
      if query_valid_len is not None and i >= query_valid_len:
        continue
      keys = [j for j in range(M)
              if i - left <= j <= i + right and (not causal or j <= i)
              and (key_valid_len is None or j < key_valid_len)]
      if not keys:
        continue
      logits = np.array([scale * q[i, h] @ k[j, g] for j in keys])
      weights = np.exp(logits - logits.max())
      weights /= weights.sum()
      out[i, h] = sum(w * v[j, g] for w, j in zip(weights, keys))
  return out


class LocalAttentionTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_float64_oracle(self):
    q, k, v = _qkv(0, 45, 45, 4, 2, 8)
    fn = self.variant(lambda q, k, v: jattn.local_attention(
        q, k, v, 5, block_q=16, block_k=16))
    out = fn(q, k, v)
    self.assertEqual(out.dtype, jnp.float32)
    self.assertLess(norm_rel_error(out, local_oracle(q, k, v, 4, 4)), 1e-5)

  @parameterized.named_parameters(
      ("pair_causal_lengths", 40, 40, 2, 2, (6, 2), True, 33, 38),
      ("cross_lengths", 37, 29, 2, 1, (3, 9), False, None, None))
  def test_masks_match_float64_oracle(self, L, M, H, G, window, causal,
                                      key_valid_len, query_valid_len):
    q, k, v = (a.astype(np.float64) for a in _qkv(0, L, M, H, G, 8))
    out = jax.jit(lambda q, k, v: jattn.local_attention(
        q, k, v, window, is_causal=causal, key_valid_len=key_valid_len,
        query_valid_len=query_valid_len, block_q=16, block_k=16))(q, k, v)
    expected = local_oracle(q, k, v, *window, causal=causal,
                            key_valid_len=key_valid_len,
                            query_valid_len=query_valid_len)
    self.assertLess(norm_rel_error(out, expected), 1e-12)
    if query_valid_len is not None:
      np.testing.assert_array_equal(out[query_valid_len:], 0.0)

  def test_equals_dense_attention_with_local_mask(self):
    # The same call as dense attention with jattn.local_mask: f32 tolerance,
    # over default tiles (GQA, several tiles) and the single-head form.
    q, k, v = _qkv(1, 200, 200, 4, 2, 16)
    mask = jattn.local_mask(200, 200, 17)

    @jax.jit
    def both(q, k, v):
      local = (jattn.local_attention(q, k, v, 17),
               jattn.local_attention(q[:, 0], k[:, 0], v[:, 0], 17))
      dense = (jattn.dot_product_attention(q, k, v, mask,
                                           implementation="dense"),
               jattn.dot_product_attention(q[:, 0], k[:, 0], v[:, 0], mask,
                                           implementation="dense"))
      return local, dense

    (local, single), (dense, dense_single) = both(q, k, v)
    self.assertLess(norm_rel_error(local, dense), 1e-5)
    self.assertEqual(single.shape, (200, 16))
    self.assertLess(norm_rel_error(single, dense_single), 1e-5)

  def test_gradients_float64(self):
    q, k, v = (a.astype(np.float64) for a in _qkv(2, 13, 13, 2, 1, 4))
    fn = jax.jit(lambda q, k, v: jattn.local_attention(
        q, k, v, (3, 1), is_causal=True, block_q=8, block_k=8))
    check_grads(fn, (q, k, v), order=1, modes=("rev",))

  def test_vmap_equals_loop(self):
    q, k, v = _qkv(3, 20, 20, 2, 2, 4)
    batch = [np.stack([a, a[::-1]]) for a in (q, k, v)]
    batched = jax.jit(jax.vmap(lambda q, k, v: jattn.local_attention(
        q, k, v, (3, 2))))(*batch)
    for b in range(2):   # a Python loop over the examples, oracle per example
      expected = local_oracle(*(a[b] for a in batch), 3, 2)
      self.assertLess(norm_rel_error(batched[b], expected), 1e-5)

  def test_self_attention_layer_equals_masked_self_attention(self):
    params = random_params(lambda k: jattn.init_self_attention(k, 16, 4))
    x = np.random.default_rng(4).normal(size=(33, 16)).astype(np.float32)
    positions = jnp.arange(33)
    y = jax.jit(lambda p, x, pos: jattn.local_self_attention(
        p, x, window=5, positions=pos))(params, x, positions)
    expected = jax.jit(lambda p, x, pos: jattn.self_attention(
        p, x, jattn.local_mask(33, 33, 5), positions=pos,
        implementation="dense"))(params, x, positions)
    self.assertLess(norm_rel_error(y, expected), 1e-5)

  def test_default_tiles_follow_the_window(self):
    self.assertEqual(local_lib.default_blocks(32), (64, 64))
    self.assertEqual(local_lib.default_blocks((3, 0)), (16, 16))
    self.assertEqual(local_lib.default_blocks(256), (128, 256))

  def test_errors_name_the_argument(self):
    q, k, v = _qkv(5, 8, 8, 2, 2, 4)
    with self.assertRaisesRegex(ValueError, "implementation: expected"):
      jattn.local_attention(q, k, v, 3, implementation="dense")
    with self.assertRaisesRegex(ValueError, "window: expected"):
      jattn.local_attention(q, k, v, None)
    with self.assertRaisesRegex(ValueError, "window"):
      jattn.local_attention(q, k, v, 0)
    with self.assertRaisesRegex(ValueError, "k: expected head width"):
      jattn.local_attention(q, k[..., :3], v, 3)
    with self.assertRaisesRegex(ValueError, "model.window"):
      models.init_model(jax.random.key(0), {
          "kind": "local", "d_model": 8, "num_layers": 1, "num_heads": 2,
          "window": (1, 2, 3)}, 5, 10)


class LongSequenceMemoryTest(parameterized.TestCase):
  """No (L, M) array at L = 16384: in the jaxpr of the gradient, and in the
  compiled temporary memory."""

  def _grad_fn(self, L):
    def loss(q, k, v):
      return jnp.sum(jattn.local_attention(q, k, v, 64) ** 2)
    return (jax.jit(jax.grad(loss, argnums=(0, 1, 2))),
            jax.ShapeDtypeStruct((L, 1, 16), jnp.float32))

  def test_no_quadratic_array(self):
    L = 16384
    fn, q = self._grad_fn(L)
    sizes = list(_sizes(jax.make_jaxpr(fn)(q, q, q).jaxpr))
    self.assertLess(max(sizes), L * L // 64)
    stats = fn.lower(q, q, q).compile().memory_analysis()
    if stats is None:
      pytest.skip("no memory analysis on this backend")
    # (L, K) inputs are 1 MiB each; one head's logits would be 1 GiB.
    self.assertLess(stats.temp_size_in_bytes, L * L * 4 // 64)


def _sizes(jaxpr):
  """Element counts of every value in a jaxpr and its sub-jaxprs."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield int(np.prod(var.aval.shape)) if hasattr(var.aval, "shape") else 1
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _sizes(inner)


class LocalModelTest(parameterized.TestCase):

  def test_reach_of_a_local_stack_is_layers_times_window(self):
    # Output i changes with input j only if |i - j| <= num_layers (w - 1):
    # the path length O(n / w) of a local stack. Perturb one input position
    # at a time (vmapped) and see which outputs move.
    config = {"kind": "local", "d_model": 8, "num_layers": 2, "num_heads": 2,
              "d_ff": 8, "window": 4}
    params = random_params(lambda k: models.init_model(k, config, 5, 24))
    x = models.embed(params, jnp.arange(24) % 5, model_config=config)
    apply = lambda x: models.apply_embedded(params, x, model_config=config)
    # Batch entry 0 is unperturbed, so every entry runs the same code.
    # (A random direction: layer norm would erase a constant shift.)
    direction = np.random.default_rng(0).normal(size=(1, 1, 8))
    deltas = jnp.eye(25, 24)[:, :, None] * direction
    deltas = jnp.concatenate([jnp.zeros((1, 24, 8)), deltas[:24]])
    out = np.asarray(jax.jit(jax.vmap(lambda d: apply(x + d)))(deltas))
    reach = np.abs(out[1:] - out[:1]).sum(axis=-1).T > 0   # [output, input]
    i, j = np.arange(24)[:, None], np.arange(24)[None, :]
    np.testing.assert_array_equal(reach, np.abs(i - j) <= 2 * 3)
