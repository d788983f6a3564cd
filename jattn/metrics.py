"""Where training metrics go: JSON lines, optional TensorBoard, the terminal.

`MetricWriter(workdir)` appends one JSON object per call of `write` to
WORKDIR/metrics.jsonl (a resumed run appends to the same file) and, when the
optional `tensorboardX` package is installed (the `tensorboard` extra), also
writes TensorBoard logs under WORKDIR/tensorboard (`jattn.tensorboard`:
train/ and eval/ groups, the final metrics and the config in HParams).
Values may be Python or NumPy scalars or 0-d arrays; they are stored as
plain JSON numbers (NaN and infinity as the strings "nan", "inf", "-inf",
so every line stays valid JSON).

`read_metrics(workdir)` reads the file back as a list of dicts.
"""

from __future__ import annotations

import json
import math

import numpy as np

from jattn import tensorboard as tensorboard_lib
from jattn import workdir as workdir_lib

METRICS_FILE = "metrics.jsonl"


def _plain(value):
  """A JSON-friendly Python value."""
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  array = np.asarray(value)
  if array.ndim == 0 and array.dtype.kind in "biuf":
    item = array.item()
    if isinstance(item, float) and not math.isfinite(item):
      return str(item)
    return item
  return str(value)


class MetricWriter:
  """Appends metrics to WORKDIR/metrics.jsonl (and TensorBoard if present).

  Args:
    workdir: the run's folder (created if missing), local or a URI such as
      gs://bucket/run (`jattn.workdir`).
    tensorboard: write TensorBoard logs when tensorboardX is importable.
    enabled: False makes `write` return the record without writing anything
      (processes other than the first of a multi-host run).
  """

  def __init__(self, workdir, *, tensorboard: bool = True,
               enabled: bool = True):
    self.workdir = workdir_lib.as_path(workdir)
    self.path = self.workdir / METRICS_FILE
    self._file = None
    self._tb = None
    if not enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._file = workdir_lib.LineLog(self.path)
    if tensorboard:
      try:
        self._tb = tensorboard_lib.TensorBoardWriter(
            self.workdir / "tensorboard")
      except ImportError as err:
        if workdir_lib.is_remote(self.workdir):  # installed, cannot write there
          print(f"jattn.metrics: no TensorBoard logs: {err}", flush=True)

  def write(self, metrics: dict) -> dict:
    """Appends one object; returns it as written (plain Python values)."""
    record = _plain(dict(metrics))
    if self._file is None:
      return record
    self._file.append(json.dumps(record, sort_keys=False))
    if self._tb is not None:
      self._tb.write(record)
    return record

  def write_hparams(self, hparams: dict, final: dict) -> None:
    """The run's config and final metrics in TensorBoard's HParams
    dashboard (nothing without tensorboardX)."""
    if self._tb is not None:
      self._tb.write_hparams(hparams, _plain(dict(final)))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(workdir) -> list[dict]:
  """The objects written to WORKDIR/metrics.jsonl, in order."""
  path = workdir_lib.as_path(workdir) / METRICS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no {METRICS_FILE} in {path.parent}")
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]
