"""Tests for jattn.models: shapes, parameter counts, masking, causality, and
the composition of layers against a float64 NumPy oracle."""

from __future__ import annotations

import functools
import types

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jattn import models
from tests import helpers
from tests import oracles as oracle_core
from tests import oracles_layers as oracle

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

B, N, V, D = 2, 10, 7, 8
VALID = 7  # real tokens per example; the last N - VALID are padding
CONFIGS = {
    "attention": dict(kind="attention", d_model=D, num_layers=2, num_heads=2,
                      d_ff=16),
    "attention_post_ln_learned": dict(
        kind="attention", d_model=D, num_layers=2, num_heads=2, d_ff=16,
        positional="learned", pre_norm=False),
    "attention_sinusoidal_causal": dict(
        kind="attention", d_model=D, num_layers=2, num_heads=2, d_ff=16,
        positional="sinusoidal", causal=True),
    "cnn": dict(kind="cnn", d_model=D, num_layers=2, kernel_size=3),
    "cnn_causal": dict(kind="cnn", d_model=D, num_layers=2, kernel_size=3,
                       causal=True),
    "tcn_causal": dict(kind="tcn", d_model=D, num_layers=5, kernel_size=2,
                       causal=True),
    "rnn": dict(kind="rnn", d_model=D, num_layers=2),
    "gru": dict(kind="gru", d_model=D, num_layers=2),
    "lstm": dict(kind="lstm", d_model=D, num_layers=2),
}
CAUSAL = ("attention_sinusoidal_causal", "cnn_causal", "tcn_causal", "rnn",
          "gru", "lstm")
NONCAUSAL = ("attention", "attention_post_ln_learned", "cnn")


@functools.cache
def _shapes(name):
  return jax.eval_shape(
      lambda key: models.init_model(key, CONFIGS[name], V, N),
      jax.random.key(0))


@functools.cache
def _params(name):
  """Random params in init_model's layout, drawn with NumPy.

  (Running init_model compiles every random draw, which is slow on CPU; it
  runs for real in test_init_model.)
  """
  rng = np.random.default_rng(sum(map(ord, name)))

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape)
    if jax.tree_util.keystr(path).endswith("['scale']"):
      noise = 1.0 + 0.1 * noise
    else:
      noise = 0.3 * noise
    return jnp.asarray(noise, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, _shapes(name))


@functools.cache
def _forward(name):
  """jit(vmap(apply_model)) for one config: (B, N) tokens, mask -> logits."""
  cfg = CONFIGS[name]
  return jax.jit(jax.vmap(
      lambda p, t, m: models.apply_model(p, t, m, model_config=cfg),
      in_axes=(None, 0, 0)))


def _tokens(seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, V, (B, N)), jnp.int32)


MASK = jnp.broadcast_to(jnp.arange(N)[None] < VALID, (B, N))
ALL = jnp.ones((B, N), bool)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_shape_and_dtype(name):
  logits = _forward(name)(_params(name), _tokens(0), MASK)
  chex.assert_shape(logits, (B, N, V))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)
  for leaf in jax.tree.leaves(_shapes(name)):
    assert leaf.dtype == jnp.float32


def test_init_model():
  cfg = CONFIGS["cnn"]
  params = models.init_model(jax.random.key(0), cfg, V, N)
  chex.assert_trees_all_equal_shapes_and_dtypes(params, _shapes("cnn"))
  chex.assert_tree_all_finite(params)
  again = models.init_model(jax.random.key(0), cfg, V, N)
  chex.assert_trees_all_equal(params, again)
  w = params["layers"]["layer"]["w"]
  assert not np.allclose(w[0], w[1])  # layers are drawn independently
  np.testing.assert_array_equal(params["norm"]["scale"], np.ones(D))
  np.testing.assert_array_equal(params["head"]["b"], np.zeros(V))
  assert sorted(params) == ["embed", "head", "layers", "norm"]
  assert "pos" in _shapes("attention_post_ln_learned")
  assert "pos" not in _shapes("attention")


