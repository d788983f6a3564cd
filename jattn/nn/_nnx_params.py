"""How an nnx wrapper holds a jattn params dict.

Every array of the pure params dict becomes an `nnx.Param` attribute under
its dict key; a nested dict becomes a `ParamGroup` submodule under its key.
So `nnx.state(module, nnx.Param)` has exactly the structure of the params
dict, and the arrays are the same objects (no copy, no reshaping).
"""

from __future__ import annotations

from flax import nnx


class ParamGroup(nnx.Module):
  """A nested part of a params dict (e.g. a transformer block's "ffn")."""

  def __init__(self, params: dict):
    set_params(self, params)


def set_params(module: nnx.Module, params: dict) -> None:
  """Stores `params` on `module` (once, at construction)."""
  if not isinstance(params, dict):
    raise TypeError(
        f"params: expected a dict of arrays, got {type(params).__name__}")
  for name, value in params.items():
    assert not hasattr(module, name), f"param {name!r} shadows an attribute"
    if isinstance(value, dict):
      setattr(module, name, ParamGroup(value))
    else:
      setattr(module, name, nnx.Param(value))
  module._jattn_param_keys = tuple(params)


def get_params(module: nnx.Module) -> dict:
  """The params dict currently held by `module` (inverse of `set_params`)."""
  out = {}
  for name in module._jattn_param_keys:
    value = getattr(module, name)
    out[name] = get_params(value) if isinstance(value, ParamGroup) else (
        value[...])
  return out
