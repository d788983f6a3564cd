"""Smoke test: experiments/accelerator_check.py --quick runs on CPU, checks
the implementations the dispatch can pick here against its reference, and
writes its JSON with the device and the load."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_run_on_cpu(tmp_path):
  out = tmp_path / "check.json"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "accelerator_check.py"),
       "--quick", "--out", str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=1200,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results["machine"]["platform"] == "cpu"
  assert results["machine"]["load_average"] is not None
  assert results["dispatch_here"] == "blockwise"
  rows = {(r["implementation"], r["dtype"], r["case"]): r
          for r in results["correctness"]}
  for implementation in ("dense", "blockwise", "pallas"):
    for case in ("causal", "local_left_128", "key_len", "gqa_causal",
                 "empty_rows"):
      row = rows[(implementation, "float32", case)]
      assert "error" not in row, row
      assert row["nan_free"], row
      assert max(row["errors"].values()) < 1e-4, row
    assert rows[(implementation, "bfloat16", "empty_rows")][
        "empty_rows_exactly_zero"]
  labels = {r["label"] for r in results["timing"] if "median_ms" in r}
  assert {"jattn (auto)", "jattn blockwise", "jax.nn xla"} <= labels
  assert "Device: cpu" in proc.stdout
