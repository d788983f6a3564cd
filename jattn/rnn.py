"""Recurrent layers (Elman, GRU, LSTM) over a sequence, per example.

Parameters of one direction are a plain dict; the cell kind is read off the
number of gates S, the widths off the other axes:

  w_x (D, S, Hd)    input-to-gate weights
  w_h (Hd, S, Hd)   hidden-to-gate weights
  b   (S, Hd)       gate biases (one per gate, the d2l form)
  w_out (Hd, D)     output projection, only when Hd != D (unidirectional)

  S = 1: Elman (tanh) cell, S = 3: GRU, S = 4: LSTM.

Bidirectional params are {"forward": {...}, "backward": {...}}, each a
one-direction dict with Hd = D / 2 and no w_out; the two hidden sequences are
concatenated, forward first, to width D.

Cell equations (row vectors; sigma = logistic sigmoid; gate slices of the S
axis in the order listed):

  Elman:  h' = tanh(x W_x + h W_h + b)
  GRU (Cho et al. 2014, the d2l form; gates [r, z, n]):
          r  = sigma(x W_xr + h W_hr + b_r)          reset gate
          z  = sigma(x W_xz + h W_hz + b_z)          update gate
          n  = tanh(x W_xn + (r * h) W_hn + b_n)      candidate state
          h' = z * h + (1 - z) * n
    (The reset gate multiplies h before W_hn, as in d2l and Cho et al.;
    PyTorch/cuDNN apply it after the product.)
  LSTM (the d2l form; gates [i, f, o, g]):
          i, f, o = sigma(x W_x{i,f,o} + h W_h{i,f,o} + b_{i,f,o})
          g  = tanh(x W_xg + h W_hg + b_g)
          c' = f * c + i * g
          h' = o * tanh(c')

The state starts at zero. The layer output at step t is the hidden state h_t
(through w_out when present). With a token mask, a padded step leaves the
carried state (h, and c for the LSTM) unchanged and outputs exactly zero, so
a right-padded sequence runs the reverse direction from its last real token.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import masks as masks_lib

CELLS = {"elman": 1, "gru": 3, "lstm": 4}
_CELL_OF_GATES = {s: name for name, s in CELLS.items()}


def _init_direction(key, d_model: int, hidden_dim: int, num_gates: int,
                    dtype):
  key_x, key_h = jax.random.split(key)
  in_init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
  rec_init = jax.nn.initializers.orthogonal()
  # QR runs in float32 or wider (LAPACK has no bfloat16), then casts.
  qr_dtype = jnp.promote_types(dtype, jnp.float32)
  w_h_SHH = jax.vmap(
      lambda k: rec_init(k, (hidden_dim, hidden_dim), qr_dtype))(
          jax.random.split(key_h, num_gates)).astype(dtype)
  return {
      "w_x": in_init(key_x, (d_model, num_gates, hidden_dim), dtype),
      "w_h": jnp.transpose(w_h_SHH, (1, 0, 2)),
      "b": jnp.zeros((num_gates, hidden_dim), dtype),
  }


def init_rnn_layer(key, d_model: int, *, cell: str = "gru",
                   hidden_dim: int | None = None, bidirectional: bool = False,
                   dtype=jnp.float32):
  """Parameters of a recurrent layer (N, D) -> (N, D).

  Args:
    key: PRNG key.
    d_model: D, input and output width.
    cell: "elman", "gru" (default) or "lstm".
    hidden_dim: Hd. Unidirectional: default D; any other value adds an output
      projection w_out (Hd, D). Bidirectional: must be None or D // 2.
    bidirectional: a forward and a backward recurrence of width D // 2 each
      (D must be even), concatenated.
    dtype: parameter dtype.

  Returns:
    dict of arrays, shapes in the module docstring. w_x is LeCun-normal,
    each gate block of w_h orthogonal, biases zero.
  """
  _checks.check_prng_key(key)
  _checks.check_positive_int(d_model, "d_model")
  if cell not in CELLS:
    raise ValueError(
        f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
  if not isinstance(bidirectional, bool):
    raise TypeError(
        f"bidirectional: expected a bool, got {type(bidirectional).__name__}")
  num_gates = CELLS[cell]
  if bidirectional:
    if d_model % 2:
      raise ValueError(
          f"d_model: expected an even width for a bidirectional layer, got "
          f"{d_model}")
    half = d_model // 2
    if hidden_dim is not None and hidden_dim != half:
      raise ValueError(
          f"hidden_dim: expected None or d_model // 2 = {half} for a "
          f"bidirectional layer, got {hidden_dim}")
    key_f, key_b = jax.random.split(key)
    return {
        "forward": _init_direction(key_f, d_model, half, num_gates, dtype),
        "backward": _init_direction(key_b, d_model, half, num_gates, dtype),
    }
  hidden_dim = d_model if hidden_dim is None else hidden_dim
  _checks.check_positive_int(hidden_dim, "hidden_dim")
  key_cell, key_out = jax.random.split(key)
  params = _init_direction(key_cell, d_model, hidden_dim, num_gates, dtype)
  if hidden_dim != d_model:
    out_init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=1)
    params["w_out"] = out_init(key_out, (hidden_dim, d_model), dtype)
  return params


def _check_direction(params, name: str, d_in: int | None, d_out: int | None):
  """Validates one direction's params; returns (cell, D, Hd, output width)."""
  _checks.check_params(params, name, {"w_x": 3, "w_h": 3, "b": 2})
  D, S, Hd = params["w_x"].shape
  if S not in _CELL_OF_GATES:
    raise ValueError(
        f"{name}['w_x']: expected S = 1 (elman), 3 (gru) or 4 (lstm) gates "
        f"on axis 1, got shape {params['w_x'].shape}")
  if d_in is not None and D != d_in:
    raise ValueError(
        f"{name}['w_x']: expected input width {d_in} on axis 0, got shape "
        f"{params['w_x'].shape}")
  _checks.check_shape(params["w_h"], f"{name}['w_h']", (Hd, S, Hd))
  _checks.check_shape(params["b"], f"{name}['b']", (S, Hd))
  width = Hd
  if "w_out" in params:
    _checks.check_params(params, name, {"w_out": 2})
    _checks.check_shape(params["w_out"], f"{name}['w_out']", (Hd, D))
    width = D
  if d_out is not None and width != d_out:
    raise ValueError(
        f"{name}: expected output width {d_out}, got hidden width {Hd} and "
        f"no 'w_out' (Hd, D) projection")
  return _CELL_OF_GATES[S], D, Hd, width


