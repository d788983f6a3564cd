"""experiments/colab_copy_task.ipynb runs top to bottom (tiny setting, CPU).

The notebook is executed with nbclient in a python3 kernel of this
interpreter, with JATTN_NOTEBOOK_TINY=1 (a few training steps at delay 10),
so it cannot rot unnoticed. Its committed form has no outputs. The execution
is marked slow: .ci/run runs it after the default run, on the newest
versions and on the floor versions of constraints/colab.txt.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.helpers import ROOT

NOTEBOOK = ROOT / "experiments" / "colab_copy_task.ipynb"


def test_committed_notebook_is_small_has_no_outputs_and_no_placeholder():
  raw = json.loads(NOTEBOOK.read_text())
  assert NOTEBOOK.stat().st_size < 30_000
  code = [c for c in raw["cells"] if c["cell_type"] == "code"]
  assert all(not c["outputs"] and c["execution_count"] is None for c in code)
  first = "".join(raw["cells"][0]["source"])
  assert first.startswith("# ") and "Upload notebook" in first
  assert "OWNER" not in NOTEBOOK.read_text()  # no placeholder to edit
  # Colab's jax must survive the install cell: no upgrade, no TensorFlow.
  # The source comes from a URL typed in a form field or an uploaded archive.
  install = "".join(code[0]["source"])
  assert "--no-deps" in install and "REPO_URL" in install
  assert '# @param {type:"string"}' in install and "unpack_archive" in install
  for forbidden in ("--upgrade", "-U ", "tensorflow", "jax[", "absl.flags"):
    assert forbidden not in "".join("".join(c["source"]) for c in code)


@pytest.mark.slow  # a kernel and four training runs: ~40 s on 2 cores
def test_notebook_runs_top_to_bottom_in_the_tiny_setting(monkeypatch,
                                                         tmp_path):
  nbclient = pytest.importorskip("nbclient")
  nbformat = pytest.importorskip("nbformat")
  pytest.importorskip("ipykernel")
  monkeypatch.setenv("JATTN_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's workdirs
  # One CPU device, as on a CPU runtime (conftest may ask XLA for several).
  monkeypatch.setenv("XLA_FLAGS", " ".join(
      f for f in os.environ.get("XLA_FLAGS", "").split()
      if "xla_force_host_platform_device_count" not in f))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # A first cell (in memory only) records the kernel's interpreter.
  notebook.cells.insert(0, nbformat.v4.new_code_cell(
      "import sys; print('kernel python:', sys.executable)"))
  client = nbclient.NotebookClient(
      notebook, timeout=120, kernel_name="python3",
      resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()

  streams = ["".join(o.get("text", "") for o in cell.outputs
                     if o.output_type == "stream")
             for cell in notebook.cells if cell.cell_type == "code"]
  assert streams[0].strip() == f"kernel python: {sys.executable}"
  text = "\n".join(streams)
  assert "[CpuDevice(id=0)]" in text
  assert "final: eval accuracy" in text
  assert "delay 10:" in text
  for kind in ("attention", "cnn", "rnn"):
    assert f"  {kind}" in text
  images = sum(1 for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.outputs
               if o.output_type == "display_data" and "image/png" in o.data)
  assert images == 4  # curves, one head, every head, the comparison
