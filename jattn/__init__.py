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

Masks are boolean, True = may attend; a query with nothing to attend to gives
a zero output and zero gradients. Softmax runs in float32 (or wider).
"""

from jattn.additive import additive_attention
from jattn.additive import init_additive_attention
from jattn.attention import dot_product_attention
from jattn.batching import batched
from jattn.batching import padding_mask
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
from jattn.softmax import masked_softmax

__version__ = "0.1.0"

__all__ = [
    "additive_attention",
    "apply_rope",
    "batched",
    "causal_mask",
    "combine_masks",
    "dot_product_attention",
    "init_additive_attention",
    "init_learned_encoding",
    "init_multi_head_attention",
    "init_self_attention",
    "learned_encoding",
    "local_mask",
    "masked_softmax",
    "multi_head_attention",
    "padding_mask",
    "self_attention",
    "sinusoidal_encoding",
    "valid_len_mask",
]
