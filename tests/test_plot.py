"""Tests for jattn.plot: PNGs written, what the figures show, and the CLI on a
workdir made by one tiny training run (shared by the tests of this file)."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jattn import checkpoint
from jattn import plot
from jattn import train
from jattn.plot import workdir as workdir_lib
from jattn.plot import _mpl
from jattn.plot import __main__ as plot_main
from tests.helpers import ROOT
from tests.helpers import get_config

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 60


def _smoke_config():
  config = get_config("smoke")  # delay 8, 4 symbols: N = 16
  with config.unlocked():
    t = config.train
    t.num_steps, t.warmup_steps, t.log_every = STEPS, 10, 20
    t.eval_every = t.checkpoint_every = STEPS
    t.eval_batches = 1
    if "mesh" in config:  # one device (conftest may fake several CPUs)
      config.mesh.data = 1
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, config) of a 60-step attention run on the smoke task."""
  workdir = tmp_path_factory.mktemp("run")
  config = _smoke_config()
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", False)  # as users and the CLI run it
  try:
    train.train_and_evaluate(config, workdir)
  finally:
    jax.config.update("jax_enable_x64", old)
  return workdir, config


def _is_png(path) -> bool:
  path = pathlib.Path(path)
  return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


# ml_collections loads the config file with a deprecated importlib call.
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_cli_writes_pngs_next_to_the_metrics(trained, capsys):
  # In-process (its flags are its own), to reuse this process's compiled
  # functions; `python -m jattn.plot` runs in the next test.
  workdir, _ = trained
  code = plot_main.main(["jattn.plot", str(workdir),
                         f"--config={ROOT / 'configs' / 'copy.py'}:smoke"])
  assert code == 0
  names = ["training_curves.png", "attention_heads.png",
           "attention_copy_head.png"]
  assert capsys.readouterr().out.split() == [str(workdir / n) for n in names]
  for name in names:
    assert _is_png(workdir / name), name
  with pytest.raises(SystemExit, match="error: Unknown command line flag"):
    plot_main.main(["jattn.plot", str(workdir), "--bogus"])
  with pytest.raises(SystemExit, match="error: expected one WORKDIR"):
    plot_main.main(["jattn.plot"])


def test_cli_without_a_plottable_folder_fails_with_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jattn.plot", str(tmp_path)], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: workdir: expected a folder with metrics.jsonl")


def test_copy_attention_of_the_trained_model_finds_the_copy_head(trained):
  workdir, config = trained
  params, step = checkpoint.load_params(workdir)
  assert step == STEPS
  found = plot.copy_attention(params, config)
  weights = found["weights"]
  assert weights.shape == (2, 4, 16, 16)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  # Copies at the last 4 positions reproduce the symbols at positions 0..3:
  # the diagonal shifted by delay + num_symbols = 12.
  np.testing.assert_array_equal(found["queries"], [12, 13, 14, 15])
  np.testing.assert_array_equal(found["keys"], [0, 1, 2, 3])
  score = found["copy_score"]
  assert score.shape == (2, 4)
  np.testing.assert_allclose(
      score, weights[:, :, 12:, :4].diagonal(axis1=2, axis2=3).mean(-1))
  # After 60 steps one head puts most of each copy query's weight on its
  # source (uniform attention would give 1/16).
  layer, head = plot.best_head(score)
  assert score[layer, head] > 0.5, score
  assert np.all(np.argmax(weights[layer, head, 12:], axis=-1) == [0, 1, 2, 3])
  # A state {"params": ...} or load_params' (params, step) give the same.
  again = plot.copy_attention((params, step), config)["weights"]
  np.testing.assert_array_equal(again, weights)
  fig = plot.plot_copy_attention({"params": params}, config)
  assert fig.axes[0].get_title().startswith(f"layer {layer}, head {head}:")
  _mpl.pyplot().close(fig)


