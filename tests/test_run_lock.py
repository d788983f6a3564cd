"""One run per workdir (a lock a dead process does not keep) and a clear
error for a workdir that cannot be written."""

import json
import os
import socket
import subprocess
import sys

import pytest
from etils import epath

from jattn import run_lock

pytestmark = pytest.mark.floor


def test_a_second_run_refuses_in_one_line_naming_the_holder(tmp_path):
  with run_lock.RunLock(tmp_path):
    with pytest.raises(run_lock.WorkdirInUse) as info:
      run_lock.RunLock(tmp_path).acquire()
  message = str(info.value)
  assert "\n" not in message
  assert f"process {os.getpid()}" in message
  assert socket.gethostname() in message
  assert not (tmp_path / ".lock").exists()          # released on exit


def test_a_dead_processs_lock_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)
  (tmp_path / ".lock").write_text(json.dumps(
      {"pid": pid, "host": socket.gethostname()}))
  lines = []
  with run_lock.RunLock(tmp_path, log=lines.append) as lock:
    assert lock.held
  assert len(lines) == 1 and f"stale lock of process {pid}" in lines[0]


def test_a_read_only_workdir_fails_fast_naming_the_path(tmp_path,
                                                      monkeypatch):
  # Simulated: root (as CI runs) writes through read-only permissions.
  def refuse(self, data):
    raise PermissionError(13, "Read-only file system", str(self))

  monkeypatch.setattr(type(epath.Path(tmp_path)), "write_bytes", refuse)
  with pytest.raises(run_lock.WorkdirNotWritable) as info:
    run_lock.check_writable(tmp_path)
  assert str(tmp_path) in str(info.value)
  assert "Read-only file system" in str(info.value)


def test_a_file_in_the_way_is_not_writable(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(run_lock.WorkdirNotWritable, match="workdir: expected"):
    run_lock.check_writable(blocker / "run")