def _expected_count(cfg, vocab, max_len):
  """Parameter count from the layer equations, written out by hand."""
  d, L = cfg["d_model"], cfg["num_layers"]
  norm = 2 * d
  if cfg["kind"] == "attention":
    f = cfg["d_ff"]
    attention = 4 * d * d + 4 * d       # w_q, w_k, w_v, w_o and their biases
    ffn = d * f + f + f * d + d
    block = attention + ffn + 2 * norm
  elif cfg["kind"] in ("cnn", "tcn"):
    block = cfg["kernel_size"] * d * d + d + norm
  else:
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cfg["kind"]]
    block = gates * (2 * d * d + d) + norm
  total = vocab * d + L * block + norm + d * vocab + vocab
  if cfg.get("positional") == "learned":
    total += max_len * d
  return total


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_counts(name):
  cfg = CONFIGS[name]
  want = _expected_count(cfg, V, N)
  assert models.count_params(_shapes(name)) == want
  assert models.num_params(cfg, V, N) == want
  text = models.describe(cfg, V, N)
  assert text.startswith(cfg["kind"] + ":")
  assert f"{want:,} params" in text


def test_suggested_sizes_have_comparable_parameter_counts():
  """Sizes suggested for the copy task (V = 11, N = 120); printed with -s."""
  suggested = [
      dict(kind="attention", d_model=64, num_layers=2, num_heads=4, d_ff=128),
      dict(kind="cnn", d_model=64, num_layers=5, kernel_size=3),
      dict(kind="tcn", d_model=64, num_layers=5, kernel_size=3),
      dict(kind="rnn", d_model=64, num_layers=8),
      dict(kind="gru", d_model=64, num_layers=3),
      dict(kind="lstm", d_model=64, num_layers=2),
  ]
  counts = []
  for cfg in suggested:
    print(models.describe(cfg, 11, 120))
    counts.append(models.num_params(cfg, 11, 120))
    assert counts[-1] == _expected_count(cfg, 11, 120)
  assert max(counts) / min(counts) < 1.25
  tcn = models.describe(suggested[2], 11, 120)
  assert "dilations [1, 3, 9, 27, 81]" in tcn and "receptive field 243" in tcn


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_does_not_affect_real_positions(name):
  forward, params = _forward(name), _params(name)
  tokens = _tokens(1)
  other = tokens.at[:, VALID:].set(_tokens(2)[:, VALID:])
  a = np.asarray(forward(params, tokens, MASK))
  b = np.asarray(forward(params, other, MASK))
  np.testing.assert_allclose(a[:, :VALID], b[:, :VALID], rtol=1e-6, atol=1e-6)
  # Without the mask a non-causal model does read the padding (so the check
  # above can fail); a causal one does not, since the padding is on the right.
  a = np.asarray(forward(params, tokens, ALL))
  b = np.asarray(forward(params, other, ALL))
  leaked = np.max(np.abs(a[:, :VALID] - b[:, :VALID]))
  if name in CAUSAL:
    assert leaked < 1e-6
  else:
    assert leaked > 1e-3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_causality(name):
  """Changing token t changes no output before t in a causal model."""
  forward, params = _forward(name), _params(name)
  t = 5
  tokens = _tokens(3)
  other = tokens.at[:, t].set((tokens[:, t] + 1) % V)
  a = np.asarray(forward(params, tokens, ALL))
  b = np.asarray(forward(params, other, ALL))
  before = np.max(np.abs(a[:, :t] - b[:, :t]))
  assert np.max(np.abs(a[:, t] - b[:, t])) > 1e-4  # the change is seen
  if name in CAUSAL:
    assert before < 1e-6
  else:
    assert before > 1e-4


# --------------------------------------------------------- float64 oracle


def _attention_block(p, x, valid, *, pre_norm, causal, rope):
  """A transformer block (rotary embeddings optional) from its equations."""
  n, d = x.shape
  x = np.where(valid[:, None], x, 0.0)
  a = p["attention"]
  _, H, K = a["w_q"].shape

  def attend(h):
    y = np.tile(a["b_o"], (n, 1))
    for head in range(H):
      q = h @ a["w_q"][:, head] + a["b_q"][head]
      k = h @ a["w_k"][:, head] + a["b_k"][head]
      v = h @ a["w_v"][:, head] + a["b_v"][head]
      if rope:
        q = oracle_core.rope(q, np.arange(n))
        k = oracle_core.rope(k, np.arange(n))
      for i in range(n):
        keys = [j for j in range(n) if valid[j] and (j <= i or not causal)]
        scores = np.array([q[i] @ k[j] for j in keys]) / np.sqrt(K)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        y[i] += (weights @ v[keys]) @ a["w_o"][head]
    return y

  norm_1 = lambda h: oracle.layer_norm(p["norm_1"], h)
  norm_2 = lambda h: oracle.layer_norm(p["norm_2"], h)
  ffn = lambda h: oracle.feed_forward(p["ffn"], h)
  if pre_norm:
    h = x + attend(norm_1(x))
    y = h + ffn(norm_2(h))
  else:
    h = norm_1(x + attend(x))
    y = norm_2(h + ffn(h))
  return np.where(valid[:, None], y, 0.0)


