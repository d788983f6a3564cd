"""Flax wrappers of the jattn layers: `flax.nnx` (primary) and `flax.linen`.

  from jattn import nn as jnn

  attn = jnn.SelfAttention(d_model=16, num_heads=4, rngs=nnx.Rngs(0))  # nnx
  y_BND = attn(x_BND, mask_B1N)
  attn_linen = jnn.linen.SelfAttention(d_model=16, num_heads=4)        # linen
  variables = attn_linen.init(jax.random.key(0), x_BND)

The nnx modules live at the top of `jattn.nn`; the linen modules, with the
same names and arguments (hyperparameters as dataclass fields), live in
`jattn.nn.linen`. Layers: `SelfAttention`, `MultiHeadAttention`,
`AdditiveAttention`, `LearnedEncoding`, `SinusoidalEncoding`, `ConvLayer`,
`RNNLayer`, `TransformerBlock`, and the sub-quadratic self-attention layers
`LocalSelfAttention`, `LinearSelfAttention`, `PerformerSelfAttention`
(nnx keeps the Performer's random features in a `RandomFeatures` variable,
linen in the "random_features" collection).

Every wrapper only declares parameters (made by the jattn `init_*` function)
and calls the pure function, vmapped over any number of leading batch axes:
inputs are (*B, per-example shape), masks/biases/positions carry the same
leading axes (size 1 shares one across an axis). So for every module
`module(x_BND, mask_B...) == jax.vmap(pure_fn)(params, x_BND, mask_B...)`.

Attention weights, float32 (*B, H, L, M): `return_weights=True` returns
(y, weights); `sow_weights=True` (attribute/field or call argument) sows
them as "attention_weights": nnx `nnx.Intermediate` (collect with
`capture_intermediates(module, *args)`, on flax 0.11 and newer alike), linen
the "intermediates" collection (`apply(..., mutable=["intermediates"])`).

Conversion (lossless, tested): `params_from_nnx(module)`,
`nnx_load_params(module, params)`, `params_from_linen(variables)`,
`linen_variables(params)`. Interop: `params_from_linen_mha(variables)` and
`params_from_nnx_mha(module)` load Flax's own multi-head attention weights.

Nothing here is exported from `jattn` itself: importing `jattn` does not
import Flax.
"""

from __future__ import annotations

from jattn.nn import linen_modules as linen
from jattn.nn._compat import capture_intermediates
from jattn.nn.convert import linen_variables
from jattn.nn.convert import nnx_load_params
from jattn.nn.convert import params_from_linen
from jattn.nn.convert import params_from_nnx
from jattn.nn.interop import params_from_linen_mha
from jattn.nn.interop import params_from_nnx_mha
from jattn.nn.nnx_modules import ATTENTION_WEIGHTS
from jattn.nn.nnx_modules import AdditiveAttention
from jattn.nn.nnx_modules import ConvLayer
from jattn.nn.nnx_modules import LearnedEncoding
from jattn.nn.nnx_modules import LinearSelfAttention
from jattn.nn.nnx_modules import LocalSelfAttention
from jattn.nn.nnx_modules import MultiHeadAttention
from jattn.nn.nnx_modules import PerformerSelfAttention
from jattn.nn.nnx_modules import RandomFeatures
from jattn.nn.nnx_modules import RNNLayer
from jattn.nn.nnx_modules import SelfAttention
from jattn.nn.nnx_modules import SinusoidalEncoding
from jattn.nn.nnx_modules import TransformerBlock

__all__ = [
    "ATTENTION_WEIGHTS",
    "AdditiveAttention",
    "ConvLayer",
    "LearnedEncoding",
    "LinearSelfAttention",
    "LocalSelfAttention",
    "MultiHeadAttention",
    "PerformerSelfAttention",
    "RNNLayer",
    "RandomFeatures",
    "SelfAttention",
    "SinusoidalEncoding",
    "TransformerBlock",
    "capture_intermediates",
    "linen",
    "linen_variables",
    "nnx_load_params",
    "params_from_linen",
    "params_from_linen_mha",
    "params_from_nnx",
    "params_from_nnx_mha",
]