def _pixel_of_maximum(fig, ax):
  """(x, y) data coordinates of the brightest viridis pixels of a heatmap."""
  fig.canvas.draw()
  rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
  yellow = np.array([253, 231, 37])  # viridis(1.0)
  rows, cols = np.nonzero(np.abs(rgba - yellow).sum(-1) < 30)
  height = rgba.shape[0]
  bbox = ax.get_window_extent()
  inside = ((cols > bbox.x0) & (cols < bbox.x1) & (height - rows > bbox.y0)
            & (height - rows < bbox.y1))
  display = np.stack([cols[inside], height - rows[inside]], -1).mean(0)
  return ax.transData.inverted().transform(display)


def test_heatmap_shows_the_chosen_layer_and_head(tmp_path):
  L, H, N = 2, 3, 6
  weights = np.full((L, H, N, N), 0.1)
  peaks = {}
  for l in range(L):
    for h in range(H):
      i, j = (l + 2 * h) % N, (3 * l + h + 1) % N
      weights[l, h, i, j] = 1.0
      peaks[l, h] = (i, j)
  fig = plot.plot_attention(weights, layer=1, head=2, pairs=([4, 5], [0, 1]))
  ax = fig.axes[0]
  shown = ax.images[0].get_array()
  i, j = np.unravel_index(np.argmax(shown), shown.shape)
  assert (i, j) == peaks[1, 2] == (5, 0)
  # In the picture the peak is at column = key j, row = query i.
  x, y = _pixel_of_maximum(fig, ax)
  assert (round(x), round(y)) == (j, i)
  # The expected pairs are outlined at (key, query), one cell each, unfilled.
  outlines = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
  assert outlines == [(0, 4), (1, 5)]
  assert not any(p.get_fill() for p in ax.patches)
  assert fig.axes[1].get_ylabel() == "attention weight"  # the colour bar
  assert _is_png(_mpl.save(fig, tmp_path / "heatmap.png"))
  # Cropped to the marked rows and columns (3 cells of margin), in sequence
  # positions: rows 1..5, columns 0..4 of the 6 x 6 map.
  fig = plot.plot_attention(weights, layer=1, head=2, pairs=([4, 5], [0, 1]),
                            crop=True)
  ax = fig.axes[0]
  assert ax.images[0].get_array().shape == (5, 5)
  assert ax.images[0].get_extent() == [-0.5, 4.5, 5.5, 0.5]
  x, y = _pixel_of_maximum(fig, ax)
  assert (round(x), round(y)) == (j, i)
  _mpl.pyplot().close(fig)

  grid = plot.plot_attention_grid(weights)
  for ax, (l, h) in zip(grid.axes, peaks):  # (colorbars come after)
    shown = ax.images[0].get_array()
    assert np.unravel_index(np.argmax(shown), shown.shape) == peaks[l, h]
  _mpl.pyplot().close(grid)

  with pytest.raises(ValueError, match=r"layer: expected an int in \[0, 2\)"):
    plot.plot_attention(weights, layer=2)
  with pytest.raises(ValueError, match="weights: expected an"):
    plot.plot_attention(weights[0, 0, 0])


