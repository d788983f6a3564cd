"""Module state <-> jattn params dicts, losslessly.

Train with modules, analyse with functions:

  params = jnn.params_from_nnx(model.attention)      # nnx -> dict
  y = jattn.self_attention(params, x_ND)
  jnn.nnx_load_params(model.attention, params)        # dict -> nnx, in place

  params = jnn.params_from_linen(variables)          # linen -> dict
  variables = jnn.linen_variables(params)             # dict -> linen

The arrays are passed through unchanged (same shapes, dtypes and values).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jattn.nn import _nnx_params


def _to_dict(tree):
  """Nested Mappings (dict, FrozenDict, nnx.State) -> nested plain dicts."""
  if isinstance(tree, Mapping):
    return {k: _to_dict(v) for k, v in tree.items()}
  return tree


def params_from_nnx(module: nnx.Module) -> dict:
  """The jattn params dict of an nnx wrapper (its `nnx.Param` state).

  Works for every module of `jattn.nn` (the Param state has the structure of
  the pure params dict); the arrays are the module's own, not copies.
  """
  if not isinstance(module, nnx.Module):
    raise TypeError(
        f"module: expected an nnx.Module, got {type(module).__name__}")
  return _to_dict(nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def _check_same_tree(current, new, path: str) -> None:
  """Raises unless `new` has the keys, shapes and dtypes of `current`."""
  if isinstance(current, dict):
    if not isinstance(new, Mapping) or set(new) != set(current):
      got = sorted(new) if isinstance(new, Mapping) else type(new).__name__
      raise ValueError(
          f"params{path}: expected keys {sorted(current)}, got {got}")
    for key in current:
      _check_same_tree(current[key], new[key], f"{path}[{key!r}]")
    return
  if np.shape(new) != np.shape(current):
    raise ValueError(
        f"params{path}: expected shape {np.shape(current)}, got "
        f"{np.shape(new)}")
  if jnp.result_type(new) != jnp.result_type(current):
    raise TypeError(
        f"params{path}: expected dtype {jnp.result_type(current)}, got "
        f"{jnp.result_type(new)}")


def _assign(module, params: dict) -> None:
  for key, value in params.items():
    target = getattr(module, key)
    if isinstance(target, _nnx_params.ParamGroup):
      _assign(target, value)
    else:
      target[...] = jnp.asarray(value)


def nnx_load_params(module: nnx.Module, params) -> nnx.Module:
  """Writes a jattn params dict into an nnx wrapper, in place; returns it.

  `params` must have the module's structure, shapes and dtypes (build the
  module with the same hyperparameters; cast dtypes yourself).
  """
  _check_same_tree(params_from_nnx(module), params, "")
  _assign(module, _to_dict(params))
  return module


def params_from_linen(variables) -> dict:
  """The jattn params dict of a linen wrapper: its "params" collection.

  Accepts the variables from `module.init` ({"params": ...}) or the params
  collection itself; FrozenDicts become plain dicts, arrays are unchanged.
  """
  if not isinstance(variables, Mapping):
    raise TypeError(
        f"variables: expected a mapping, got {type(variables).__name__}")
  tree = variables["params"] if "params" in variables else variables
  return _to_dict(tree)


def linen_variables(params, **collections) -> dict:
  """{"params": params, **collections}, ready for `module.apply`."""
  if not isinstance(params, Mapping):
    raise TypeError(
        f"params: expected a dict of arrays, got {type(params).__name__}")
  return {"params": _to_dict(params), **collections}
