"""Flax's own multi-head attention weights loaded into jattn give the same
outputs (float32, relative error < 1e-6), with and without masks.

Both sides use `precision=HIGHEST` so that on GPU/TPU float32 matmuls are not
run in reduced precision (TF32 / bf16 passes), which would make the two
implementations differ by far more than 1e-6; on CPU it changes nothing.
Flax scales the queries by 1/sqrt(K) before the product and jattn scales the
logits, so the head width K = 3 is chosen to make that rounding visible.
Every query row keeps at least one key: for rows with none Flax gives uniform
weights and jattn zeros (documented in `jattn.nn.interop`).
"""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jattn
from jattn import nn as jnn
from tests import helpers


def key(seed):
  """A PRNG key. The tests use the "unsafe_rbg" implementation: on CPU its
  kernels compile several times faster than threefry's, which dominates the
  run time of these small tests; the wrappers work with any key type."""
  return jax.random.key(seed, impl="unsafe_rbg")


HIGHEST = jax.lax.Precision.HIGHEST
B, Lq, M, Dq, Dkv, H, K, Do = 2, 4, 5, 6, 5, 2, 3, 7




def _normal(seed, shape):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _masks():
  """None, a full (B, H, L, M) mask and a broadcast (B, 1, 1, M) padding
  mask; every query row keeps key 0."""
  rng = np.random.default_rng(0)
  full = rng.random((B, H, Lq, M)) < 0.5
  full[..., 0] = True
  padding = np.arange(M)[None, None, None, :] < np.array([3, 5])[:, None,
                                                                None, None]
  return {"none": None, "full": jnp.asarray(full),
          "padding": jnp.asarray(padding)}


MASKS = _masks()
X_Q = _normal(1, (B, Lq, Dq))
X_KV = _normal(2, (B, M, Dkv))


def jattn_batched(params, x_q, x_kv, mask):
  """The pure function vmapped over the batch (a Flax mask (B, H, L, M) is a
  batch of jattn masks (H, L, M))."""
  fn = lambda xq, xkv, m: jattn.multi_head_attention(params, xq, xkv, m,
                                                     precision=HIGHEST)
  if mask is None:
    return jax.vmap(lambda xq, xkv: fn(xq, xkv, None))(x_q, x_kv)
  return jax.vmap(fn)(x_q, x_kv, mask)


@pytest.fixture(scope="module")
def linen_mha():
  module = nn.MultiHeadDotProductAttention(
      num_heads=H, qkv_features=H * K, out_features=Do, precision=HIGHEST,
      bias_init=nn.initializers.normal(0.5))
  variables = jax.jit(module.init)(key(0), X_Q, X_KV)
  return module, variables


@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_linen_mha_matches(linen_mha, mask_name):
  module, variables = linen_mha
  mask = MASKS[mask_name]
  params = jnn.params_from_linen_mha(variables)
  assert params["w_q"].shape == (Dq, H, K)
  assert params["w_k"].shape == (Dkv, H, K)
  assert params["w_o"].shape == (H, K, Do)
  assert params["b_o"].shape == (Do,)

  @jax.jit
  def both(variables, params, mask):
    return (module.apply(variables, X_Q, X_KV, mask=mask),
            jattn_batched(params, X_Q, X_KV, mask))

  want, got = both(variables, params, mask)
  assert helpers.max_rel_error(got, want) < 1e-6


def test_linen_mha_self_attention_without_bias():
  module = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=H * K,
                                           use_bias=False, precision=HIGHEST)
  x = _normal(3, (B, Lq, Dq))
  variables = jax.jit(module.init)(key(1), x)
  params = jnn.params_from_linen_mha(variables["params"])  # bare collection
  assert sorted(params) == ["w_k", "w_o", "w_q", "w_v"]
  mask = MASKS["full"][..., :Lq]

  @jax.jit
  def both(variables, params):
    return (module.apply(variables, x, mask=mask),
            jax.vmap(lambda x, m: jattn.self_attention(
                params, x, m, precision=HIGHEST))(x, mask))

  want, got = both(variables, params)
  assert helpers.max_rel_error(got, want) < 1e-6


