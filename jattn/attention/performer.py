"""Performer attention (Choromanski et al. 2021, FAVOR+), per example.

Softmax attention weighs value j for query i by exp(s q_i . k_j) (s the logit
scale, 1/sqrt(K) by default). FAVOR+ writes that kernel as an expectation
over Gaussian vectors w,

  exp(x . y) = E_w[ exp(w . x - |x|^2 / 2) exp(w . y - |y|^2 / 2) ],

with x = sqrt(s) q_i and y = sqrt(s) k_j, and estimates it with P random
features phi(x)_p = exp(w_p . x - |x|^2 / 2) / sqrt(P): positive (so the
normaliser never changes sign, unlike sin/cos features), and orthogonal
(the w_p are orthogonalised in blocks of K, then given chi-distributed
lengths, which lowers the variance). Attention then runs as linear attention
on these features (`jattn.attention.linear.feature_attention`): O(n P d)
time, no (L, M) array, the same masks as linear attention (key padding,
scalar key lengths, causal by prefix sums, query lengths; a general (L, M)
mask or a `bias` raises ValueError), and it approaches softmax attention as
P grows (in expectation: the estimator is unbiased per (query, key) pair, not
after the normalisation).

Randomness is explicit: the (P, K) projection comes from `random_features`
with a PRNG key passed by the caller; a new key redraws it. Pass either the
`key` (and `num_features`) or a `projection` already drawn.

Numerical stability: each query's features are divided by their largest
value, and each key/value head's key features by the largest over its valid
keys; both factors cancel in the normalised output (and are held constant
under differentiation), while exp no longer overflows.

P denotes the number of random features below.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import softmax as softmax_lib
from jattn.attention import linear as linear_lib


def default_num_features(head_dim: int) -> int:
  """P = K ceil(ln K) (at least K): the Performer paper's O(K log K)."""
  _checks.check_positive_int(head_dim, "head_dim")
  return head_dim * max(1, math.ceil(math.log(head_dim)))


