"""Training on a 2 x 4 (data x seq) mesh of fake CPU devices gives the steps
of one device: the same losses and, after a few Adam steps, the same
parameters within float32 tolerance. On the mesh the batch is split over
"data", the tokens over "seq", and the attention layers run ring attention
(`jattn.models` switches to it under a mesh with seq > 1).

train_and_evaluate itself runs on the default mesh (all 8 devices on
"data") in test_train.py and test_checkpoint.py; here the steps are driven
directly, which compiles two train steps and nothing else.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jattn import models
from jattn import parallel
from jattn import tasks
from jattn import train
from tests.helpers import get_config


def tiny_config(mesh: dict | None = None):
  config = get_config("smoke")
  config.model.update(d_model=16, num_heads=2, d_ff=32, num_layers=1)
  config.train.update(batch_size=8, schedule="constant", warmup_steps=0,
                      num_steps=3, log_every=1, eval_every=3, eval_batches=1)
  config.mesh.update(mesh or {})
  return config


@pytest.mark.slow  # two 8-device compilations: 12-22 s
def test_train_steps_on_a_2x4_mesh_match_one_device(x32):
  config = tiny_config()
  task = tasks.from_config(config.task)
  model = config.model.to_dict()
  optimizer = train.make_optimizer(config.train)
  # Random params from NumPy: init_model's random draws would compile for
  # seconds.
  shapes = jax.eval_shape(lambda key: models.init_model(
      key, model, task.vocab_size, task.seq_len), jax.random.key(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(
      rng.normal(0.0, 0.5, s.shape).astype(np.float32)), shapes)
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": optimizer.init(params)}
  params_0 = jax.tree.map(np.array, state["params"])
  mesh = parallel.make_mesh({"data": 2, "seq": 4})
  one_step = train.make_train_step(model, optimizer)
  mesh_step = train.make_train_step(model, optimizer, mesh)
  one = jax.device_put(jax.tree.map(jnp.copy, state), jax.devices()[0])
  sharded = jax.device_put(state, parallel.param_shardings(state, mesh))
  batch_fn = train.make_batch_fn(task, config.train.batch_size)
  data_key, dropout_key = jax.random.key(1), jax.random.key(2)
  for i in range(3):
    batch = jax.device_get(batch_fn(data_key, i))
    one, one_metrics = one_step(one, batch, dropout_key)
    placed = parallel.shard_batch(batch, mesh, process_local=False)
    assert placed["inputs"].sharding.spec == jax.sharding.PartitionSpec(
        "data", "seq")
    sharded, mesh_metrics = mesh_step(sharded, placed, dropout_key)
    for name in ("loss", "accuracy", "grad_norm"):
      np.testing.assert_allclose(mesh_metrics[name], one_metrics[name],
                                 rtol=1e-5, err_msg=f"step {i} {name}")
  assert len(sharded["params"]["head"]["w"].sharding.device_set) == 8
  moved = 0.0
  for (path, a), b, a0 in zip(
      jax.tree_util.tree_leaves_with_path(one["params"]),
      jax.tree.leaves(sharded["params"]), jax.tree.leaves(params_0)):
    a, b, a0 = np.asarray(a), np.asarray(b), np.asarray(a0)
    moved = max(moved, float(np.max(np.abs(a - a0))))
    # Float32 summation order differs between the layouts (measured: <= 4e-7
    # absolute after 3 steps).
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  assert moved > 3e-3  # 3 steps of lr 3e-3 moved the params


def test_mesh_config_errors_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="mesh.data: expected a divisor of "
                     "train.batch_size=8, got 3"):
    train.train_and_evaluate(tiny_config({"data": 3}), tmp_path)
  with pytest.raises(ValueError, match="mesh.seq: expected a divisor of the "
                     "sequence length 16"):
    train.train_and_evaluate(tiny_config({"data": 1, "seq": 3}), tmp_path)
  with pytest.raises(ValueError, match="mesh: expected at most 8 devices"):
    train.train_and_evaluate(tiny_config({"data": 16}), tmp_path)
  with pytest.raises(ValueError, match="mesh.seq: expected an int >= 1"):
    train.train_and_evaluate(tiny_config({"seq": 0}), tmp_path)
  default = get_config(num_data_devices=-1).mesh.to_dict()
  assert json.loads(json.dumps(default)) == {"data": -1, "seq": 1, "model": 1}
  assert not (tmp_path / "metrics.jsonl").exists()