def _nnx_mha(seed, **kwargs):
  return nnx.MultiHeadAttention(
      num_heads=H, in_features=Dq, qkv_features=H * K, out_features=Do,
      in_kv_features=Dkv, decode=False, precision=HIGHEST,
      bias_init=nnx.initializers.normal(0.5), rngs=nnx.Rngs(key(seed)),
      **kwargs)


@pytest.mark.parametrize("mask_name", ["none", "full"])
def test_nnx_mha_matches(mask_name):
  module = _nnx_mha(0)
  mask = MASKS[mask_name]
  params = jnn.params_from_nnx_mha(module)
  want = nnx.jit(lambda m, mask: m(X_Q, X_KV, mask=mask))(module, mask)
  got = jax.jit(jattn_batched)(params, X_Q, X_KV, mask)
  assert helpers.max_rel_error(got, want) < 1e-6

  # The same weights in the jattn nnx wrapper take the Flax mask as it is.
  wrapper = jnn.MultiHeadAttention(Dq, H, kv_dim=Dkv, out_dim=Do,
                                   use_bias=True, precision=HIGHEST,
                                   rngs=nnx.Rngs(key(1)))
  jnn.nnx_load_params(wrapper, params)
  got = jax.jit(lambda xq, xkv, m: wrapper(xq, xkv, m))(X_Q, X_KV, mask)
  assert helpers.max_rel_error(got, want) < 1e-6


def test_nnx_mha_sown_weights_match():
  module = _nnx_mha(2)
  params = jnn.params_from_nnx_mha(module)
  mask = MASKS["full"]
  _, sown = jnn.capture_intermediates(
      module, X_Q, X_KV, mask=mask, sow_weights=True)
  (want,) = jax.tree.leaves(sown)  # Flax's own sown weights (B, H, L, M)
  _, got = jax.vmap(lambda xq, xkv, m: jattn.multi_head_attention(
      params, xq, xkv, m, return_weights=True, precision=HIGHEST))(
          X_Q, X_KV, mask)
  assert got.shape == (B, H, Lq, M)
  assert helpers.max_rel_error(got, want) < 1e-6


@pytest.mark.skipif(
    "num_kv_heads" not in inspect.signature(
        nnx.MultiHeadAttention.__init__).parameters,
    reason="this Flax has no grouped-query nnx.MultiHeadAttention")
def test_nnx_grouped_query_heads():
  module = nnx.MultiHeadAttention(
      num_heads=4, in_features=Dq, qkv_features=4 * K, num_kv_heads=2,
      decode=False, precision=HIGHEST, rngs=nnx.Rngs(key(3)))
  params = jnn.params_from_nnx_mha(module)
  assert params["w_k"].shape == (Dq, 2, K)
  x = _normal(4, (B, Lq, Dq))
  mask = jnp.asarray(MASKS["full"][:, :1, :, :Lq])  # (B, 1, L, L)
  want = nnx.jit(lambda m, x, mask: m(x, mask=mask))(module, x, mask)
  got = jax.jit(jax.vmap(lambda x, m: jattn.self_attention(
      params, x, m, precision=HIGHEST)))(x, mask)
  assert helpers.max_rel_error(got, want) < 1e-6


def test_unsupported_modules_raise():
  module = _nnx_mha(4, normalize_qk=True)
  with pytest.raises(ValueError, match="normalize_qk"):
    jnn.params_from_nnx_mha(module)
  with pytest.raises(TypeError, match="module: expected a flax.nnx"):
    jnn.params_from_nnx_mha(nnx.Linear(2, 3, rngs=nnx.Rngs(key(0))))
  tree = {"query": {}, "key": {}, "value": {}, "out": {}, "query_ln": {}}
  with pytest.raises(ValueError, match="normalize_qk"):
    jnn.params_from_linen_mha(tree)
  with pytest.raises(ValueError, match="expected sublayers"):
    jnn.params_from_linen_mha({"query": {}})
