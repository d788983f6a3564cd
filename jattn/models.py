"""Sequence models for token tasks, built from jattn layers only.

Every model maps one sequence of N token ids to N rows of logits:

  tokens (N,) -> embedding (N, D) [+ positional encoding] -> L layers
             -> final layer norm -> linear classifier -> logits (N, V)

so the three architectures of the d2l comparison differ only in their
layers (same width D, same embedding and head):

  "attention"  `jattn.transformer_block` (self-attention + feed-forward, post-
               or pre-LN by `pre_norm`). Position enters through
               `positional`: "rope" (the default: rotary embeddings of
               queries and keys in every layer, so attention scores depend on
               relative offsets), "sinusoidal" (a fixed table added to the
               embedding), "learned" (a learned (max_len, D) table added) or
               "none" (no position at all: with `causal` the mask alone
               tells positions apart; without it the model is permutation-
               equivariant and cannot copy in order). On the delay-100
               copy task rope learns faster than sinusoidal and far faster
               than learned (whose small random init gives the model
               little to start from).
               `causal` masks attention to earlier tokens.
  "cnn"        residual conv blocks  x + relu(conv(LN(x))), kernel
               `kernel_size`, dilation 1 (`jattn.conv_layer`).
  "tcn"        the same blocks with dilations k^0, k^1, k^2, ... (k =
               kernel_size >= 2). The dilations cycle with period
               C = max(1, ceil(log_k N)), the depth at which the receptive
               field k^C first covers the whole sequence: layer i has
               dilation k^(i mod C). So num_layers = C covers the sequence
               once; more layers repeat the pattern.
  "local", "linear", "performer"
               the "attention" stack (same params, positional encodings,
               pre-/post-LN blocks) with its self-attention replaced by a
               sub-quadratic core (`attention_core`): sliding-window
               attention |j - i| < `window` (`jattn.local_attention`), linear
               attention with elu + 1 features (`jattn.linear_attention`), or
               FAVOR+ with `num_features` random features per head
               (`jattn.performer_attention`; one projection drawn from a fixed key,
               jax.random.key(0), shared by the layers, not trained).
  "rnn", "gru", "lstm"
               residual recurrent blocks  x + rnn(LN(x))  with an Elman, GRU
               or LSTM cell (`jattn.rnn_layer`), always forward (causal).

Convolutions use causal padding when `causal` is True, "same" padding
otherwise. The recurrent and conv models take no positional encoding (the
layers see order themselves); `positional` is read by "attention" only.

The token mask (True = real token) is passed to every layer: padded tokens
are zeroed, hidden from attention, skipped by recurrences and zeroed before
convolutions, so the logits at real positions do not depend on what is in the
padded positions. With right padding a causal model's real outputs do not
depend on padding even without the mask.

Params (a plain dict; hyperparameters live in the config, not here):

  embed  {"table": (V, D)}
  pos    {"table": (max_len, D)}        positional == "learned" only
  layers one layer's params with a leading layer axis L on every leaf
         (`jattn.init_stack`), applied with `jax.lax.scan` (unrolled for tcn,
         whose dilations differ per layer)
  norm   {"scale": (D,), "bias": (D,)}  the final layer norm
  head   {"w": (D, V), "b": (V,)}

A block of a conv or recurrent stack is {"norm": layer norm, "layer": the
jattn layer}. Dropout (`dropout_rate`, when not `deterministic`) is residual
dropout on each block's branch, with one key per layer.

The model config (an ml_collections ConfigDict, a dict, or any object with
attributes) holds:

  kind          one of KINDS (required)
  d_model       D (required)
  num_layers    L (required)
  num_heads     attention heads (default 4)
  d_ff          attention feed-forward width (default 4 D)
  kernel_size   conv kernel k (default 3)
  positional    "rope" (default), "sinusoidal", "learned" or "none"
  causal        causal attention / convolution (default False)
  pre_norm      pre-LN transformer blocks (default True)
  dropout_rate  residual dropout (default 0.0)
  window        local attention window w (default 32)
  num_features  Performer random features per head (default
                `jattn.attention.performer.default_num_features(d_model // num_heads)`)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import conv
from jattn import feedforward
from jattn import masks as masks_lib
from jattn import parallel
from jattn import positional as positional_lib
from jattn import rnn
from jattn import stack
from jattn import transformer
from jattn.attention import local as local_lib
from jattn.attention import linear as linear_lib
from jattn.attention import performer as performer_lib

KINDS = ("attention", "cnn", "tcn", "rnn", "gru", "lstm", "local", "linear",
         "performer")
# The sub-quadratic kinds: transformer blocks with a sub-quadratic core.
SUBQUADRATIC_KINDS = ("local", "linear", "performer")
# Kinds built as attention stacks (transformer blocks).
_ATTENTION_KINDS = ("attention",) + SUBQUADRATIC_KINDS
POSITIONAL = ("sinusoidal", "learned", "rope", "none")
_CELLS = {"rnn": "elman", "gru": "gru", "lstm": "lstm"}
_REQUIRED = object()
_DEFAULTS = {
    "num_heads": 4,
    "d_ff": None,  # 4 * d_model
    "kernel_size": 3,
    "positional": "rope",
    "causal": False,
    "pre_norm": True,
    "dropout_rate": 0.0,
    "window": 32,
    "num_features": None,  # performer_lib.default_num_features(head width)
}


def _get(config, name: str, default=_REQUIRED):
  """config.name or config[name], for ConfigDicts, dicts and namespaces."""
  if isinstance(config, Mapping) or hasattr(config, "keys"):
    found = name in config
    value = config[name] if found else None
  else:
    found = hasattr(config, name)
    value = getattr(config, name, None)
  if not found:
    if default is _REQUIRED:
      raise ValueError(
          f"model.{name}: expected a value in the model config, got none")
    return default
  return value


def _settings(model_config) -> dict:
  """The validated hyperparameters of a model config, as a plain dict."""
  kind = _get(model_config, "kind")
  if kind not in KINDS:
    raise ValueError(f"model.kind: expected one of {list(KINDS)}, got {kind!r}")
  s = {"kind": kind}
  for name in ("d_model", "num_layers"):
    s[name] = _get(model_config, name)
    _checks.check_positive_int(s[name], f"model.{name}")
  for name, default in _DEFAULTS.items():
    s[name] = _get(model_config, name, default)
  if s["d_ff"] is None:
    s["d_ff"] = 4 * s["d_model"]
  for name in ("num_heads", "d_ff", "kernel_size"):
    _checks.check_positive_int(s[name], f"model.{name}")
  for name in ("causal", "pre_norm"):
    if not isinstance(s[name], bool):
      raise TypeError(
          f"model.{name}: expected a bool, got {type(s[name]).__name__}")
  rate = s["dropout_rate"]
  if (isinstance(rate, bool) or not isinstance(rate, (int, float))
      or not 0.0 <= rate < 1.0):
    raise ValueError(
        f"model.dropout_rate: expected a float in [0, 1), got {rate!r}")
  s["dropout_rate"] = float(rate)
  if kind in _ATTENTION_KINDS:
    if s["positional"] not in POSITIONAL:
      raise ValueError(
          f"model.positional: expected one of {list(POSITIONAL)}, got "
          f"{s['positional']!r}")
    if s["d_model"] % s["num_heads"]:
      raise ValueError(
          f"model.num_heads: expected a divisor of d_model={s['d_model']}, "
          f"got {s['num_heads']}")
    if s["positional"] == "rope" and (s["d_model"] // s["num_heads"]) % 2:
      raise ValueError(
          f"model.num_heads: expected an even head width d_model / num_heads "
          f"for rope, got {s['d_model']} / {s['num_heads']}")
  if kind == "local":
    _checks.check_window(s["window"], "model.window")
  if kind == "performer":
    if s["num_features"] is None:
      s["num_features"] = performer_lib.default_num_features(
          s["d_model"] // s["num_heads"])
    _checks.check_positive_int(s["num_features"], "model.num_features")
  if kind == "tcn" and s["kernel_size"] < 2:
    raise ValueError(
        f"model.kernel_size: expected an int >= 2 for tcn, got "
        f"{s['kernel_size']}")
  return s


def tcn_cycle(kernel_size: int, seq_len: int, *, causal: bool = True) -> int:
  """C >= 1: the fewest layers with dilations 1, k, ..., k^(C-1) through
  which the last position reaches the first (causal: k^C >= N) and, for
  symmetric convolutions, the first reaches the last too (odd k:
  k^C >= 2N - 1, since a layer reaches (k - 1) / 2 dilations per side)."""
  if kernel_size == 1:
    return 1
  c, reach = 0, 0
  while c == 0 or reach < seq_len - 1:
    left, right = conv.conv_padding(kernel_size, causal=causal,
                                    dilation=kernel_size ** c)
    reach += left if causal else min(left, right)
    c += 1
  return c


def layer_dilations(model_config, seq_len: int) -> list[int]:
  """The dilation of each layer of a conv model (1 for every other kind)."""
  s = _settings(model_config)
  if s["kind"] != "tcn":
    return [1] * s["num_layers"]
  k = s["kernel_size"]
  c = tcn_cycle(k, seq_len, causal=s["causal"])
  return [k ** (i % c) for i in range(s["num_layers"])]


def _init_block(key, s):
  """One layer's params for the configured kind."""
  D = s["d_model"]
  if s["kind"] in _ATTENTION_KINDS:
    return transformer.init_transformer_block(key, D, s["num_heads"],
                                              s["d_ff"])
  if s["kind"] in ("cnn", "tcn"):
    layer = conv.init_conv_layer(key, D, s["kernel_size"])
  else:
    layer = rnn.init_rnn_layer(key, D, cell=_CELLS[s["kind"]])
  return {"norm": feedforward.init_layer_norm(D), "layer": layer}


