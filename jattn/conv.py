"""1-D convolution over a sequence, per example: (N, D) -> (N, D).

Parameters are a plain dict; the kernel size k and the width D are read off
the arrays' shapes:

  w (k, D, D)   kernel, w[j] maps an input token to an output token
  b (D,)        bias [use_bias]

Output position i reads the inputs

  x[i - left + j * dilation] for j = 0 .. k - 1   (zero outside 0 .. N-1)

so `y_i = b + sum_j x[i - left + j * dilation] @ w[j]` (a cross-correlation,
as in `jax.lax.conv_general_dilated`; the kernel is not flipped). The span of
one layer is (k - 1) * dilation + 1 tokens, and

* symmetric ("same", the default): left = floor((k - 1) * dilation / 2). For
  odd k the window is centred on i; for even k the extra tap is on the right
  (future) side, as with `padding="SAME"` in `jax.lax` and PyTorch's
  `padding="same"`.
* causal: left = (k - 1) * dilation, so output i sees inputs
  i - (k - 1) * dilation .. i and nothing later.

A stack of L layers with kernel k and dilations 1, k, k^2, ..., k^(L-1) (a
TCN) spans k^L tokens, so O(log_k n) layers cover a sequence of n tokens
(see `jattn.stack.dilated_conv_stack`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import masks as masks_lib


def init_conv_layer(key, d_model: int, kernel_size: int, *,
                    use_bias: bool = True, dtype=jnp.float32):
  """Parameters of a width-preserving 1-D convolution.

  Args:
    key: PRNG key.
    d_model: D, input and output channels.
    kernel_size: k, taps per output token.
    use_bias: add a bias b (initialised to zero).
    dtype: parameter dtype.

  Returns:
    {"w": (k, D, D), "b": (D,)} ("b" omitted without bias). w is LeCun-normal
    with fan-in k * D.
  """
  _checks.check_prng_key(key)
  _checks.check_positive_int(d_model, "d_model")
  _checks.check_positive_int(kernel_size, "kernel_size")
  init = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
  params = {"w": init(key, (kernel_size, d_model, d_model), dtype)}
  if use_bias:
    params["b"] = jnp.zeros((d_model,), dtype)
  return params


def conv_padding(kernel_size: int, *, causal: bool = False,
                 dilation: int = 1) -> tuple[int, int]:
  """(left, right) zero padding that keeps the length N.

  left + right = (k - 1) * dilation; output i reads inputs
  i - left .. i + right.
  """
  _checks.check_positive_int(kernel_size, "kernel_size")
  _checks.check_positive_int(dilation, "dilation")
  total = (kernel_size - 1) * dilation
  left = total if causal else total // 2
  return left, total - left


def _check_conv_params(params):
  """Validates the params dict; returns (k, D)."""
  _checks.check_params(params, "params", {"w": 3})
  k, D, Do = params["w"].shape
  if Do != D:
    raise ValueError(
        f"params['w']: expected shape (k, D, D) (input width = output width), "
        f"got {params['w'].shape}")
  if "b" in params:
    _checks.check_shape(params["b"], "params['b']", (D,))
    _checks.check_floating(params["b"], "params['b']")
  return k, D


def conv_layer(params, x_ND, mask=None, *, causal: bool = False,
               dilation: int = 1, precision=None):
  """Linear 1-D convolution of one sequence, "same" length.

  Args:
    params: dict from `init_conv_layer`: w (k, D, D), optional b (D,).
    x_ND: (N, D) tokens.
    mask: optional bool (N,), True = real token. Padded tokens are zeroed
      before the convolution (they cannot leak into valid outputs), and the
      outputs at padded positions are exactly zero.
    causal: output i sees only inputs i - (k - 1) * dilation .. i.
    dilation: spacing between taps (a Python int >= 1).
    precision: passed to the convolution (e.g. `jax.lax.Precision.HIGHEST`).

  Returns:
    (N, D) in x's dtype. The padding rule is in the module docstring.
  """
  k, D = _check_conv_params(params)
  x_ND = jnp.asarray(x_ND)
  _checks.check_rank(x_ND, "x_ND", 2, example=True)
  _checks.check_floating(x_ND, "x_ND")
  _checks.check_shape(x_ND, "x_ND", (None, D))
  if not isinstance(causal, bool):
    raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
  _checks.check_positive_int(dilation, "dilation")
  N = x_ND.shape[0]
  mask_N = None if mask is None else _checks.check_token_mask(mask, N)

  compute = jnp.result_type(x_ND, params["w"])
  x_ND = masks_lib.zero_padded_rows(x_ND, mask_N)
  left, right = conv_padding(k, causal=causal, dilation=dilation)
  y_1ND = jax.lax.conv_general_dilated(
      x_ND.astype(compute)[None], params["w"].astype(compute),
      window_strides=(1,), padding=[(left, right)], rhs_dilation=(dilation,),
      dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)
  y_ND = y_1ND[0]
  if "b" in params:
    y_ND = y_ND + params["b"].astype(compute)[None]
  y_ND = masks_lib.zero_padded_rows(y_ND, mask_N).astype(x_ND.dtype)
  chex.assert_shape(y_ND, (N, D))
  return y_ND