def test_training_curves_plot_each_logged_value_once(trained, tmp_path):
  records = [
      {"step": 10, "loss": 2.0, "accuracy": 0.1, "baseline_loss": 1.0},
      {"step": 20, "loss": 1.0, "accuracy": 0.5, "eval_loss": 1.2,
       "eval_accuracy": 0.4, "baseline_loss": 1.0},
      # A resumed run repeats step 20 (the later line wins) and logs "nan".
      {"step": 20, "loss": 0.9, "accuracy": 0.5, "baseline_loss": 1.0},
      {"step": 30, "loss": "nan", "accuracy": 0.6, "baseline_loss": 1.0},
      {"final": True, "step": 30, "eval_loss": 0.5, "eval_accuracy": 0.7,
       "baseline_loss": 1.0},
  ]
  series = plot.metric_series(records)
  assert series["loss"][0] == [10, 20, 30]
  assert series["loss"][1][:2] == [2.0, 0.9] and math.isnan(
      series["loss"][1][2])
  assert series["eval_accuracy"] == ([20], [0.4])

  workdir, _ = trained
  fig = plot.plot_training_curves({"synthetic": records, "smoke": workdir})
  ax_loss, ax_acc = fig.axes
  lines = {line.get_label(): line for line in ax_loss.lines + ax_acc.lines}
  np.testing.assert_array_equal(lines["synthetic eval accuracy"].get_ydata(),
                                [0.4])
  smoke_loss = lines["smoke train loss"]
  assert list(smoke_loss.get_xdata()) == [20, 40, 60]
  baseline = 4 * math.log(4) / 16
  np.testing.assert_allclose(
      lines[f"memoryless baseline ({baseline:.3g})"].get_ydata(), baseline)
  assert "memoryless baseline (1)" in lines  # the synthetic run's own
  assert smoke_loss.get_ydata()[-1] < baseline  # it learned something
  assert ax_loss.get_yscale() == "log"
  assert ax_loss.get_xscale() == "log"  # several runs: a log step axis
  assert _is_png(_mpl.save(fig, tmp_path / "curves.png"))
  # Runs of the same task share one baseline line.
  fig = plot.plot_training_curves({"a": workdir, "b": workdir})
  labels = [line.get_label() for line in fig.axes[0].lines]
  assert labels == ["a train loss", "a eval loss",
                    f"memoryless baseline ({baseline:.3g})",
                    "b train loss", "b eval loss"]
  # One run: train and eval in distinct colours.
  fig = plot.plot_training_curves(workdir)
  by_label = {line.get_label(): line for line in fig.axes[0].lines}
  assert (by_label["train loss"].get_color()
          != by_label["eval loss"].get_color())
  assert fig.axes[0].get_xscale() == "linear"
  _mpl.pyplot().close(fig)
  _mpl.pyplot().close(fig)
  with pytest.raises(TypeError, match="runs: expected a workdir path"):
    plot.plot_training_curves(3)


def _complexity_results():
  """The layout of experiments/complexity.py's complexity.json (JSON keys)."""
  ns = [16, 32, 128]
  return {
      "device": "cpu (test)", "grid": {"d_fixed": 8, "d_time": 8},
      "flops": {"cnn": {"by_n": [[n, 10.0 * n, 10 * n] for n in ns]},
                "self-attention": {"by_n": [[n, n * n, n * n] for n in ns]}},
      "time": {"rnn": {"samples": [{"n": n, "forward": 1e-3 * n,
                                    "forward_backward": 3e-3 * n}
                                   for n in ns]}},
      # Keys out of order, as strings: plotted in numeric order.
      "path_length": {
          "self-attention": {"128": 1, "16": 1, "32": 1},
          "rnn": {"128": 127, "16": 15, "32": 31},
          "cnn": {"3": {"16": 15, "32": 31, "128": 127}},
          "dilated cnn": {"3": {"16": 5, "32": 7, "128": 9}}},
  }


def test_complexity_plots_from_results_json(tmp_path):
  (tmp_path / "complexity.json").write_text(json.dumps(_complexity_results()))
  results = plot.load_results(tmp_path)
  fig = plot.plot_path_length_vs_n(results)
  by_label = {line.get_label(): line for line in fig.axes[0].lines}
  np.testing.assert_array_equal(
      by_label["rnn (recurrence steps)"].get_xdata(), [16, 32, 128])
  np.testing.assert_array_equal(
      by_label["rnn (recurrence steps)"].get_ydata(), [15, 31, 127])
  np.testing.assert_array_equal(by_label["dilated cnn k=3"].get_ydata(),
                                [5, 7, 9])
  _mpl.pyplot().close(fig)
  fig = plot.plot_time_vs_n(results)
  np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(),
                             [48.0, 96.0, 384.0])  # ms
  _mpl.pyplot().close(fig)

  written = plot.write_plots(tmp_path, out=tmp_path / "png")
  assert [pathlib.Path(p).name for p in written] == [
      "flops_vs_n.png", "time_vs_n.png", "path_length_vs_n.png"]
  assert all(_is_png(p) for p in written)


