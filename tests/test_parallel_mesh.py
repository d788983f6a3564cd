"""Meshes and sharding rules of jattn.parallel.mesh (8 fake CPU devices)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jattn
from jattn import parallel

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


def test_mesh_shape_fills_one_axis_and_checks_the_rest():
  assert parallel.mesh_shape(None, 8) == {"data": 8, "seq": 1, "model": 1}
  assert parallel.mesh_shape({"seq": 4, "data": -1}, 8) == {
      "data": 2, "seq": 4, "model": 1}
  assert parallel.mesh_shape((2, 2, 2), 8) == {"data": 2, "seq": 2,
                                               "model": 2}
  spec = ml_collections.ConfigDict({"data": 2, "seq": -1, "model": 1})
  assert parallel.mesh_shape(spec, 8) == {"data": 2, "seq": 4, "model": 1}
  assert parallel.mesh_shape({"data": 1}, 8) == {"data": 1, "seq": 1,
                                                 "model": 1}
  with pytest.raises(ValueError, match="mesh: expected axes among"):
    parallel.mesh_shape({"batch": 2}, 8)
  with pytest.raises(ValueError, match="mesh.data: expected the other axes"):
    parallel.mesh_shape({"data": -1, "seq": 3}, 8)
  with pytest.raises(ValueError, match="mesh: expected at most one axis"):
    parallel.mesh_shape({"data": -1, "seq": -1}, 8)
  with pytest.raises(ValueError, match="mesh: expected at most 8 devices"):
    parallel.mesh_shape({"data": 4, "seq": 4}, 8)
  with pytest.raises(ValueError, match="mesh.model: expected an int >= 1"):
    parallel.mesh_shape({"model": 2.0}, 8)


def test_make_mesh_uses_the_first_devices_with_auto_axes():
  assert jax.device_count() == 8  # tests/conftest.py
  mesh = parallel.make_mesh({"data": 2, "seq": 2})
  assert mesh.axis_names == parallel.AXES
  assert dict(zip(mesh.axis_names, mesh.axis_sizes)) == {
      "data": 2, "seq": 2, "model": 1}
  assert list(mesh.devices.flat) == jax.devices()[:4]
  assert parallel.make_mesh().size == 8
  assert parallel.axis_size(mesh, "seq") == 2
  assert parallel.axis_size(mesh, "nope") == 1
  axis_type = getattr(jax.sharding, "AxisType", None)
  if axis_type is not None:
    assert all(t == axis_type.Auto for t in mesh.axis_types)


def test_param_shardings_split_attention_heads_over_model():
  mesh = parallel.make_mesh({"data": 2, "seq": 2, "model": 2})
  key = jax.random.key(0)
  # Shapes only (the rules read nothing else): two stacked layers.
  stacked = jax.eval_shape(lambda k: jattn.init_stack(
      jattn.init_transformer_block, k, 2, 8, 4, 16, num_kv_heads=2), key)
  specs = jax.tree.map(lambda s: s.spec,
                       parallel.param_shardings(stacked, mesh))
  attention = specs["attention"]
  assert attention["w_q"] == P(None, None, "model", None)  # (L, D, H, K)
  assert attention["w_k"] == P(None, None, "model", None)  # (L, D, G, K)
  assert attention["b_v"] == P(None, "model", None)  # (L, G, V)
  assert attention["w_o"] == P(None, "model", None, None)  # (L, H, V, D)
  assert attention["b_o"] == P()
  assert specs["ffn"]["w_1"] == P() and specs["norm_1"]["scale"] == P()
  # Heads that the axis does not divide stay replicated.
  odd = jax.eval_shape(lambda k: jattn.init_self_attention(k, 6, 3), key)
  assert parallel.param_shardings(odd, mesh)["w_q"].spec == P()
  # Without a model axis everything is replicated.
  flat = parallel.param_shardings(stacked, parallel.make_mesh({"data": 8}))
  assert all(s.spec == P() for s in jax.tree.leaves(flat))


def test_shard_batch_places_rows_on_data_and_tokens_on_seq():
  mesh = parallel.make_mesh({"data": 2, "seq": 4})
  inputs_BN = np.arange(4 * 8, dtype=np.int32).reshape(4, 8)
  lengths_B = np.array([8, 7, 6, 5], np.int32)
  batch = parallel.shard_batch({"inputs": inputs_BN, "lengths": lengths_B},
                               mesh, process_local=False)
  assert batch["inputs"].sharding.spec == P("data", "seq")
  assert batch["lengths"].sharding.spec == P("data")
  np.testing.assert_array_equal(np.asarray(batch["inputs"]), inputs_BN)
  np.testing.assert_array_equal(np.asarray(batch["lengths"]), lengths_B)
  # Device (data 1, seq 2) holds rows 2..3 and tokens 4..5.
  device = mesh.devices[1, 2, 0]
  shard = [s for s in batch["inputs"].addressable_shards
           if s.device == device][0]
  np.testing.assert_array_equal(np.asarray(shard.data), inputs_BN[2:4, 4:6])
  # One process holds every row, so process-local data is the same here.
  local = parallel.shard_batch({"inputs": inputs_BN}, mesh)
  np.testing.assert_array_equal(np.asarray(local["inputs"]), inputs_BN)
  with pytest.raises(ValueError, match="batch: expected a batch size "
                     "divisible by mesh.data=2"):
    parallel.shard_batch({"inputs": inputs_BN[:3]}, mesh)
  with pytest.raises(ValueError, match="batch: expected a sequence length "
                     "divisible by mesh.seq=4"):
    parallel.shard_batch({"inputs": inputs_BN[:, :6]}, mesh)
