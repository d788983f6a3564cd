"""One run per workdir, on a workdir that can be written.

`RunLock(workdir)` is held by a training run for its whole length: it writes
WORKDIR/.lock (process id and host name) with an exclusive create, so a
second run on the same workdir refuses up front in one line ("workdir in use
by process N on host H"). A lock left by a process that is gone (same host,
pid no longer alive) is stale: it is taken over and the takeover reported.
`check_writable(workdir)` fails within seconds, naming the path, when the
workdir cannot be written (read-only disk, no permission), before any
training starts.

On a remote workdir (gs://..., `jattn.workdir`) there is no exclusive
create: the lock is written with a random token, read back after
`settle_s` seconds, and held only if the token is still this run's, so of
two runs started together the later writer wins and the other refuses.
Runs started closer together than the object store's write latency could
both pass (GCS reads are strongly consistent, so this needs starts within
about a second). A lock from another host cannot be checked for a live
process: the message says to delete WORKDIR/.lock when that run is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

from jattn import workdir as workdir_lib

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
  path = workdir_lib.as_path(workdir)
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
  except ImportError as err:  # gs:// without gcsfs or TensorFlow
    raise WorkdirNotWritable(
        f"workdir: expected a path this installation can reach, got "
        f"{os.fspath(path)!r} ({err}; for gs://: pip install gcsfs)"
    ) from None


class RunLock:
  """Context manager holding WORKDIR/.lock for one run.

  Args:
    workdir: the run's folder (created if missing), local or remote.
    log: where to report a stale lock being taken over.
    settle_s: on a remote workdir, how long to wait before reading the lock
      back (see the module docstring).
  """

  def __init__(self, workdir, *, log=print, settle_s: float = 1.0):
    self.path = workdir_lib.as_path(workdir) / LOCK_NAME
    self.remote = workdir_lib.is_remote(self.path)
    self.log = log
    self.settle_s = settle_s
    self.held = False

  def _owner(self) -> dict:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return {}

  def _refuse(self, owner: dict) -> WorkdirInUse:
    pid, host = owner.get("pid"), owner.get("host")
    hint = ("; if that run is gone, delete the lock file"
            if self.remote and host != socket.gethostname() else "")
    return WorkdirInUse(
        f"workdir: in use by process {pid} on host {host} ({self.path}); "
        f"wait for it to finish, or use another --workdir{hint}")

  def _create(self, me: dict) -> bool:
    """Writes the lock if there is none; False when one exists."""
    if self.remote:
      if self.path.exists():
        return False
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self.path.write_text(json.dumps(me))
      time.sleep(self.settle_s)
      if self._owner().get("token") != me["token"]:
        raise self._refuse(self._owner())  # another run wrote it after us
      return True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    return True

  def acquire(self) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "token": uuid.uuid4().hex}
    for _ in range(2):
      if self._create(me):
        self.held = True
        return
      owner = self._owner()
      pid, host = owner.get("pid"), owner.get("host")
      if host == me["host"] and isinstance(pid, int) and not _alive(pid):
        self.log(f"jattn.train: taking over the stale lock of process {pid} "
                 f"(no longer running) in {self.path.parent}")
        self.path.unlink(missing_ok=True)
        continue
      raise self._refuse(owner)
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
