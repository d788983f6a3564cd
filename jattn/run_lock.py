"""One run per workdir, on a workdir that can be written.

`RunLock(workdir)` is held by a training run for its whole length: it writes
WORKDIR/.lock (process id and host name) with an exclusive create, so a
second run on the same workdir refuses up front in one line ("workdir in use
by process N on host H"). A lock left by a process that is gone (same host,
pid no longer alive) is stale: it is taken over and the takeover reported.
`check_writable(workdir)` fails within seconds, naming the path, when the
workdir cannot be written (read-only disk, no permission), before any
training starts.

Local paths only: on remote filesystems (gs://) there is no lock.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import uuid

LOCK_NAME = ".lock"


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir's lock."""


class WorkdirNotWritable(OSError):
  """The workdir cannot be written."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def check_writable(workdir) -> None:
  """Creates (if needed) and writes a probe file in `workdir`, else raises
  WorkdirNotWritable naming the path."""
  path = pathlib.Path(os.fspath(workdir))
  probe = path / f".write_probe_{uuid.uuid4().hex}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"ok")
    probe.unlink()
  except OSError as err:
    raise WorkdirNotWritable(
        f"workdir: expected a folder this process can write, got "
        f"{os.fspath(path)!r} ({err.strerror or type(err).__name__})"
    ) from None


class RunLock:
  """Context manager holding WORKDIR/.lock for one run.

  Args:
    workdir: a local folder (created if missing).
    log: where to report a stale lock being taken over.
  """

  def __init__(self, workdir, *, log=print):
    self.path = pathlib.Path(os.fspath(workdir)) / LOCK_NAME
    self.log = log
    self.held = False

  def _owner(self) -> dict:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return {}

  def acquire(self) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._owner()
        pid, host = owner.get("pid"), owner.get("host")
        if host == me["host"] and isinstance(pid, int) and not _alive(pid):
          self.log(f"jattn.train: taking over the stale lock of process {pid} "
                   f"(no longer running) in {self.path.parent}")
          self.path.unlink(missing_ok=True)
          continue
        raise WorkdirInUse(
            f"workdir: in use by process {pid} on host {host} "
            f"({self.path}); wait for it to finish, or use another "
            "--workdir") from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return
    raise WorkdirInUse(f"workdir: could not take the lock {self.path}")

  def release(self) -> None:
    if self.held:
      self.path.unlink(missing_ok=True)
      self.held = False

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