def _step(cell: str, w_h_HSH, carry, xw_SH, precision):
  """One cell update from the precomputed input term xw = x W_x + b."""
  sig = jax.nn.sigmoid
  hw = lambda h_H, w_HSH: jnp.einsum("h,hsk->sk", h_H, w_HSH,
                                     precision=precision)
  if cell == "elman":
    h_H = carry
    h_new = jnp.tanh(xw_SH[0] + hw(h_H, w_h_HSH)[0])
    return h_new, h_new
  if cell == "gru":
    h_H = carry
    hw_2H = hw(h_H, w_h_HSH[:, :2])
    r_H = sig(xw_SH[0] + hw_2H[0])
    z_H = sig(xw_SH[1] + hw_2H[1])
    n_H = jnp.tanh(xw_SH[2] + hw(r_H * h_H, w_h_HSH[:, 2:])[0])
    h_new = z_H * h_H + (1 - z_H) * n_H
    return h_new, h_new
  h_H, c_H = carry
  gates_SH = xw_SH + hw(h_H, w_h_HSH)
  i_H, f_H, o_H = sig(gates_SH[0]), sig(gates_SH[1]), sig(gates_SH[2])
  g_H = jnp.tanh(gates_SH[3])
  c_new = f_H * c_H + i_H * g_H
  h_new = o_H * jnp.tanh(c_new)
  return (h_new, c_new), h_new