def attention_core(model_config):
  """The attention core (`jattn.attention` signature) of an attention-kind
  model's blocks: None (the default `jattn.dot_product_attention`) for
  "attention", else the sub-quadratic core with its hyperparameters bound;
  under a mesh with seq > 1, ring attention for "attention"."""
  s = _settings(model_config)
  kind = s["kind"]
  if parallel.seq_parallel_active():
    if kind != "attention":
      raise ValueError(
          "mesh.seq: expected 1 for model.kind "
          f"{kind!r} (ring attention exists for exact softmax attention "
          "only: local, linear and Performer attention are not sequence-"
          "parallel), got a mesh with seq > 1")
    return parallel.ring_core()
  if kind == "local":
    return functools.partial(local_lib.local_attention, window=s["window"])
  if kind == "linear":
    return linear_lib.linear_attention
  if kind == "performer":
    # One projection drawn from a fixed key, shared by the layers.
    projection = performer_lib.random_features(
        jax.random.key(0), s["num_features"], s["d_model"] // s["num_heads"])
    return functools.partial(performer_lib.performer_attention,
                             projection=projection)
  return None


def init_model(key, model_config, vocab_size: int, max_len: int):
  """Parameters of a sequence model (layout in the module docstring).

  Args:
    key: PRNG key.
    model_config: the model config (fields in the module docstring).
    vocab_size: V, token ids are in [0, V).
    max_len: the longest sequence the model will see (sizes the learned
      positional table; other kinds accept any length).

  Returns:
    dict of float32 arrays.

  Call it eagerly: under `jax.jit` XLA compiles every random draw of every
  layer init, which takes longer on CPU (about 10 s for the d_model=64
  attention model) than running them one by one.
  """
  s = _settings(model_config)
  _checks.check_positive_int(vocab_size, "vocab_size")
  _checks.check_positive_int(max_len, "max_len")
  D, V = s["d_model"], vocab_size
  key_embed, key_pos, key_layers, key_head = jax.random.split(key, 4)
  params = {
      # Unit-variance rows: the same scale as the sinusoidal table.
      "embed": {"table": jax.random.normal(key_embed, (V, D), jnp.float32)},
      "layers": stack.init_stack(lambda k: _init_block(k, s), key_layers,
                                 s["num_layers"]),
      "norm": feedforward.init_layer_norm(D),
      "head": {
          "w": jax.nn.initializers.lecun_normal()(key_head, (D, V),
                                                  jnp.float32),
          "b": jnp.zeros((V,), jnp.float32),
      },
  }
  if s["kind"] in _ATTENTION_KINDS and s["positional"] == "learned":
    params["pos"] = positional_lib.init_learned_encoding(key_pos, max_len, D)
  return params


def _residual_block(layer_fn, **layer_kwargs):
  """x + Dropout(act(layer(LN(x)))) for {"norm", "layer"} block params."""
  act = layer_kwargs.pop("activation")

  def block(params, x_ND, mask=None, *, dropout_rate=0.0, dropout_key=None,
            deterministic=True, **extra):
    h_ND = feedforward.layer_norm(params["norm"], x_ND)
    h_ND = act(layer_fn(params["layer"], h_ND, mask, **layer_kwargs, **extra))
    if dropout_rate > 0.0 and not deterministic:
      h_ND = transformer.dropout(dropout_key, h_ND, dropout_rate)
    return masks_lib.zero_padded_rows(x_ND + h_ND, mask)

  return block


def embed(params, tokens_N, *, model_config):
  """Token embeddings (N, D) of one sequence: the input of `apply_embedded`."""
  del model_config  # every kind embeds the same way
  tokens_N = jnp.asarray(tokens_N)
  _checks.check_rank(tokens_N, "tokens_N", 1, example=True)
  _checks.check_integer(tokens_N, "tokens_N")
  return jnp.take(params["embed"]["table"], tokens_N, axis=0)


def apply_model(params, tokens_N, token_mask_N=None, *, model_config,
                dropout_key=None, deterministic: bool = True):
  """Logits of one sequence (batch with `jax.vmap`).

  Args:
    params: dict from `init_model` with the same config.
    tokens_N: (N,) integer token ids in [0, V).
    token_mask_N: optional bool (N,), True = real token.
    model_config: the config `params` were made with.
    dropout_key: PRNG key, required when dropout is on (dropout_rate > 0 and
      not deterministic); split into one key per layer.
    deterministic: switch dropout off (the default).

  Returns:
    float32 (N, V) logits: `apply_embedded(params, embed(params, tokens_N))`.
  """
  _check_model_params(params)
  x_ND = embed(params, tokens_N, model_config=model_config)
  return apply_embedded(params, x_ND, token_mask_N, model_config=model_config,
                        dropout_key=dropout_key, deterministic=deterministic)


def _check_model_params(params):
  if not isinstance(params, dict) or not {"embed", "layers", "norm",
                                          "head"} <= set(params):
    got = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(
        f"params: expected the dict of init_model (keys embed, layers, norm, "
        f"head), got {got}")


def apply_embedded(params, x_ND, token_mask_N=None, *, model_config,
                   dropout_key=None, deterministic: bool = True):
  """The model after its embedding lookup: positional encoding, layers,
  final norm and classifier, on embedded tokens x_ND (N, D).

  Useful to differentiate with respect to the inputs (e.g. the gradient of
  the loss with respect to each input position). Other arguments as in
  `apply_model`.

  Returns:
    float32 (N, V) logits.
  """
  s = _settings(model_config)
  _check_model_params(params)
  x_ND = jnp.asarray(x_ND)
  _checks.check_rank(x_ND, "x_ND", 2, example=True)
  _checks.check_floating(x_ND, "x_ND")
  N = x_ND.shape[0]
  mask_N = None
  if token_mask_N is not None:
    _checks.check_bool(token_mask_N, "token_mask_N")
    _checks.check_shape(token_mask_N, "token_mask_N", (N,))
    mask_N = jnp.asarray(token_mask_N)
  if not isinstance(deterministic, bool):
    raise TypeError(
        f"deterministic: expected a bool, got {type(deterministic).__name__}")
  rate = s["dropout_rate"]
  use_dropout = rate > 0.0 and not deterministic
  if use_dropout and dropout_key is None:
    raise ValueError(
        f"dropout_key: expected a PRNG key when model.dropout_rate={rate} > 0 "
        "and deterministic=False, got None")
  layer_key = dropout_key if use_dropout else None
  D = s["d_model"]
  V = params["head"]["w"].shape[1]

  _checks.check_shape(x_ND, "x_ND", (N, D))
  kind = s["kind"]
  if kind in _ATTENTION_KINDS:
    x_ND, rope_positions = _add_position(params, x_ND, s)
    x_ND = masks_lib.zero_padded_rows(x_ND, mask_N)
    # Under a mesh with a "seq" axis > 1 (jax.set_mesh), the same blocks
    # with ring attention over the sharded sequence (jattn.parallel).
    block = functools.partial(transformer.transformer_block,
                              attention_fn=attention_core(model_config))
    x_ND = stack.apply_stack(
        block, params["layers"], x_ND, mask_N,
        key=layer_key, pre_norm=s["pre_norm"], is_causal=s["causal"],
        positions=rope_positions, dropout_rate=rate,
        deterministic=not use_dropout, unroll=True)
  else:
    x_ND = masks_lib.zero_padded_rows(x_ND, mask_N)
    if kind in ("cnn", "tcn"):
      block = _residual_block(conv.conv_layer, activation=jax.nn.relu,
                              causal=s["causal"])
      dilations = layer_dilations(model_config, N)
      per_layer = ([{"dilation": d} for d in dilations] if kind == "tcn"
                   else None)
    else:
      block = _residual_block(rnn.rnn_layer, activation=lambda h: h)
      per_layer = None
    x_ND = stack.apply_stack(block, params["layers"], x_ND, mask_N,
                             key=layer_key, per_layer_kwargs=per_layer,
                             dropout_rate=rate, deterministic=not use_dropout,
                             unroll=True)

  x_ND = feedforward.layer_norm(params["norm"], x_ND)
  logits_NV = (jnp.matmul(x_ND.astype(jnp.float32),
                          params["head"]["w"].astype(jnp.float32))
               + params["head"]["b"].astype(jnp.float32)[None, :])
  chex.assert_shape(logits_NV, (N, V))
  chex.assert_type(logits_NV, jnp.float32)
  return logits_NV


def _add_position(params, x_ND, s):
  """(x_ND + the positional table, None), or (x_ND, rope positions (N,))."""
  N, D = x_ND.shape
  if s["positional"] == "sinusoidal":
    return (x_ND + positional_lib.sinusoidal_encoding(N, D, dtype=x_ND.dtype),
            None)
  if s["positional"] == "learned":
    if "pos" not in params:
      raise ValueError(
          "params: expected a 'pos' table for model.positional='learned', "
          f"got keys {sorted(params)}")
    max_len = params["pos"]["table"].shape[0]
    if N > max_len:
      raise ValueError(
          f"x_ND (embedded tokens_N): expected a length <= "
          f"max_len={max_len} (the learned positional table), got {N}")
    return x_ND + params["pos"]["table"][:N], None
  if s["positional"] == "none":
    return x_ND, None
  return x_ND, jnp.arange(N)


def attention_weights(params, tokens_N, token_mask_N=None, *, model_config):
  """The attention weights of every layer and head of an "attention" model
  on one sequence (no dropout), e.g. to draw them (`jattn.plot`).

  Args:
    params: dict from `init_model` (or `jattn.checkpoint.load_params`).
    tokens_N: (N,) integer token ids.
    token_mask_N: optional bool (N,), True = real token.
    model_config: the config `params` were made with (kind "attention").

  Returns:
    (L, H, N, N) weights, float32 (float64 for float64 params), with
    L = num_layers and H = num_heads: entry [l, h, i, j] is the weight query
    i gives to key j in head h of layer l (the layers of `apply_model`, each
    `jattn.transformer_block` with `return_weights=True`). Every row sums to
    1 over the real keys; masked keys get 0.
  """
  s = _settings(model_config)
  if s["kind"] != "attention":
    raise ValueError(
        "model_config: expected model.kind 'attention' (the kind whose "
        f"dense attention weights this returns), got {s['kind']!r}")
  _check_model_params(params)
  x_ND = embed(params, tokens_N, model_config=model_config)
  N = x_ND.shape[0]
  mask_N = None
  if token_mask_N is not None:
    _checks.check_bool(token_mask_N, "token_mask_N")
    _checks.check_shape(token_mask_N, "token_mask_N", (N,))
    mask_N = jnp.asarray(token_mask_N)
  x_ND, rope_positions = _add_position(params, x_ND, s)
  x_ND = masks_lib.zero_padded_rows(x_ND, mask_N)

  def layer(h_ND, layer_params):
    return transformer.transformer_block(
        layer_params, h_ND, mask_N, pre_norm=s["pre_norm"],
        is_causal=s["causal"], positions=rope_positions, return_weights=True)

  _, weights_LHNN = jax.lax.scan(layer, x_ND, params["layers"])
  chex.assert_shape(weights_LHNN, (s["num_layers"], s["num_heads"], N, N))
  chex.assert_type(weights_LHNN, jnp.promote_types(x_ND.dtype, jnp.float32))
  return weights_LHNN


def count_params(params) -> int:
  """Total number of scalars in a params pytree (`jattn.count_params`)."""
  return stack.count_params(params)


def num_params(model_config, vocab_size: int, max_len: int) -> int:
  """Parameter count of `init_model(...)`, computed without allocating."""
  shapes = jax.eval_shape(
      lambda k: init_model(k, model_config, vocab_size, max_len),
      jax.random.key(0))
  return count_params(shapes)


def describe(model_config, vocab_size: int, max_len: int) -> str:
  """One line: kind, sizes and parameter count, e.g.
  "attention: 2 layers, d_model=64, 4 heads, d_ff=128, sinusoidal, 68,491
  params"."""
  s = _settings(model_config)
  plural = "s" if s["num_layers"] > 1 else ""
  parts = [f"{s['num_layers']} layer{plural}", f"d_model={s['d_model']}"]
  if s["kind"] in _ATTENTION_KINDS:
    parts += [f"{s['num_heads']} heads", f"d_ff={s['d_ff']}", s["positional"],
              "pre-LN" if s["pre_norm"] else "post-LN"]
    if s["kind"] == "local":
      parts.append(f"window {s['window']}")
    elif s["kind"] == "performer":
      parts.append(f"{s['num_features']} random features")
  elif s["kind"] in ("cnn", "tcn"):
    dil = layer_dilations(model_config, max_len)
    parts += [f"kernel {s['kernel_size']}", f"dilations {dil}",
              "receptive field "
              f"{stack.receptive_field(s['kernel_size'], dil)}"]
  else:
    parts.append(f"{_CELLS[s['kind']]} cell")
  if s["causal"] or s["kind"] in _CELLS:
    parts.append("causal")
  count = num_params(model_config, vocab_size, max_len)
  return f"{s['kind']}: {', '.join(parts)}, {count:,} params"
