"""jattn: functional self-attention for JAX.

Functions work on one example; batch them with `jax.vmap` (see `batched`).
Params are plain dicts of arrays made by `init_*(key, ...)`.

Dimension key (tensor names carry their shape, einsum strings use the letters):

  B  batch
  L  query length
  M  key/value length
  D  model width
  H  query heads
  G  key/value heads (H is a multiple of G)
  K  head width (queries and keys; values use V where it differs)
  N  sequence length of a sequence layer (n tokens in, n tokens out)
  F  feed-forward hidden width

Masks are boolean, True = may attend; a query with nothing to attend to gives
a zero output and zero gradients. Softmax runs in float32 (or wider).
"""

import importlib.metadata

from jattn.additive import additive_attention
from jattn.additive import init_additive_attention
from jattn.attention import dot_product_attention
from jattn.batching import batched
from jattn.batching import padding_mask
from jattn.conv import conv_layer
from jattn.conv import init_conv_layer
from jattn.feedforward import feed_forward
from jattn.feedforward import init_feed_forward
from jattn.feedforward import init_layer_norm
from jattn.feedforward import layer_norm
from jattn.kv_cache import cached_self_attention
from jattn.kv_cache import init_kv_cache
from jattn.attention.linear import linear_attention
from jattn.attention.local import local_attention
from jattn.attention.performer import performer_attention
from jattn.masks import causal_mask
from jattn.masks import combine_masks
from jattn.masks import local_mask
from jattn.masks import valid_len_mask
from jattn.multihead import init_multi_head_attention
from jattn.multihead import init_self_attention
from jattn.multihead import multi_head_attention
from jattn.multihead import self_attention
from jattn.positional import apply_rope
from jattn.positional import init_learned_encoding
from jattn.positional import learned_encoding
from jattn.positional import sinusoidal_encoding
from jattn.rnn import init_rnn_layer
from jattn.rnn import rnn_layer
from jattn.softmax import masked_softmax
from jattn.stack import apply_stack
from jattn.stack import count_params
from jattn.stack import dilated_conv_stack
from jattn.stack import init_stack
from jattn.stack import receptive_field
from jattn.stack import tcn_dilations
from jattn.subquadratic import linear_self_attention
from jattn.subquadratic import local_self_attention
from jattn.subquadratic import performer_self_attention
from jattn.transformer import init_transformer_block
from jattn.transformer import transformer_block

try:  # the installed distribution's version (pyproject.toml)
  __version__ = importlib.metadata.version("jattn")
except importlib.metadata.PackageNotFoundError:  # run from a bare checkout
  __version__ = "0+unknown"

__all__ = [
    "additive_attention",
    "apply_rope",
    "apply_stack",
    "batched",
    "cached_self_attention",
    "causal_mask",
    "combine_masks",
    "conv_layer",
    "count_params",
    "dilated_conv_stack",
    "dot_product_attention",
    "feed_forward",
    "init_additive_attention",
    "init_conv_layer",
    "init_feed_forward",
    "init_kv_cache",
    "init_layer_norm",
    "init_learned_encoding",
    "init_multi_head_attention",
    "init_rnn_layer",
    "init_self_attention",
    "init_stack",
    "init_transformer_block",
    "layer_norm",
    "learned_encoding",
    "linear_attention",
    "linear_self_attention",
    "local_attention",
    "local_mask",
    "local_self_attention",
    "masked_softmax",
    "multi_head_attention",
    "padding_mask",
    "performer_attention",
    "performer_self_attention",
    "receptive_field",
    "rnn_layer",
    "self_attention",
    "sinusoidal_encoding",
    "tcn_dilations",
    "transformer_block",
    "valid_len_mask",
]
