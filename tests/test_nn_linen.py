"""linen wrappers: the params collection is the jattn dict, output = vmapped
pure function, sown/returned weights, dropout keys split per example."""

import math

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
L = jnn.linen


def vmap_lead(fn):
  """fn(params, *args) vmapped over the two leading axes of every arg."""
  def mapped(params, *args):
    return jax.vmap(jax.vmap(lambda *a: fn(params, *a)))(*args)
  return mapped


def _normal(seed, shape):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _padding(seed, n):
  """bool LEAD + (n,): a random number of valid tokens (>= 1) per example."""
  valid = np.random.default_rng(seed).integers(1, n + 1, LEAD)
  return jnp.asarray(np.arange(n)[None, None, :] < valid[..., None])


def _randomise(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5, a.dtype), params)


class _FirstRng(nn.Module):
  """The first key a top-level module draws from a stream (linen derives it
  from the module path and a per-stream counter)."""
  stream: str

  def __call__(self):
    return self.make_rng(self.stream)


# name -> (module, init(key) or None, call kwargs, pure(params, *example),
#          inputs(seed))
CASES = {
    "self_attention": (
        L.SelfAttention(8, 4, num_kv_heads=2, head_dim=2, use_bias=True,
                        is_causal=True),
        lambda k: jattn.init_self_attention(k, 8, 4, num_kv_heads=2,
                                            head_dim=2, use_bias=True),
        lambda p, x, mask: jattn.self_attention(p, x, mask, is_causal=True),
        lambda s: (_normal(s, LEAD + (5, 8)), _padding(s, 5)[..., None, :]),
    ),
    "multi_head_attention": (
        L.MultiHeadAttention(6, 2, kv_dim=5, out_dim=7, scale=0.2),
        lambda k: jattn.init_multi_head_attention(k, 6, 2, kv_dim=5,
                                                  out_dim=7),
        lambda p, xq, xkv: jattn.multi_head_attention(p, xq, xkv, scale=0.2),
        lambda s: (_normal(s, LEAD + (4, 6)), _normal(s + 1, LEAD + (3, 5))),
    ),
    "additive_attention": (
        L.AdditiveAttention(4),
        lambda k: jattn.init_additive_attention(k, 6, 5, 4),
        jattn.additive_attention,
        lambda s: (_normal(s, LEAD + (4, 6)), _normal(s + 1, LEAD + (3, 5)),
                   _normal(s + 2, LEAD + (3, 2)),
                   _padding(s, 3)[..., None, :]),
    ),
    "learned_encoding": (
        L.LearnedEncoding(7, 4),
        lambda k: jattn.init_learned_encoding(k, 7, 4),
        jattn.learned_encoding,
        lambda s: (jnp.asarray(np.random.default_rng(s).integers(
            0, 7, LEAD + (5,))),),
    ),
    "sinusoidal_encoding": (
        L.SinusoidalEncoding(7, 4),
        None,
        lambda p, pos: jattn.sinusoidal_encoding(7, 4)[pos],
        lambda s: (jnp.asarray(np.random.default_rng(s).integers(
            0, 7, LEAD + (5,))),),
    ),
    "conv_layer": (
        L.ConvLayer(4, 2, use_bias=False, dilation=3),
        lambda k: jattn.init_conv_layer(k, 4, 2, use_bias=False),
        lambda p, x, mask: jattn.conv_layer(p, x, mask, dilation=3),
        lambda s: (_normal(s, LEAD + (6, 4)), _padding(s, 6)),
    ),
    "rnn_lstm_bidirectional": (
        L.RNNLayer(4, cell="lstm", bidirectional=True),
        lambda k: jattn.init_rnn_layer(k, 4, cell="lstm", bidirectional=True),
        jattn.rnn_layer,
        lambda s: (_normal(s, LEAD + (5, 4)), _padding(s, 5)),
    ),
    "transformer_block": (
        L.TransformerBlock(8, 2, 16, num_kv_heads=1, use_bias=False),
        lambda k: jattn.init_transformer_block(k, 8, 2, 16, num_kv_heads=1,
                                               use_bias=False),
        jattn.transformer_block,
        lambda s: (_normal(s, LEAD + (5, 8)), _padding(s, 5)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_params_are_jattn_dict_and_output_is_vmapped_pure(name):
  module, init, pure, make_inputs = CASES[name]
  inputs = make_inputs(3)
  variables = jax.jit(module.init)(key(0), *inputs)
  params = jnn.params_from_linen(variables)
  expected = {} if init is None else jax.eval_shape(init, key(0))
  chex.assert_trees_all_equal_structs(params, expected)
  chex.assert_trees_all_equal_shapes_and_dtypes(params, expected)

  params = _randomise(params, 2)
  y = jax.jit(module.apply)(jnn.linen_variables(params), *inputs)
  want = jax.jit(vmap_lead(pure))(params, *inputs)
  chex.assert_shape(y, want.shape)
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_init_is_one_call_of_the_jattn_init():
  x = _normal(0, LEAD + (5, 8))
  rng = key(4)
  variables = L.SelfAttention(8, 2, use_bias=True).init(rng, x)
  first = _FirstRng("params").apply({}, rngs={"params": rng})
  chex.assert_trees_all_equal(
      jnn.params_from_linen(variables),
      jattn.init_self_attention(first, 8, 2, use_bias=True))


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_with_and_without_jit(self):
    module = L.SelfAttention(8, 2)
    x = _normal(1, LEAD + (5, 8))
    mask = _padding(2, 5)[..., None, :]
    variables = jax.jit(module.init)(key(0), x, mask)
    y = self.variant(module.apply)(variables, x, mask)
    want = jax.jit(vmap_lead(jattn.self_attention))(variables["params"], x,
                                                    mask)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_wrong_param_shapes_raise():
  module = L.SelfAttention(8, 2)
  x = _normal(1, LEAD + (5, 8))
  params = jattn.init_self_attention(key(0), 8, 4)  # 4 heads
  with pytest.raises(flax.errors.ScopeParamShapeError, match="w_k"):
    module.apply(jnn.linen_variables(params), x)


WEIGHT_CASES = {
    "self_attention": (L.SelfAttention(8, 2), (LEAD + (5, 8),),
                       LEAD + (2, 5, 5)),
    "additive_attention": (L.AdditiveAttention(4),
                           (LEAD + (4, 6), LEAD + (3, 5), LEAD + (3, 2)),
                           LEAD + (4, 3)),
    "transformer_block": (L.TransformerBlock(8, 2, 16), (LEAD + (5, 8),),
                          LEAD + (2, 5, 5)),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_CASES))
def test_returned_and_sown_weights(name):
  module, shapes, weights_shape = WEIGHT_CASES[name]
  inputs = [_normal(i, s) for i, s in enumerate(shapes)]
  variables = jax.jit(module.init)(key(0), *inputs)

  @jax.jit
  def run(variables, *inputs):
    y, w = module.apply(variables, *inputs, return_weights=True)
    (y_sown, state) = module.apply(variables, *inputs, sow_weights=True,
                                   mutable=["intermediates"])
    y_plain, plain_state = module.apply(variables, *inputs,
                                        mutable=["intermediates"])
    return y, w, y_sown, state, y_plain, plain_state

  y, w, y_sown, state, y_plain, plain_state = run(variables, *inputs)
  chex.assert_shape(w, weights_shape)
  chex.assert_type(w, jnp.float32)
  (sown,) = state["intermediates"][jnn.ATTENTION_WEIGHTS]
  np.testing.assert_array_equal(sown, w)
  np.testing.assert_array_equal(y_sown, y)
  np.testing.assert_array_equal(y_plain, y)
  assert not plain_state  # nothing sown by default

  field = module.clone(sow_weights=True)
  _, state = jax.jit(lambda v, *a: field.apply(
      v, *a, mutable=["intermediates"]))(variables, *inputs)
  chex.assert_shape(state["intermediates"][jnn.ATTENTION_WEIGHTS][0],
                    weights_shape)


@pytest.fixture(scope="module")
def dropout_setup():
  module = L.TransformerBlock(8, 2, 16, dropout_rate=0.5)
  x = _normal(1, LEAD + (5, 8))
  mask = _padding(2, 5)
  variables = jax.jit(lambda k, x, m: module.init(k, x, m,
                                                  deterministic=True))(
                                                      key(0), x,
                                                      mask)
  params = variables["params"]

  @jax.jit
  def pure(keys=None):
    def one(p, x, mask, k=None):
      return jattn.transformer_block(p, x, mask, dropout_rate=0.5,
                                     dropout_key=k, deterministic=k is None)
    if keys is None:
      return vmap_lead(one)(params, x, mask)
    return vmap_lead(one)(params, x, mask, keys)

  @jax.jit
  def train(rng, x, mask):
    return module.apply(variables, x, mask, deterministic=False,
                        rngs={"dropout": rng})

  return module, variables, x, mask, pure, train


def test_dropout_needs_deterministic(dropout_setup):
  module, variables, x, mask, _, _ = dropout_setup
  with pytest.raises(ValueError, match="deterministic"):
    module.apply(variables, x, mask)


def test_dropout_off_equals_pure(dropout_setup):
  module, variables, x, mask, pure, _ = dropout_setup
  y = jax.jit(lambda v, x: module.apply(v, x, mask, deterministic=True))(
      variables, x)
  np.testing.assert_allclose(y, pure(), rtol=1e-6, atol=1e-6)


def test_dropout_key_split_per_example(dropout_setup):
  _, _, x, mask, pure, train = dropout_setup
  rng = key(5)
  y = train(rng, x, mask)
  first = _FirstRng("dropout").apply({}, rngs={"dropout": rng})
  keys = jax.random.split(first, math.prod(LEAD)).reshape(LEAD)
  np.testing.assert_allclose(y, pure(keys), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(train(rng, x, mask), y)  # same rng, same y
  assert not np.allclose(train(key(6), x, mask), y)
  same = jnp.broadcast_to(x[:1, :1], x.shape)  # identical examples
  y_same = train(rng, same, jnp.ones(LEAD + (5,), bool))
  assert not np.allclose(y_same[0, 0], y_same[1, 2])
