"""A non-editable install: the wheel built from this checkout, unpacked on
sys.path, runs the smoke config by name from another folder."""

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_runs_the_shipped_config_by_name(tmp_path):
  built = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
       str(tmp_path / "dist"), str(ROOT)],
      capture_output=True, text=True, timeout=600)
  assert built.returncode == 0, built.stderr[-2000:]
  wheel, = (tmp_path / "dist").glob("jattn-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  for shipped in ("jattn/configs/copy.py", "jattn/py.typed"):
    assert shipped in names, names
  site = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(site)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  run = subprocess.run(
      [sys.executable, "-m", "jattn.main", "--config=copy.py:smoke",
       f"--workdir={tmp_path / 'run'}", "--config.train.num_steps=2",
       "--config.train.log_every=1", "--config.train.eval_every=2"],
      cwd=elsewhere, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu"))
  assert run.returncode == 0, run.stderr[-2000:]
  assert "final: eval accuracy" in run.stdout
  assert str(site) in run.stdout or "jattn" in run.stdout
  missing = subprocess.run(
      [sys.executable, "-m", "jattn.main", "--config=nope.py",
       f"--workdir={tmp_path / 'run2'}"],
      cwd=elsewhere, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu"))
  assert missing.returncode == 1
  assert missing.stderr.strip().count("\n") == 0, missing.stderr
