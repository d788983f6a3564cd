"""Differences between the JAX versions jattn supports (no Flax here).

jattn runs on Colab's jax 0.7.2 and on newer releases; every JAX API that
changed in between is wrapped here, in one place, so the rest of the code
calls one name. `jattn.nn._compat` holds the Flax differences.
"""

from __future__ import annotations

import jax


# JAX sharding APIs (jattn.parallel).
#
# jax 0.7.2 and 0.10 both have `jax.shard_map(f, mesh=, in_specs=,
# out_specs=, check_vma=)`, `jax.make_mesh(..., axis_types=)`, `jax.set_mesh`
# (a context manager), `jax.sharding.get_abstract_mesh` and
# `jax.lax.axis_size`. Older releases have `jax.experimental.shard_map.
# shard_map(f, mesh, in_specs, out_specs, check_rep=)`, no mesh context that
# shard_map reads, and `jax.make_mesh` without axis types. Meshes are made
# with "auto" axes everywhere: jax 0.10's `jax.make_mesh` defaults to
# explicit axes, which change how jit shards unannotated values.


def shard_map(f, *, mesh, in_specs, out_specs):
  """`jax.shard_map` without replication/varying-axis checks (the ring's
  custom VJP and `lax.cond` carry values the checker cannot type)."""
  if hasattr(jax, "shard_map"):
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)
  from jax.experimental.shard_map import shard_map as legacy  # pylint: disable=g-import-not-at-top
  return legacy(f, mesh, in_specs, out_specs, check_rep=False)


def make_mesh(axis_shapes, axis_names, devices):
  """A `jax.sharding.Mesh` over `devices` with "auto" axes (GSPMD)."""
  axis_type = getattr(jax.sharding, "AxisType", None)
  if axis_type is not None:
    return jax.make_mesh(tuple(axis_shapes), tuple(axis_names),
                         axis_types=(axis_type.Auto,) * len(axis_names),
                         devices=list(devices))
  import numpy as np  # pylint: disable=g-import-not-at-top
  return jax.sharding.Mesh(
      np.asarray(list(devices), object).reshape(tuple(axis_shapes)),
      tuple(axis_names))


def use_mesh(mesh):
  """Context manager making `mesh` the current mesh (`current_mesh`)."""
  if hasattr(jax, "set_mesh"):
    return jax.set_mesh(mesh)
  if hasattr(jax.sharding, "use_mesh"):
    return jax.sharding.use_mesh(mesh)
  return mesh  # legacy `with mesh:` (not seen by `current_mesh`)


def current_mesh():
  """The mesh set by `use_mesh` / `jax.set_mesh` (abstract), or None."""
  get = getattr(jax.sharding, "get_abstract_mesh", None)
  if get is None:
    return None
  mesh = get()
  return None if mesh is None or mesh.empty else mesh


def axis_size(axis_name) -> int:
  """The size of a mesh axis inside `shard_map`, as a Python int."""
  if hasattr(jax.lax, "axis_size"):
    return jax.lax.axis_size(axis_name)
  return jax.lax.psum(1, axis_name)


def without_x64():
  """A context in which jax_enable_x64 is off (jax >= 0.8: `jax.enable_x64`;
  0.7: `jax.experimental.disable_x64`)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(False)
  from jax import experimental  # pylint: disable=g-import-not-at-top
  return experimental.disable_x64()


# Low-precision dots on XLA:CPU.
#
# jax 0.7's XLA:CPU has no BF16 x BF16 = F32 (or F16 x F16 = F32) dot thunk:
# an eager (op-by-op) einsum with preferred_element_type=float32 fails at run
# time once the dot is large enough to leave the fused emitter. jax 0.8 and
# newer run it. Casting the operands to float32 first gives the same result:
# the cast is exact and so is every product of two bf16 or f16 numbers in
# float32, so only the float32 accumulation remains, as in the native dot.

_LOW_PRECISION = ("bfloat16", "float16")


def _jax_version() -> tuple[int, int]:
  return tuple(int(p) for p in jax.__version__.split(".")[:2])


def dot_operands(*arrays, accumulate):
  """`arrays` ready for a dot accumulating in `accumulate`: unchanged,
  except on the CPU backend of jax < 0.8 with a float32 accumulator, where
  bf16/f16 arrays are cast to float32 (exactly; see above)."""
  if (accumulate != jax.numpy.float32 or _jax_version() >= (0, 8)
      or jax.default_backend() != "cpu"):
    return arrays
  return tuple(a.astype(jax.numpy.float32) if a.dtype.name in _LOW_PRECISION
               else a for a in arrays)
