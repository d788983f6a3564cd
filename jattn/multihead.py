"""Multi-head (and grouped-query) attention and self-attention, per example.

THE attention layer of jattn: `attention_layer` holds the only projection
glue (check params, project q/k/v, rotate them with RoPE, run an attention
core, project the output); `multi_head_attention` and `self_attention` call
it with `jattn.dot_product_attention` or with the core passed as
`attention_fn` (any function with the core signature of `jattn.attention`,
e.g. `functools.partial(jattn.local_attention, window=32)`).

Parameters are a plain dict; every hyperparameter (heads, widths) is read off
the arrays' shapes:

  w_q (Dq, H, K)   w_k (Dkv, G, K)   w_v (Dkv, G, V)   w_o (H, V, Do)
  b_q (H, K)       b_k (G, K)        b_v (G, V)        b_o (Do,)   [use_bias]
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

import functools
from typing import Callable

from jattn import _checks
from jattn import attention as attention_lib
from jattn import masks as masks_lib
from jattn import positional


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
  _checks.check_prng_key(key)
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
  return _checks.check_attention_params(params)


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


def attention_layer(params, x_q, x_kv, core: Callable, *, q_positions=None,
                    kv_positions=None, precision=None, has_aux: bool = False,
                    self_attention: bool = False, names=("x_q", "x_kv")):
  """Projections around an attention core: the one copy of the layer glue.

  Args:
    params: dict from `init_multi_head_attention` (shapes in module docs).
    x_q: (L, Dq) query tokens; x_kv: (M, Dkv) key/value tokens.
    core: `core(q_LHK, k_MGK, v_MGV) -> out_LHV` (with `has_aux`:
      `-> (out_LHV, aux)`), the attention with its arguments bound.
    q_positions, kv_positions: optional (L,) and (M,) positions: rotary
      embeddings (`apply_rope`) of the projected queries and keys.
    precision: einsum precision of the projections.
    has_aux: the core returns (out, aux); the layer returns (y, aux).
    self_attention: keys come from the queries' tokens (Dkv must be Dq).
    names: the caller's names of x_q and x_kv, used in error messages.

  Returns:
    (L, Do) in x_q's dtype [, aux].
  """
  Dq, Dkv, _, _, _, _, Do = _checks.check_attention_params(
      params, self_attention=self_attention)
  x_q = _checks.check_tokens(x_q, names[0], Dq)
  x_kv = _checks.check_tokens(x_kv, names[1], Dkv)
  if (q_positions is None) != (kv_positions is None):
    raise ValueError(
        "q_positions, kv_positions: expected both or neither, got "
        f"q_positions={'set' if q_positions is not None else None}, "
        f"kv_positions={'set' if kv_positions is not None else None}")
  q_LHK, k_MGK, v_MGV = project_qkv(params, x_q, x_kv, precision=precision)
  if q_positions is not None:
    q_LHK = positional.apply_rope(q_LHK, q_positions)
    k_MGK = positional.apply_rope(k_MGK, kv_positions)
  out = core(q_LHK, k_MGK, v_MGV)
  out_LHV, aux = out if has_aux else (out, None)
  y_LD = project_output(params, out_LHV, precision=precision).astype(x_q.dtype)
  chex.assert_shape(y_LD, (x_q.shape[0], Do))
  return (y_LD, aux) if has_aux else y_LD


def multi_head_attention(params, x_q, x_kv, mask=None, *, bias=None,
                         scale=None, is_causal: bool = False,
                         local_window=None, key_valid_len=None,
                         query_valid_len=None, q_positions=None,
                         kv_positions=None, return_weights: bool = False,
                         precision=None, implementation: str | None = None,
                         attention_fn: Callable | None = None):
  """Multi-head attention of L query tokens over M key/value tokens.

  Args:
    params: dict from `init_multi_head_attention` (shapes in module docs).
    x_q: (L, Dq) query tokens.
    x_kv: (M, Dkv) key/value tokens.
    mask: optional bool broadcastable to (H, L, M), True = may attend.
    bias: optional float logit bias broadcastable to (H, L, M).
    scale: logit scale, default 1 / sqrt(K).
    is_causal: restrict query i to keys j <= i.
    local_window, key_valid_len, query_valid_len: as in
      `jattn.dot_product_attention`.
    q_positions, kv_positions: optional (L,) and (M,) positions; when given,
      rotary embeddings (`apply_rope`) rotate the projected queries and keys.
    return_weights: also return float32 (H, L, M) attention weights (the
      default core only).
    precision: einsum precision.
    implementation: attention implementation of the default core, None
      (automatic), "dense", "blockwise" or "pallas" (see
      `jattn.dot_product_attention`).
    attention_fn: the attention core (default `jattn.dot_product_attention`),
      called as `attention_fn(q_LHK, k_MGK, v_MGV, mask=mask, bias=bias,
      scale=scale, is_causal=is_causal, local_window=local_window,
      key_valid_len=key_valid_len, query_valid_len=query_valid_len,
      precision=precision) -> (L, H, V)`; see `jattn.attention`.

  Returns:
    (L, Do) in x_q's dtype (and the weights if asked).
  """
  core = _bound_core(attention_fn, implementation, return_weights, mask=mask,
                     bias=bias, scale=scale, is_causal=is_causal,
                     local_window=local_window, key_valid_len=key_valid_len,
                     query_valid_len=query_valid_len, precision=precision)
  return attention_layer(params, x_q, x_kv, core, q_positions=q_positions,
                         kv_positions=kv_positions, precision=precision,
                         has_aux=return_weights)


def _bound_core(attention_fn, implementation, return_weights: bool,
                **core_args):
  """`core(q, k, v)`: attention_fn (default `dot_product_attention`) with
  the layer's mask and structure arguments bound."""
  if attention_fn is None:
    attention_fn = functools.partial(
        attention_lib.dot_product_attention, implementation=implementation,
        return_weights=return_weights)
  elif implementation is not None or return_weights:
    raise ValueError(
        "attention_fn: expected None with implementation= or "
        "return_weights=True (they configure the default core), got "
        f"{attention_fn!r}")
  return functools.partial(attention_fn, **core_args)


