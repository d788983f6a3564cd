"""Float64 NumPy oracles for the attention core, written from the definitions.

Nothing here imports jattn: each oracle loops over heads/queries in plain
NumPy so that it shares no code (and no shortcuts) with the library.
"""

from __future__ import annotations

import math

import numpy as np


def softmax_rows(logits, mask=None):
  """Row softmax in float64; masked entries 0; fully masked rows all 0."""
  logits = np.asarray(logits, np.float64)
  mask = np.ones(logits.shape, bool) if mask is None else np.broadcast_to(
      np.asarray(mask, bool), logits.shape)
  out = np.zeros_like(logits)
  flat_logits = logits.reshape(-1, logits.shape[-1])
  flat_mask = mask.reshape(-1, logits.shape[-1])
  flat_out = out.reshape(-1, logits.shape[-1])
  for r in range(flat_logits.shape[0]):
    keep = flat_mask[r]
    if not keep.any():
      continue
    row = flat_logits[r][keep]
    e = np.exp(row - row.max())
    flat_out[r][keep] = e / e.sum()
  return out


def attention(q, k, v, mask=None, bias=None, scale=None):
  """Multi-head attention q (L,H,K), k (M,G,K), v (M,G,V) -> (L,H,V), (H,L,M).

  Query head h uses key/value head h // (H // G).
  """
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, H, K = q.shape
  M, G, V = v.shape
  group = H // G
  scale = 1.0 / math.sqrt(K) if scale is None else scale
  out = np.zeros((L, H, V))
  weights = np.zeros((H, L, M))
  mask = None if mask is None else np.broadcast_to(mask, (H, L, M))
  bias = None if bias is None else np.broadcast_to(
      np.asarray(bias, np.float64), (H, L, M))
  for h in range(H):
    g = h // group
    logits = np.zeros((L, M))
    for i in range(L):
      for j in range(M):
        logits[i, j] = scale * np.dot(q[i, h], k[j, g])
    if bias is not None:
      logits = logits + bias[h]
    w = softmax_rows(logits, None if mask is None else mask[h])
    weights[h] = w
    out[:, h] = w @ v[:, g]
  return out, weights


def additive_attention(params, q, k, v, mask=None):
  """Bahdanau attention: score_ij = w_v . tanh(W_q^T q_i + W_k^T k_j)."""
  w_q, w_k, w_v = (np.asarray(params[n], np.float64)
                   for n in ("w_q", "w_k", "w_v"))
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  L, M = q.shape[0], k.shape[0]
  scores = np.zeros((L, M))
  for i in range(L):
    for j in range(M):
      scores[i, j] = np.dot(w_v, np.tanh(q[i] @ w_q + k[j] @ w_k))
  weights = softmax_rows(scores, mask)
  return weights @ v, weights


def multi_head_attention(params, x_q, x_kv, mask=None):
  """Projections, per-head attention and output projection in float64."""
  p = {n: np.asarray(a, np.float64) for n, a in params.items()}
  x_q, x_kv = np.asarray(x_q, np.float64), np.asarray(x_kv, np.float64)
  q = np.einsum("ld,dhk->lhk", x_q, p["w_q"])
  k = np.einsum("md,dgk->mgk", x_kv, p["w_k"])
  v = np.einsum("md,dgv->mgv", x_kv, p["w_v"])
  if "b_q" in p:
    q, k, v = q + p["b_q"], k + p["b_k"], v + p["b_v"]
  heads, weights = attention(q, k, v, mask)
  y = np.einsum("lhv,hvo->lo", heads, p["w_o"])
  if "b_o" in p:
    y = y + p["b_o"]
  return y, weights


def sinusoidal(num_positions, d_model, base=10000.0):
  """Table P[i, c]: sin for even c, cos for odd c, frequency from c // 2."""
  table = np.zeros((num_positions, d_model))
  for i in range(num_positions):
    for c in range(d_model):
      angle = i / base ** ((c - c % 2) / d_model)
      table[i, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
  return table


def rope(x, positions, base=10000.0):
  """Rotates each feature pair (2i, 2i+1) by position * base^(-2i/K)."""
  x = np.asarray(x, np.float64)
  squeeze = x.ndim == 2
  if squeeze:
    x = x[:, None, :]
  out = np.empty_like(x)
  K = x.shape[-1]
  for n, p in enumerate(np.asarray(positions, np.float64)):
    for i in range(K // 2):
      theta = p * base ** (-2.0 * i / K)
      c, s = math.cos(theta), math.sin(theta)
      a, b = x[n, :, 2 * i], x[n, :, 2 * i + 1]
      out[n, :, 2 * i] = a * c - b * s
      out[n, :, 2 * i + 1] = a * s + b * c
  return out[:, 0] if squeeze else out