def _oracle_model(name, params, tokens, mask):
  """The model of the docstring composed from the NumPy layer oracles."""
  cfg = CONFIGS[name]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p["embed"]["table"][np.asarray(tokens)]
  mask = np.asarray(mask, bool)
  kind = cfg["kind"]
  if kind == "attention":
    positional = cfg.get("positional", "rope")
    if positional == "sinusoidal":
      x = x + oracle_core.sinusoidal(len(tokens), D)
    elif positional == "learned":
      x = x + p["pos"]["table"][: len(tokens)]
  x = np.where(mask[:, None], x, 0.0)
  k = cfg.get("kernel_size", 3)
  cycle = 1
  while k ** cycle < len(tokens):
    cycle += 1
  for i in range(cfg["num_layers"]):
    layer = jax.tree.map(lambda a, i=i: a[i], p["layers"])
    if kind == "attention":
      x = _attention_block(layer, x, mask, pre_norm=cfg.get("pre_norm", True),
                           causal=cfg.get("causal", False),
                           rope=positional == "rope")
      continue
    h = oracle.layer_norm(layer["norm"], x)
    if kind in ("cnn", "tcn"):
      dilation = k ** (i % cycle) if kind == "tcn" else 1
      h = np.maximum(oracle.conv(layer["layer"], h, mask,
                                 causal=cfg.get("causal", False),
                                 dilation=dilation), 0.0)
    else:
      h = oracle.rnn(layer["layer"], h, mask)
    x = np.where(mask[:, None], x + h, 0.0)
  x = oracle.layer_norm(p["norm"], x)
  return x @ p["head"]["w"] + p["head"]["b"]


@pytest.mark.parametrize("name", ["attention", "attention_post_ln_learned",
                                  "attention_sinusoidal_causal", "tcn_causal",
                                  "cnn", "rnn", "gru", "lstm"])
def test_matches_float64_oracle(name):
  tokens = _tokens(4)
  logits = np.asarray(_forward(name)(_params(name), tokens, MASK))
  for b in range(B):
    want = _oracle_model(name, _params(name), tokens[b], MASK[b])
    assert helpers.max_rel_error(logits[b], want) < 1e-5, b


def test_tcn_dilations_cycle_once_the_sequence_is_covered():
  cfg = CONFIGS["tcn_causal"]  # k = 2, N = 10: 2^4 = 16 >= 10, so C = 4
  assert models.layer_dilations(cfg, N) == [1, 2, 4, 8, 1]
  assert models.layer_dilations(dict(cfg, num_layers=3), 1000) == [1, 2, 4]
  assert models.layer_dilations(CONFIGS["cnn"], N) == [1, 1]
  assert models.tcn_cycle(3, 120) == 5 and models.tcn_cycle(3, 243) == 5
  assert models.tcn_cycle(3, 244) == 6 and models.tcn_cycle(2, 1) == 1
  # Symmetric kernels reach (k - 1) / 2 dilations per side: 3^C >= 2N - 1.
  assert models.tcn_cycle(3, 70, causal=False) == 5
  assert models.tcn_cycle(3, 41, causal=False) == 4
  assert models.tcn_cycle(3, 42, causal=False) == 5


class ApplyVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_single_example_matches_the_batched_model(self):
    name = "rnn"
    cfg = CONFIGS[name]
    apply = self.variant(functools.partial(models.apply_model,
                                           model_config=cfg))
    tokens = _tokens(5)
    batched = np.asarray(_forward(name)(_params(name), tokens, MASK))
    for b in range(B):
      one = apply(_params(name), tokens[b], MASK[b])
      chex.assert_shape(one, (N, V))
      np.testing.assert_allclose(one, batched[b], rtol=1e-6, atol=1e-6)


