"""nnx wrappers: init = jattn init, output = vmapped pure function, weights,
dropout switch, batching rules, jit and grad through the modules."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import jattn
from jattn import nn as jnn

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


def key(seed):
  """A PRNG key. The tests use the "unsafe_rbg" implementation: on CPU its
  kernels compile several times faster than threefry's, which dominates the
  run time of these small tests; the wrappers work with any key type."""
  return jax.random.key(seed, impl="unsafe_rbg")


LEAD = (2, 3)  # two leading batch axes everywhere


def vmap_lead(fn):
  """fn(params, *args) vmapped over the two leading axes of every arg."""
  def mapped(params, *args):
    return jax.vmap(jax.vmap(lambda *a: fn(params, *a)))(*args)
  return mapped


def _normal(seed, shape):
  """float32 N(0, 1) inputs (NumPy: no XLA compilation in the tests)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _ints(seed, shape, high):
  return jnp.asarray(np.random.default_rng(seed).integers(0, high, shape))


def _bools(seed, shape, p=0.7):
  return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def _padding(seed, n):
  """bool LEAD + (n,): a random number of valid tokens (>= 1) per example."""
  valid = np.random.default_rng(seed).integers(1, n + 1, LEAD)
  return jnp.asarray(np.arange(n)[None, None, :] < valid[..., None])