def _run_direction(params, cell: str, x_ND, mask_N, reverse: bool, compute,
                   precision):
  """Scans one direction; returns the (N, width) outputs in `compute`."""
  N = x_ND.shape[0]
  Hd = params["w_h"].shape[0]
  w_x = params["w_x"].astype(compute)
  w_h = params["w_h"].astype(compute)
  xw_NSH = (jnp.einsum("nd,dsh->nsh", x_ND.astype(compute), w_x,
                       precision=precision)
            + params["b"].astype(compute)[None])
  valid_N = jnp.ones((N,), bool) if mask_N is None else mask_N
  h0 = jnp.zeros((Hd,), compute)
  carry0 = (h0, h0) if cell == "lstm" else h0

  def body(carry, inputs):
    xw_SH, valid = inputs
    new_carry, h_H = _step(cell, w_h, carry, xw_SH, precision)
    carry = jax.tree.map(lambda new, old: jnp.where(valid, new, old),
                         new_carry, carry)
    return carry, jnp.where(valid, h_H, jnp.zeros((), compute))

  _, h_NH = jax.lax.scan(body, carry0, (xw_NSH, valid_N), reverse=reverse)
  if "w_out" in params:
    h_NH = jnp.matmul(h_NH, params["w_out"].astype(compute),
                      precision=precision)
  return h_NH


def rnn_layer(params, x_ND, mask=None, *, reverse: bool = False,
              precision=None):
  """Runs a recurrent layer over one sequence with `jax.lax.scan`.

  Args:
    params: dict from `init_rnn_layer` (one direction, or bidirectional
      {"forward", "backward"}); the cell kind is read off the gate count.
    x_ND: (N, D) tokens.
    mask: optional bool (N,), True = real token. Padded steps keep the carried
      state unchanged and output exactly zero.
    reverse: run a one-direction layer from the last token to the first
      (outputs stay at their positions). Must be False for bidirectional
      params, which always run both ways.
    precision: passed to the matrix products (e.g.
      `jax.lax.Precision.HIGHEST`).

  Returns:
    (N, D) in x's dtype: the hidden states (bidirectional: [forward,
    backward] concatenated on the last axis).
  """
  x_ND = jnp.asarray(x_ND)
  _checks.check_rank(x_ND, "x_ND", 2, example=True)
  _checks.check_floating(x_ND, "x_ND")
  if not isinstance(reverse, bool):
    raise TypeError(f"reverse: expected a bool, got {type(reverse).__name__}")
  if not isinstance(params, dict):
    raise TypeError(
        f"params: expected a dict of arrays, got {type(params).__name__}")
  N, D = x_ND.shape
  mask_N = None if mask is None else _checks.check_token_mask(mask, N)
  x_ND = masks_lib.zero_padded_rows(x_ND, mask_N)

  if "forward" in params or "backward" in params:
    if set(params) != {"forward", "backward"}:
      raise ValueError(
          f"params: expected keys ['backward', 'forward'] for a bidirectional "
          f"layer, got {sorted(params)}")
    if reverse:
      raise ValueError(
          "reverse: expected False for bidirectional params (they run both "
          "directions), got True")
    if D % 2:
      raise ValueError(
          f"x_ND: expected an even width D for bidirectional params, got "
          f"shape {x_ND.shape}")
    cell_f, *_ = _check_direction(params["forward"], "params['forward']", D,
                                  D // 2)
    cell_b, *_ = _check_direction(params["backward"], "params['backward']", D,
                                  D // 2)
    if cell_f != cell_b:
      raise ValueError(
          f"params['backward']: expected the same cell as the forward "
          f"direction ({cell_f}), got {cell_b}")
    compute = jnp.result_type(x_ND, *jax.tree.leaves(params))
    fwd_NH = _run_direction(params["forward"], cell_f, x_ND, mask_N, False,
                            compute, precision)
    bwd_NH = _run_direction(params["backward"], cell_b, x_ND, mask_N, True,
                            compute, precision)
    y_ND = jnp.concatenate([fwd_NH, bwd_NH], axis=-1)
  else:
    cell, *_ = _check_direction(params, "params", D, D)
    compute = jnp.result_type(x_ND, *jax.tree.leaves(params))
    y_ND = _run_direction(params, cell, x_ND, mask_N, reverse, compute,
                          precision)

  y_ND = masks_lib.zero_padded_rows(y_ND, mask_N).astype(x_ND.dtype)
  chex.assert_shape(y_ND, (N, D))
  return y_ND
