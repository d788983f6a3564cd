"""Tests for jattn.models.attention_weights: every layer's and head's weights
against a float64 NumPy oracle of the model, batching, and errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jattn import models
from tests import helpers
from tests import oracles as oracle_core
from tests import oracles_layers as oracle

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

N, V, D, H, L = 7, 6, 8, 2, 2
VALID = 5  # the last N - VALID tokens are padding
CONFIGS = {
    "rope_pre_ln": dict(kind="attention", d_model=D, num_layers=L,
                        num_heads=H, d_ff=12),
    "sinusoidal_post_ln_causal": dict(
        kind="attention", d_model=D, num_layers=L, num_heads=H, d_ff=12,
        positional="sinusoidal", pre_norm=False, causal=True),
}


@functools.cache
def _params(name):
  """init_model's layout filled with NumPy draws (float32)."""
  rng = np.random.default_rng(len(name))
  shapes = jax.eval_shape(
      lambda k: models.init_model(k, CONFIGS[name], V, N), jax.random.key(0))

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape)
    if jax.tree_util.keystr(path).endswith("['scale']"):
      noise = 1.0 + 0.1 * noise
    return jnp.asarray(noise if "embed" in jax.tree_util.keystr(path)
                       else 0.5 * noise, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _oracle(name, params, tokens, valid):
  """(L, H, N, N) weights of the model, from its equations in float64."""
  cfg = CONFIGS[name]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p["embed"]["table"][np.asarray(tokens)]
  rope = cfg.get("positional", "rope") == "rope"
  if not rope:
    x = x + oracle_core.sinusoidal(N, D)
  x = np.where(valid[:, None], x, 0.0)
  causal, pre_norm = cfg.get("causal", False), cfg.get("pre_norm", True)
  out = np.zeros((L, H, N, N))
  for l in range(L):
    lp = jax.tree.map(lambda a, l=l: a[l], p["layers"])
    a = lp["attention"]
    K = a["w_q"].shape[2]

    def attend(h, lp=lp, a=a, K=K, l=l):
      y = np.tile(a["b_o"], (N, 1))
      for head in range(H):
        q = h @ a["w_q"][:, head] + a["b_q"][head]
        k = h @ a["w_k"][:, head] + a["b_k"][head]
        v = h @ a["w_v"][:, head] + a["b_v"][head]
        if rope:
          q, k = oracle_core.rope(q, np.arange(N)), oracle_core.rope(
              k, np.arange(N))
        for i in range(N):
          keys = [j for j in range(N) if valid[j] and (j <= i or not causal)]
          scores = np.array([q[i] @ k[j] for j in keys]) / np.sqrt(K)
          w = np.exp(scores - scores.max())
          w /= w.sum()
          out[l, head, i, keys] = w
          y[i] += (w @ v[keys]) @ a["w_o"][head]
      return y

    norm_1 = lambda h, lp=lp: oracle.layer_norm(lp["norm_1"], h)
    norm_2 = lambda h, lp=lp: oracle.layer_norm(lp["norm_2"], h)
    ffn = lambda h, lp=lp: oracle.feed_forward(lp["ffn"], h)
    if pre_norm:
      h = x + attend(norm_1(x))
      x = h + ffn(norm_2(h))
    else:
      h = norm_1(x + attend(x))
      x = norm_2(h + ffn(h))
    x = np.where(valid[:, None], x, 0.0)
  return out


TOKENS = jnp.asarray([3, 1, 4, 1, 5, 2, 0], jnp.int32)
VALID_N = jnp.arange(N) < VALID


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_float64_oracle(name):
  fn = jax.jit(functools.partial(models.attention_weights,
                                 model_config=CONFIGS[name]))
  weights = fn(_params(name), TOKENS, VALID_N)
  assert weights.shape == (L, H, N, N) and weights.dtype == jnp.float32
  want = _oracle(name, _params(name), TOKENS, np.asarray(VALID_N))
  assert helpers.max_rel_error(weights, want) < 1e-5
  # Padded keys get nothing; every row sums to 1 over the real keys.
  np.testing.assert_array_equal(np.asarray(weights)[..., VALID:], 0.0)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-5)
  if CONFIGS[name].get("causal"):
    upper = np.triu(np.ones((N, N), bool), k=1)
    assert np.all(np.asarray(weights)[..., upper] == 0.0)


def test_vmap_matches_a_loop_over_examples():
  name = "rope_pre_ln"
  fn = functools.partial(models.attention_weights, model_config=CONFIGS[name])
  tokens_BN = jnp.stack([TOKENS, jnp.roll(TOKENS, 2)])
  mask_BN = jnp.stack([VALID_N, jnp.ones((N,), bool)])
  batched = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0)))(
      _params(name), tokens_BN, mask_BN)
  for b in range(2):
    np.testing.assert_allclose(
        batched[b], fn(_params(name), tokens_BN[b], mask_BN[b]), atol=1e-6)


def test_errors_name_the_argument():
  cnn = dict(kind="cnn", d_model=D, num_layers=1)
  with pytest.raises(ValueError, match="model_config: expected model.kind"):
    models.attention_weights(_params("rope_pre_ln"), TOKENS, model_config=cnn)
  with pytest.raises(ValueError, match="token_mask_N"):
    models.attention_weights(_params("rope_pre_ln"), TOKENS, VALID_N[:3],
                             model_config=CONFIGS["rope_pre_ln"])