def test_subquadratic_plot_beside_dense_attention(tmp_path):
  results = _complexity_results()
  ns = [16, 32]
  results["grid"].update(d_fixed=8, d_time=8)
  results["time"]["self-attention"] = {"samples": [
      {"n": n, "forward": 2e-3 * n, "forward_backward": 6e-3 * n,
       "temp_bytes": 2**20 * n} for n in ns]}
  results["subquadratic"] = {
      "device": "cpu (subquadratic run)",
      "flops": {"local": {"by_n": [[n, 5.0 * n, 4.0 * n] for n in ns]}},
      "time": {"local": {"samples": [
          {"n": n, "forward": 1e-3 * n, "temp_bytes": None} for n in ns]}}}
  fig = plot.plot_subquadratic_vs_n(results)
  flops, ms, mib = fig.axes
  assert [l.get_label() for l in flops.lines] == ["local",
                                                  "self-attention (dense)"]
  np.testing.assert_allclose(flops.lines[0].get_ydata(), [80.0, 160.0])
  np.testing.assert_allclose(ms.lines[0].get_ydata(), [16.0, 32.0])  # ms
  np.testing.assert_allclose(mib.lines[1].get_ydata(), [16.0, 32.0])  # MiB
  assert "cpu (subquadratic run)" in ms.get_title()
  _mpl.pyplot().close(fig)
  written = plot.write_complexity_plots(results, tmp_path)
  assert pathlib.Path(written[-1]).name == "subquadratic_vs_n.png"


def _copy_results():
  """The layout of experiments/copy_task.py's copy.json (JSON keys)."""
  def summary(accuracy_by_x):
    return {str(x): {"accuracy_mean": a} for x, a in accuracy_by_x.items()}
  return {
      "device": "cpu (test)", "archs": ["attention", "gru"],
      # Keys out of order, as strings: plotted in numeric order.
      "summary": {"attention": summary({100: 1.0, 10: 1.0, 50: 0.9}),
                  "gru": summary({100: 0.2, 10: 0.9, 50: 0.5})},
      "gradient_delay": 10,
      "gradients": {"gru": {"init": [1.0, 0.5, 0.25],
                            "trained": [2.0, 1.0, 0.5]}},
      "symbols": {"delay": 10, "archs": ["gru"],
                  "summary": {"gru": summary({20: 0.3, 5: 1.0})}},
  }


def test_copy_plots_from_results_json(tmp_path):
  (tmp_path / "copy.json").write_text(json.dumps(_copy_results()))
  results = plot.load_copy_results(tmp_path)
  fig = plot.plot_accuracy_vs_delay(results)
  gru = [l for l in fig.axes[0].lines if l.get_label() == "gru"][0]
  np.testing.assert_array_equal(gru.get_xdata(), [10, 50, 100])
  np.testing.assert_allclose(gru.get_ydata(), [90.0, 50.0, 20.0])  # %
  _mpl.pyplot().close(fig)
  fig = plot.plot_accuracy_vs_symbols(results)
  np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [5, 20])
  _mpl.pyplot().close(fig)
  fig = plot.plot_gradient_vs_position(results)
  np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(),
                             [2.0, 1.0, 0.5])
  _mpl.pyplot().close(fig)

  written = plot.write_plots(tmp_path, out=tmp_path / "png")
  assert [pathlib.Path(p).name for p in written] == [
      "accuracy_vs_delay.png", "accuracy_vs_symbols.png",
      "gradient_vs_position.png"]
  assert all(_is_png(p) for p in written)


