"""Flax wrappers of the sub-quadratic family: each equals its pure function
vmapped over the batch, holds the params of init_self_attention, and the
Performer's random features are non-trainable state that can be redrawn.

The pure functions are tested against oracles in test_local_attention,
test_linear_attention and test_performer; here only the wrapping is, with
one compilation per module (the blockwise path compiles slowly on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx
import pytest

import jattn
from jattn import nn as jnn
from jattn.attention import performer

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

B1, B2, N, D, H = 2, 1, 12, 8, 2


def _inputs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B1, B2, N, D)).astype(np.float32)
  mask = np.arange(N)[None, None, :] < np.array([9, 12])[:, None, None]
  return jnp.asarray(x), jnp.asarray(mask)   # mask (B1, B2, N): key padding


def _vmapped(layer_fn, params, x, mask, **kwargs):
  """jax.vmap of the pure layer over the flattened leading axes."""
  flat = jax.vmap(lambda x, m: layer_fn(params, x, m, **kwargs))(
      x.reshape(B1 * B2, N, D), mask.reshape(B1 * B2, N))
  return flat.reshape(B1, B2, N, D)


def _cases():
  """(nnx module, linen module, pure layer, pure kwargs) per subquadratic core."""
  local = jnn.LocalSelfAttention(D, H, window=(2, 0), rngs=nnx.Rngs(0))
  linear = jnn.LinearSelfAttention(D, H, is_causal=True, rngs=nnx.Rngs(1))
  favor = jnn.PerformerSelfAttention(D, H, num_features=8, rngs=nnx.Rngs(2))
  return [
      (local, jnn.linen.LocalSelfAttention(D, H, window=(2, 0)),
       jattn.local_self_attention, {"window": (2, 0)}),
      (linear, jnn.linen.LinearSelfAttention(D, H, is_causal=True),
       jattn.linear_self_attention, {"is_causal": True}),
      (favor, jnn.linen.PerformerSelfAttention(D, H, num_features=8),
       jattn.performer_self_attention,
       {"projection": favor.projection[...]}),
  ]


class WrapperTest(parameterized.TestCase):

  def test_nnx_and_linen_modules_equal_the_vmapped_pure_functions(self):
    x, mask = _inputs()
    for module, linen_module, layer_fn, kwargs in _cases():
      name = type(module).__name__
      params = jnn.params_from_nnx(module)
      self.assertEqual(
          jax.tree.map(jnp.shape, params),
          jax.tree.map(jnp.shape, jattn.init_self_attention(
              jax.random.key(0), D, H)), msg=name)
      y, expected = jax.jit(lambda x, m: (
          module(x, m), _vmapped(layer_fn, params, x, m, **kwargs)))(x, mask)
      self.assertEqual(y.shape, (B1, B2, N, D))
      np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6,
                                 err_msg=name)
      # linen: init declares the same params (and, for the Performer, its
      # features in "random_features"); apply with the nnx module's values
      # gives the same output.
      shapes = jax.eval_shape(linen_module.init, jax.random.key(0), x, mask)
      self.assertEqual(jax.tree.map(jnp.shape, dict(shapes["params"])),
                       jax.tree.map(jnp.shape, params), msg=name)
      variables = {"params": params}
      if "projection" in kwargs:
        self.assertEqual(
            shapes["random_features"]["projection"].shape, (8, D // H))
        variables["random_features"] = {"projection": kwargs["projection"]}
      else:
        self.assertEqual(set(shapes), {"params"})
      y_linen = jax.jit(linen_module.apply)(variables, x, mask)
      np.testing.assert_allclose(y_linen, y, rtol=1e-6, atol=1e-6,
                                 err_msg=name)

  def test_performer_features_are_state_and_redraw(self):
    module = jnn.PerformerSelfAttention(D, H, num_features=8,
                                        rngs=nnx.Rngs(0))
    self.assertEqual(module.projection[...].shape, (8, D // H))
    self.assertNotIn("projection", nnx.state(module, nnx.Param))
    self.assertIn("projection", nnx.state(module, jnn.RandomFeatures))
    x, mask = _inputs()
    call = nnx.jit(lambda module, x, m: module(x, m))
    before = call(module, x, mask)
    module.redraw(jax.random.key(5))
    np.testing.assert_array_equal(
        module.projection[...],
        performer.random_features(jax.random.key(5), 8, D // H))
    self.assertGreater(float(jnp.abs(call(module, x, mask) - before).max()),
                       1e-4)