def self_attention(params, x, mask=None, *, positions=None, bias=None,
                   scale=None, is_causal: bool = False, local_window=None,
                   key_valid_len=None, query_valid_len=None,
                   return_weights: bool = False, precision=None,
                   implementation: str | None = None,
                   attention_fn: Callable | None = None):
  """Self-attention: queries, keys and values all come from x.

  Args:
    params: dict from `init_self_attention`.
    x: (n, D) tokens.
    mask: optional bool broadcastable to (H, n, n), True = may attend. A
      mask of shape (n,) marks token validity: padded tokens are hidden as
      keys and their rows of x are zeroed first (their own outputs are then
      those of a zero query; garbage in them changes nothing else).
    positions: optional (n,) positions for rotary embeddings.
    bias, scale, is_causal, local_window, key_valid_len, query_valid_len,
      return_weights, precision, implementation, attention_fn: as in
      `multi_head_attention`.

  Returns:
    (n, D) (and float32 (H, n, n) weights if `return_weights`).
  """
  if mask is not None and jnp.ndim(mask) == 1 and jnp.ndim(x) == 2:
    # A (n,) mask marks token validity: padding is dropped as keys and its
    # inputs zeroed, so whatever it holds reaches no real output or gradient.
    x = masks_lib.zero_padded_rows(
        jnp.asarray(x), _checks.check_token_mask(mask, jnp.shape(x)[0]))
  core = _bound_core(attention_fn, implementation, return_weights, mask=mask,
                     bias=bias, scale=scale, is_causal=is_causal,
                     local_window=local_window, key_valid_len=key_valid_len,
                     query_valid_len=query_valid_len, precision=precision)
  return attention_layer(params, x, x, core, q_positions=positions,
                         kv_positions=positions, precision=precision,
                         has_aux=return_weights, self_attention=True,
                         names=("x", "x"))
