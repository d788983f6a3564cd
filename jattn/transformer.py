"""Transformer encoder block, per example: (N, D) -> (N, D).

Two sublayers, each wrapped in a residual connection and layer norm:

  post-LN (default, d2l's AddNorm, Vaswani et al. 2017):
    h = LN_1(x + Dropout(SelfAttention(x)))
    y = LN_2(h + Dropout(FFN(h)))
  pre-LN (`pre_norm=True`, Xiong et al. 2020):
    h = x + Dropout(SelfAttention(LN_1(x)))
    y = h + Dropout(FFN(LN_2(h)))

A pre-LN stack usually ends with one more layer norm; that belongs to the
model, not to the block. Dropout here is residual dropout on each sublayer's
output; attention weights are not dropped.

Params: {"attention": `init_self_attention` dict, "norm_1": `init_layer_norm`
dict, "ffn": `init_feed_forward` dict, "norm_2": `init_layer_norm` dict}.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jattn import _checks
from jattn import feedforward
from jattn import masks as masks_lib
from jattn import multihead

_PARTS = ("attention", "norm_1", "ffn", "norm_2")


def init_transformer_block(key, d_model: int, num_heads: int, d_ff: int, *,
                           num_kv_heads: int | None = None,
                           use_bias: bool = True, dtype=jnp.float32):
  """Parameters of a transformer block.

  Args:
    key: PRNG key.
    d_model: D.
    num_heads: H, attention heads (head width D // H).
    d_ff: F, feed-forward hidden width.
    num_kv_heads: G, key/value heads (default H; see `init_self_attention`).
    use_bias: biases in the attention projections and the feed-forward layers
      (layer norms always have a bias).
    dtype: parameter dtype.

  Returns:
    {"attention": ..., "norm_1": ..., "ffn": ..., "norm_2": ...}.
  """
  _checks.check_prng_key(key)
  key_attn, key_ffn = jax.random.split(key)
  return {
      "attention": multihead.init_self_attention(
          key_attn, d_model, num_heads, num_kv_heads=num_kv_heads,
          use_bias=use_bias, dtype=dtype),
      "norm_1": feedforward.init_layer_norm(d_model, dtype=dtype),
      "ffn": feedforward.init_feed_forward(key_ffn, d_model, d_ff,
                                           use_bias=use_bias, dtype=dtype),
      "norm_2": feedforward.init_layer_norm(d_model, dtype=dtype),
  }


def dropout(key, x, rate: float):
  """Inverted dropout: zeroes each entry with probability `rate`, scales the
  rest by 1 / (1 - rate). `rate` is a Python float in [0, 1)."""
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype),
                   jnp.zeros((), x.dtype))


def _check_rate(rate) -> float:
  if isinstance(rate, bool) or not isinstance(rate, (int, float)):
    raise TypeError(
        f"dropout_rate: expected a Python float, got {type(rate).__name__}")
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout_rate: expected a value in [0, 1), got {rate}")
  return float(rate)


def transformer_block(params, x_ND, mask=None, *, pre_norm: bool = False,
                      is_causal: bool = False, positions=None,
                      dropout_rate: float = 0.0, dropout_key=None,
                      deterministic: bool = True,
                      return_weights: bool = False,
                      activation=jax.nn.relu, precision=None,
                      attention_fn=None):
  """Self-attention and feed-forward sublayers with residuals and layer norm.

  Args:
    params: dict from `init_transformer_block`.
    x_ND: (N, D) tokens.
    mask: optional bool. Rank 1, shape (N,): token validity (True = real);
      padded tokens are zeroed on entry, hidden as attention keys, and their
      outputs are exactly zero. Rank 2 or 3, broadcastable to (H, N, N): an
      attention mask passed straight to `self_attention` (outputs are not
      zeroed).
    pre_norm: pre-LN instead of the default post-LN (see module docstring).
    is_causal: token i attends to tokens j <= i.
    positions: optional (N,) positions for rotary embeddings.
    dropout_rate: residual dropout rate in [0, 1); applied only when
      > 0 and `deterministic` is False.
    dropout_key: PRNG key, required when dropout is applied.
    deterministic: switch dropout off (the default).
    return_weights: also return the float32 (H, N, N) attention weights.
    activation: feed-forward nonlinearity.
    precision: einsum precision for attention and feed-forward.
    attention_fn: optional attention core of the self-attention sublayer
      (default `jattn.dot_product_attention`), any function with the core
      signature of `jattn.attention`, e.g. a local, linear, Performer or
      ring core with its hyperparameters bound
      (`functools.partial(jattn.local_attention, window=32)`,
      `jattn.parallel.ring_core(mesh)`). It receives the rank-2/3 mask, or
      (1, N) key validity for a token mask. Not with `return_weights`.

  Returns:
    (N, D) in x's dtype (and the (H, N, N) weights if `return_weights`).
  """
  if not isinstance(params, dict) or set(params) != set(_PARTS):
    got = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f"params: expected keys {sorted(_PARTS)}, got {got}")
  x_ND = jnp.asarray(x_ND)
  _checks.check_rank(x_ND, "x_ND", 2, example=True)
  _checks.check_floating(x_ND, "x_ND")
  if not isinstance(deterministic, bool):
    raise TypeError(
        f"deterministic: expected a bool, got {type(deterministic).__name__}")
  rate = _check_rate(dropout_rate)
  if attention_fn is not None and return_weights:
    raise ValueError(
        "return_weights: expected False with a custom attention_fn (it "
        "returns no weights), got True")
  N, D = x_ND.shape

  token_mask_N, attn_mask = None, None
  if mask is not None:
    _checks.check_rank(mask, "mask", (1, 2, 3))
    if np.ndim(mask) == 1:
      token_mask_N = _checks.check_token_mask(mask, N)
      attn_mask = token_mask_N[None, :]
    else:
      attn_mask = mask  # checked by self_attention
  x_ND = masks_lib.zero_padded_rows(x_ND, token_mask_N)

  use_dropout = rate > 0.0 and not deterministic
  if use_dropout:
    if dropout_key is None:
      raise ValueError(
          f"dropout_key: expected a PRNG key when dropout_rate={rate} > 0 and "
          "deterministic=False, got None")
    key_1, key_2 = jax.random.split(dropout_key)
    drop = lambda key, y: dropout(key, y, rate)
  else:
    key_1 = key_2 = None
    drop = lambda key, y: y

  def attend(h_ND):
    # Weights only when asked: an (H, N, N) array is what memory-efficient
    # attention avoids.
    out = multihead.self_attention(
        params["attention"], h_ND, attn_mask, positions=positions,
        is_causal=is_causal, return_weights=return_weights,
        precision=precision, attention_fn=attention_fn)
    return out if return_weights else (out, None)

  def ffn(h_ND):
    return feedforward.feed_forward(params["ffn"], h_ND, activation=activation,
                                    precision=precision)

  norm_1 = lambda h: feedforward.layer_norm(params["norm_1"], h)
  norm_2 = lambda h: feedforward.layer_norm(params["norm_2"], h)
  if pre_norm:
    a_ND, weights_HNN = attend(norm_1(x_ND))
    h_ND = x_ND + drop(key_1, a_ND)
    y_ND = h_ND + drop(key_2, ffn(norm_2(h_ND)))
  else:
    a_ND, weights_HNN = attend(x_ND)
    h_ND = norm_1(x_ND + drop(key_1, a_ND))
    y_ND = norm_2(h_ND + drop(key_2, ffn(h_ND)))

  y_ND = masks_lib.zero_padded_rows(y_ND, token_mask_N).astype(x_ND.dtype)
  chex.assert_shape(y_ND, (N, D))
  if return_weights:
    return y_ND, weights_HNN
  return y_ND
