"""A transformer block whose self-attention is a sub-quadratic variant.

The same block as `jattn.transformer_block` (same params, same pre-/post-LN
residual structure, residual dropout and token mask), with the attention
sublayer given as a function, so stacks of local, linear or Performer
attention differ from the softmax transformer in their attention only:

  attention_fn = variant_attention("local", window=32)
  y_ND = variant_block(params, x_ND, token_mask_N, attention_fn=attention_fn)

`variant_attention` builds the attention function of each variant from its
hyperparameters (window; random-feature projection; chunk size).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from jattn import linear as linear_lib
from jattn import local as local_lib
from jattn import performer as performer_lib
from jattn import transformer

VARIANTS = ("local", "linear", "performer")


def variant_attention(variant: str, *, window=None, projection=None,
                      chunk_size: int | None = None) -> Callable:
  """The self-attention function of a variant, hyperparameters bound.

  Args:
    variant: "local", "linear" or "performer".
    window: the local window (required for "local"; see
      `jattn.local_attention`).
    projection: the (P, K) random features (required for "performer"; see
      `jattn.performer.random_features`).
    chunk_size: the causal chunk length of "linear" / "performer".

  Returns:
    `fn(params, x_ND, mask, *, positions, is_causal, precision) -> (N, D)`
    taking the params of `jattn.init_self_attention`.
  """
  if variant not in VARIANTS:
    raise ValueError(
        f"variant: expected one of {list(VARIANTS)}, got {variant!r}")
  if variant == "local":
    if window is None:
      raise ValueError("window: expected a window for variant 'local', got None")
    return functools.partial(local_lib.local_self_attention, window=window)
  if variant == "linear":
    return functools.partial(linear_lib.linear_self_attention,
                             chunk_size=chunk_size)
  if projection is None:
    raise ValueError(
        "projection: expected the (P, K) random features for variant "
        "'performer' (jattn.performer.random_features(key, P, K)), got None")
  return functools.partial(performer_lib.performer_self_attention,
                           projection=projection, chunk_size=chunk_size)


def variant_block(params, x_ND, mask=None, *, attention_fn: Callable,
                  pre_norm: bool = False, is_causal: bool = False,
                  positions=None, dropout_rate: float = 0.0, dropout_key=None,
                  deterministic: bool = True, activation=jax.nn.relu,
                  precision=None):
  """`jattn.transformer_block` with `attention_fn` as its self-attention.

  Args:
    params: dict from `jattn.init_transformer_block`.
    x_ND: (N, D) tokens.
    mask: optional bool. Rank 1, shape (N,): token validity; padded tokens
      are zeroed on entry, dropped as keys, and their outputs are exactly
      zero. Rank 2 or 3: passed to `attention_fn` as it is (what it accepts
      depends on the variant).
    attention_fn: from `variant_attention` (or any function with its
      signature).
    pre_norm, is_causal, positions, dropout_rate, dropout_key,
      deterministic, activation, precision: as in `transformer_block`.

  Returns:
    (N, D) in x's dtype.
  """
  return transformer.transformer_block(
      params, x_ND, mask, pre_norm=pre_norm, is_causal=is_causal,
      positions=positions, dropout_rate=dropout_rate, dropout_key=dropout_key,
      deterministic=deterministic, activation=activation, precision=precision,
      attention_fn=attention_fn)
