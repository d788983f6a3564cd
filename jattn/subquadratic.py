"""Self-attention layers with a sub-quadratic core, per example.

The sub-quadratic family: local (sliding-window), linear and Performer
attention, whose cores live in `jattn.attention` (`local.py`, `linear.py`,
`performer.py`). Each layer here is `jattn.self_attention` with that core
plugged in as `attention_fn` and its hyperparameters bound; the params are
those of `jattn.init_self_attention`, and the layers hold no maths:

  local_self_attention(params, x, mask, window=32)
    == self_attention(params, x, mask,
                      attention_fn=partial(local_attention, window=32))
"""

from __future__ import annotations

import functools
from typing import Callable

from jattn import multihead
from jattn.attention import linear as linear_lib
from jattn.attention import local as local_lib
from jattn.attention import performer as performer_lib


def local_self_attention(params, x, mask=None, *, window, positions=None,
                         bias=None, scale=None, is_causal: bool = False,
                         key_valid_len=None, implementation: str | None = None,
                         block_q: int | None = None,
                         block_k: int | None = None, precision=None):
  """Self-attention whose core is `jattn.local_attention`.

  Args:
    params: dict from `jattn.init_self_attention`.
    x: (n, D) tokens.
    mask: optional bool broadcastable to (H, n, n), True = may attend.
    window: as in `local_attention` (required).
    positions: optional (n,) positions for rotary embeddings.
    bias, scale, is_causal, key_valid_len, implementation, block_q, block_k,
      precision: as in `local_attention`.

  Returns:
    (n, D) in x's dtype.
  """
  core = functools.partial(local_lib.local_attention, window=window,
                           implementation=implementation, block_q=block_q,
                           block_k=block_k)
  return multihead.self_attention(
      params, x, mask, positions=positions, bias=bias, scale=scale,
      is_causal=is_causal, key_valid_len=key_valid_len, precision=precision,
      attention_fn=core)


def linear_self_attention(params, x, mask=None, *, positions=None,
                          is_causal: bool = False, key_valid_len=None,
                          feature_map: Callable = linear_lib.elu_feature_map,
                          chunk_size: int | None = None, precision=None):
  """Self-attention whose core is `jattn.linear_attention`.

  Args:
    params: dict from `jattn.init_self_attention`.
    x: (n, D) tokens.
    mask: optional bool key-padding mask: (n,), (1, n) or (H, 1, n).
    positions: optional (n,) positions: rotary embeddings of the projected
      queries and keys, applied before the feature map.
    is_causal, key_valid_len, feature_map, chunk_size, precision: as in
      `linear_attention`.

  Returns:
    (n, D) in x's dtype.
  """
  core = functools.partial(linear_lib.linear_attention,
                           feature_map=feature_map, chunk_size=chunk_size)
  return multihead.self_attention(
      params, x, mask, positions=positions, is_causal=is_causal,
      key_valid_len=key_valid_len, precision=precision, attention_fn=core)


def performer_self_attention(params, x, mask=None, *, projection=None,
                             key=None, num_features: int | None = None,
                             orthogonal: bool = True, positions=None,
                             is_causal: bool = False, key_valid_len=None,
                             scale=None, chunk_size: int | None = None,
                             precision=None):
  """Self-attention whose core is `jattn.performer_attention`.

  Args:
    params: dict from `jattn.init_self_attention`.
    x: (n, D) tokens.
    mask: optional bool key-padding mask: (n,), (1, n) or (H, 1, n).
    projection, key, num_features, orthogonal: the random features (exactly
      one of `projection` (P, K) and `key`), as in `performer_attention`.
    positions: optional (n,) positions: rotary embeddings of the projected
      queries and keys (before the features, so the estimated kernel is
      exp(s q_i^T R_(j-i) k_j): softmax attention with RoPE).
    is_causal, key_valid_len, scale, chunk_size, precision: as in
      `performer_attention`.

  Returns:
    (n, D) in x's dtype.
  """
  core = functools.partial(performer_lib.performer_attention,
                           projection=projection, key=key,
                           num_features=num_features, orthogonal=orthogonal,
                           chunk_size=chunk_size)
  return multihead.self_attention(
      params, x, mask, positions=positions, scale=scale, is_causal=is_causal,
      key_valid_len=key_valid_len, precision=precision, attention_fn=core)
