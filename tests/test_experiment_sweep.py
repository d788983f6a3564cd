"""Smoke runs of experiments/sweep.py and experiments/positional.py, and the
sweep's parameter matching."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _script(name):
  spec = importlib.util.spec_from_file_location(
      name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_architecture_is_matched_within_ten_percent():
  sweep = _script("sweep")
  target = sweep.param_count(sweep.base_config("attention", "copy", 100))
  for arch in sweep.ARCHS:
    config = sweep.base_config(arch, "copy", 100)
    d, n = sweep.match_width(config, target)
    assert abs(n / target - 1) <= 0.10, (arch, d, n)
    assert config.model.d_model == 256 or d > 0
  with pytest.raises(ValueError, match="target_params"):
    sweep.match_width(sweep.base_config("rnn", "copy", 100), 10**9)


def test_summary_is_mean_and_sample_std_over_seeds():
  sweep = _script("sweep")
  rows = [{"mode": "steps", "arch": "gru", "delay": 10, "seed": s,
           "eval_accuracy": a, "solved": a >= 0.99, "steps": st,
           "seconds": 1.0} for s, (a, st) in enumerate(
               [(0.5, 100), (0.7, 100), (1.0, 40)])]
  cell = sweep.summarise(rows)["steps"]["gru"]["10"]
  assert cell["accuracy_mean"] == pytest.approx(0.7333333)
  assert cell["accuracy_std"] == pytest.approx(0.2516611)  # ddof = 1
  assert cell["solved"] == 1 and cell["steps_to_solve_median"] == 40


@pytest.mark.slow
def test_sweep_quick_run_writes_tables_plots_and_lists_slow_cells(tmp_path):
  sweep = _script("sweep")
  assert sweep.main(["--out", str(tmp_path), "--quick"]) == 0
  results = json.loads((tmp_path / "sweep.json").read_text())
  assert len(results["rows"]) == 2 * 2 * 2  # modes x archs x seeds
  for mode in ("steps", "wall"):
    assert set(results["summary"][mode]) == {"attention", "gru"}
  steps = [r["steps"] for r in results["rows"] if r["mode"] == "steps"]
  assert all(s <= 10 for s in steps)
  assert (tmp_path / "accuracy_vs_delay_steps.png").is_file()
  # A limit below every estimate: every cell is listed, none is run.
  out = tmp_path / "none"
  assert sweep.main(["--out", str(out), "--quick", "--max-cell-s",
                     "0.0001"]) == 0
  results = json.loads((out / "sweep.json").read_text())
  assert results["rows"] == [] and len(results["not_run"]) == 4
  assert "not run (est." in (out / "sweep.md").read_text()


@pytest.mark.slow
def test_positional_quick_run_writes_bands(tmp_path):
  positional = _script("positional")
  assert positional.main(["--out", str(tmp_path), "--quick"]) == 0
  results = json.loads((tmp_path / "positional.json").read_text())
  assert [r["positional"] for r in results["rows"]] == ["rope", "sinusoidal"]
  for row in results["rows"]:
    assert [b["delays"] for b in row["bands"]] == [[1, 100], [101, 120]]
    assert all(0 <= b["accuracy"] <= 1 for b in row["bands"])
