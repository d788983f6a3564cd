"""Flax wrappers of the sub-quadratic self-attention variants.

  attn = jnn.LocalSelfAttention(64, 4, window=32, rngs=nnx.Rngs(0))
  attn = jnn.LinearSelfAttention(64, 4, rngs=nnx.Rngs(0))
  attn = jnn.PerformerSelfAttention(64, 4, num_features=64, rngs=nnx.Rngs(0))
  y_BND = attn(x_BND, mask_BN)        # mask: per-example (N,) key padding
  attn.redraw(jax.random.key(1))      # Performer: new random features

and the linen modules `LinenLocalSelfAttention`, `LinenLinearSelfAttention`
and `LinenPerformerSelfAttention` (same arguments as dataclass fields, also
exported from `jattn.nn`). Each holds the
params of `jattn.init_self_attention` (so `params_from_nnx` /
`nnx_load_params` / `params_from_linen` work as for `SelfAttention`) and
calls `jattn.local_self_attention`, `jattn.linear_self_attention` or
`jattn.performer_self_attention` vmapped over the leading batch axes, with
no maths of its own. Masks and positions carry the input's leading axes
(size 1 shares), as in `jattn.nn.SelfAttention`.

The Performer's (P, K) random projection is state, not a parameter: nnx
keeps it in a `RandomFeatures` variable (excluded from `nnx.Param`, so
optimisers leave it alone) drawn at construction from `rngs.params()` and
redrawn by `redraw(key)`; linen keeps it in the "random_features" collection,
drawn at init from the "params" RNG (redraw: replace
`variables["random_features"]["projection"]` by
`jattn.performer.random_features(key, P, K)`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from jattn import linear as linear_lib
from jattn import local as local_lib
from jattn import multihead
from jattn import performer as performer_lib
from jattn.nn import _batch
from jattn.nn._nnx_params import get_params
from jattn.nn._nnx_params import set_params


def batched_self_attention(layer_fn, params, x, mask=None, *, positions=None,
                           bias=None, **kwargs):
  """`layer_fn(params, x, mask, positions=..., **kwargs)` over the leading
  batch axes of x (*B, N, D); mask, positions (and bias, when not None)
  carry the same leading axes."""
  lead = _batch.batch_shape(x, "x", 2)

  def one(x, mask, positions, bias):
    extra = {} if bias is None else {"bias": bias}
    return layer_fn(params, x, mask, positions=positions, **extra, **kwargs)

  return _batch.vmap_leading(one, lead, x=x, mask=mask, positions=positions,
                             bias=bias)


def _head_dim(d_model: int, num_heads: int, head_dim: int | None) -> int:
  return d_model // num_heads if head_dim is None else head_dim


class RandomFeatures(nnx.Variable):
  """Non-trainable random features (the Performer's projection)."""


class _NNXSelfAttentionBase(nnx.Module):
  """Params of `init_self_attention` and the shared attributes."""

  def __init__(self, d_model: int, num_heads: int, *,
               head_dim: int | None, num_kv_heads: int | None,
               use_bias: bool, is_causal: bool, precision, param_dtype,
               rngs: nnx.Rngs):
    self.is_causal = is_causal
    self.precision = precision
    set_params(self, multihead.init_self_attention(
        rngs.params(), d_model, num_heads, head_dim=head_dim,
        num_kv_heads=num_kv_heads, use_bias=use_bias, dtype=param_dtype))


class LocalSelfAttention(_NNXSelfAttentionBase):
  """`jattn.local_self_attention`: (*B, N, D) -> (*B, N, D), window `window`
  (an int w: |j - i| < w; or (left, right))."""

  def __init__(self, d_model: int, num_heads: int, *, window,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               precision=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    self.window = window
    self.scale = scale

  def __call__(self, x, mask=None, *, bias=None, positions=None):
    """x (*B, N, D); mask/bias (*B, ...) broadcastable per example to
    (H, N, N); positions (*B, N) for rotary embeddings."""
    return batched_self_attention(
        local_lib.local_self_attention, get_params(self), x, mask,
        positions=positions, bias=bias, window=self.window, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)


class LinearSelfAttention(_NNXSelfAttentionBase):
  """`jattn.linear_self_attention`: (*B, N, D) -> (*B, N, D)."""

  def __init__(self, d_model: int, num_heads: int, *,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False,
               chunk_size: int | None = None, precision=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    self.chunk_size = chunk_size

  def __call__(self, x, mask=None, *, positions=None):
    """x (*B, N, D); mask: bool (*B, N) (or (*B, 1, N), (*B, H, 1, N)) key
    padding; positions (*B, N) for rotary embeddings."""
    return batched_self_attention(
        linear_lib.linear_self_attention, get_params(self), x, mask,
        positions=positions, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)


class PerformerSelfAttention(_NNXSelfAttentionBase):
  """`jattn.performer_self_attention`: (*B, N, D) -> (*B, N, D).

  `projection` (a `RandomFeatures` variable, (P, K)) is drawn from
  `rngs.params()` after the params; `redraw(key)` draws new features.
  """

  def __init__(self, d_model: int, num_heads: int, *,
               num_features: int | None = None, orthogonal: bool = True,
               head_dim: int | None = None, num_kv_heads: int | None = None,
               use_bias: bool = False, is_causal: bool = False, scale=None,
               chunk_size: int | None = None, precision=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(d_model, num_heads, head_dim=head_dim,
                     num_kv_heads=num_kv_heads, use_bias=use_bias,
                     is_causal=is_causal, precision=precision,
                     param_dtype=param_dtype, rngs=rngs)
    K = _head_dim(d_model, num_heads, head_dim)
    self.num_features = (performer_lib.default_num_features(K)
                         if num_features is None else num_features)
    self.head_dim = K
    self.orthogonal = orthogonal
    self.scale = scale
    self.chunk_size = chunk_size
    self.redraw(rngs.params())

  def redraw(self, key) -> None:
    """Replaces the random features by a fresh draw from `key`."""
    self.projection = RandomFeatures(performer_lib.random_features(
        key, self.num_features, self.head_dim, orthogonal=self.orthogonal))

  def __call__(self, x, mask=None, *, positions=None):
    """x (*B, N, D); mask: bool (*B, N) (or (*B, 1, N), (*B, H, 1, N)) key
    padding; positions (*B, N) for rotary embeddings."""
    return batched_self_attention(
        performer_lib.performer_self_attention, get_params(self), x, mask,
        positions=positions, projection=self.projection[...],
        scale=self.scale, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)


# ---------------------------------------------------------------------------
# linen


def _linen_params(module: nn.Module) -> dict:
  from jattn.nn import linen_modules  # pylint: disable=g-import-not-at-top
  return linen_modules._declare_params(module, functools.partial(  # pylint: disable=protected-access
      multihead.init_self_attention, d_model=module.d_model,
      num_heads=module.num_heads, head_dim=module.head_dim,
      num_kv_heads=module.num_kv_heads, use_bias=module.use_bias,
      dtype=module.param_dtype))


class LinenLocalSelfAttention(nn.Module):
  """linen `jattn.local_self_attention` (as `jattn.nn.LocalSelfAttention`)."""
  d_model: int
  num_heads: int
  window: Any = None
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, bias=None, positions=None):
    return batched_self_attention(
        local_lib.local_self_attention, _linen_params(self), x, mask,
        positions=positions, bias=bias, window=self.window, scale=self.scale,
        is_causal=self.is_causal, precision=self.precision)


class LinenLinearSelfAttention(nn.Module):
  """linen `jattn.linear_self_attention` (as `jattn.nn.LinearSelfAttention`)."""
  d_model: int
  num_heads: int
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  chunk_size: int | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, positions=None):
    return batched_self_attention(
        linear_lib.linear_self_attention, _linen_params(self), x, mask,
        positions=positions, is_causal=self.is_causal,
        chunk_size=self.chunk_size, precision=self.precision)


class LinenPerformerSelfAttention(nn.Module):
  """linen `jattn.performer_self_attention`; the (P, K) projection lives in
  the "random_features" collection, drawn at init from the "params" RNG."""
  d_model: int
  num_heads: int
  num_features: int | None = None
  orthogonal: bool = True
  head_dim: int | None = None
  num_kv_heads: int | None = None
  use_bias: bool = False
  is_causal: bool = False
  scale: float | None = None
  chunk_size: int | None = None
  precision: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, positions=None):
    params = _linen_params(self)
    K = _head_dim(self.d_model, self.num_heads, self.head_dim)
    P = (performer_lib.default_num_features(K) if self.num_features is None
         else self.num_features)
    projection = self.variable(
        "random_features", "projection",
        lambda: performer_lib.random_features(
            self.make_rng("params"), P, K, orthogonal=self.orthogonal))
    return batched_self_attention(
        performer_lib.performer_self_attention, params, x, mask,
        positions=positions, projection=projection.value, scale=self.scale,
        is_causal=self.is_causal, chunk_size=self.chunk_size,
        precision=self.precision)
