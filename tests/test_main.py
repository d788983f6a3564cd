"""Tests for configs/copy.py and the CLI's config handling (jattn.main).

The CLI's training path runs in test_checkpoint.py (killed and resumed);
here only the flag handling runs in a subprocess, which fails before JAX is
imported.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from jattn import models
from jattn import tasks
from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config_module():
  return helpers.copy_config_module()


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "jattn.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_a_typo_in_an_override_fails_naming_the_key(tmp_path):
  result = _cli("--config=configs/copy.py:smoke", f"--workdir={tmp_path}",
                "--config.train.lerning_rate=0.1")
  assert result.returncode != 0
  assert "lerning_rate" in result.stderr
  assert 'Did you mean "learning_rate"' in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("arg", [None, *(_config_module().ARCHITECTURES)])
def test_every_config_builds_a_task_and_model_and_is_locked(arg):
  config = _config_module().get_config(arg)
  assert set(config) == {"task", "model", "train", "mesh"}
  kind = {None: "attention", "smoke": "attention"}.get(arg, arg)
  assert config.model.kind == kind
  task = tasks.from_config(config.task)
  line = models.describe(config.model, task.vocab_size, task.seq_len)
  assert line.startswith(kind + ":")
  with pytest.raises(AttributeError, match="lerning_rate"):
    config.train.lerning_rate = 0.1  # locked: no new fields
  if arg in (None, "attention", "tcn"):  # these reach back over the delay
    assert config.train.stop_at_accuracy == 0.99


def test_config_values_and_docstring():
  module = _config_module()
  assert module.get_config().to_dict() == module.get_config(
      "attention").to_dict()
  assert "python -m jattn.main --config=configs/copy.py" in module.__doc__
  with pytest.raises(ValueError, match="arg: expected one of"):
    module.get_config("transformer")
  tcn = module.get_config("tcn")
  dilations = models.layer_dilations(tcn.model, tasks.from_config(
      tcn.task).seq_len)
  assert dilations == [1, 3, 9, 27, 81]
  cnn = module.get_config("cnn").model
  assert 1 + cnn.num_layers * (cnn.kernel_size - 1) < 100
  smoke = module.get_config("smoke")
  assert tasks.from_config(smoke.task).seq_len <= 32
  assert isinstance(smoke, ml_collections.ConfigDict)
