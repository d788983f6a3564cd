"""`flax.linen` wrappers of the jattn layers.

The "params" collection of each module IS the jattn params dict: one
`self.param` per top-level key of the dict made by the jattn `init_*`
function (nested dicts, e.g. a transformer block's "ffn", are one param
each). So `variables["params"]` can be passed to the pure function as it is,
and `{"params": params}` to `module.apply`. At `init`, the whole dict comes
from one call of the init function with the key `self.make_rng("params")`.

Batching, masks, `param_dtype` and the attention weights work as in
`jattn.nn.nnx_modules`; sown weights go to the "intermediates" collection
under "attention_weights" (`module.apply(..., mutable=["intermediates"])`).
Residual dropout (`TransformerBlock`) draws from the "dropout" RNG stream.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jattn import additive
from jattn import conv
from jattn import multihead
from jattn import positional
from jattn import rnn
from jattn import subquadratic
from jattn import transformer
from jattn.attention import performer as performer_lib
from jattn.nn import _calls

ATTENTION_WEIGHTS = "attention_weights"


def _declare_params(module: nn.Module, init_fn) -> dict:
  """Declares one param per top-level key of `init_fn(key)`; returns them.

  At init the dict is made once from `make_rng("params")`. At apply the
  stored values are returned (linen checks their shapes against
  `init_fn` evaluated abstractly).
  """
  names = tuple(jax.eval_shape(init_fn, jax.random.PRNGKey(0)))
  full = None
  if module.is_initializing():
    full = init_fn(module.make_rng("params"))

  def init_one(rng, name):
    return (init_fn(rng) if full is None else full)[name]

  return {name: module.param(name, init_one, name) for name in names}


def _emit_weights(module, y, weights, return_weights, sow_weights):
  sow = module.sow_weights if sow_weights is None else sow_weights
  if sow:
    module.sow("intermediates", ATTENTION_WEIGHTS, weights)
  return (y, weights) if return_weights else y


class MultiHeadAttention(nn.Module):
  """`jattn.multi_head_attention`: (*B, L, Dq), (*B, M, Dkv) -> (*B, L, Do).

  Params: w_q (Dq, H, K), w_k (Dkv, G, K), w_v (Dkv, G, K), w_o (H, K, Do)
  and, with use_bias, b_q, b_k, b_v, b_o. Dkv is `kv_dim` (default d_model).
  """
  d_model: int
  num_heads: int
  kv_dim: int | None = None
  out_dim: int | None = None
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  precision: Any = None
  sow_weights: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv, mask=None, *, bias=None, q_positions=None,
               kv_positions=None, return_weights: bool = False,
               sow_weights: bool | None = None):
    """As `jattn.nn.MultiHeadAttention.__call__`."""
    params = _declare_params(self, functools.partial(
        multihead.init_multi_head_attention, d_model=self.d_model,
        num_heads=self.num_heads, kv_dim=self.kv_dim, out_dim=self.out_dim,
        head_dim=self.head_dim, num_kv_heads=self.num_kv_heads,
        use_bias=self.use_bias, dtype=self.param_dtype))
    y, weights = _calls.multi_head_attention(
        params, x_q, x_kv, mask, bias=bias, q_positions=q_positions,
        kv_positions=kv_positions, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class SelfAttention(nn.Module):
  """`jattn.self_attention`: (*B, N, D) -> (*B, N, D)."""
  d_model: int
  num_heads: int
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  precision: Any = None
  sow_weights: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, bias=None, positions=None,
               return_weights: bool = False, sow_weights: bool | None = None):
    """As `jattn.nn.SelfAttention.__call__`."""
    params = _declare_params(self, functools.partial(
        multihead.init_self_attention, d_model=self.d_model,
        num_heads=self.num_heads, head_dim=self.head_dim,
        num_kv_heads=self.num_kv_heads, use_bias=self.use_bias,
        dtype=self.param_dtype))
    y, weights = _calls.self_attention(
        params, x, mask, bias=bias, positions=positions, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class AdditiveAttention(nn.Module):
  """`jattn.additive_attention`: q (*B, L, Dq), k (*B, M, Dk), v (*B, M, V)
  -> (*B, L, V). Dq and Dk are read off the inputs at init."""
  hidden_dim: int
  sow_weights: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q, k, v, mask=None, *, return_weights: bool = False,
               sow_weights: bool | None = None):
    """As `jattn.nn.AdditiveAttention.__call__`."""
    params = _declare_params(self, functools.partial(
        additive.init_additive_attention, query_dim=q.shape[-1],
        key_dim=k.shape[-1], hidden_dim=self.hidden_dim,
        dtype=self.param_dtype))
    y, weights = _calls.additive_attention(params, q, k, v, mask)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


class LearnedEncoding(nn.Module):
  """`jattn.learned_encoding`: positions -> positions.shape + (D,)."""
  num_positions: int
  d_model: int
  stddev: float = 0.02
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, positions):
    params = _declare_params(self, functools.partial(
        positional.init_learned_encoding, num_positions=self.num_positions,
        d_model=self.d_model, stddev=self.stddev, dtype=self.param_dtype))
    return _calls.learned_encoding(params, positions)


class SinusoidalEncoding(nn.Module):
  """`jattn.sinusoidal_encoding` rows: positions -> positions.shape + (D,).
  No parameters."""
  num_positions: int
  d_model: int
  base: float = 10000.0
  dtype: Any = jnp.float32

  def __call__(self, positions):
    table = _calls.sinusoidal_table(self.num_positions, self.d_model,
                                    base=self.base, dtype=self.dtype)
    return _calls.learned_encoding(table, positions)


class ConvLayer(nn.Module):
  """`jattn.conv_layer`: (*B, N, D) -> (*B, N, D)."""
  d_model: int
  kernel_size: int
  use_bias: bool = True
  causal: bool = False
  dilation: int = 1
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    params = _declare_params(self, functools.partial(
        conv.init_conv_layer, d_model=self.d_model,
        kernel_size=self.kernel_size, use_bias=self.use_bias,
        dtype=self.param_dtype))
    return _calls.conv_layer(params, x, mask, causal=self.causal,
                             dilation=self.dilation, precision=self.precision)


class RNNLayer(nn.Module):
  """`jattn.rnn_layer`: (*B, N, D) -> (*B, N, D)."""
  d_model: int
  cell: str = "gru"
  hidden_dim: int | None = None
  bidirectional: bool = False
  reverse: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    params = _declare_params(self, functools.partial(
        rnn.init_rnn_layer, d_model=self.d_model, cell=self.cell,
        hidden_dim=self.hidden_dim, bidirectional=self.bidirectional,
        dtype=self.param_dtype))
    return _calls.rnn_layer(params, x, mask, reverse=self.reverse)


class TransformerBlock(nn.Module):
  """`jattn.transformer_block`: (*B, N, D) -> (*B, N, D).

  When dropout_rate > 0, exactly one of the `deterministic` field and call
  argument must be set (linen's `nn.merge_param` rule, as in `nn.Dropout`);
  dropout draws one key from `make_rng("dropout")` and splits it per example.
  """
  d_model: int
  num_heads: int
  d_ff: int
  num_kv_heads: int | None = None
  use_bias: bool = True
  pre_norm: bool = False
  is_causal: bool = False
  dropout_rate: float = 0.0
  deterministic: bool | None = None
  activation: Callable = jax.nn.relu
  precision: Any = None
  sow_weights: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, positions=None,
               deterministic: bool | None = None,
               return_weights: bool = False, sow_weights: bool | None = None):
    """As `jattn.nn.TransformerBlock.__call__` (without `rngs`)."""
    params = _declare_params(self, functools.partial(
        transformer.init_transformer_block, d_model=self.d_model,
        num_heads=self.num_heads, d_ff=self.d_ff,
        num_kv_heads=self.num_kv_heads, use_bias=self.use_bias,
        dtype=self.param_dtype))
    use_dropout = False
    if self.dropout_rate > 0:
      deterministic = nn.merge_param("deterministic", self.deterministic,
                                     deterministic)
      use_dropout = not deterministic
    key = self.make_rng("dropout") if use_dropout else None
    y, weights = _calls.transformer_block(
        params, x, mask, positions=positions, dropout_key=key,
        pre_norm=self.pre_norm, is_causal=self.is_causal,
        dropout_rate=float(self.dropout_rate),
        deterministic=not use_dropout, activation=self.activation,
        precision=self.precision)
    return _emit_weights(self, y, weights, return_weights, sow_weights)


# ---------------------------------------------------------------------------
# The sub-quadratic self-attention layers (`jattn.subquadratic`). The
# Performer's (P, K) projection lives in the "random_features" collection,
# drawn at init from the "params" RNG (redraw: replace
# `variables["random_features"]["projection"]` by
# `jattn.attention.performer.random_features(key, P, K)`).


def _self_attention_params(module: nn.Module) -> dict:
  """The `init_self_attention` params of a sub-quadratic module."""
  return _declare_params(module, functools.partial(
      multihead.init_self_attention, d_model=module.d_model,
      num_heads=module.num_heads, head_dim=module.head_dim,
      num_kv_heads=module.num_kv_heads, use_bias=module.use_bias,
      dtype=module.param_dtype))


class LocalSelfAttention(nn.Module):
  """linen `jattn.local_self_attention` (as `jattn.nn.LocalSelfAttention`)."""
  d_model: int
  num_heads: int
  window: Any = None
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, bias=None, positions=None):
    return _calls.subquadratic_self_attention(
        subquadratic.local_self_attention, _self_attention_params(self), x, mask,
        positions=positions, bias=bias, window=self.window, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)


class LinearSelfAttention(nn.Module):
  """linen `jattn.linear_self_attention` (as `jattn.nn.LinearSelfAttention`)."""
  d_model: int
  num_heads: int
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  chunk_size: int | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, positions=None):
    return _calls.subquadratic_self_attention(
        subquadratic.linear_self_attention, _self_attention_params(self), x, mask,
        positions=positions, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)


class PerformerSelfAttention(nn.Module):
  """linen `jattn.performer_self_attention`; the (P, K) projection lives in
  the "random_features" collection, drawn at init from the "params" RNG."""
  d_model: int
  num_heads: int
  num_features: int | None = None
  orthogonal: bool = True
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  chunk_size: int | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, positions=None):
    params = _self_attention_params(self)
    K = (self.d_model // self.num_heads if self.head_dim is None
         else self.head_dim)
    P = (performer_lib.default_num_features(K) if self.num_features is None
         else self.num_features)
    projection = self.variable(
        "random_features", "projection",
        lambda: performer_lib.random_features(
            self.make_rng("params"), P, K, orthogonal=self.orthogonal))
    return _calls.subquadratic_self_attention(
        subquadratic.performer_self_attention, params, x, mask,
        positions=positions, projection=projection.value, scale=self.scale,
        is_causal=self.is_causal, chunk_size=self.chunk_size,
        precision=self.precision)