def _randomise(params, seed):
  """Non-zero biases / scales so that every array is exercised."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5, a.dtype), params)


# name -> (build(rngs), init(key) or None, call(module, *inputs),
#          pure(params, *example_inputs), inputs(seed))
CASES = {
    "self_attention": (  # grouped-query heads, biases, RoPE, causal, scale
        lambda r: jnn.SelfAttention(8, 4, num_kv_heads=2, head_dim=2,
                                    use_bias=True, is_causal=True, scale=0.3,
                                    rngs=r),
        lambda k: jattn.init_self_attention(k, 8, 4, num_kv_heads=2,
                                            head_dim=2, use_bias=True),
        lambda m, x, mask, pos: m(x, mask, positions=pos),
        lambda p, x, mask, pos: jattn.self_attention(
            p, x, mask, positions=pos, is_causal=True, scale=0.3),
        lambda s: (_normal(s, LEAD + (5, 8)),
                   _bools(s + 3, LEAD + (4, 5, 5)),
                   _ints(s + 4, LEAD + (5,), 20)),
    ),
    "multi_head_attention": (
        lambda r: jnn.MultiHeadAttention(6, 2, kv_dim=5, out_dim=7,
                                         use_bias=True, rngs=r),
        lambda k: jattn.init_multi_head_attention(k, 6, 2, kv_dim=5,
                                                  out_dim=7, use_bias=True),
        lambda m, xq, xkv, mask: m(xq, xkv, mask),
        jattn.multi_head_attention,
        lambda s: (_normal(s, LEAD + (4, 6)),
                   _normal(s + 1, LEAD + (3, 5)),
                   _bools(s + 3, LEAD + (2, 4, 3))),
    ),
    "additive_attention": (
        lambda r: jnn.AdditiveAttention(6, 5, 4, rngs=r),
        lambda k: jattn.init_additive_attention(k, 6, 5, 4),
        lambda m, q, k, v, mask: m(q, k, v, mask),
        jattn.additive_attention,
        lambda s: (_normal(s, LEAD + (4, 6)),
                   _normal(s + 1, LEAD + (3, 5)),
                   _normal(s + 2, LEAD + (3, 2)),
                   _padding(s + 5, 3)[..., None, :]),
    ),
    "learned_encoding": (
        lambda r: jnn.LearnedEncoding(7, 4, rngs=r),
        lambda k: jattn.init_learned_encoding(k, 7, 4),
        lambda m, pos: m(pos),
        jattn.learned_encoding,
        lambda s: (_ints(s, LEAD + (5,), 7),),
    ),
    "sinusoidal_encoding": (
        lambda r: jnn.SinusoidalEncoding(7, 4),
        None,
        lambda m, pos: m(pos),
        lambda p, pos: jattn.sinusoidal_encoding(7, 4)[pos],
        lambda s: (_ints(s, LEAD + (5,), 7),),
    ),
    "conv_layer": (
        lambda r: jnn.ConvLayer(4, 3, causal=True, dilation=2, rngs=r),
        lambda k: jattn.init_conv_layer(k, 4, 3),
        lambda m, x, mask: m(x, mask),
        lambda p, x, mask: jattn.conv_layer(p, x, mask, causal=True,
                                            dilation=2),
        lambda s: (_normal(s, LEAD + (6, 4)), _padding(s + 5, 6)),
    ),
    "rnn_gru_reverse": (
        lambda r: jnn.RNNLayer(4, hidden_dim=3, reverse=True, rngs=r),
        lambda k: jattn.init_rnn_layer(k, 4, hidden_dim=3),
        lambda m, x, mask: m(x, mask),
        lambda p, x, mask: jattn.rnn_layer(p, x, mask, reverse=True),
        lambda s: (_normal(s, LEAD + (5, 4)), _padding(s + 5, 5)),
    ),
    "transformer_block": (
        lambda r: jnn.TransformerBlock(8, 2, 16, pre_norm=True,
                                       is_causal=True, rngs=r),
        lambda k: jattn.init_transformer_block(k, 8, 2, 16),
        lambda m, x, mask, pos: m(x, mask, positions=pos),
        lambda p, x, mask, pos: jattn.transformer_block(
            p, x, mask, positions=pos, pre_norm=True, is_causal=True),
        lambda s: (_normal(s, LEAD + (5, 8)), _padding(s + 5, 5),
                   _ints(s + 4, LEAD + (5,), 9)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_init_and_output_match_pure_function(name):
  """Params = the jattn init's (same key); output = vmapped pure function."""
  build, init, call, pure, make_inputs = CASES[name]
  module = build(nnx.Rngs(key(0)))
  got = jnn.params_from_nnx(module)
  expected = {} if init is None else init(nnx.Rngs(key(0)).params())
  chex.assert_trees_all_equal_structs(got, expected)
  chex.assert_trees_all_equal(got, expected)
  chex.assert_trees_all_equal_dtypes(got, expected)

  # Random values everywhere (biases and layer norms start at 0 / 1).
  params = _randomise(got, 2)
  jnn.nnx_load_params(module, params)
  inputs = make_inputs(3)
  y, expected = jax.jit(lambda *a: (call(module, *a),
                                    vmap_lead(pure)(params, *a)))(*inputs)
  chex.assert_shape(y, expected.shape)
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def _np_self_attention(p, x, mask):
  """float64 oracle for one example: loops over heads, no jattn code."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  x = np.asarray(x, np.float64)
  n, _ = x.shape
  H, K = p["w_q"].shape[1:]
  y = np.zeros((n, p["w_o"].shape[2]))
  for h in range(H):
    q = x @ p["w_q"][:, h] + p["b_q"][h]
    k = x @ p["w_k"][:, h] + p["b_k"][h]
    v = x @ p["w_v"][:, h] + p["b_v"][h]
    logits = q @ k.T / math.sqrt(K)
    logits = np.where(mask, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    y += (w @ v) @ p["w_o"][h]
  return y + p["b_o"]


def test_self_attention_against_numpy_oracle():
  module = jnn.SelfAttention(6, 3, use_bias=True, rngs=nnx.Rngs(key(4)))
  params = _randomise(jnn.params_from_nnx(module), 5)
  jnn.nnx_load_params(module, params)
  x = _normal(6, LEAD + (4, 6))
  mask = _padding(7, 4)[..., None, :]  # (2, 3, 1, 4)
  y = jax.jit(module)(x, mask)
  for i in range(LEAD[0]):
    for j in range(LEAD[1]):
      expected = _np_self_attention(params, x[i, j], mask[i, j])
      np.testing.assert_allclose(y[i, j], expected, rtol=1e-5, atol=1e-5)


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_self_attention_under_jit(self):
    module = jnn.SelfAttention(8, 2, rngs=nnx.Rngs(key(0)))
    x = _normal(1, LEAD + (5, 8))
    mask = _padding(2, 5)[..., None, :]
    y = self.variant(lambda x, m: module(x, m))(x, mask)
    expected = vmap_lead(jattn.self_attention)(jnn.params_from_nnx(module), x,
                                               mask)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_nnx_jit_and_grad_match_pure_function():
  module = jnn.ConvLayer(4, 3, rngs=nnx.Rngs(key(0)))
  x = _normal(1, LEAD + (6, 4))
  mask = _padding(2, 6)
  params = jnn.params_from_nnx(module)
  pure = vmap_lead(jattn.conv_layer)

  @nnx.jit
  def module_side(m):
    loss = lambda m: jnp.sum(m(x, mask) ** 2)
    return m(x, mask), nnx.grad(loss)(m)

  @jax.jit
  def pure_side(p):
    return pure(p, x, mask), jax.grad(lambda p: jnp.sum(pure(p, x, mask)
                                                        ** 2))(p)

  (y, grads), (expected_y, expected_grads) = module_side(module), pure_side(
      params)
  np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(nnx.to_pure_dict(grads), expected_grads,
                              rtol=1e-5, atol=1e-6)


def test_check_grads_through_module_float64():
  module = jnn.SelfAttention(4, 2, use_bias=True, param_dtype=jnp.float64,
                             rngs=nnx.Rngs(key(0)))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4)))
  check_grads(jax.jit(module), (x,), order=1, modes=("rev",))


def test_zero_batch_axes_is_one_example():
  module = jnn.SelfAttention(8, 2, rngs=nnx.Rngs(key(0)))
  x = _normal(1, (5, 8))
  mask = jattn.valid_len_mask(3, 5)
  params = jnn.params_from_nnx(module)
  y, expected = jax.jit(lambda x, mask: (
      module(x, mask), jattn.self_attention(params, x, mask)))(x, mask)
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_size_one_batch_axes_are_shared():
  module = jnn.ConvLayer(4, 3, rngs=nnx.Rngs(key(0)))
  x = _normal(1, LEAD + (6, 4))
  mask = _padding(2, 6)[:1]  # (1, 3, 6): shared over axis 0
  shared, full = jax.jit(lambda x, mask: (
      module(x, mask), module(x, jnp.broadcast_to(mask, LEAD + (6,)))))(
          x, mask)
  np.testing.assert_array_equal(shared, full)


def test_bad_batch_axes_raise():
  module = jnn.SelfAttention(8, 2, rngs=nnx.Rngs(key(0)))
  x = _normal(1, LEAD + (5, 8))
  with pytest.raises(ValueError, match="mask: expected leading batch axes"):
    module(x, jnp.ones((5, 5), bool))  # no batch axes
  with pytest.raises(ValueError, match="x: expected rank >= 2"):
    module(jnp.ones((8,), jnp.float32))
  with pytest.raises(TypeError, match="mask: expected a boolean"):
    module(x, jnp.ones(LEAD + (1, 5), jnp.int32))


ATTENTION_CASES = {
    "self_attention": (
        lambda: jnn.SelfAttention(8, 2, rngs=nnx.Rngs(key(0))),
        lambda s: (_normal(s, LEAD + (5, 8)),),
        lambda p, x: jattn.self_attention(p, x, return_weights=True),
        LEAD + (2, 5, 5)),
    "additive_attention": (
        lambda: jnn.AdditiveAttention(6, 5, 4, rngs=nnx.Rngs(key(0))),
        lambda s: (_normal(s, LEAD + (4, 6)), _normal(s, LEAD + (3, 5)),
                   _normal(s, LEAD + (3, 2))),
        lambda p, q, k, v: jattn.additive_attention(p, q, k, v,
                                                    return_weights=True),
        LEAD + (4, 3)),
    "transformer_block": (
        lambda: jnn.TransformerBlock(8, 2, 16, rngs=nnx.Rngs(key(0))),
        lambda s: (_normal(s, LEAD + (5, 8)),),
        lambda p, x: jattn.transformer_block(p, x, return_weights=True),
        LEAD + (2, 5, 5)),
}


@pytest.mark.parametrize("name", sorted(ATTENTION_CASES))
def test_returned_and_sown_weights(name):
  build, make_inputs, pure, weights_shape = ATTENTION_CASES[name]
  module = build()
  inputs = make_inputs(1)
  params = jnn.params_from_nnx(module)
  (y, weights), (expected_y, expected_w) = jax.jit(lambda *a: (
      module(*a, return_weights=True), vmap_lead(pure)(params, *a)))(*inputs)
  chex.assert_shape(weights, weights_shape)
  chex.assert_type(weights, jnp.float32)
  np.testing.assert_allclose(weights, expected_w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)

  # Sown on request (call argument); the module keeps nothing afterwards.
  out, sown = jnn.capture_intermediates(module, *inputs, sow_weights=True)
  np.testing.assert_allclose(out, y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sown[jnn.ATTENTION_WEIGHTS][0], weights,
                             rtol=1e-6, atol=1e-7)
  assert not jax.tree.leaves(nnx.state(module, nnx.Intermediate))


def test_sow_weights_attribute_and_default():
  module = jnn.SelfAttention(8, 2, sow_weights=True, rngs=nnx.Rngs(key(0)))
  x = _normal(1, LEAD + (5, 8))
  _, sown = jnn.capture_intermediates(module, x)
  chex.assert_shape(sown[jnn.ATTENTION_WEIGHTS][0], LEAD + (2, 5, 5))
  _, sown = jnn.capture_intermediates(module, x, sow_weights=False)
  assert jnn.ATTENTION_WEIGHTS not in sown
  module.sow_weights = False  # the default: nothing sown
  _, sown = jnn.capture_intermediates(module, x)
  assert jnn.ATTENTION_WEIGHTS not in sown


@pytest.fixture(scope="module")
def dropout_setup():
  x = _normal(1, LEAD + (5, 8))
  mask = _padding(2, 5)
  module = jnn.TransformerBlock(8, 2, 16, dropout_rate=0.5,
                                rngs=nnx.Rngs(key(0)))
  params = jnn.params_from_nnx(module)

  @jax.jit
  def pure(keys=None):
    def one(p, x, mask, k=None):
      return jattn.transformer_block(p, x, mask, dropout_rate=0.5,
                                     dropout_key=k, deterministic=k is None)
    if keys is None:
      return vmap_lead(one)(params, x, mask)
    return vmap_lead(one)(params, x, mask, keys)

  return module, x, mask, pure


def test_dropout_requires_deterministic(dropout_setup):
  module, x, mask, _ = dropout_setup
  module.deterministic = None
  with pytest.raises(ValueError, match="deterministic: expected True"):
    module(x, mask)


def test_dropout_off_equals_pure_without_dropout(dropout_setup):
  module, x, mask, pure = dropout_setup
  call = nnx.jit(lambda m, x, mask: m(x, mask, deterministic=True))
  np.testing.assert_allclose(call(module, x, mask), pure(), rtol=1e-6,
                             atol=1e-6)
  module.eval()  # sets module.deterministic = True
  assert module.deterministic is True
  call = nnx.jit(lambda m, x, mask: m(x, mask))
  np.testing.assert_allclose(call(module, x, mask), pure(), rtol=1e-6,
                             atol=1e-6)


def test_dropout_splits_one_key_per_example(dropout_setup):
  module, x, mask, pure = dropout_setup
  k = key(7)
  call = nnx.jit(lambda m, x, mask, k: m(x, mask, deterministic=False,
                                         rngs=k))
  y = call(module, x, mask, k)
  keys = jax.random.split(k, math.prod(LEAD)).reshape(LEAD)
  np.testing.assert_allclose(y, pure(keys), rtol=1e-6, atol=1e-6)
  assert not np.allclose(y, pure())


def test_dropout_train_mode_draws_fresh_keys(dropout_setup):
  module, x, _, _ = dropout_setup
  module.train()  # sets module.deterministic = False
  x = jnp.broadcast_to(x[:1, :1], x.shape)  # identical examples
  call = nnx.jit(lambda m, x: m(x))
  y1 = call(module, x)
  y2 = call(module, x)
  assert not np.allclose(y1, y2)  # the module's stream advances
  assert not np.allclose(y1[0, 0], y1[0, 1])  # examples get their own keys
