"""Tests for the task choice of configs/copy.py (`:MODEL,TASK`) and the
held-out settings each task config carries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jattn import tasks
from tests import helpers

MODULE = helpers.copy_config_module()
CLASSES = {"copy": tasks.CopyTask, "variable_copy": tasks.CopyTask,
           "selective_copy": tasks.CopyTask, "mqar": tasks.MQARTask,
           "induction": tasks.InductionTask}


def _range(task):
  """(lo, hi) of the knob the held-out setting moves (delay, length)."""
  if isinstance(task, tasks.CopyTask):
    return task.delay_range
  if isinstance(task, tasks.InductionTask):
    return task.length_range
  return (task.seq_len, task.seq_len)


def test_the_task_names_are_the_registry_names():
  assert MODULE.TASKS == tasks.TASK_NAMES
  assert set(MODULE.TASKS).isdisjoint(MODULE.ARCHITECTURES)


@pytest.mark.parametrize("name", MODULE.TASKS)
def test_every_task_config_has_a_held_out_setting_outside_training(name):
  config = MODULE.get_config(name)
  assert config.to_dict() == MODULE.get_config(f"attention,{name}").to_dict()
  assert config.model.kind == "attention" and config.task.name == name
  task = tasks.from_config(config.task)
  assert type(task) is CLASSES[name]
  held_out = task.held_out()
  lo, hi = _range(task)
  held_lo, held_hi = _range(held_out)
  assert held_lo > hi and held_hi == 2 * hi  # e.g. delays 101 .. 200
  assert held_out.vocab_size == task.vocab_size  # the same embedding table
  assert tasks.max_seq_len(task) == held_out.seq_len
  assert config.train.stop_at_accuracy == 0.99


def test_the_default_is_the_delay_100_copy_task_with_held_out_delays():
  task = tasks.from_config(MODULE.get_config().task)
  assert task == tasks.CopyTask(delay=100, num_symbols=10, alphabet_size=8,
                                variant="fixed", min_delay=1,
                                ood_min_delay=101, ood_max_delay=200)
  variable = tasks.from_config(MODULE.get_config("variable_copy").task)
  assert variable.delay_range == (1, 100)
  assert variable.held_out().delay_range == (101, 200)


@pytest.mark.parametrize("name", MODULE.TASKS)
def test_smoke_versions_are_tiny(name):
  config = MODULE.get_config(f"smoke,{name}")
  task = tasks.from_config(config.task)
  assert task.seq_len <= 16 and tasks.max_seq_len(task) <= 32
  assert config.model.d_model == 32 and config.train.num_steps == 300
  # CI's plain smoke run (test_train.py) keeps no held-out evaluation.
  assert (task.held_out() is None) == (name == "copy")
  assert MODULE.get_config("smoke").to_dict() == MODULE.get_config(
      "smoke,copy").to_dict()


def test_model_and_task_combine_in_either_order():
  config = MODULE.get_config("lstm,mqar")
  assert (config.model.kind, config.task.name) == ("lstm", "mqar")
  assert config.model.num_layers == 2 and config.train.num_steps >= 3000
  assert MODULE.get_config("mqar,lstm").to_dict() == config.to_dict()
  assert MODULE.get_config(" tcn , induction ").model.num_layers == 5


@pytest.mark.parametrize("arg", ["transformer", "mqar,induction",
                                 "lstm,gru", "attention,recall", ","])
def test_a_bad_arg_names_the_choices(arg):
  if arg == ",":  # nothing named: the defaults
    assert MODULE.get_config(arg).to_dict() == MODULE.get_config().to_dict()
    return
  with pytest.raises(ValueError, match="arg: expected one of") as info:
    MODULE.get_config(arg)
  assert "'mqar'" in str(info.value) and "'lstm'" in str(info.value)


def test_held_out_settings_follow_overrides_unless_set():
  config = MODULE.get_config("variable_copy")
  config.task.delay = 50
  assert tasks.from_config(config.task).held_out().delay_range == (51, 100)
  config.task.ood_max_delay = 300
  config.task.delay = 60
  assert tasks.from_config(config.task).held_out().delay_range == (61, 300)
  config.task.ood_max_delay = 0
  assert tasks.from_config(config.task).held_out() is None
  mqar = MODULE.get_config("mqar")
  mqar.task.seq_len = 40
  assert tasks.from_config(mqar.task).held_out().seq_len == 80
  induction = MODULE.get_config("induction")
  induction.task.seq_len = 32
  assert tasks.from_config(induction.task).held_out().length_range == (33, 64)


def test_task_name_switches_between_copy_tasks_only():
  config = MODULE.get_config()
  config.task.name = "variable_copy"
  assert tasks.from_config(config.task).variant == "variable"
  config.task.name = "selective_copy"
  assert tasks.from_config(config.task).variant == "selective"
  config.task.name = "mqar"
  with pytest.raises(ValueError, match="configs/copy.py:MODEL,TASK"):
    tasks.from_config(config.task)


@pytest.mark.slow  # a subprocess that imports JAX
def test_the_cli_rejects_an_unknown_task(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jattn.main",
       "--config=configs/copy.py:attention,recall", f"--workdir={tmp_path}"],
      cwd=helpers.ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "arg: expected one of" in result.stderr and "recall" in result.stderr
  assert not (tmp_path / "metrics.jsonl").exists()
