"""Load Flax's own multi-head attention weights into jattn params.

Flax's `linen.MultiHeadDotProductAttention` and `nnx.MultiHeadAttention`
keep four DenseGeneral/LinearGeneral layers whose kernels already have the
jattn layout:

  query kernel (Dq, H, K)    bias (H, K)   -> w_q, b_q
  key   kernel (Dkv, G, K)   bias (G, K)   -> w_k, b_k   (G = H in linen)
  value kernel (Dkv, G, K)   bias (G, K)   -> w_v, b_v
  out   kernel (H, K, Do)    bias (Do,)    -> w_o, b_o

so the conversion only renames. Flax scales the queries by 1 / sqrt(K)
before the product, jattn scales the logits by the same factor; the results
agree to float32 rounding. Differences that remain: a query row with nothing
to attend to gives uniform weights in Flax (its masked logits are finfo.min)
and zeros in jattn; Flax's separate `inputs_v` (values from other tokens than
keys), `normalize_qk`, `decode` caches and attention dropout have no jattn
counterpart (normalize_qk raises here; the others are call-time choices).

Use the result with `jattn.multi_head_attention(params, x_q, x_kv, mask)`
(or `self_attention` when x_q is x_kv), vmapped over the batch; a Flax mask
(*B, H, L, M) is already a batch of jattn masks.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
from flax import nnx

_LAYERS = {"query": "q", "key": "k", "value": "v", "out": "o"}


def _rename(kernels: dict, biases: dict) -> dict:
  params = {f"w_{s}": jnp.asarray(kernels[name])
            for name, s in _LAYERS.items()}
  present = [name for name in _LAYERS if biases.get(name) is not None]
  if present and len(present) != len(_LAYERS):
    raise ValueError(
        f"biases: expected all or none of {list(_LAYERS)}, got {present}")
  for name in present:
    params[f"b_{_LAYERS[name]}"] = jnp.asarray(biases[name])
  return params


def params_from_linen_mha(variables) -> dict:
  """jattn params from `flax.linen.MultiHeadDotProductAttention` variables.

  Args:
    variables: the module's variables ({"params": {...}}) or its params
      collection ({"query": {"kernel", "bias"}, "key", "value", "out"}).

  Returns:
    {"w_q", "w_k", "w_v", "w_o"} (and "b_*" when the module uses biases).
  """
  if not isinstance(variables, Mapping):
    raise TypeError(
        f"variables: expected a mapping, got {type(variables).__name__}")
  tree = variables["params"] if "params" in variables else variables
  if "query_ln" in tree or "key_ln" in tree:
    raise ValueError(
        "variables: expected a module with normalize_qk=False (jattn has no "
        "query/key layer norm), got query_ln/key_ln params")
  missing = [name for name in _LAYERS if name not in tree]
  if missing:
    raise ValueError(
        f"variables: expected sublayers {list(_LAYERS)}, got keys "
        f"{sorted(tree)}")
  kernels = {name: tree[name]["kernel"] for name in _LAYERS}
  biases = {name: tree[name].get("bias") for name in _LAYERS}
  return _rename(kernels, biases)


def _value(variable):
  return None if variable is None else variable[...]


def params_from_nnx_mha(module) -> dict:
  """jattn params from a `flax.nnx.MultiHeadAttention` module.

  Grouped-query modules (num_kv_heads < num_heads, newer Flax) map to
  jattn's G key/value heads. Raises ValueError for normalize_qk=True.
  """
  if not isinstance(module, nnx.MultiHeadAttention):
    raise TypeError(
        f"module: expected a flax.nnx.MultiHeadAttention, got "
        f"{type(module).__name__}")
  if module.normalize_qk:
    raise ValueError(
        "module: expected normalize_qk=False (jattn has no query/key layer "
        "norm), got normalize_qk=True")
  layers = {name: getattr(module, name) for name in _LAYERS}
  kernels = {name: _value(layer.kernel) for name, layer in layers.items()}
  biases = {name: _value(getattr(layer, "bias", None))
            for name, layer in layers.items()}
  return _rename(kernels, biases)
