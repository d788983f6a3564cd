"""The figures of experiments/complexity.py, drawn from its results.

`experiments/complexity.py` writes OUT/complexity.json with (among others):

  device, grid {"d_fixed", "d_time", ...}
  flops        {layer: {"by_n": [[n, XLA FLOPs, closed-form FLOPs], ...]}}
  time         {layer: {"samples": [{"n", "forward", "forward_backward"}]}}
               (seconds per call)
  path_length  {"self-attention": {n: length}, "rnn": {n: steps},
                "cnn": {k: {n: length}}, "dilated cnn": {k: {n: length}}}
  subquadratic     (optional) {"flops": {layer: {"by_n": [[n, FLOPs, ...]]}},
                "time": {layer: {"samples": [{"n", "forward",
                "temp_bytes"}]}}, "device"} for the local, linear and
                Performer layers

JSON turns the integer keys of path_length into strings; these functions
accept both. `write_complexity_plots` writes flops_vs_n.png, time_vs_n.png,
path_length_vs_n.png and, when the results have subquadratic, subquadratic_vs_n.png.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from jattn import workdir as workdir_lib
from jattn.plot import _mpl

COMPLEXITY_FILE = "complexity.json"


def load_results(path) -> dict:
  """The results dict of a complexity.json (or of the folder holding it)."""
  path = workdir_lib.as_path(path)
  if path.is_dir():
    path = path / COMPLEXITY_FILE
  return json.loads(path.read_text())


def _by_int(mapping: Mapping) -> dict:
  """{int(key): value}, sorted by key."""
  return dict(sorted((int(k), v) for k, v in mapping.items()))


def plot_flops_vs_n(results: Mapping):
  """XLA FLOPs per layer against n (log-log), closed forms dotted."""
  plt = _mpl.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, row in results["flops"].items():
    ns, measured, closed = zip(*row["by_n"])
    ax.loglog(ns, measured, "o-", label=f"{name} (XLA)")
    ax.loglog(ns, closed, "k:", lw=1)
  ax.set(xlabel="n (tokens)", ylabel="FLOPs per layer",
         title=f"FLOPs vs n, d={results['grid']['d_fixed']} "
               "(dotted: closed form)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_time_vs_n(results: Mapping):
  """Forward and forward+backward milliseconds per call against n: the
  median, with the samples' [min, max] as error bars when recorded."""
  plt = _mpl.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for key, ax in zip(("forward", "forward_backward"), axes):
    for name, row in results["time"].items():
      samples = row["samples"]
      ms = np.array([s[key] * 1e3 for s in samples])
      spread = None
      if all(key + "_min" in s for s in samples):
        spread = np.array([[m - s[key + "_min"] * 1e3 for s, m in
                            zip(samples, ms)],
                           [s[key + "_max"] * 1e3 - m for s, m in
                            zip(samples, ms)]])
      ax.errorbar([s["n"] for s in samples], ms, yerr=spread, fmt="o-",
                  ms=4, capsize=2, label=name)
    ax.set(xscale="log", yscale="log", xlabel="n (tokens)",
           ylabel="ms per call (median; bars: min to max)",
           title=f"{key.replace('_', '+')} time, d={results['grid']['d_time']}"
                 f"\n{results.get('device', '')}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_path_length_vs_n(results: Mapping):
  """Maximum path length (layers, or recurrence steps) against n."""
  plt = _mpl.pyplot()
  path = results["path_length"]
  rnn = _by_int(path["rnn"])
  attention = _by_int(path["self-attention"])
  ns = list(rnn)
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for k, by_n in _by_int(path["cnn"]).items():
    by_n = _by_int(by_n)
    ax.plot(ns, [by_n[n] for n in ns], "s-", label=f"cnn k={k}")
  for k, by_n in _by_int(path["dilated cnn"]).items():
    by_n = _by_int(by_n)
    ax.plot(ns, [by_n[n] for n in ns], "^--", label=f"dilated cnn k={k}")
  ax.plot(ns, [attention[n] for n in ns], "D-", label="self-attention")
  # Last and dashed: it coincides with the k = 3 CNN (n - 1).
  ax.plot(ns, [rnn[n] for n in ns], "k--", lw=2.5,
          label="rnn (recurrence steps)")
  ax.set(xscale="log", yscale="log", xlabel="n (tokens)",
         ylabel="maximum path length (layers / steps)",
         title="Maximum path length vs n")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def plot_subquadratic_vs_n(results: Mapping):
  """The sub-quadratic family against n, dense self-attention dashed:
  FLOPs per layer, forward milliseconds and compiled temporary MiB."""
  plt = _mpl.pyplot()
  subquadratic, grid = results["subquadratic"], results["grid"]
  dense_flops = results.get("flops", {}).get("self-attention")
  dense_time = results.get("time", {}).get("self-attention", {})
  device = subquadratic.get("device", results.get("device", ""))
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  ax = axes[0]
  for name, row in subquadratic["flops"].items():
    ns, flops = zip(*[(r[0], r[1]) for r in row["by_n"]])
    ax.loglog(ns, flops, "o-", label=name)
  if dense_flops:
    ns, flops = zip(*[(r[0], r[1]) for r in dense_flops["by_n"]])
    ax.loglog(ns, flops, "k--", label="self-attention (dense)")
  ax.set(xlabel="n (tokens)", ylabel="FLOPs per layer",
         title=f"FLOPs vs n, d={grid['d_fixed']}")
  ax.legend(fontsize=8)
  for ax, key, label, scale in (
      (axes[1], "forward", "forward ms", 1e3),
      (axes[2], "temp_bytes", "compiled temp MiB", 2.0 ** -20)):
    rows = dict(subquadratic["time"])
    if dense_time.get("samples"):
      rows["self-attention (dense)"] = dense_time
    for name, row in rows.items():
      samples = row["samples"]
      ax.loglog([s["n"] for s in samples],
                [(s[key] or 0) * scale for s in samples],
                "k--" if name == "self-attention (dense)" else "o-",
                label=name)
    ax.set(xlabel="n (tokens)", ylabel=label,
           title=f"{label}, d={grid['d_time']}\n{device}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def write_complexity_plots(results, out) -> list[str]:
  """Writes OUT/flops_vs_n.png, time_vs_n.png, path_length_vs_n.png and,
  for results with subquadratic, subquadratic_vs_n.png.

  Args:
    results: the results dict, or a path to complexity.json or its folder.
    out: the output folder (created if missing).

  Returns:
    The paths written.
  """
  if not isinstance(results, Mapping):
    results = load_results(results)
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  figures = [("flops_vs_n.png", plot_flops_vs_n),
             ("time_vs_n.png", plot_time_vs_n),
             ("path_length_vs_n.png", plot_path_length_vs_n)]
  if "subquadratic" in results:
    figures.append(("subquadratic_vs_n.png", plot_subquadratic_vs_n))
  return [_mpl.save(draw(results), out / name) for name, draw in figures]