def test_config_may_be_a_configdict_dict_or_namespace():
  cfg = CONFIGS["cnn"]
  tokens = _tokens(6)[0]
  want = models.apply_model(_params("cnn"), tokens, model_config=cfg)
  for other in (ml_collections.ConfigDict(cfg), types.SimpleNamespace(**cfg)):
    got = models.apply_model(_params("cnn"), tokens, model_config=other)
    np.testing.assert_array_equal(got, want)
  # Without a mask every token is real.
  np.testing.assert_allclose(
      want, models.apply_model(_params("cnn"), tokens, jnp.ones(N, bool),
                               model_config=cfg), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["attention", "gru"])
def test_dropout(kind):
  cfg = dict(CONFIGS[kind], dropout_rate=0.5)
  params = _params(kind)
  tokens = _tokens(7)[0]
  apply = jax.jit(lambda key, det: models.apply_model(
      params, tokens, model_config=cfg, dropout_key=key, deterministic=det),
                  static_argnums=1)
  off = np.asarray(_forward(kind)(params, _tokens(7), ALL))[0]
  key = jax.random.key(1)
  np.testing.assert_allclose(apply(key, True), off, rtol=1e-6, atol=1e-6)
  on = np.asarray(apply(key, False))
  assert np.max(np.abs(on - off)) > 1e-3
  np.testing.assert_array_equal(apply(key, False), on)
  assert np.max(np.abs(apply(jax.random.key(2), False) - on)) > 1e-3
  with pytest.raises(ValueError, match="dropout_key"):
    models.apply_model(params, tokens, model_config=cfg, deterministic=False)


@pytest.mark.parametrize("call,error,words", [
    (lambda: models.init_model(jax.random.key(0), dict(CONFIGS["cnn"],
                                                       kind="mlp"), V, N),
     ValueError, ["model.kind", "attention", "'mlp'"]),
    (lambda: models.describe(dict(kind="cnn", num_layers=2), V, N),
     ValueError, ["model.d_model"]),
    (lambda: models.init_model(jax.random.key(0), dict(CONFIGS["attention"],
                                                       num_heads=3), V, N),
     ValueError, ["model.num_heads", "divisor", "got 3"]),
    (lambda: models.init_model(jax.random.key(0), dict(CONFIGS["cnn"],
                                                       dropout_rate=1.0), V, N),
     ValueError, ["model.dropout_rate", "[0, 1)"]),
    (lambda: models.init_model(jax.random.key(0), dict(CONFIGS["attention"],
                                                       positional="alibi"),
                               V, N),
     ValueError, ["model.positional", "'alibi'"]),
    (lambda: models.init_model(jax.random.key(0), dict(CONFIGS["cnn"],
                                                       causal=1), V, N),
     TypeError, ["model.causal", "bool"]),
    (lambda: models.init_model(jax.random.key(0), dict(kind="tcn", d_model=4,
                                                       num_layers=2,
                                                       kernel_size=1), V, N),
     ValueError, ["model.kernel_size", ">= 2"]),
    (lambda: models.apply_model(_params("cnn"), jnp.zeros(N),
                                model_config=CONFIGS["cnn"]),
     TypeError, ["tokens_N", "integer"]),
    (lambda: models.apply_model(_params("cnn"), jnp.zeros((1, N), jnp.int32),
                                model_config=CONFIGS["cnn"]),
     ValueError, ["tokens_N", "rank 1"]),
    (lambda: models.apply_model(_params("cnn"), jnp.zeros(N, jnp.int32),
                                jnp.ones(N - 1, bool),
                                model_config=CONFIGS["cnn"]),
     ValueError, ["token_mask_N", f"({N},)"]),
    (lambda: models.apply_model(_params("attention_post_ln_learned"),
                                jnp.zeros(N + 1, jnp.int32),
                                model_config=CONFIGS[
                                    "attention_post_ln_learned"]),
     ValueError, ["tokens_N", f"max_len={N}", f"got {N + 1}"]),
    (lambda: models.apply_model({"embed": 1}, jnp.zeros(N, jnp.int32),
                                model_config=CONFIGS["cnn"]),
     ValueError, ["params", "init_model"]),
])
def test_errors_name_the_argument(call, error, words):
  with pytest.raises(error) as info:
    call()
  for word in words:
    assert word in str(info.value)