def _sweep_results():
  """The layout of experiments/sweep.py's sweep.json (JSON keys)."""
  def cell(mean, std):
    return {"accuracy_mean": mean, "accuracy_std": std, "solved": 1,
            "seeds": 3}
  return {
      "device": "cpu (test)", "archs": ["attention", "gru"],
      "modes": ["steps", "wall"], "steps": 100, "wall_s": 5.0,
      "seeds": [0, 1, 2],
      "summary": {
          "steps": {"attention": {"100": cell(1.0, 0.0), "10": cell(1.0, 0.0)},
                    "gru": {"10": cell(0.9, 0.05), "100": cell(0.2, 0.1)}},
          "wall": {"gru": {"10": cell(0.5, 0.2)}}},
  }


def test_sweep_plots_have_error_bars_per_architecture(tmp_path):
  (tmp_path / "sweep.json").write_text(json.dumps(_sweep_results()))
  results = plot.load_sweep_results(tmp_path)
  fig = plot.plot_sweep_accuracy(results, "steps")
  ax = fig.axes[0]
  gru = next(c for c in ax.containers if c.get_label() == "gru")
  line, _, (bars,) = gru.lines
  np.testing.assert_allclose(np.asarray(line.get_ydata(), float),
                             [90.0, 20.0])  # delays 10, 100
  segments = bars.get_segments()  # one vertical bar per delay: mean ± std
  np.testing.assert_allclose([np.asarray(seg, float)[:, 1] for seg in segments],
                             [[85.0, 95.0], [10.0, 30.0]])
  assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100"]
  assert ax.get_legend() is not None
  assert "equal steps (100 each)" in ax.get_title()
  _mpl.pyplot().close(fig)
  written = plot.write_plots(tmp_path, out=tmp_path / "png")
  assert [pathlib.Path(p).name for p in written] == [
      "accuracy_vs_delay_steps.png", "accuracy_vs_delay_wall.png"]
  assert all(_is_png(p) for p in written)


def test_write_plots_says_what_it_skips(trained, tmp_path):
  workdir, config = trained
  notes = []
  unrecorded = tmp_path / "unrecorded"   # a run without config.json
  shutil.copytree(workdir, unrecorded)
  (unrecorded / "config.json").unlink()
  written = plot.write_plots(unrecorded, out=tmp_path, say=notes.append)
  assert written == [str(tmp_path / "training_curves.png")]
  assert "no config given" in notes[0]
  cnn = get_config("cnn")
  plot.write_plots(workdir, out=tmp_path, config=cnn, say=notes.append)
  assert "model kind 'cnn' has no attention weights" in notes[1]
  with pytest.raises(FileNotFoundError, match="workdir: expected a folder"):
    plot.write_plots(tmp_path / "empty")


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  with pytest.raises(ImportError, match=r"pip install matplotlib"):
    _mpl.pyplot()


def test_plots_of_a_workdir_need_no_config(trained, tmp_path):
  # The run recorded its config (config.json): the heatmaps use it, and the
  # titles name the model and the task.
  workdir, config = trained
  written = workdir_lib.write_plots(workdir, out=tmp_path, say=lambda _: None)
  names = {pathlib.Path(p).name for p in written}
  assert "training_curves.png" in names and len(names) >= 2, names
  label = workdir_lib.run_label(workdir, workdir_lib.stored_config(workdir))
  assert label.startswith(f"{config.model.kind}, ")
  assert f"delay {config.task.delay}" in label


@pytest.mark.parametrize("arg", ["copy", "variable_copy", "selective_copy",
                                 "mqar", "induction"])
def test_copy_pairs_point_at_the_token_each_scored_position_reproduces(arg):
  task = get_config(f"attention,{arg}").task
  for seed in range(3):
    example = plot.copy_example(task, seed=seed)
    queries, keys = plot.copy_pairs(example, task)
    assert len(queries) == int(np.asarray(example["copy_mask"]).sum()) > 0
    assert np.all(keys < queries)  # the source comes before
    np.testing.assert_array_equal(np.asarray(example["targets"])[queries],
                                  np.asarray(example["inputs"])[keys])
