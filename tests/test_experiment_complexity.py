"""Smoke run of experiments/complexity.py --quick: it writes every artefact."""

import json

import pytest

from tests import helpers


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plots(tmp_path):
  complexity = helpers.load_module("experiments/complexity.py", "complexity")
  assert complexity.main(["--out", str(tmp_path), "--quick"]) == 0
  table = (tmp_path / "complexity.md").read_text()
  assert "| self-attention | O(n^2 d)" in table
  assert "cpu" in table  # the device is named beside the times
  results = json.loads((tmp_path / "complexity.json").read_text())
  assert results["path_length"]["self-attention"]["16"] == 1
  assert results["path_length"]["rnn"]["16"] == 15
  assert results["sequential"]["rnn"]["n_exponent"] > 0.9
  for plot in results["plots"]:
    assert (tmp_path / plot).stat().st_size > 1000
