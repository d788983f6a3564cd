"""Differences between the Flax versions jattn supports.

jattn runs on Colab's flax 0.11.2 and on newer releases. Only one Flax API
it uses changed in between:

* Collecting values an nnx module sows. flax >= 0.12 adds `nnx.capture`,
  which collects `Module.sow` values during a call (sowing outside it warns
  DeprecationWarning); flax 0.11 has no `nnx.capture`, sown values are stored
  on the module as `nnx.Intermediate` attributes and read with `nnx.pop`.

The JAX differences are in `jattn._compat` (imported without Flax).
"""

from __future__ import annotations

from flax import nnx

HAS_NNX_CAPTURE = hasattr(nnx, "capture")


def capture_intermediates(module, *args, **kwargs):
  """Calls `module(*args, **kwargs)`; returns (output, sown values).

  The sown values are an `nnx.State` of `nnx.Intermediate` variables, nested
  by submodule path like `nnx.state(module)`, each holding the tuple of values
  sown during this call (e.g. `state["attention_weights"][...][0]`). The
  module keeps no intermediates afterwards.
  """
  if HAS_NNX_CAPTURE:
    return nnx.capture(module, nnx.Intermediate)(*args, **kwargs)
  nnx.pop(module, nnx.Intermediate)  # drop values left by earlier calls
  out = module(*args, **kwargs)
  return out, nnx.pop(module, nnx.Intermediate)


