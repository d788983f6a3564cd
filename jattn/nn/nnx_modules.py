"""`flax.nnx` wrappers of the jattn layers.

Each module initialises its parameters with the jattn `init_*` function (key
`rngs.params()`), holds them as `nnx.Param`s named like the pure params dict
(`nnx.state(module, nnx.Param)` has the dict's structure), and calls the pure
function vmapped over any number of leading batch axes. They hold no math of
their own. Hyperparameters the pure function takes as keyword arguments
(is_causal, dilation, pre_norm, ...) are module attributes.

Batching: the main input is (*B, N, D) (or (*B, L, Dq) for queries); every
other batched argument (masks, biases, positions, key/value inputs) has the
same leading axes *B, each of size B_i or 1 (shared), then its per-example
shape. Zero batch axes run a single example.

Attention weights (float32, (*B, H, L, M)): `return_weights=True` returns
(y, weights); `sow_weights=True` (attribute or call argument) sows them as
`nnx.Intermediate` "attention_weights" (collect them with
`jattn.nn.capture_intermediates`, which works on every supported Flax).

`param_dtype` is the parameters' dtype (the init functions' `dtype`);
outputs have the inputs' dtype, as in the pure functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jattn import additive
from jattn import conv
from jattn import multihead
from jattn import positional
from jattn import rnn
from jattn import subquadratic
from jattn import transformer
from jattn.attention import performer as performer_lib
from jattn.nn import _calls
from jattn.nn._nnx_params import get_params
from jattn.nn._nnx_params import set_params

ATTENTION_WEIGHTS = "attention_weights"


def _first(*values):
  for value in values:
    if value is not None:
      return value
  return None


def _emit_weights(module, y, weights, return_weights, sow_weights):
  """Returns y or (y, weights); sows the weights if asked."""
  if _first(sow_weights, module.sow_weights):
    module.sow(nnx.Intermediate, ATTENTION_WEIGHTS, weights)
  return (y, weights) if return_weights else y


class MultiHeadAttention(nnx.Module):
  """`jattn.multi_head_attention`: (*B, L, Dq), (*B, M, Dkv) -> (*B, L, Do).

  Params: w_q (Dq, H, K), w_k (Dkv, G, K), w_v (Dkv, G, K), w_o (H, K, Do)
  and, with use_bias, b_q, b_k, b_v, b_o (see `jattn.multihead`).
  """

  def __init__(self, d_model: int, num_heads: int, *,
               kv_dim: int | None = None, out_dim: int | None = None,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               precision=None, sow_weights: bool = False,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.is_causal = is_causal
    self.scale = scale
    self.precision = precision
    self.sow_weights = sow_weights
    set_params(self, multihead.init_multi_head_attention(
        rngs.params(), d_model, num_heads, kv_dim=kv_dim, out_dim=out_dim,
        head_dim=head_dim, num_kv_heads=num_kv_heads, use_bias=use_bias,
        dtype=param_dtype))

  def __call__(self, x_q, x_kv, mask=None, *, bias=None, q_positions=None,
               kv_positions=None, return_weights: bool = False,
               sow_weights: bool | None = None):
    """Attends x_q (*B, L, Dq) over x_kv (*B, M, Dkv).

    mask: bool (*B, ...) with per-example part broadcastable to (H, L, M),
    True = may attend. bias: float, likewise. q_positions (*B, L) and
    kv_positions (*B, M): rotary embeddings. Returns (*B, L, Do) (and the
    weights (*B, H, L, M) if return_weights).
    """
    y, weights = _calls.multi_head_attention(
        get_params(self), x_q, x_kv, mask, bias=bias, q_positions=q_positions,
        kv_positions=kv_positions, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class SelfAttention(nnx.Module):
  """`jattn.self_attention`: (*B, N, D) -> (*B, N, D).

  Params as `MultiHeadAttention` with Dq = Dkv = Do = D.
  """

  def __init__(self, d_model: int, num_heads: int, *,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               precision=None, sow_weights: bool = False,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.is_causal = is_causal
    self.scale = scale
    self.precision = precision
    self.sow_weights = sow_weights
    set_params(self, multihead.init_self_attention(
        rngs.params(), d_model, num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, use_bias=use_bias, dtype=param_dtype))

  def __call__(self, x, mask=None, *, bias=None, positions=None,
               return_weights: bool = False, sow_weights: bool | None = None):
    """x (*B, N, D); mask/bias (*B, ...) broadcastable per example to
    (H, N, N); positions (*B, N) for rotary embeddings. Returns (*B, N, D)
    (and the weights (*B, H, N, N) if return_weights)."""
    y, weights = _calls.self_attention(
        get_params(self), x, mask, bias=bias, positions=positions,
        scale=self.scale, is_causal=self.is_causal, precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class AdditiveAttention(nnx.Module):
  """`jattn.additive_attention`: q (*B, L, Dq), k (*B, M, Dk), v (*B, M, V)
  -> (*B, L, V). Params: w_q (Dq, A), w_k (Dk, A), w_v (A,)."""

  def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, *,
               sow_weights: bool = False, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.sow_weights = sow_weights
    set_params(self, additive.init_additive_attention(
        rngs.params(), query_dim, key_dim, hidden_dim, dtype=param_dtype))

  def __call__(self, q, k, v, mask=None, *, return_weights: bool = False,
               sow_weights: bool | None = None):
    """mask: bool (*B, ...) broadcastable per example to (L, M). Returns
    (*B, L, V) (and the weights (*B, L, M) if return_weights)."""
    y, weights = _calls.additive_attention(get_params(self), q, k, v, mask)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class LearnedEncoding(nnx.Module):
  """`jattn.learned_encoding`: integer positions -> positions.shape + (D,).

  Params: table (P, D). Add the result to the token embeddings yourself
  (`x + enc(jnp.arange(n))`).
  """

  def __init__(self, num_positions: int, d_model: int, *,
               stddev: float = 0.02, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    set_params(self, positional.init_learned_encoding(
        rngs.params(), num_positions, d_model, stddev=stddev,
        dtype=param_dtype))

  def __call__(self, positions):
    """positions: integers in [0, P), any shape (batch axes included)."""
    return _calls.learned_encoding(get_params(self), positions)


class SinusoidalEncoding(nnx.Module):
  """`jattn.sinusoidal_encoding` rows: positions -> positions.shape + (D,).

  No parameters: the table (P, D) is a constant recomputed at trace time.
  """

  def __init__(self, num_positions: int, d_model: int, *,
               base: float = 10000.0, dtype=jnp.float32):
    self.num_positions = num_positions
    self.d_model = d_model
    self.base = base
    self.dtype = dtype

  def __call__(self, positions):
    """positions: integers in [0, P), any shape."""
    table = _calls.sinusoidal_table(self.num_positions, self.d_model,
                                    base=self.base, dtype=self.dtype)
    return _calls.learned_encoding(table, positions)


class ConvLayer(nnx.Module):
  """`jattn.conv_layer`: (*B, N, D) -> (*B, N, D). Params: w (k, D, D),
  b (D,) with use_bias."""

  def __init__(self, d_model: int, kernel_size: int, *,
               use_bias: bool = True, causal: bool = False,
               dilation: int = 1, precision=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.causal = causal
    self.dilation = dilation
    self.precision = precision
    set_params(self, conv.init_conv_layer(
        rngs.params(), d_model, kernel_size, use_bias=use_bias,
        dtype=param_dtype))

  def __call__(self, x, mask=None):
    """x (*B, N, D); mask: bool (*B, N), True = real token."""
    return _calls.conv_layer(get_params(self), x, mask, causal=self.causal,
                             dilation=self.dilation, precision=self.precision)


class RNNLayer(nnx.Module):
  """`jattn.rnn_layer`: (*B, N, D) -> (*B, N, D). Params as
  `jattn.init_rnn_layer` (bidirectional: "forward" and "backward" groups)."""

  def __init__(self, d_model: int, *, cell: str = "gru",
               hidden_dim: int | None = None, bidirectional: bool = False,
               reverse: bool = False, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.reverse = reverse
    set_params(self, rnn.init_rnn_layer(
        rngs.params(), d_model, cell=cell, hidden_dim=hidden_dim,
        bidirectional=bidirectional, dtype=param_dtype))

  def __call__(self, x, mask=None):
    """x (*B, N, D); mask: bool (*B, N), True = real token."""
    return _calls.rnn_layer(get_params(self), x, mask, reverse=self.reverse)


class TransformerBlock(nnx.Module):
  """`jattn.transformer_block`: (*B, N, D) -> (*B, N, D).

  Params: groups "attention", "norm_1", "ffn", "norm_2". Residual dropout
  runs when dropout_rate > 0 and deterministic is False; `deterministic`
  is an attribute (set by `module.train()` / `module.eval()`) or a call
  argument, and must be given when dropout_rate > 0. Each example gets its
  own key, split from one key drawn from the "dropout" stream of the `rngs`
  given at construction (or at call time).
  """

  def __init__(self, d_model: int, num_heads: int, d_ff: int, *,
               num_kv_heads: int | None = None, use_bias: bool = True,
               pre_norm: bool = False, is_causal: bool = False,
               dropout_rate: float = 0.0, deterministic: bool | None = None,
               activation=jax.nn.relu, precision=None,
               sow_weights: bool = False, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.pre_norm = pre_norm
    self.is_causal = is_causal
    self.dropout_rate = dropout_rate
    self.deterministic = deterministic
    self.activation = activation
    self.precision = precision
    self.sow_weights = sow_weights
    set_params(self, transformer.init_transformer_block(
        rngs.params(), d_model, num_heads, d_ff, num_kv_heads=num_kv_heads,
        use_bias=use_bias, dtype=param_dtype))
    self.dropout_rngs = (rngs["dropout"].fork() if dropout_rate > 0
                         else nnx.data(None))

  def _dropout_key(self, deterministic, rngs):
    """(use_dropout, key or None) from the attribute and call arguments."""
    if self.dropout_rate == 0:
      return False, None
    deterministic = _first(deterministic, self.deterministic)
    if deterministic is None:
      raise ValueError(
          f"deterministic: expected True or False (call argument or module "
          f"attribute; `module.train()` / `module.eval()` set it) when "
          f"dropout_rate={self.dropout_rate} > 0, got None")
    if deterministic:
      return False, None
    stream = _first(rngs, self.dropout_rngs)
    if isinstance(stream, nnx.Rngs):
      return True, stream["dropout"]()
    if isinstance(stream, nnx.RngStream):
      return True, stream()
    return True, stream  # a key array

  def __call__(self, x, mask=None, *, positions=None,
               deterministic: bool | None = None, rngs=None,
               return_weights: bool = False, sow_weights: bool | None = None):
    """x (*B, N, D); mask: bool (*B, N) token validity or (*B, ...)
    attention masks broadcastable per example to (H, N, N); positions
    (*B, N) for rotary embeddings; rngs: nnx.Rngs, RngStream or key for
    dropout (default: the stream kept at construction). Returns (*B, N, D)
    (and the weights (*B, H, N, N) if return_weights)."""
    use_dropout, key = self._dropout_key(deterministic, rngs)
    y, weights = _calls.transformer_block(
        get_params(self), x, mask, positions=positions, dropout_key=key,
        pre_norm=self.pre_norm, is_causal=self.is_causal,
        dropout_rate=float(self.dropout_rate),
        deterministic=not use_dropout, activation=self.activation,
        precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


# ---------------------------------------------------------------------------
# The sub-quadratic self-attention layers (`jattn.subquadratic`): the params
# of `init_self_attention`; the Performer's (P, K) random projection is
# state, not a parameter (a `RandomFeatures` variable, excluded from
# `nnx.Param` so optimisers leave it alone), drawn at construction from
# `rngs.params()` and redrawn by `redraw(key)`.


def _head_dim(d_model: int, num_heads: int, head_dim: int | None) -> int:
  return d_model // num_heads if head_dim is None else head_dim


class RandomFeatures(nnx.Variable):
  """Non-trainable random features (the Performer's projection)."""


class _NNXSelfAttentionBase(nnx.Module):
  """Params of `init_self_attention` and the shared attributes."""

  def __init__(self, d_model: int, num_heads: int, *,
               head_dim: int | None, num_kv_heads: int | None,
               use_bias: bool, is_causal: bool, precision, param_dtype,
               rngs: nnx.Rngs):
    self.is_causal = is_causal
    self.precision = precision
    set_params(self, multihead.init_self_attention(
        rngs.params(), d_model, num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, use_bias=use_bias, dtype=param_dtype))


class LocalSelfAttention(_NNXSelfAttentionBase):
  """`jattn.local_self_attention`: (*B, N, D) -> (*B, N, D), window `window`
  (an int w: |j - i| < w; or (left, right))."""

  def __init__(self, d_model: int, num_heads: int, *, window,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               precision=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    self.window = window
    self.scale = scale

  def __call__(self, x, mask=None, *, bias=None, positions=None):
    """x (*B, N, D); mask/bias (*B, ...) broadcastable per example to
    (H, N, N); positions (*B, N) for rotary embeddings."""
    return _calls.subquadratic_self_attention(
        subquadratic.local_self_attention, get_params(self), x, mask,
        positions=positions, bias=bias, window=self.window, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)


class LinearSelfAttention(_NNXSelfAttentionBase):
  """`jattn.linear_self_attention`: (*B, N, D) -> (*B, N, D)."""

  def __init__(self, d_model: int, num_heads: int, *,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False,
               chunk_size: int | None = None, precision=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    self.chunk_size = chunk_size

  def __call__(self, x, mask=None, *, positions=None):
    """x (*B, N, D); mask: bool (*B, N) (or (*B, 1, N), (*B, H, 1, N)) key
    padding; positions (*B, N) for rotary embeddings."""
    return _calls.subquadratic_self_attention(
        subquadratic.linear_self_attention, get_params(self), x, mask,
        positions=positions, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)


class PerformerSelfAttention(_NNXSelfAttentionBase):
  """`jattn.performer_self_attention`: (*B, N, D) -> (*B, N, D).

  `projection` (a `RandomFeatures` variable, (P, K)) is drawn from
  `rngs.params()` after the params; `redraw(key)` draws new features.
  """

  def __init__(self, d_model: int, num_heads: int, *,
               num_features: int | None = None, orthogonal: bool = True,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               chunk_size: int | None = None, precision=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    K = _head_dim(d_model, num_heads, head_dim)
    self.num_features = (performer_lib.default_num_features(K)
                         if num_features is None else num_features)
    self.head_dim = K
    self.orthogonal = orthogonal
    self.scale = scale
    self.chunk_size = chunk_size
    self.redraw(rngs.params())

  def redraw(self, key) -> None:
    """Replaces the random features by a fresh draw from `key`."""
    self.projection = RandomFeatures(performer_lib.random_features(
        key, self.num_features, self.head_dim, orthogonal=self.orthogonal))

  def __call__(self, x, mask=None, *, positions=None):
    """x (*B, N, D); mask: bool (*B, N) (or (*B, 1, N), (*B, H, 1, N)) key
    padding; positions (*B, N) for rotary embeddings."""
    return _calls.subquadratic_self_attention(
        subquadratic.performer_self_attention, get_params(self), x, mask,
        positions=positions, projection=self.projection[...],
        scale=self.scale, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)
