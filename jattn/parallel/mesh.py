"""Device meshes and sharding rules for training on many devices.

jattn distributes with JAX's own SPMD machinery: a `jax.sharding.Mesh` with
up to three named axes, `NamedSharding`s placed with `jax.device_put` or
`jax.make_array_from_process_local_data`, and `jax.jit`, which partitions
the program (GSPMD); only ring attention (`jattn.parallel.ring`) is written
per device, with `shard_map`.

  data   data parallelism: the batch axis B of every batch is split.
  seq    sequence parallelism: the token axis N of every batch is split;
         attention layers then need ring attention (jattn.models switches
         to it when the current mesh has seq > 1).
  model  the heads of attention parameters (w_q, w_k, w_v, their biases,
         w_o) are split; every other parameter is replicated.

The axes are laid out data (outermost), seq, model (innermost), so the most
communicating axis gets the nearest devices on TPU slices and GPU hosts.

Multi-host (a TPU pod or several GPU hosts): call
`jax.distributed.initialize()` first in every process; `jax.devices()` then
lists the devices of all hosts, and a mesh spans them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jattn import _compat

AXES = ("data", "seq", "model")

# Head axis of each multi-head attention parameter, counted from the end
# (jattn.multihead: w_q (D, H, K), w_o (H, V, D), b_q (H, K), ...); a stack
# adds leading layer axes, which counting from the end ignores.
_HEAD_AXIS = {"w_q": -2, "w_k": -2, "w_v": -2, "b_q": -2, "b_k": -2,
              "b_v": -2, "w_o": -3}


def mesh_shape(spec=None, num_devices: int | None = None) -> dict[str, int]:
  """The {"data", "seq", "model"} sizes a mesh spec asks for.

  Args:
    spec: None (every device on "data"), a mapping with keys among AXES
      (a ConfigDict such as configs/copy.py's `mesh`; missing axes are 1),
      or a sequence of up to three sizes in AXES order. One size may be -1:
      all the devices the other axes leave.
    num_devices: devices to fill (default `jax.device_count()`, all hosts).

  Returns:
    dict axis -> size whose product is at most `num_devices`.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  if spec is None:
    spec = {"data": -1}
  if hasattr(spec, "to_dict"):
    spec = spec.to_dict()
  if isinstance(spec, Mapping):
    unknown = sorted(set(spec) - set(AXES))
    if unknown:
      raise ValueError(
          f"mesh: expected axes among {list(AXES)}, got {unknown}")
    sizes = {a: spec.get(a, 1) for a in AXES}
  else:
    spec = tuple(spec)
    if len(spec) > len(AXES):
      raise ValueError(
          f"mesh: expected at most {len(AXES)} sizes {AXES}, got {spec}")
    sizes = dict(zip(AXES, spec + (1,) * (len(AXES) - len(spec))))
  for axis, size in sizes.items():
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (
        size < 1 and size != -1):
      raise ValueError(
          f"mesh.{axis}: expected an int >= 1 or -1 (the remaining devices), "
          f"got {size!r}")
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh: expected at most one axis of size -1, got {fill}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % fixed:
      raise ValueError(
          f"mesh.{fill[0]}: expected the other axes' sizes ({fixed} devices) "
          f"to divide the {num_devices} devices, got {sizes}")
    sizes[fill[0]] = num_devices // fixed
  total = math.prod(sizes.values())
  if total > num_devices:
    raise ValueError(
        f"mesh: expected at most {num_devices} devices in all, got {sizes} "
        f"({total} devices)")
  return {a: int(s) for a, s in sizes.items()}


def make_mesh(spec=None, *, devices=None) -> jax.sharding.Mesh:
  """A mesh with axes ("data", "seq", "model").

  Args:
    spec: see `mesh_shape` (None: every device on "data").
    devices: the devices to use (default `jax.devices()`); a spec needing
      fewer takes the first ones (e.g. a one-device mesh for comparisons).

  Returns:
    `jax.sharding.Mesh` with "auto" axis types (jit partitions freely).
  """
  devices = jax.devices() if devices is None else list(devices)
  sizes = mesh_shape(spec, len(devices))
  count = math.prod(sizes.values())
  return _compat.make_mesh(tuple(sizes.values()), AXES, devices[:count])


def axis_size(mesh, axis: str) -> int:
  """The size of `axis` in `mesh` (1 when the mesh lacks it)."""
  return dict(zip(mesh.axis_names, mesh.axis_sizes)).get(axis, 1)


def replicated(mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_spec(shape, mesh) -> P:
  """(B, N, ...) -> P("data", "seq"); (B,) -> P("data").

  Raises ValueError if B or N is not a multiple of its axis size.
  """
  data, seq = axis_size(mesh, "data"), axis_size(mesh, "seq")
  if not shape or shape[0] % data:
    raise ValueError(
        f"batch: expected a batch size divisible by mesh.data={data}, got "
        f"shape {tuple(shape)}")
  if len(shape) == 1:
    return P("data" if data > 1 else None)
  if shape[1] % seq:
    raise ValueError(
        f"batch: expected a sequence length divisible by mesh.seq={seq}, got "
        f"shape {tuple(shape)}")
  return P("data" if data > 1 else None, "seq" if seq > 1 else None)


def batch_shardings(batch, mesh):
  """NamedShardings of a batch pytree (see `batch_spec`)."""
  return jax.tree.map(
      lambda x: NamedSharding(mesh, batch_spec(np.shape(x), mesh)), batch)


def shard_batch(batch, mesh, *, process_local: bool = True):
  """Host batch -> global jax.Arrays sharded by `batch_spec`.

  Uses `jax.make_array_from_process_local_data`, which copies to each local
  device the part of the data it holds.

  Args:
    batch: pytree of NumPy arrays (B_local, N, ...) or (B_local,).
    mesh: the mesh.
    process_local: True: `batch` holds this process's rows (the global batch
      is the concatenation over processes, the usual per-host input
      pipeline); False: `batch` is the whole global batch, the same in every
      process.

  Returns:
    The batch as global arrays.
  """
  processes = jax.process_count() if process_local else 1
  leaves, treedef = jax.tree.flatten(batch)
  leaves = [np.asarray(x) for x in leaves]
  shapes = [(x.shape[0] * processes,) + x.shape[1:] for x in leaves]
  shardings = [NamedSharding(mesh, batch_spec(shape, mesh))
               for shape in shapes]
  arrays = jax.make_array_from_process_local_data(
      shardings, leaves, None if process_local else shapes)
  return jax.tree.unflatten(treedef, arrays)


def _head_spec(path, shape, mesh, model_axis: str) -> P:
  size = axis_size(mesh, model_axis)
  name = getattr(path[-1], "key", None) if path else None
  axis = _HEAD_AXIS.get(name)
  if size == 1 or axis is None or len(shape) < -axis or shape[axis] % size:
    return P()
  spec = [None] * len(shape)
  spec[len(shape) + axis] = model_axis
  return P(*spec)


def param_shardings(tree, mesh, *, model_axis: str = "model"):
  """NamedShardings of a params (or optimizer-state) pytree.

  Attention heads (leaves named w_q, w_k, w_v, b_q, b_k, b_v, w_o) are split
  over `model_axis` when its size divides their head count; everything else
  is replicated. Optimizer states (Adam's mu, nu) mirror the params' paths,
  so the same rule shards them alike.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, _head_spec(path, np.shape(x), mesh,
                                                     model_axis)), tree)


def constrain(tree, shardings):
  """`jax.lax.with_sharding_constraint` on every leaf (inside jit)."""
  return jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)
