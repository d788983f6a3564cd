"""Measure the CNN / RNN / self-attention comparison instead of quoting it.

    python experiments/complexity.py --out experiments/complexity/results
    python experiments/complexity.py --out /tmp/complexity --quick   # smoke

For n tokens of width d and kernel size k, the seed chapter (d2l, "Self-
Attention and Positional Encoding") claims

  layer           complexity   sequential ops   maximum path length
  CNN             O(k n d^2)   O(1)             O(n / k)
  RNN             O(n d^2)     O(n)             O(n)
  self-attention  O(n^2 d)     O(1)             O(1)

This script measures each column on jattn's real layers (public API only):
FLOPs from XLA's cost analysis beside a closed form, the critical path of the
jaxpr, the maximum path length from Jacobian structure for stacks, wall-clock
time and compiled temporary memory, and fits growth exponents. It writes
OUT/complexity.md, OUT/complexity.json and OUT/*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

import jattn
from jattn import analysis

KEY = jax.random.key(0)
HEADS = 4

# (name, claimed n-exponent, claimed d-exponent, claimed critical-path
# exponent in n, claimed path-length description)
CLAIMS = {
    "cnn": {"complexity": "O(k n d^2)", "n_exp": 1.0, "d_exp": 2.0,
            "sequential": "O(1)", "seq_exp": 0.0,
            "path": "O(n / k)", "path_exp": 1.0},
    "rnn": {"complexity": "O(n d^2)", "n_exp": 1.0, "d_exp": 2.0,
            "sequential": "O(n)", "seq_exp": 1.0,
            "path": "O(n)", "path_exp": 1.0},
    "self-attention": {"complexity": "O(n^2 d)", "n_exp": 2.0, "d_exp": 1.0,
                       "sequential": "O(1)", "seq_exp": 0.0,
                       "path": "O(1)", "path_exp": 0.0},
    "dot-product attention": {"complexity": "O(n^2 d)", "n_exp": 2.0,
                              "d_exp": 1.0},
    "dilated cnn": {"complexity": "O(k n d^2)", "n_exp": 1.0, "d_exp": 2.0,
                    "sequential": "O(1)", "seq_exp": 0.0,
                    "path": "O(log_k n)", "path_exp": None},
}


def _layer(name: str, d: int, k: int = 3):
  """(layer_fn(params, x), params) for one of the compared layers."""
  if name == "cnn":
    return jattn.conv_layer, jattn.init_conv_layer(KEY, d, k)
  if name == "dilated cnn":
    return (lambda p, x: jattn.conv_layer(p, x, dilation=k),
            jattn.init_conv_layer(KEY, d, k))
  if name == "rnn":
    return jattn.rnn_layer, jattn.init_rnn_layer(KEY, d, cell="elman")
  if name == "self-attention":
    return jattn.self_attention, jattn.init_self_attention(KEY, d, HEADS)
  if name == "dot-product attention":  # the core alone, q = k = v = x
    def core(params, x_ND):
      del params
      x_NHK = x_ND.reshape(x_ND.shape[0], HEADS, -1)
      return jattn.dot_product_attention(x_NHK, x_NHK, x_NHK).reshape(
          x_ND.shape)
    return core, {}
  raise ValueError(name)


def _closed_form(name: str, n: int, d: int, k: int = 3) -> int:
  if name == "cnn":
    return analysis.conv_flops(n, d, k)
  if name == "dilated cnn":
    return analysis.conv_flops(n, d, k, dilation=k)
  if name == "rnn":
    return analysis.rnn_flops(n, d, "elman")
  if name == "dot-product attention":
    return analysis.dot_product_attention_flops(n, n, HEADS, d // HEADS)
  return analysis.attention_flops(n, d, HEADS)


def _x(n: int, d: int):
  return jax.random.normal(jax.random.key(1), (n, d), jnp.float32)


def local_exponent(xs, ys) -> float:
  """Slope between the two largest sizes: the asymptotic regime."""
  return analysis.growth_exponent(xs[-2:], ys[-2:])


def measure_flops(grid):
  rows = {}
  for name in ("cnn", "rnn", "self-attention", "dot-product attention"):
    by_n = []
    for n in grid["n"]:
      fn, p = _layer(name, grid["d_fixed"])
      by_n.append((n, analysis.xla_flops(fn, p, _x(n, grid["d_fixed"])),
                   _closed_form(name, n, grid["d_fixed"])))
    by_d = []
    for d in grid["d"]:
      fn, p = _layer(name, d)
      by_d.append((d, analysis.xla_flops(fn, p, _x(grid["n_fixed"], d)),
                   _closed_form(name, grid["n_fixed"], d)))
    agreement = [abs(m / c - 1) for _, m, c in by_n + by_d]
    ns, fl_n, _ = zip(*by_n)
    ds, fl_d, _ = zip(*by_d)
    rows[name] = {
        "by_n": by_n, "by_d": by_d,
        "max_relative_gap_closed_form": max(agreement),
        "n_exponent": analysis.growth_exponent(ns, fl_n),
        "n_exponent_local": local_exponent(ns, fl_n),
        "d_exponent": analysis.growth_exponent(ds, fl_d),
        "d_exponent_local": local_exponent(ds, fl_d),
    }
  # FLOPs as a function of k for the CNN (the claim's k factor).
  ks = grid["k"]
  fl_k = [analysis.xla_flops(*_layer("cnn", grid["d_fixed"], k),
                             _x(grid["n_fixed"], grid["d_fixed"])) for k in ks]
  rows["cnn"]["by_k"] = list(zip(ks, fl_k))
  rows["cnn"]["k_exponent"] = analysis.growth_exponent(ks, fl_k)
  return rows


def measure_sequential(grid):
  rows = {}
  for name in ("cnn", "rnn", "self-attention"):
    fn, p = _layer(name, 8)
    depths = [analysis.critical_path_length(fn, p, _x(n, 8))
              for n in grid["n_seq"]]
    rows[name] = {"by_n": list(zip(grid["n_seq"], depths)),
                  "n_exponent": analysis.growth_exponent(grid["n_seq"], depths)}
  return rows


def measure_path_length(grid):
  d = 4
  rows = {"self-attention": {}, "rnn": {}, "cnn": {}, "dilated cnn": {}}
  attention_fn, attention_p = _layer("self-attention", 8)
  rnn_fn, rnn_p = _layer("rnn", d)
  pair = analysis.dependency_pattern(lambda x: rnn_fn(rnn_p, x), _x(2, d))
  for n in grid["n_path"]:
    pattern = analysis.dependency_pattern(
        lambda x: attention_fn(attention_p, x), _x(n, 8))
    rows["self-attention"][n] = analysis.max_path_length(pattern)
    steps = analysis.recurrence_steps(analysis.recurrence_step_graph(pair, n))
    rows["rnn"][n] = int(steps.max())
    for k in grid["k"]:
      conv_p = jattn.init_conv_layer(KEY, d, k)
      plain = analysis.dependency_pattern(
          lambda x: jattn.conv_layer(conv_p, x), _x(n, d))
      rows["cnn"].setdefault(k, {})[n] = analysis.max_path_length(plain)
      depth = max(1, math.ceil(math.log(n, k)))
      dilated = [analysis.dependency_pattern(
          lambda x, r=r: jattn.conv_layer(conv_p, x, dilation=r), _x(n, d))
          for r in jattn.tcn_dilations(depth, k)]
      rows["dilated cnn"].setdefault(k, {})[n] = analysis.max_path_length(
          dilated)
  return rows


def measure_time_and_memory(grid):
  rows = {}
  d = grid["d_time"]
  for name in ("cnn", "rnn", "self-attention", "dot-product attention"):
    fn, p = _layer(name, d)
    samples = []
    for n in grid["n_time"]:
      x = _x(n, d)
      t = analysis.time_layer(fn, p, x, repeats=grid["repeats"],
                              min_seconds=grid["min_seconds"])
      compiled = jax.jit(fn).lower(p, x).compile()
      memory = compiled.memory_analysis()
      temp = getattr(memory, "temp_size_in_bytes", None) if memory else None
      samples.append({"n": n, **t, "temp_bytes": temp})
    ns = [s["n"] for s in samples]
    rows[name] = {
        "samples": samples,
        "forward_n_exponent": analysis.growth_exponent(
            ns, [s["forward"] for s in samples]),
        "forward_backward_n_exponent": analysis.growth_exponent(
            ns, [s["forward_backward"] for s in samples]),
    }
  return rows


def verdict(measured: float, claimed: float, tol: float = 0.25) -> str:
  if measured is None or math.isnan(measured):
    return "n/a"
  return "holds" if abs(measured - claimed) <= tol else "differs"


def write_plots(out: pathlib.Path, results) -> list[str]:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib is not installed: skipping plots "
          "(pip install -e '.[plot]')", file=sys.stderr)
    return []
  device = results["device"]
  written = []

  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, row in results["flops"].items():
    ns, measured, closed = zip(*row["by_n"])
    ax.loglog(ns, measured, "o-", label=f"{name} (XLA)")
    ax.loglog(ns, closed, "k:", lw=1)
  ax.set(xlabel="n (tokens)", ylabel="FLOPs per layer",
         title=f"FLOPs vs n, d={results['grid']['d_fixed']} (dotted: closed form)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "flops_vs_n.png", dpi=120)
  written.append("flops_vs_n.png")

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for key, ax in zip(("forward", "forward_backward"), axes):
    for name, row in results["time"].items():
      ns = [s["n"] for s in row["samples"]]
      ax.loglog(ns, [s[key] * 1e3 for s in row["samples"]], "o-", label=name)
    ax.set(xlabel="n (tokens)", ylabel="ms per call",
           title=f"{key.replace('_', '+')} time, d={results['grid']['d_time']}\n"
                 f"{device}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "time_vs_n.png", dpi=120)
  written.append("time_vs_n.png")

  fig, ax = plt.subplots(figsize=(5.5, 4))
  path = results["path_length"]
  ns = sorted(path["rnn"])
  for k, by_n in path["cnn"].items():
    ax.plot(ns, [by_n[n] for n in ns], "s-", label=f"cnn k={k}")
  for k, by_n in path["dilated cnn"].items():
    ax.plot(ns, [by_n[n] for n in ns], "^--", label=f"dilated cnn k={k}")
  ax.plot(ns, [path["self-attention"][n] for n in ns], "D-",
          label="self-attention")
  # Drawn last and dashed: it coincides with the k = 3 CNN (n - 1).
  ax.plot(ns, [path["rnn"][n] for n in ns], "k--", lw=2.5,
          label="rnn (recurrence steps)")
  ax.set(xscale="log", yscale="log", xlabel="n (tokens)",
         ylabel="maximum path length (layers / steps)",
         title="Maximum path length vs n")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "path_length_vs_n.png", dpi=120)
  written.append("path_length_vs_n.png")
  plt.close("all")
  return written


def _fmt(x, digits=2):
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) \
      else f"{x:.{digits}f}"


def write_markdown(out: pathlib.Path, results) -> None:
  grid, fl, seq = results["grid"], results["flops"], results["sequential"]
  path, tm = results["path_length"], results["time"]
  n_max = max(grid["n_path"])
  lines = [
      "# CNN / RNN / self-attention: claimed vs measured",
      "",
      f"Device: {results['device']}; jax {results['jax_version']}; "
      f"{'quick' if results['quick'] else 'full'} run, "
      f"{results['seconds']:.0f} s. Produced by `python experiments/"
      "complexity.py`.",
      "",
      "## The seed's table with a measured column beside each claim",
      "",
      "| layer | complexity (claimed) | FLOPs exponent in n / d (measured, "
      "largest sizes) | sequential ops (claimed) | critical-path exponent in n "
      f"(measured) | max path length (claimed) | measured at n={n_max} |",
      "|---|---|---|---|---|---|---|",
  ]
  for name in ("cnn", "rnn", "self-attention", "dilated cnn"):
    claim = CLAIMS[name]
    f = fl.get(name)
    s = seq.get(name)
    if name in ("cnn", "dilated cnn"):
      measured_path = ", ".join(f"k={k}: {by_n[n_max]}"
                                for k, by_n in path[name].items())
    else:
      measured_path = str(path[name][n_max])
    lines.append(
        f"| {name} | {claim['complexity']} | "
        + (f"{_fmt(f['n_exponent_local'])} / {_fmt(f['d_exponent_local'])}"
           if f else "as cnn (same taps)")
        + f" | {claim['sequential']} | "
        + (_fmt(s["n_exponent"]) if s else "as cnn")
        + f" | {claim['path']} | {measured_path} |")
  lines += ["", "## Verdicts", "",
            "| layer | column | claimed exponent | measured | verdict |",
            "|---|---|---|---|---|"]
  for name in ("cnn", "rnn", "self-attention"):
    claim = CLAIMS[name]
    rows = [
        ("FLOPs in n (largest two n)", claim["n_exp"],
         fl[name]["n_exponent_local"]),
        ("FLOPs in d (largest two d)", claim["d_exp"],
         fl[name]["d_exponent_local"]),
        ("critical path in n", claim["seq_exp"], seq[name]["n_exponent"]),
    ]
    for column, want, got in rows:
      lines.append(f"| {name} | {column} | {want:g} | {_fmt(got)} | "
                   f"{verdict(got, want)} |")
  core = fl["dot-product attention"]
  for column, want, got in (("FLOPs in n (largest two n)", 2.0,
                             core["n_exponent_local"]),
                            ("FLOPs in d (largest two d)", 1.0,
                             core["d_exponent_local"])):
    lines.append(f"| dot-product attention (no projections) | {column} | "
                 f"{want:g} | {_fmt(got)} | {verdict(got, want)} |")
  lines.append(f"| cnn | FLOPs in k | 1 | {_fmt(fl['cnn']['k_exponent'])} | "
               f"{verdict(fl['cnn']['k_exponent'], 1.0)} |")
  ns = sorted(path["rnn"])
  rnn_exp = analysis.growth_exponent(ns, [path["rnn"][n] for n in ns])
  att_exp = analysis.growth_exponent(ns, [path["self-attention"][n] for n in ns])
  lines.append(f"| rnn | path length in n | 1 | {_fmt(rnn_exp)} | "
               f"{verdict(rnn_exp, 1.0)} |")
  lines.append(f"| self-attention | path length in n | 0 | {_fmt(att_exp)} | "
               f"{verdict(att_exp, 0.0)} |")
  for k, by_n in path["cnn"].items():
    e = analysis.growth_exponent(ns, [by_n[n] for n in ns])
    lines.append(f"| cnn k={k} | path length in n | 1 | {_fmt(e)} | "
                 f"{verdict(e, 1.0)} |")

  lines += ["", "## FLOPs: XLA cost analysis vs closed form", "",
            f"n grid {grid['n']} at d={grid['d_fixed']}; d grid {grid['d']} at "
            f"n={grid['n_fixed']}.", "",
            "| layer | max relative gap | exponent in n (fit over grid) | "
            "exponent in d (fit over grid) |", "|---|---|---|---|"]
  for name, f in fl.items():
    lines.append(f"| {name} | {100 * f['max_relative_gap_closed_form']:.1f}% | "
                 f"{_fmt(f['n_exponent'])} | {_fmt(f['d_exponent'])} |")

  lines += ["", "## Maximum path length (layers; RNN: recurrence steps)", "",
            "| layer | " + " | ".join(f"n={n}" for n in ns) + " |",
            "|---|" + "---|" * len(ns)]
  lines.append("| self-attention | " + " | ".join(
      str(path["self-attention"][n]) for n in ns) + " |")
  lines.append("| rnn | " + " | ".join(str(path["rnn"][n]) for n in ns) + " |")
  for k, by_n in path["cnn"].items():
    lines.append(f"| cnn k={k} | " + " | ".join(str(by_n[n]) for n in ns) +
                 " |")
  for k, by_n in path["dilated cnn"].items():
    lines.append(f"| dilated cnn k={k} (dilations 1, k, k^2, ...) | " +
                 " | ".join(str(by_n[n]) for n in ns) + " |")

  lines += ["", f"## Wall-clock time and memory ({results['device']})", "",
            f"d={grid['d_time']}; median of {grid['repeats']} samples after "
            "compilation.", "",
            "| layer | n | forward ms | forward+backward ms | compiled temp "
            "memory (forward) |", "|---|---|---|---|---|"]
  for name, row in tm.items():
    for s in row["samples"]:
      mem = "n/a" if s["temp_bytes"] is None else f"{s['temp_bytes'] / 2**10:.0f} KiB"
      lines.append(f"| {name} | {s['n']} | {s['forward'] * 1e3:.3f} | "
                   f"{s['forward_backward'] * 1e3:.3f} | {mem} |")
  lines += ["", "| layer | time exponent in n (forward) | (forward+backward) |",
            "|---|---|---|"]
  for name, row in tm.items():
    lines.append(f"| {name} | {_fmt(row['forward_n_exponent'])} | "
                 f"{_fmt(row['forward_backward_n_exponent'])} |")
  (out / "complexity.md").write_text("\n".join(lines) + "\n")


def grid_for(quick: bool) -> dict:
  if quick:
    return {"n": [16, 32], "d": [16, 32], "d_fixed": 16, "n_fixed": 16,
            "k": [3], "n_seq": [8, 16], "n_path": [8, 16],
            "n_time": [16], "d_time": 16, "repeats": 1,
            "min_seconds": 0.001}
  return {"n": [128, 256, 512, 1024, 2048], "d": [32, 64, 128, 256],
          "d_fixed": 32, "n_fixed": 256, "k": [3, 5, 7],
          "n_seq": [16, 32, 64, 128, 256], "n_path": [16, 32, 64, 128],
          "n_time": [64, 128, 256, 512, 1024, 2048], "d_time": 64,
          "repeats": 5, "min_seconds": 0.05}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--quick", action="store_true",
                      help="tiny grid for a CI smoke run")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  grid = grid_for(args.quick)
  start = time.perf_counter()
  results = {"device": analysis.device_name(), "jax_version": jax.__version__,
             "quick": args.quick, "grid": grid}
  for key, measure in (("flops", measure_flops),
                       ("sequential", measure_sequential),
                       ("path_length", measure_path_length),
                       ("time", measure_time_and_memory)):
    t0 = time.perf_counter()
    results[key] = measure(grid)
    print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
  results["seconds"] = time.perf_counter() - start
  results["plots"] = write_plots(out, results)
  write_markdown(out, results)
  (out / "complexity.json").write_text(
      json.dumps(results, indent=1, default=str))
  print((out / "complexity.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