def random_features(key, num_features: int, head_dim: int, *,
                    orthogonal: bool = True, dtype=jnp.float32):
  """The (P, K) random projection of FAVOR+.

  Args:
    key: PRNG key (a new key draws new features).
    num_features: P.
    head_dim: K.
    orthogonal: rows orthogonal within each block of K rows (each block the
      transposed Q of a QR decomposition of a Gaussian matrix, signs fixed so
      it is Haar-distributed), each row rescaled to the length of an
      independent Gaussian vector, so every row is still marginally
      N(0, I_K). False: i.i.d. Gaussian rows.
    dtype: the projection's dtype.

  Returns:
    (P, K) array.
  """
  _checks.check_positive_int(num_features, "num_features")
  _checks.check_positive_int(head_dim, "head_dim")
  if not isinstance(orthogonal, bool):
    raise TypeError(
        f"orthogonal: expected a bool, got {type(orthogonal).__name__}")
  return _draw(key, num_features, head_dim, orthogonal, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw(key, P: int, K: int, orthogonal: bool, dtype):
  """`random_features`, compiled once per (P, K, orthogonal, dtype)."""
  acc = softmax_lib.softmax_dtype(dtype)
  num_blocks = -(-P // K)
  # One draw for the directions and the lengths (each jax.random call site
  # costs about a second of XLA compilation on CPU).
  num_directions = num_blocks * K * K if orthogonal else P * K
  gauss = jax.random.normal(key, (num_directions + P * K,), acc)
  if not orthogonal:
    return gauss[:num_directions].reshape(P, K).astype(dtype)
  lengths_P = jnp.linalg.norm(gauss[num_directions:].reshape(P, K), axis=-1)
  gauss_BKK = gauss[:num_directions].reshape(num_blocks, K, K)
  q_BKK, r_BKK = jnp.linalg.qr(gauss_BKK)
  signs_BK = jnp.sign(jnp.diagonal(r_BKK, axis1=1, axis2=2))
  signs_BK = jnp.where(signs_BK == 0, 1.0, signs_BK)
  q_BKK = q_BKK * signs_BK[:, None, :]           # Haar-distributed columns
  rows_PK = q_BKK.transpose(0, 2, 1).reshape(num_blocks * K, K)[:P]
  out = (rows_PK * lengths_P[:, None]).astype(dtype)
  chex.assert_shape(out, (P, K))
  return out


def favor_features(x_LHK, projection_PK, *, scale, is_query: bool,
                   key_mask=None, precision=None):
  """Positive random features phi(sqrt(scale) x), shifted for stability.

  Args:
    x_LHK: (L, H, K) queries or keys.
    projection_PK: (P, K) from `random_features`.
    scale: the logit scale s > 0 of the softmax kernel exp(s q . k).
    is_query: shift each row (query) by its own maximum; else shift each
      head by its maximum over the valid rows (keys) and features.
    key_mask: None or bool (Hx, L), Hx in {1, H}: the valid keys (keys only;
      they set the shift).
    precision: einsum precision.

  Returns:
    float32 (or wider) (L, H, P), every entry in (0, 1 / sqrt(P)].
  """
  P = projection_PK.shape[0]
  acc = softmax_lib.softmax_dtype(jnp.result_type(x_LHK, projection_PK))
  x = x_LHK.astype(acc) * jnp.sqrt(jnp.asarray(scale, acc))
  proj_LHP = jnp.einsum("lhk,pk->lhp", x, projection_PK.astype(acc),
                        precision=precision, preferred_element_type=acc)
  log_phi_LHP = proj_LHP - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
  if is_query:
    shift = jnp.max(log_phi_LHP, axis=-1, keepdims=True)
  else:
    kept = log_phi_LHP
    if key_mask is not None:
      keep_LX1 = key_mask.T[:, :, None]
      # The lowest finite value, not -inf (`jax.debug_infs` stays quiet).
      kept = jnp.where(keep_LX1, log_phi_LHP, jnp.finfo(acc).min)
    shift = jnp.max(kept, axis=(0, 2), keepdims=True)       # (1, H, 1)
    shift = jnp.where(shift > jnp.finfo(acc).min, shift, 0.0)
  phi = jnp.exp(log_phi_LHP - jax.lax.stop_gradient(shift))
  return phi / jnp.sqrt(jnp.asarray(P, acc))


def _kv_head_mask(key_mask, H: int, G: int):
  """(Hx, M) query-head key mask -> (1 or G, M): the keys of each key/value
  head valid for at least one of its query heads."""
  if key_mask is None or key_mask.shape[0] == 1:
    return key_mask
  return key_mask.reshape(G, H // G, -1).any(axis=1)


def _projection(projection, key, num_features, orthogonal, K: int, dtype):
  if (projection is None) == (key is None):
    raise ValueError(
        "key, projection: expected exactly one of them (a PRNG key to draw "
        "the random features, or a (P, K) projection already drawn), got "
        f"key={'set' if key is not None else None}, "
        f"projection={'set' if projection is not None else None}")
  if projection is None:
    P = default_num_features(K) if num_features is None else num_features
    _checks.check_positive_int(P, "num_features")
    return random_features(key, P, K, orthogonal=orthogonal, dtype=dtype)
  projection = jnp.asarray(projection)
  _checks.check_rank(projection, "projection", 2)
  _checks.check_floating(projection, "projection")
  _checks.check_shape(projection, "projection", (None, K))
  if num_features is not None and num_features != projection.shape[0]:
    raise ValueError(
        f"num_features: expected None or {projection.shape[0]} (the "
        f"projection's rows), got {num_features}")
  return projection


def performer_attention(q, k, v, mask=None, *, projection=None, key=None,
                        num_features: int | None = None,
                        orthogonal: bool = True, bias=None, scale=None,
                        is_causal: bool = False, local_window=None,
                        key_valid_len=None, query_valid_len=None,
                        chunk_size: int | None = None, precision=None):
  """FAVOR+ estimate of softmax(s q k^T) v, per example (a core of
  `jattn.attention`; bind the features with `functools.partial(
  performer_attention, projection=w)` to plug it in as `attention_fn`).

  Multi-head form: q (L, H, K), k (M, G, K), v (M, G, V) -> (L, H, V), H a
  multiple of G. Single-head form: q (L, K), k (M, K), v (M, V) -> (L, V).

  Args:
    q, k, v: floating arrays as above.
    mask: optional bool key-padding mask of shape (M,), (1, M) or (H, 1, M)
      (single-head: (M,) or (1, M)); a query axis larger than 1 raises
      ValueError.
    projection: (P, K) random features from `random_features`, or None to
      draw them from `key`.
    key: PRNG key to draw the features (exactly one of key / projection).
    num_features: P when drawing from `key` (default
      `default_num_features(K)`).
    orthogonal: orthogonal features when drawing from `key`.
    bias, local_window: must be None (ValueError otherwise).
    scale: logit scale s > 0 of the approximated softmax, default 1/sqrt(K).
    is_causal: query i sees keys j <= i (chunked prefix sums).
    key_valid_len: optional integer scalar: keys j >= it are dropped.
    query_valid_len: optional integer scalar: queries i >= it output 0.
    chunk_size: chunk length of the causal prefix sums (default 64).
    precision: einsum precision.

  Returns:
    (L, H, V) (single-head: (L, V)) in q's dtype.
  """
  _checks.reject_unsupported("performer", bias=bias,
                             local_window=local_window)
  x = _checks.attention_inputs(q, k, v, mask, scale=scale,
                               is_causal=is_causal,
                               key_valid_len=key_valid_len,
                               query_valid_len=query_valid_len)
  key_mask = linear_lib.combine_key_masks(
      linear_lib.key_padding_mask(x.mask, H=x.H, L=x.L, M=x.M,
                                  core="performer"),
      linear_lib.scalar_key_valid_len(key_valid_len, x.M, "performer"))
  _checks.check_optional_positive_int(chunk_size, "chunk_size")
  acc = softmax_lib.softmax_dtype(x.q.dtype)
  projection = _projection(projection, key, num_features, orthogonal, x.K,
                           acc)
  phi_q = favor_features(x.q, projection, scale=x.scale, is_query=True,
                         precision=precision)
  phi_k = favor_features(x.k, projection, scale=x.scale, is_query=False,
                         key_mask=_kv_head_mask(key_mask, x.H, x.G),
                         precision=precision)
  out_LHV = linear_lib.feature_attention(
      phi_q, phi_k, x.v, key_mask=key_mask, is_causal=x.is_causal,
      query_valid_len=query_valid_len, chunk_size=chunk_size,
      precision=precision)
  return x.output(out_LHV)
