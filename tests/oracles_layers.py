"""Float64 NumPy reference implementations of the sequence layers.

Written from the equations (plain loops, no jattn imports) so the tests compare
jattn against an independent computation. Every function takes NumPy/JAX
arrays and returns float64 NumPy arrays. A mask is a bool (N,) token mask,
True = real token; padded inputs are treated as zero and padded outputs are 0.
"""

from __future__ import annotations

import numpy as np


def _f64(tree):
  if isinstance(tree, dict):
    return {k: _f64(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)


def _mask_or_ones(mask, n):
  return np.ones(n, bool) if mask is None else np.asarray(mask, bool)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------- convolution


def conv(params, x, mask=None, *, causal=False, dilation=1):
  """y[i] = b + sum_j x[i - left + j * dilation] @ w[j], zeros outside."""
  p = _f64(params)
  x = _f64(x)
  n, d = x.shape
  w = p["w"]
  k = w.shape[0]
  valid = _mask_or_ones(mask, n)
  span = (k - 1) * dilation
  left = span if causal else span // 2
  y = np.zeros((n, w.shape[2]))
  for i in range(n):
    if not valid[i]:
      continue
    acc = np.array(p["b"]) if "b" in p else np.zeros(w.shape[2])
    for j in range(k):
      src = i - left + j * dilation
      if 0 <= src < n and valid[src]:
        acc = acc + x[src] @ w[j]
    y[i] = acc
  return y


# ------------------------------------------------------------------ recurrence


def _cell_elman(p, h, c, x):
  h_new = np.tanh(x @ p["w_x"][:, 0] + h @ p["w_h"][:, 0] + p["b"][0])
  return h_new, c


def _cell_gru(p, h, c, x):
  # Gates [r, z, n]; d2l / Cho et al. form, reset applied before W_hn.
  gate = lambda s, hh: x @ p["w_x"][:, s] + hh @ p["w_h"][:, s] + p["b"][s]
  r = sigmoid(gate(0, h))
  z = sigmoid(gate(1, h))
  cand = np.tanh(gate(2, r * h))
  return z * h + (1.0 - z) * cand, c


def _cell_lstm(p, h, c, x):
  gate = lambda s: x @ p["w_x"][:, s] + h @ p["w_h"][:, s] + p["b"][s]
  i, f, o = sigmoid(gate(0)), sigmoid(gate(1)), sigmoid(gate(2))
  g = np.tanh(gate(3))
  c_new = f * c + i * g
  return o * np.tanh(c_new), c_new


_CELLS = {1: _cell_elman, 3: _cell_gru, 4: _cell_lstm}


def _rnn_direction(p, x, valid, reverse):
  n = x.shape[0]
  hd = p["w_h"].shape[0]
  step = _CELLS[p["w_x"].shape[1]]
  h = np.zeros(hd)
  c = np.zeros(hd)
  out = np.zeros((n, hd))
  order = range(n - 1, -1, -1) if reverse else range(n)
  for t in order:
    if not valid[t]:
      continue  # carry unchanged, output zero
    h, c = step(p, h, c, x[t])
    out[t] = h
  if "w_out" in p:
    out = out @ p["w_out"]
  return out


def rnn(params, x, mask=None, *, reverse=False):
  """Elman / GRU / LSTM by gate count; bidirectional if params has "forward"."""
  p = _f64(params)
  x = _f64(x)
  valid = _mask_or_ones(mask, x.shape[0])
  if "forward" in p:
    out = np.concatenate([_rnn_direction(p["forward"], x, valid, False),
                          _rnn_direction(p["backward"], x, valid, True)], -1)
  else:
    out = _rnn_direction(p, x, valid, reverse)
  out[~valid] = 0.0
  return out


# ------------------------------------------------------------- feed-forward/LN


def layer_norm(params, x, eps=1e-5):
  p = _f64(params)
  x = _f64(x)
  out = np.empty_like(x)
  for i in range(x.shape[0]):
    row = x[i]
    mu = row.sum() / row.size
    var = ((row - mu) ** 2).sum() / row.size
    out[i] = (row - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]
  return out


def feed_forward(params, x, activation=lambda h: np.maximum(h, 0.0)):
  p = _f64(params)
  x = _f64(x)
  h = x @ p["w_1"] + (p["b_1"] if "b_1" in p else 0.0)
  return activation(h) @ p["w_2"] + (p["b_2"] if "b_2" in p else 0.0)


def self_attention(params, x, allowed):
  """Multi-head self-attention; allowed: bool (H, N, N) or broadcastable.

  Returns (y (N, D), weights (H, N, N)); a fully masked row gives zeros.
  """
  p = _f64(params)
  x = _f64(x)
  n = x.shape[0]
  _, H, K = p["w_q"].shape
  G = p["w_k"].shape[1]
  allowed = np.broadcast_to(np.asarray(allowed, bool), (H, n, n))
  bias = "b_q" in p
  y = np.zeros((n, p["w_o"].shape[2]))
  weights = np.zeros((H, n, n))
  for h in range(H):
    g = h // (H // G)
    q = x @ p["w_q"][:, h] + (p["b_q"][h] if bias else 0.0)
    k = x @ p["w_k"][:, g] + (p["b_k"][g] if bias else 0.0)
    v = x @ p["w_v"][:, g] + (p["b_v"][g] if bias else 0.0)
    for i in range(n):
      idx = [j for j in range(n) if allowed[h, i, j]]
      if not idx:
        continue
      logits = np.array([q[i] @ k[j] / np.sqrt(K) for j in idx])
      e = np.exp(logits - logits.max())
      for j, wj in zip(idx, e / e.sum()):
        weights[h, i, j] = wj
      y[i] += (weights[h, i] @ v) @ p["w_o"][h]
  if bias:
    y = y + p["b_o"]
  return y, weights


def transformer_block(params, x, mask=None, *, pre_norm=False,
                      is_causal=False, keep_1=None, keep_2=None, rate=0.0):
  """Encoder block; mask is a (N,) token mask or an (H|1, N, N)/(N, N) mask.

  keep_1 / keep_2: optional bool (N, D) dropout keep masks for the attention
  and feed-forward sublayer outputs (inverted dropout with `rate`).
  """
  x = _f64(x)
  n = x.shape[0]
  allowed = np.ones((n, n), bool)
  token = None
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.ndim == 1:
      token = mask
      x = np.where(token[:, None], x, 0.0)
      allowed = allowed & token[None, :]
    else:
      allowed = allowed & mask
  if is_causal:
    allowed = allowed & np.tril(np.ones((n, n), bool))

  def drop(y, keep):
    return y if keep is None else np.where(keep, y / (1.0 - rate), 0.0)

  attend = lambda h: self_attention(params["attention"], h, allowed)
  if pre_norm:
    a, w = attend(layer_norm(params["norm_1"], x))
    h = x + drop(a, keep_1)
    y = h + drop(feed_forward(params["ffn"], layer_norm(params["norm_2"], h)),
                 keep_2)
  else:
    a, w = attend(x)
    h = layer_norm(params["norm_1"], x + drop(a, keep_1))
    y = layer_norm(params["norm_2"], h + drop(feed_forward(params["ffn"], h),
                                              keep_2))
  if token is not None:
    y[~token] = 0.0
  return y, w
