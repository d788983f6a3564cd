"""TensorBoard logs: grouped tags, one value per tag and step, the final
record in HParams only (read back from the event files)."""

import struct

import pytest

from jattn import metrics as metrics_lib
from jattn import tensorboard

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def _events(folder):
  """Every Event proto in the event files under `folder` (TFRecord
  framing: length, its CRC, the data, its CRC)."""
  found = []
  for path in sorted(folder.rglob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      start = offset + 12
      event = event_pb2.Event()
      event.ParseFromString(data[start:start + length])
      found.append((path.parent.name, event))
      offset = start + length + 4
  return found


def test_tags_are_grouped_unique_per_step_and_final_goes_to_hparams(
    tmp_path):
  with metrics_lib.MetricWriter(tmp_path) as writer:
    writer.write({"step": 50, "loss": 1.0, "accuracy": 0.5,
                  "learning_rate": 1e-3, "wall_time": 1.7e9,
                  "elapsed_s": 3.0, "baseline_loss": 0.7})
    writer.write({"step": 100, "loss": 0.5, "steps_per_second": 20.0,
                  "eval_loss": 0.4, "eval_accuracy": 0.9,
                  "baseline_loss": 0.7})
    final = writer.write({"final": True, "step": 100, "steps": 100,
                          "eval_loss": 0.4, "eval_accuracy": 0.9,
                          "eval_ood_accuracy": 0.2, "stopped": "num_steps"})
    writer.write_hparams({"model.d_model": 64, "model.kind": "attention",
                          "train.learning_rate": 3e-3}, final)
  scalars = [(run, event.step, value.tag) for run, event in
             _events(tmp_path / "tensorboard") for value in event.summary.value
             if value.HasField("simple_value")]
  main = sorted((step, tag) for run, step, tag in scalars
                if run == "tensorboard")
  assert main == sorted([
      (50, "train/loss"), (50, "train/accuracy"),
      (50, "train/learning_rate"), (50, "train/baseline_loss"),
      (100, "train/loss"), (100, "perf/steps_per_second"),
      (100, "eval/loss"), (100, "eval/accuracy"),
      (100, "train/baseline_loss")])
  assert len(main) == len(set(main))  # no value written twice
  hparams_run = [(step, tag) for run, step, tag in scalars if run == "hparams"]
  assert (100, "hparams/eval_ood_accuracy") in hparams_run
  plugins = {value.metadata.plugin_data.plugin_name
             for _, event in _events(tmp_path / "tensorboard")
             for value in event.summary.value}
  assert "hparams" in plugins


def test_tags_of_metrics_fields():
  assert tensorboard.tag("eval_ood_exact_match") == "eval_held_out/exact_match"
  assert tensorboard.tag("eval_loss") == "eval/loss"
  assert tensorboard.tag("grad_norm") == "train/grad_norm"
  assert tensorboard.tag("wall_time") is None
  assert tensorboard.tag("step") is None
