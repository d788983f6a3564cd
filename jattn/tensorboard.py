"""TensorBoard logs of a run (the optional `tensorboard` extra).

    pip install -e ".[tensorboard]"      # tensorboardX
    tensorboard --logdir WORKDIR/tensorboard

`TensorBoardWriter(logdir)` takes the records jattn.train writes to
metrics.jsonl and writes each numeric value once per step under a group:
train/ (loss, accuracy, exact_match, grad_norm, learning_rate,
baseline_loss), eval/ (the eval_* values), eval_held_out/ (eval_ood_*)
and perf/ (steps_per_second, eta_s). The final record is not written as
scalars (its values repeat the last evaluation); `write_hparams` files it
instead, with the run's config as hyperparameters, in TensorBoard's
HParams dashboard (a sub-run named "hparams").

Why tensorboardX: a maintained, small, pure-Python writer of TensorBoard's
event files with HParams support and no TensorFlow or PyTorch dependency
(clu's metric writers need TensorFlow for TensorBoard output).
"""

from __future__ import annotations

import os

TRAIN = ("loss", "accuracy", "exact_match", "grad_norm", "learning_rate",
         "baseline_loss")
PERF = ("steps_per_second", "eta_s")


def tag(name: str) -> str | None:
  """The TensorBoard tag of a metrics field, or None for fields not
  plotted (step, wall_time, elapsed_s, strings)."""
  if name.startswith("eval_ood_"):
    return "eval_held_out/" + name[len("eval_ood_"):]
  if name.startswith("eval_"):
    return "eval/" + name[len("eval_"):]
  if name in TRAIN:
    return "train/" + name
  if name in PERF:
    return "perf/" + name
  return None


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat_hparams(config) -> dict:
  """{"model.d_model": 64, ...}: the config's scalar fields (bool, int,
  float, str); other values as their string form."""
  out = {}
  for section, fields in config.items():
    if not hasattr(fields, "items"):
      continue
    for name, value in fields.items():
      if value is None:
        continue
      out[f"{section}.{name}"] = (value if isinstance(value,
                                                      (bool, int, float, str))
                                  else str(value))
  return out


class TensorBoardWriter:
  """Event files under `logdir` (local, or gs:// / s3:// when tensorboardX
  can write there); raises ImportError without tensorboardX, or for a
  remote logdir whose scheme tensorboardX has no writer for (gs:// needs
  google-cloud-storage, s3:// boto3)."""

  def __init__(self, logdir):
    import tensorboardX  # noqa: PLC0415  (optional dependency)
    from tensorboardX import record_writer  # noqa: PLC0415
    self.logdir = os.fspath(logdir)
    scheme = self.logdir.split("://")[0] if "://" in self.logdir else None
    needs = {"gs": ("GCS_ENABLED", "google-cloud-storage"),
             "s3": ("S3_ENABLED", "boto3")}
    if scheme in needs and not getattr(record_writer, needs[scheme][0], True):
      raise ImportError(f"logdir: {scheme}:// TensorBoard logs need "
                        f"{needs[scheme][1]} (pip install {needs[scheme][1]}),"
                        f" got {self.logdir!r}")
    if scheme and scheme not in record_writer.REGISTERED_FACTORIES:
      # (Otherwise tensorboardX makes a local folder named "gs:".)
      raise ImportError(
          f"logdir: expected a scheme tensorboardX can write "
          f"({sorted(record_writer.REGISTERED_FACTORIES) or 'none installed'}),"
          f" got {self.logdir!r}")
    self._writer = tensorboardX.SummaryWriter(self.logdir)

  def write(self, record: dict) -> None:
    """Scalars of one metrics record (skipped: final records)."""
    if record.get("final") or "step" not in record:
      return
    for name, value in record.items():
      where = tag(name)
      if where is not None and _number(value):
        self._writer.add_scalar(where, value, record["step"])
    self._writer.flush()

  def write_hparams(self, hparams: dict, final: dict) -> None:
    """The run's hyperparameters and its final numeric metrics (as
    hparams/<field>) in the HParams dashboard."""
    metrics = {f"hparams/{name}": value for name, value in final.items()
               if _number(value) and name not in ("step", "final")}
    self._writer.add_hparams(hparams, metrics, name="hparams",
                             global_step=final.get("step"))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
