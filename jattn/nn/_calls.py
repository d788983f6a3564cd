"""The pure jattn functions run over leading batch axes.

Shared by the nnx and the linen wrappers, which only declare parameters and
call these. Each function takes the pure params dict, batched inputs (shapes
batch + per-example shape, see `_batch`) and the pure function's keyword
arguments, and returns batched outputs; attention layers return
(y, weights) so a wrapper can return or sow the weights.
"""

from __future__ import annotations

from jattn import additive
from jattn import conv
from jattn import multihead
from jattn import positional
from jattn import rnn
from jattn import transformer
from jattn.nn import _batch


def multi_head_attention(params, x_q, x_kv, mask=None, *, bias=None,
                         q_positions=None, kv_positions=None, **kwargs):
  """x_q (*B, L, Dq), x_kv (*B, M, Dkv) -> ((*B, L, Do), (*B, H, L, M))."""
  lead = _batch.batch_shape(x_q, "x_q", 2)

  def one(x_q, x_kv, mask, bias, q_positions, kv_positions):
    return multihead.multi_head_attention(
        params, x_q, x_kv, mask, bias=bias, q_positions=q_positions,
        kv_positions=kv_positions, return_weights=True, **kwargs)

  return _batch.vmap_leading(one, lead, x_q=x_q, x_kv=x_kv, mask=mask,
                             bias=bias, q_positions=q_positions,
                             kv_positions=kv_positions)


def self_attention(params, x, mask=None, *, bias=None, positions=None,
                   **kwargs):
  """x (*B, N, D) -> ((*B, N, D), (*B, H, N, N))."""
  lead = _batch.batch_shape(x, "x", 2)

  def one(x, mask, bias, positions):
    return multihead.self_attention(params, x, mask, bias=bias,
                                    positions=positions, return_weights=True,
                                    **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask, bias=bias,
                             positions=positions)


def subquadratic_self_attention(layer_fn, params, x, mask=None, *,
                                positions=None, bias=None, **kwargs):
  """`layer_fn(params, x, mask, positions=..., **kwargs)` (a layer of
  `jattn.subquadratic`) over the leading batch axes of x (*B, N, D) ->
  (*B, N, D); mask, positions (and bias, when not None) carry the same
  leading axes."""
  lead = _batch.batch_shape(x, "x", 2)

  def one(x, mask, positions, bias):
    extra = {} if bias is None else {"bias": bias}
    return layer_fn(params, x, mask, positions=positions, **extra, **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask, positions=positions,
                             bias=bias)


def additive_attention(params, q, k, v, mask=None):
  """q (*B, L, Dq), k (*B, M, Dk), v (*B, M, V) -> ((*B, L, V), (*B, L, M))."""
  lead = _batch.batch_shape(q, "q", 2)

  def one(q, k, v, mask):
    return additive.additive_attention(params, q, k, v, mask,
                                       return_weights=True)

  return _batch.vmap_leading(one, lead, q=q, k=k, v=v, mask=mask)


def learned_encoding(params, positions):
  """positions of any shape -> positions.shape + (D,).

  `learned_encoding` takes positions of any shape itself, so no vmap.
  """
  return positional.learned_encoding(params, positions)


def sinusoidal_table(num_positions: int, d_model: int, **kwargs):
  """The fixed table as a params dict for `learned_encoding`."""
  return {"table": positional.sinusoidal_encoding(num_positions, d_model,
                                                  **kwargs)}


def conv_layer(params, x, mask=None, **kwargs):
  """x (*B, N, D), mask (*B, N) -> (*B, N, D)."""
  lead = _batch.batch_shape(x, "x", 2)

  def one(x, mask):
    return conv.conv_layer(params, x, mask, **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask)


def rnn_layer(params, x, mask=None, **kwargs):
  """x (*B, N, D), mask (*B, N) -> (*B, N, D)."""
  lead = _batch.batch_shape(x, "x", 2)

  def one(x, mask):
    return rnn.rnn_layer(params, x, mask, **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask)


def transformer_block(params, x, mask=None, *, positions=None,
                      dropout_key=None, **kwargs):
  """x (*B, N, D) -> ((*B, N, D), (*B, H, N, N)).

  mask: (*B, N) token validity or (*B, ...) attention masks, as in
  `transformer_block`. dropout_key: one key, split into one per example.
  """
  lead = _batch.batch_shape(x, "x", 2)
  keys = None if dropout_key is None else _batch.split_keys(dropout_key, lead)

  def one(x, mask, positions, dropout_key):
    return transformer.transformer_block(
        params, x, mask, positions=positions, dropout_key=dropout_key,
        return_weights=True, **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask, positions=positions,
                             dropout_key=keys)
