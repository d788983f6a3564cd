"""Multi-head (and grouped-query) attention and self-attention, per example.

Parameters are a plain dict; every hyperparameter (heads, widths) is read off
the arrays' shapes:

  w_q (Dq, H, K)   w_k (Dkv, G, K)   w_v (Dkv, G, V)   w_o (H, V, Do)
  b_q (H, K)       b_k (G, K)        b_v (G, V)        b_o (Do,)   [use_bias]
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import attention as attention_lib
from jattn import positional

_WEIGHT_RANKS = {"w_q": 3, "w_k": 3, "w_v": 3, "w_o": 3}
_BIAS_NAMES = ("b_q", "b_k", "b_v", "b_o")


def init_multi_head_attention(key, d_model: int, num_heads: int, *,
                              kv_dim: int | None = None,
                              out_dim: int | None = None,
                              head_dim: int | None = None,
                              num_kv_heads: int | None = None,
                              use_bias: bool = False, dtype=jnp.float32):
  """Parameters of multi-head attention.

  Args:
    key: PRNG key.
    d_model: Dq, width of the query inputs.
    num_heads: H, query heads.
    kv_dim: Dkv, width of the key/value inputs (default d_model).
    out_dim: Do, output width (default d_model).
    head_dim: K = V, per-head width (default d_model // num_heads).
    num_kv_heads: G, key/value heads, a divisor of H (default H; 1 gives
      multi-query attention).
    use_bias: add the b_* biases (initialised to zero).
    dtype: parameter dtype.

  Returns:
    dict of arrays, shapes in the module docstring.
  """
  _checks.check_positive_int(d_model, "d_model")
  _checks.check_positive_int(num_heads, "num_heads")
  kv_dim = d_model if kv_dim is None else kv_dim
  out_dim = d_model if out_dim is None else out_dim
  num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
  _checks.check_positive_int(kv_dim, "kv_dim")
  _checks.check_positive_int(out_dim, "out_dim")
  _checks.check_positive_int(num_kv_heads, "num_kv_heads")
  if num_heads % num_kv_heads:
    raise ValueError(
        f"num_kv_heads: expected a divisor of num_heads={num_heads}, got "
        f"{num_kv_heads}")
  if head_dim is None:
    if d_model % num_heads:
      raise ValueError(
          f"num_heads: expected a divisor of d_model={d_model} (or pass "
          f"head_dim), got {num_heads}")
    head_dim = d_model // num_heads
  _checks.check_positive_int(head_dim, "head_dim")

  H, G, K = num_heads, num_kv_heads, head_dim
  key_q, key_k, key_v, key_o = jax.random.split(key, 4)
  in_init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
  out_init = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
  params = {
      "w_q": in_init(key_q, (d_model, H, K), dtype),
      "w_k": in_init(key_k, (kv_dim, G, K), dtype),
      "w_v": in_init(key_v, (kv_dim, G, K), dtype),
      "w_o": out_init(key_o, (H, K, out_dim), dtype),
  }
  if use_bias:
    params |= {
        "b_q": jnp.zeros((H, K), dtype),
        "b_k": jnp.zeros((G, K), dtype),
        "b_v": jnp.zeros((G, K), dtype),
        "b_o": jnp.zeros((out_dim,), dtype),
    }
  return params


def init_self_attention(key, d_model: int, num_heads: int, *,
                        head_dim: int | None = None,
                        num_kv_heads: int | None = None,
                        use_bias: bool = False, dtype=jnp.float32):
  """Parameters of self-attention (n, d_model) -> (n, d_model).

  Same arguments and returned dict as `init_multi_head_attention` with
  kv_dim = out_dim = d_model.
  """
  return init_multi_head_attention(
      key, d_model, num_heads, head_dim=head_dim, num_kv_heads=num_kv_heads,
      use_bias=use_bias, dtype=dtype)


def check_mha_params(params):
  """Validates the params dict; returns (Dq, Dkv, H, G, K, V, Do)."""
  _checks.check_params(params, "params", _WEIGHT_RANKS)
  Dq, H, K = params["w_q"].shape
  Dkv, G, _ = params["w_k"].shape
  V = params["w_v"].shape[2]
  Do = params["w_o"].shape[2]
  expected = {
      "w_k": (Dkv, G, K), "w_v": (Dkv, G, V), "w_o": (H, V, Do),
      "b_q": (H, K), "b_k": (G, K), "b_v": (G, V), "b_o": (Do,),
  }
  for name, shape in expected.items():
    if name in params:
      _checks.check_shape(params[name], f"params[{name!r}]", shape)
      _checks.check_floating(params[name], f"params[{name!r}]")
  present = [b for b in _BIAS_NAMES if b in params]
  if present and len(present) != len(_BIAS_NAMES):
    raise ValueError(
        f"params: expected all or none of {list(_BIAS_NAMES)}, got {present}")
  if H % G:
    raise ValueError(
        f"params['w_k']: expected a number of key/value heads dividing "
        f"H={H}, got G={G}")
  return Dq, Dkv, H, G, K, V, Do


def project_qkv(params, x_q, x_kv, *, precision=None):
  """Query, key and value projections (biases added when present).

  Args:
    params: validated multi-head params (see `check_mha_params`).
    x_q: (L, Dq); x_kv: (M, Dkv).

  Returns:
    q_LHK (L, H, K), k_MGK (M, G, K), v_MGV (M, G, V).
  """
  q_LHK = jnp.einsum("ld,dhk->lhk", x_q, params["w_q"], precision=precision)
  k_MGK = jnp.einsum("md,dgk->mgk", x_kv, params["w_k"], precision=precision)
  v_MGV = jnp.einsum("md,dgv->mgv", x_kv, params["w_v"], precision=precision)
  if "b_q" in params:
    q_LHK = q_LHK + params["b_q"][None]
    k_MGK = k_MGK + params["b_k"][None]
    v_MGV = v_MGV + params["b_v"][None]
  return q_LHK, k_MGK, v_MGV


def project_output(params, out_LHV, *, precision=None):
  """Output projection of the concatenated heads: (L, H, V) -> (L, Do)."""
  y_LD = jnp.einsum("lhv,hvo->lo", out_LHV, params["w_o"], precision=precision)
  if "b_o" in params:
    y_LD = y_LD + params["b_o"][None]
  return y_LD


def multi_head_attention(params, x_q, x_kv, mask=None, *, bias=None,
                         scale=None, is_causal: bool = False,
                         q_positions=None, kv_positions=None,
                         return_weights: bool = False, precision=None,
                         implementation: str | None = None):
  """Multi-head attention of L query tokens over M key/value tokens.

  Args:
    params: dict from `init_multi_head_attention` (shapes in module docs).
    x_q: (L, Dq) query tokens.
    x_kv: (M, Dkv) key/value tokens.
    mask: optional bool broadcastable to (H, L, M), True = may attend.
    bias: optional float logit bias broadcastable to (H, L, M).
    scale: logit scale, default 1 / sqrt(K).
    is_causal: restrict query i to keys j <= i.
    q_positions, kv_positions: optional (L,) and (M,) positions; when given,
      rotary embeddings (`apply_rope`) rotate the projected queries and keys.
    return_weights: also return float32 (H, L, M) attention weights.
    precision: einsum precision.
    implementation: attention implementation, None (automatic), "dense",
      "blockwise" or "pallas" (see `jattn.dot_product_attention`).

  Returns:
    (L, Do) in x_q's dtype (and the weights if asked).
  """
  Dq, Dkv, H, G, K, V, Do = check_mha_params(params)
  x_q, x_kv = jnp.asarray(x_q), jnp.asarray(x_kv)
  _checks.check_rank(x_q, "x_q", 2)
  _checks.check_rank(x_kv, "x_kv", 2)
  _checks.check_floating(x_q, "x_q")
  _checks.check_floating(x_kv, "x_kv")
  _checks.check_shape(x_q, "x_q", (None, Dq))
  _checks.check_shape(x_kv, "x_kv", (None, Dkv))
  if (q_positions is None) != (kv_positions is None):
    raise ValueError(
        "q_positions, kv_positions: expected both or neither, got "
        f"q_positions={'set' if q_positions is not None else None}, "
        f"kv_positions={'set' if kv_positions is not None else None}")
  L = x_q.shape[0]

  q_LHK, k_MGK, v_MGV = project_qkv(params, x_q, x_kv, precision=precision)
  if q_positions is not None:
    q_LHK = positional.apply_rope(q_LHK, q_positions)
    k_MGK = positional.apply_rope(k_MGK, kv_positions)
  attended = attention_lib.dot_product_attention(
      q_LHK, k_MGK, v_MGV, mask, bias=bias, scale=scale, is_causal=is_causal,
      return_weights=return_weights, precision=precision,
      implementation=implementation)
  out_LHV, weights_HLM = attended if return_weights else (attended, None)
  y_LD = project_output(params, out_LHV, precision=precision).astype(x_q.dtype)
  chex.assert_shape(y_LD, (L, Do))
  if return_weights:
    return y_LD, weights_HLM
  return y_LD


def self_attention(params, x, mask=None, *, positions=None, **kwargs):
  """Self-attention: queries, keys and values all come from x.

  Args:
    params: dict from `init_self_attention`.
    x: (n, D) tokens.
    mask: optional bool broadcastable to (H, n, n), True = may attend.
    positions: optional (n,) positions for rotary embeddings.
    **kwargs: `bias`, `scale`, `is_causal`, `return_weights`, `precision`,
      `implementation`, as in `multi_head_attention`.

  Returns:
    (n, D) (and float32 (H, n, n) weights if `return_weights`).
  """
  return multi_head_attention(params, x, x, mask, q_positions=positions,
                              kv_positions=positions, **kwargs)
