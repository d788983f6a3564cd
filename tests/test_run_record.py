"""The run record: config.json with the command and versions; a rerun with
another config is refused naming the fields; resumable fields may change."""

import json

import ml_collections
import pytest

from jattn import run_record

pytestmark = pytest.mark.floor


def _config(**train):
  return ml_collections.ConfigDict({
      "task": {"name": "copy", "delay": 10},
      "model": {"kind": "attention", "d_model": 32},
      "train": {"num_steps": 100, "log_every": 10, **train}})


def test_the_record_holds_config_command_versions_and_devices(tmp_path):
  run_record.check_or_write(tmp_path, _config(), argv=["jattn.main", "--x"])
  record = json.loads((tmp_path / "config.json").read_text())
  assert record["config"] == _config().to_dict()
  assert record["command"] == ["jattn.main", "--x"]
  assert {"python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
          "jattn"} <= set(record["versions"])
  assert record["devices"] and record["devices"][0].startswith("cpu")
  assert run_record.read(tmp_path)["config"] == _config().to_dict()


def test_a_rerun_may_change_only_resumable_fields(tmp_path):
  run_record.check_or_write(tmp_path, _config())
  record = run_record.check_or_write(tmp_path, _config(num_steps=500,
                                                       log_every=5))
  assert record["resumed_from"] is not None
  other = _config()
  other.model.d_model = 48
  other.task.delay = 20
  with pytest.raises(run_record.ConfigMismatch) as info:
    run_record.check_or_write(tmp_path, other)
  message = str(info.value)
  assert "\n" not in message
  assert "model.d_model (32 stored, 48 now)" in message
  assert "task.delay (10 stored, 20 now)" in message
  assert isinstance(info.value, ValueError)
