"""Module state <-> jattn params dicts: lossless round trips, nnx <-> linen,
and clear errors for mismatched dicts."""

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jattn
from jattn import nn as jnn

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


def key(seed):
  """A PRNG key. The tests use the "unsafe_rbg" implementation: on CPU its
  kernels compile several times faster than threefry's, which dominates the
  run time of these small tests; the wrappers work with any key type."""
  return jax.random.key(seed, impl="unsafe_rbg")



def _randomise(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)


def assert_same_arrays(got, want):
  """Same structure, shapes, dtypes and bits."""
  chex.assert_trees_all_equal_structs(got, want)
  chex.assert_trees_all_equal_dtypes(got, want)
  chex.assert_trees_all_equal(got, want)


# name -> build(seed): every nnx wrapper with parameters, some nested, in
# several parameter dtypes (conversion must not cast).
BUILDERS = {
    "self_attention_bf16": lambda s: jnn.SelfAttention(
        8, 2, use_bias=True, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(key(s))),
    "multi_head_attention": lambda s: jnn.MultiHeadAttention(
        6, 3, kv_dim=4, out_dim=5, num_kv_heads=1, rngs=nnx.Rngs(key(s))),
    "additive_attention_f64": lambda s: jnn.AdditiveAttention(
        6, 5, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(key(s))),
    "rnn_bidirectional": lambda s: jnn.RNNLayer(
        4, cell="elman", bidirectional=True, rngs=nnx.Rngs(key(s))),
    "transformer_block": lambda s: jnn.TransformerBlock(
        8, 2, 16, rngs=nnx.Rngs(key(s))),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_nnx_round_trip_is_lossless(name):
  build = BUILDERS[name]
  source, target = build(0), build(1)
  params = _randomise(jnn.params_from_nnx(source), 2)
  assert isinstance(params, dict)
  assert jnn.nnx_load_params(target, params) is target
  assert_same_arrays(jnn.params_from_nnx(target), params)
  # The Param state is the dict itself (no extra or renamed entries).
  assert_same_arrays(nnx.to_pure_dict(nnx.state(target, nnx.Param)), params)


def test_sinusoidal_encoding_has_no_params():
  assert jnn.params_from_nnx(jnn.SinusoidalEncoding(7, 4)) == {}


def test_converted_params_drive_pure_function_and_linen():
  """Train with one, analyse with another: nnx -> dict -> pure function and
  linen module; linen -> dict -> nnx."""
  module = jnn.TransformerBlock(8, 2, 16, pre_norm=True, rngs=nnx.Rngs(key(0)))
  params = _randomise(jnn.params_from_nnx(module), 1)
  jnn.nnx_load_params(module, params)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 8)),
                  jnp.float32)
  mask = jnp.arange(5)[None, :] < jnp.array([5, 3, 1])[:, None]
  linen_module = jnn.linen.TransformerBlock(8, 2, 16, pre_norm=True)

  @jax.jit
  def outputs(params):
    y_pure = jax.vmap(lambda x, m: jattn.transformer_block(
        params, x, m, pre_norm=True))(x, mask)
    y_linen = linen_module.apply(jnn.linen_variables(params), x, mask)
    return y_pure, y_linen

  y_nnx = jax.jit(lambda x, m: module(x, m))(x, mask)
  y_pure, y_linen = outputs(jnn.params_from_nnx(module))
  np.testing.assert_allclose(y_nnx, y_pure, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_linen, y_pure, rtol=1e-5, atol=1e-5)

  # linen variables -> dict -> a fresh nnx module: the same arrays.
  variables = linen_module.init(key(3), x[0])
  fresh = jnn.TransformerBlock(8, 2, 16, pre_norm=True, rngs=nnx.Rngs(key(4)))
  jnn.nnx_load_params(fresh, jnn.params_from_linen(variables))
  assert_same_arrays(jnn.params_from_nnx(fresh),
                     jnn.params_from_linen(variables))


def test_linen_conversion_is_identity():
  params = jattn.init_rnn_layer(key(0), 4, bidirectional=True)
  frozen = flax.core.freeze({"params": params})
  for variables in (frozen, {"params": params}, params):
    got = jnn.params_from_linen(variables)
    assert type(got) is dict and type(got["forward"]) is dict
    assert_same_arrays(got, params)
  variables = jnn.linen_variables(params, intermediates={})
  assert_same_arrays(variables["params"], params)
  assert variables["intermediates"] == {}


def test_mismatched_params_raise():
  module = jnn.SelfAttention(8, 2, use_bias=True, rngs=nnx.Rngs(key(0)))
  params = jnn.params_from_nnx(module)
  no_bias = {k: v for k, v in params.items() if not k.startswith("b_")}
  with pytest.raises(ValueError, match="params: expected keys"):
    jnn.nnx_load_params(module, no_bias)
  with pytest.raises(ValueError, match=r"params\['w_q'\]: expected shape"):
    jnn.nnx_load_params(module, params | {"w_q": jnp.zeros((8, 2, 5))})
  with pytest.raises(TypeError, match=r"params\['w_o'\]: expected dtype"):
    jnn.nnx_load_params(module, params | {
        "w_o": params["w_o"].astype(jnp.float64)})
  nested = jnn.TransformerBlock(8, 2, 16, rngs=nnx.Rngs(key(0)))
  bad = jnn.params_from_nnx(nested)
  bad["ffn"] = {"w_1": bad["ffn"]["w_1"]}
  with pytest.raises(ValueError, match=r"params\['ffn'\]: expected keys"):
    jnn.nnx_load_params(nested, bad)
  # A failed load leaves the module untouched.
  assert_same_arrays(jnn.params_from_nnx(module), params)
  with pytest.raises(TypeError, match="module: expected an nnx.Module"):
    jnn.params_from_nnx(params)
  with pytest.raises(TypeError, match="variables: expected a mapping"):
    jnn.params_from_linen([params])
