"""Additive (Bahdanau) attention for one example.

Scores are w_v . tanh(W_q q_i + W_k k_j); the softmax over keys weighs values.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import softmax as softmax_lib


def init_additive_attention(key, query_dim: int, key_dim: int,
                            hidden_dim: int, *, dtype=jnp.float32):
  """Parameters of additive attention.

  Returns:
    {"w_q": (Dq, A), "w_k": (Dk, A), "w_v": (A,)} with Dq = query_dim,
    Dk = key_dim, A = hidden_dim; LeCun-normal initialisation.
  """
  _checks.check_prng_key(key)
  _checks.check_positive_int(query_dim, "query_dim")
  _checks.check_positive_int(key_dim, "key_dim")
  _checks.check_positive_int(hidden_dim, "hidden_dim")
  key_q, key_k, key_v = jax.random.split(key, 3)
  init = jax.nn.initializers.lecun_normal()
  return {
      "w_q": init(key_q, (query_dim, hidden_dim), dtype),
      "w_k": init(key_k, (key_dim, hidden_dim), dtype),
      "w_v": init(key_v, (hidden_dim, 1), dtype)[:, 0],
  }


def additive_attention(params, q, k, v, mask=None, *,
                       return_weights: bool = False):
  """Additive attention of L queries over M key/value pairs.

  Args:
    params: from `init_additive_attention`: w_q (Dq, A), w_k (Dk, A), w_v (A,).
    q: (L, Dq) queries.
    k: (M, Dk) keys.
    v: (M, V) values.
    mask: optional bool broadcastable to (L, M), True = may attend; a query
      with nothing to attend to outputs zeros.
    return_weights: also return the float32 (L, M) attention weights.

  Returns:
    (L, V) in q's dtype (and the weights if asked).
  """
  _checks.check_params(params, "params", {"w_q": 2, "w_k": 2, "w_v": 1})
  q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
  for name, x in (("q", q), ("k", k), ("v", v)):
    _checks.check_rank(x, name, 2, example=True)
    _checks.check_floating(x, name)
  (L, Dq), (M, Dk), (Mv, V) = q.shape, k.shape, v.shape
  A = params["w_v"].shape[0]
  _checks.check_shape(params["w_q"], "params['w_q']", (Dq, A))
  _checks.check_shape(params["w_k"], "params['w_k']", (Dk, A))
  if Mv != M:
    raise ValueError(
        f"v: expected M={M} values (the first axis of k), got {Mv}")
  if mask is not None:
    _checks.check_bool(mask, "mask")
    _checks.check_broadcastable(mask, "mask", (L, M))

  q_LA = q @ params["w_q"]
  k_MA = k @ params["w_k"]
  features_LMA = jnp.tanh(q_LA[:, None, :] + k_MA[None, :, :])
  logits_LM = features_LMA @ params["w_v"]
  weights_LM = softmax_lib.masked_softmax(logits_LM, mask)
  out_LV = (weights_LM.astype(v.dtype) @ v).astype(q.dtype)
  chex.assert_shape(out_LV, (L, V))
  if return_weights:
    return out_LV, weights_LM
  return out_LV
