"""Every user mistake on the command line is one line on stderr, exit 1."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "copy.py")


def _run(tmp_path, *args):
  proc = subprocess.run(
      [sys.executable, "-m", "jattn.main", *args,
       f"--workdir={tmp_path / 'run'}"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  return proc.returncode, proc.stderr.strip().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("args,words", [
    ((f"--config={CONFIG}:transformer",), ["arg", "transformer"]),
    ((f"--config={CONFIG}", "--config.model.kind=transformer"),
     ["model.kind", "transformer"]),
    ((f"--config={CONFIG}", "--config.train.num_steps=abc"),
     ["num_steps", "abc"]),
    ((f"--config={CONFIG}", "--config.train.nmu_steps=5"), ["nmu_steps"]),
    (("--config=no_such_config.py",), ["no config file", "no_such_config"]),
    ((f"--config={CONFIG}:smoke", "--distributed"),
     ["--distributed", "--coordinator_address"]),
])
def test_one_line_on_stderr(tmp_path, args, words):
  code, lines = _run(tmp_path, *args)
  assert code == 1
  assert len(lines) == 1, lines
  assert lines[0].startswith("error: "), lines
  for word in words:
    assert word in lines[0], (word, lines[0])
  assert not (tmp_path / "run" / "checkpoints").exists()
