"""Position-wise feed-forward network and layer normalisation, per example.

  feed-forward:  y = act(x W_1 + b_1) W_2 + b_2
                 w_1 (D, F)  b_1 (F,)  w_2 (F, D)  b_2 (D,)   [biases optional]
  layer norm:    y = (x - mean) / sqrt(var + eps) * scale + bias  (last axis)
                 scale (D,)  bias (D,)
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks

_FFN_BIASES = ("b_1", "b_2")


def init_feed_forward(key, d_model: int, d_ff: int, *, use_bias: bool = True,
                      dtype=jnp.float32):
  """Parameters of a position-wise feed-forward network D -> F -> D.

  Args:
    key: PRNG key.
    d_model: D.
    d_ff: F, the hidden width.
    use_bias: add b_1 and b_2 (initialised to zero).
    dtype: parameter dtype.

  Returns:
    {"w_1": (D, F), "b_1": (F,), "w_2": (F, D), "b_2": (D,)}; weights are
    LeCun-normal.
  """
  _checks.check_prng_key(key)
  _checks.check_positive_int(d_model, "d_model")
  _checks.check_positive_int(d_ff, "d_ff")
  key_1, key_2 = jax.random.split(key)
  init = jax.nn.initializers.lecun_normal()
  params = {
      "w_1": init(key_1, (d_model, d_ff), dtype),
      "w_2": init(key_2, (d_ff, d_model), dtype),
  }
  if use_bias:
    params["b_1"] = jnp.zeros((d_ff,), dtype)
    params["b_2"] = jnp.zeros((d_model,), dtype)
  return params


def feed_forward(params, x_ND, *, activation=jax.nn.relu, precision=None):
  """Applies the same two-layer MLP to every token.

  Args:
    params: dict from `init_feed_forward`.
    x_ND: (N, D) tokens.
    activation: elementwise nonlinearity after the first layer.
    precision: passed to the two matrix products.

  Returns:
    (N, D) in x's dtype.
  """
  _checks.check_params(params, "params", {"w_1": 2, "w_2": 2})
  D, F = params["w_1"].shape
  _checks.check_shape(params["w_2"], "params['w_2']", (F, D))
  present = [b for b in _FFN_BIASES if b in params]
  if present and len(present) != len(_FFN_BIASES):
    raise ValueError(
        f"params: expected all or none of {list(_FFN_BIASES)}, got {present}")
  if present:
    _checks.check_params(params, "params", {"b_1": 1, "b_2": 1})
    _checks.check_shape(params["b_1"], "params['b_1']", (F,))
    _checks.check_shape(params["b_2"], "params['b_2']", (D,))
  x_ND = jnp.asarray(x_ND)
  _checks.check_rank(x_ND, "x_ND", 2, example=True)
  _checks.check_floating(x_ND, "x_ND")
  _checks.check_shape(x_ND, "x_ND", (None, D))

  compute = jnp.result_type(x_ND, *params.values())
  h_NF = jnp.matmul(x_ND.astype(compute), params["w_1"].astype(compute),
                    precision=precision)
  if present:
    h_NF = h_NF + params["b_1"].astype(compute)[None]
  h_NF = activation(h_NF)
  y_ND = jnp.matmul(h_NF, params["w_2"].astype(compute), precision=precision)
  if present:
    y_ND = y_ND + params["b_2"].astype(compute)[None]
  y_ND = y_ND.astype(x_ND.dtype)
  chex.assert_shape(y_ND, x_ND.shape)
  return y_ND


def init_layer_norm(d_model: int, *, dtype=jnp.float32):
  """{"scale": ones (D,), "bias": zeros (D,)}."""
  _checks.check_positive_int(d_model, "d_model")
  return {"scale": jnp.ones((d_model,), dtype),
          "bias": jnp.zeros((d_model,), dtype)}


def layer_norm(params, x, *, eps: float = 1e-5):
  """Normalises the last axis of x to zero mean and unit variance.

  Statistics and arithmetic run in float32 (float64 stays float64); the
  variance is the biased (population) one, as in d2l / `torch.nn.LayerNorm`.

  Args:
    params: dict from `init_layer_norm`: scale (D,), bias (D,).
    x: (..., D), usually (N, D).
    eps: added to the variance.

  Returns:
    x's shape and dtype.
  """
  _checks.check_params(params, "params", {"scale": 1, "bias": 1})
  D = params["scale"].shape[0]
  _checks.check_shape(params["bias"], "params['bias']", (D,))
  x = jnp.asarray(x)
  _checks.check_floating(x, "x")
  if x.ndim < 1 or x.shape[-1] != D:
    raise ValueError(
        f"x: expected shape (..., {D}) (last axis = params width), got "
        f"{x.shape}")
  acc = jnp.promote_types(jnp.result_type(x, *params.values()), jnp.float32)
  xf = x.astype(acc)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  centred = xf - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  lead = (1,) * (x.ndim - 1)
  y = (centred * jax.lax.rsqrt(var + jnp.asarray(eps, acc))
       * params["scale"].astype(acc).reshape(lead + (D,))
       + params["bias"].astype(acc).reshape(lead + (D,)))
  y = y.astype(x.dtype)
  chex.assert_shape(y, x.shape)
  return y
