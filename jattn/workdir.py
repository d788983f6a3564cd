"""Workdir paths: a local folder or any URI etils.epath reads (gs://...).

A training run's workdir holds config.json, metrics.jsonl, .lock,
checkpoints/ (orbax) and the plots. Every file jattn writes there goes
through `etils.epath`, the path library orbax itself uses, so one
`--workdir=gs://bucket/run` (the usual place on Cloud TPU) serves the
checkpoints, the metrics and the plots alike. epath reaches gs:// through
`gcsfs` (fsspec) or TensorFlow's gfile when either is installed; Colab and
Cloud TPU images ship gcsfs (`pip install gcsfs` elsewhere).

Object stores differ from a disk in two ways that matter here, and the
functions below hide both:
- no append: `LineLog` appends lines to a local file, and on a remote one
  rewrites the whole object (metrics files hold a few thousand lines);
- no atomic rename: `write_text_atomic` writes a temporary file and renames
  it locally; a remote object appears whole when its write finishes.

    path = workdir.as_path("gs://bucket/run")   # epath.Path, kept remote
    workdir.is_remote(path)                     # True
    workdir.as_path("runs/a")                   # absolute local path
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(path) -> bool:
  """True for a URI with a scheme (gs://, s3://, ...), False for a local
  path."""
  return "://" in os.fspath(path)


def as_path(workdir) -> epath.Path:
  """`workdir` as an epath.Path: local paths made absolute, URIs kept."""
  path = epath.Path(workdir)
  return path if is_remote(path) else path.absolute()


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes `text` to `path` so that readers see the old or the new file
  whole, never a partial one."""
  if is_remote(path):
    path.write_text(text)  # an object appears when its upload completes
    return
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


class LineLog:
  """Appends text lines to a file, local or remote.

  Locally the file is opened for appending (each line flushed). A remote
  object cannot be appended to: the lines already there are read once, and
  every `append` rewrites the object with all lines so far.
  """

  def __init__(self, path: epath.Path):
    self.path = path
    self._file = None
    self._lines = None
    if is_remote(path):
      self._lines = path.read_text() if path.exists() else ""
    else:
      self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

  def append(self, line: str) -> None:
    """Adds one line (without its newline)."""
    if self._file is not None:
      self._file.write(line + "\n")
      self._file.flush()
    else:
      self._lines += line + "\n"
      self.path.write_text(self._lines)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
