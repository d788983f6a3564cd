"""Every task through the trainer: smoke runs of the task configs (a few
steps of a tiny attention model, held-out evaluation included), and the
loss of every model kind on every new task and its held-out setting."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jattn import metrics as metrics_lib
from jattn import models
from jattn import tasks
from jattn import train
from tests.helpers import get_config

NEW_TASKS = ("variable_copy", "selective_copy", "mqar", "induction")


def _tiny(arg: str, steps: int = 4):
  config = get_config(arg)
  config.model.update(d_model=16, num_heads=2, d_ff=32, num_layers=2)
  config.train.update(batch_size=8, num_steps=steps, warmup_steps=1,
                      log_every=steps, eval_every=steps, eval_batches=1,
                      checkpoint_every=steps)
  return config


def test_the_summary_line_reports_the_held_out_setting():
  final = {"eval_accuracy": 0.99, "eval_exact_match": 0.9, "eval_loss": 0.01,
           "baseline_loss": 0.17, "steps": 10, "stopped": "num_steps",
           "seconds": 1.5, "device": "cpu:0"}
  line = train.summary_line(final)
  assert line.startswith("final: eval accuracy 0.9900") and "held" not in line
  final.update(eval_ood_accuracy=0.125, eval_ood_exact_match=0.0,
               eval_ood_loss=2.0, ood_baseline_loss=0.1)
  line = train.summary_line(final)
  assert "held-out setting accuracy 0.1250" in line
  assert "vs baseline 0.1000" in line and line.endswith("on cpu:0")


@pytest.mark.slow  # compiles a train step and two evaluations per task
@pytest.mark.parametrize("name", NEW_TASKS)
def test_a_smoke_run_reports_in_range_and_held_out_metrics(x32, tmp_path,
                                                           name):
  config = _tiny(f"smoke,{name}")
  task = tasks.from_config(config.task)
  final = train.train_and_evaluate(config, tmp_path)
  assert final["steps"] == 4 and final["stopped"] == "num_steps"
  for prefix in ("eval_", "eval_ood_"):
    assert np.isfinite(final[prefix + "loss"])
    assert 0 <= final[prefix + "accuracy"] <= 1
    assert 0 <= final[prefix + "exact_match"] <= 1
  assert final["ood_task"] == repr(task.held_out())
  assert final["ood_seconds"] > 0 and final["seconds"] > 0
  # The baselines are those of the batches the evaluations score.
  key = jax.random.split(jax.random.key(0), 4)[1]
  for which, got, stream in ((task, "baseline_loss", None),
                             (task.held_out(), "ood_baseline_loss",
                              train.OOD_STREAM)):
    eval_key = key if stream is None else jax.random.fold_in(key, stream)
    batch = tasks.make_batch(which, jax.random.fold_in(eval_key, 0), 8)
    want = float(tasks.batch_baseline_loss(which, batch))
    assert final[got] == pytest.approx(want, rel=1e-5)
  lines = metrics_lib.read_metrics(tmp_path)
  assert lines[-1] == final
  json.dumps(final)  # plain JSON values only
  assert "held-out setting accuracy" in train.summary_line(final)


@pytest.mark.slow  # one compilation per model kind and task
@pytest.mark.parametrize("kind", models.KINDS)
def test_every_model_kind_scores_every_new_task_and_its_held_out_setting(
    x32, kind):
  for name in ("mqar", "induction", "variable_copy"):
    config = get_config(f"{kind},{name}")
    config.model.update(d_model=8, num_heads=2, d_ff=16, num_layers=2,
                        window=4, num_features=8)
    if name == "variable_copy":
      config.task.update(delay=8, num_symbols=3, alphabet_size=4)
    elif name == "mqar":
      config.task.update(num_pairs=3, seq_len=12)
    else:
      config.task.seq_len = 12
    model = config.model.to_dict()
    task = tasks.from_config(config.task)
    # Random params from NumPy: init_model's draws would compile for seconds.
    shapes = jax.eval_shape(lambda key: models.init_model(
        key, model, task.vocab_size, tasks.max_seq_len(task)),
        jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(
        rng.normal(0.0, 0.3, s.shape).astype(np.float32)), shapes)
    loss = jax.jit(lambda p, b: train.loss_fn(p, b, model_config=model))
    for which in (task, task.held_out()):
      batch = tasks.make_batch(which, jax.random.key(1), 2)
      value, metrics = loss(params, batch)
      assert np.isfinite(float(value)), (kind, name, which)
      assert 0 <= float(metrics["accuracy"]) <= 1
