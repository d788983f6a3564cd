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
jaxpr (and of one linear recurrence run by `lax.scan` and by
`lax.associative_scan`), the maximum path length from Jacobian structure for
stacks and on the unrolled jaxpr in primitive steps
(`analysis.jaxpr_path_length`), wall-clock time and compiled temporary
memory, and fits growth exponents; the local,
linear and Performer rows count FLOPs and the critical path on an executed
run (`analysis.executed_cost`). It writes the tables OUT/complexity.md, the
numbers OUT/complexity.json and the figures of
`jattn.plot.write_complexity_plots` (OUT/*.png; `python -m jattn.plot OUT`
redraws them from the JSON).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jattn
from jattn import analysis
from jattn import plot as jattn_plot

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
  # The seed's layer is dense attention: pinned, since the automatic choice
  # switches to the blockwise implementation above 256 x 256 (whose tile
  # loops XLA's cost analysis counts once).
  if name == "self-attention":
    return (lambda p, x: jattn.self_attention(p, x, implementation="dense"),
            jattn.init_self_attention(KEY, d, HEADS))
  if name == "dot-product attention":  # the core alone, q = k = v = x
    def core(params, x_ND):
      del params
      x_NHK = x_ND.reshape(x_ND.shape[0], HEADS, -1)
      return jattn.dot_product_attention(
          x_NHK, x_NHK, x_NHK, implementation="dense").reshape(x_ND.shape)
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


def _covering_stack(layer_fn, x_ND):
  """(layers, path length) of the shallowest stack of `layer_fn` whose every
  output depends on every input, both measured by `jaxpr_distances`:
  doubling, then bisection, on the stack's depth."""
  def distances(depth):
    def stack(x):
      for _ in range(depth):
        x = layer_fn(x)
      return x
    return analysis.jaxpr_distances(stack, x_ND)

  n = x_ND.shape[0]
  high = 1
  while not (distances(high) >= 0).all():
    if high > 2 * n:
      raise ValueError(f"layer_fn: expected a layer whose stack connects "
                       f"every pair within {2 * n} layers at n={n}")
    high *= 2
  low = high // 2  # the stack of `low` layers (0: none) leaves a pair out
  while high - low > 1:
    mid = (low + high) // 2
    if (distances(mid) >= 0).all():
      high = mid
    else:
      low = mid
  return high, int(distances(high).max())


def measure_path_length_jaxpr(grid):
  """Maximum path length on each layer's unrolled jaxpr
  (`analysis.jaxpr_path_length`): primitive steps, d = 4 (attention 8)."""
  d = 4
  attention_fn, attention_p = _layer("self-attention", 8)
  rnn_fn, rnn_p = _layer("rnn", d)
  rows = {"self-attention": {}, "rnn": {}, "cnn": {},
          "linear recurrence, lax.scan": {},
          "linear recurrence, lax.associative_scan": {}, "cumsum": {}}
  for n in grid["n_path_jaxpr"]:
    x8, x4 = _x(n, 8), _x(n, d)
    a_ND = jnp.full((n, d), 0.9, jnp.float32)
    rows["self-attention"][n] = analysis.jaxpr_path_length(
        lambda x: attention_fn(attention_p, x), x8)
    rows["rnn"][n] = analysis.jaxpr_path_length(lambda x: rnn_fn(rnn_p, x), x4)
    rows["linear recurrence, lax.scan"][n] = analysis.jaxpr_path_length(
        lambda x: analysis.linear_recurrence_scan(a_ND, x), x4)
    rows["linear recurrence, lax.associative_scan"][n] = (
        analysis.jaxpr_path_length(
            lambda x: analysis.linear_recurrence_associative(a_ND, x), x4))
    rows["cumsum"][n] = analysis.jaxpr_path_length(
        lambda x: jnp.cumsum(x, axis=0), x4)
    for k in grid["k"]:
      conv_p = jattn.init_conv_layer(KEY, d, k)
      layers, steps = _covering_stack(lambda x: jattn.conv_layer(conv_p, x),
                                      x4)
      rows["cnn"].setdefault(k, {})[n] = {"layers": layers, "steps": steps}
  return rows


def measure_linear_recurrence(grid):
  """Sequential operations (critical path) of h_t = a_t h_{t-1} + x_t by
  `lax.scan` and by `lax.associative_scan`, d = 4."""
  rows = {}
  for name, fn in (("lax.scan", analysis.linear_recurrence_scan),
                   ("lax.associative_scan",
                    analysis.linear_recurrence_associative)):
    depths = [analysis.critical_path_length(
        fn, jnp.full((n, 4), 0.9, jnp.float32), _x(n, 4))
              for n in grid["n_linear"]]
    rows[name] = {"by_n": list(zip(grid["n_linear"], depths)),
                  "n_exponent": analysis.growth_exponent(grid["n_linear"],
                                                         depths)}
  return rows


def per_doubling(by_n) -> list:
  """Increase of a count from each n to the next (n doubling)."""
  ns = sorted(by_n)
  return [by_n[b] - by_n[a] for a, b in zip(ns, ns[1:])]


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


def _fmt(x, digits=2):
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) \
      else f"{x:.{digits}f}"


def _load_text(results) -> str:
  """', load average A before and B after' (1-minute), if recorded."""
  before, after = results.get("load_average"), results.get("load_average_end")
  if not before:
    return ""
  return (f", load average {before[0]:.1f} before"
          + (f" and {after[0]:.1f} after" if after else "")
          + " (times under load are upper bounds)")


def _ms(sample, name: str) -> str:
  """'1.234 [1.200, 1.300]' ms: the median and, when recorded, the spread."""
  text = f"{sample[name] * 1e3:.3f}"
  if name + "_min" in sample:
    text += (f" [{sample[name + '_min'] * 1e3:.3f}, "
             f"{sample[name + '_max'] * 1e3:.3f}]")
  return text


def fastest_by_n(time_rows) -> dict:
  """{n: the layer (of cnn, rnn, self-attention) with the smallest median
  forward time at n}."""
  best = {}
  for name in ("cnn", "rnn", "self-attention"):
    for s in time_rows.get(name, {}).get("samples", []):
      if s["n"] not in best or s["forward"] < best[s["n"]][1]:
        best[s["n"]] = (name, s["forward"])
  return {n: name for n, (name, _) in sorted(best.items())}


def write_markdown(out: pathlib.Path, results) -> None:
  grid, fl, seq = results["grid"], results["flops"], results["sequential"]
  path, tm = results["path_length"], results["time"]
  n_max = max(grid["n_path"])
  lines = [
      "# CNN / RNN / self-attention: claimed vs measured",
      "",
      f"Device: {results['device']}; jax {results['jax_version']}; "
      f"{'quick' if results['quick'] else 'full'} run, "
      f"{results['seconds']:.0f} s{_load_text(results)}. Produced by "
      "`python experiments/complexity.py`.",
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
  jaxpr_path = results.get("path_length_jaxpr")
  if jaxpr_path:
    jn = sorted(grid["n_path_jaxpr"])
    series = [("rnn", 1.0, jaxpr_path["rnn"]),
              ("self-attention", 0.0, jaxpr_path["self-attention"])]
    series += [(f"cnn k={k}", 1.0, {n: v["steps"] for n, v in by_n.items()})
               for k, by_n in jaxpr_path["cnn"].items()]
    for name, want, by_n in series:
      e = local_exponent(jn, [by_n[n] for n in jn])
      lines.append(f"| {name} | path length on the jaxpr in n (largest two "
                   f"n) | {want:g} | {_fmt(e)} | {verdict(e, want)} |")

  lines += ["", "## FLOPs: XLA cost analysis vs closed form", "",
            f"n grid {grid['n']} at d={grid['d_fixed']}; d grid {grid['d']} at "
            f"n={grid['n_fixed']}.", "",
            "| layer | max relative gap | exponent in n (fit over grid) | "
            "exponent in d (fit over grid) |", "|---|---|---|---|"]
  for name, f in fl.items():
    lines.append(f"| {name} | {100 * f['max_relative_gap_closed_form']:.1f}% | "
                 f"{_fmt(f['n_exponent'])} | {_fmt(f['d_exponent'])} |")

  lines += ["", "## Maximum path length (layers; RNN: recurrence steps, "
            "constructed from its 2-token pattern)", "",
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

  lines += jaxpr_path_markdown(results)
  lines += linear_recurrence_markdown(results)

  lines += ["", f"## Wall-clock time and memory ({results['device']})", "",
            f"d={grid['d_time']}; median [min, max] of {grid['repeats']} "
            "samples after compilation.", "",
            "| layer | n | forward ms | forward+backward ms | compiled temp "
            "memory (forward) |", "|---|---|---|---|---|"]
  for name, row in tm.items():
    for s in row["samples"]:
      mem = "n/a" if s["temp_bytes"] is None else f"{s['temp_bytes'] / 2**10:.0f} KiB"
      lines.append(f"| {name} | {s['n']} | {_ms(s, 'forward')} | "
                   f"{_ms(s, 'forward_backward')} | {mem} |")
  lines += ["", "Fastest layer forward at each n: " + "; ".join(
      f"n={n}: {name}" for n, name in fastest_by_n(tm).items()) + "."]
  lines += ["", "| layer | time exponent in n (forward) | (forward+backward) |",
            "|---|---|---|"]
  for name, row in tm.items():
    lines.append(f"| {name} | {_fmt(row['forward_n_exponent'])} | "
                 f"{_fmt(row['forward_backward_n_exponent'])} |")
  if "subquadratic" in results:
    lines += subquadratic_markdown(results)
  (out / "complexity.md").write_text("\n".join(lines) + "\n")


def jaxpr_path_markdown(results) -> list[str]:
  """The section on path lengths measured on the jaxpr (if measured)."""
  path = results.get("path_length_jaxpr")
  if not path:
    return []
  ns = sorted(results["grid"]["n_path_jaxpr"])
  lines = [
      "", "## Maximum path length on the jaxpr (primitive steps)", "",
      "`analysis.jaxpr_path_length`: the fewest dependent primitives (layout "
      "primitives free) on a chain from input position j to output position "
      "i of the unrolled jaxpr, maximised over connected pairs. CNN: the "
      "shallowest stack of the layer (k taps, same padding) that connects "
      "every pair, its depth found by the same measurement. d = 4 "
      "(self-attention: 8, 4 heads); a_t = 0.9 in the linear recurrence.",
      "", "| computation | " + " | ".join(f"n={n}" for n in ns)
      + " | increase per doubling of n |", "|---|" + "---|" * (len(ns) + 1)]
  for name in ("rnn", "linear recurrence, lax.scan",
               "linear recurrence, lax.associative_scan", "cumsum",
               "self-attention"):
    by_n = path[name]
    lines.append(f"| {name} | " + " | ".join(str(by_n[n]) for n in ns)
                 + f" | {', '.join(str(v) for v in per_doubling(by_n))} |")
  for k, by_n in path["cnn"].items():
    steps = {n: by_n[n]["steps"] for n in ns}
    lines.append(f"| cnn k={k} (layers: steps) | " + " | ".join(
        f"{by_n[n]['layers']}: {by_n[n]['steps']}" for n in ns)
                 + f" | {', '.join(str(v) for v in per_doubling(steps))} |")
  lines += ["", "A count that doubles with n grows as O(n); one that rises "
            "by a constant per doubling as O(log n); a constant one is "
            "O(1). The RNN and the `lax.scan` of the linear recurrence "
            "grow as n, the associative scan and `cumsum` (run as an "
            "associative scan) as log n, self-attention not at all."]
  return lines


def linear_recurrence_markdown(results) -> list[str]:
  """The section on one linear recurrence, scanned two ways (if measured)."""
  rows = results.get("sequential_linear_recurrence")
  if not rows:
    return []
  ns = results["grid"]["n_linear"]
  lines = [
      "", "## Sequential operations of one linear recurrence", "",
      "h_t = a_t h_{t-1} + x_t (d = 4): `analysis.critical_path_length` of "
      "`analysis.linear_recurrence_scan` (`lax.scan`) and of "
      "`analysis.linear_recurrence_associative` (`lax.associative_scan`), "
      "which compute the same h.", "",
      "| implementation | " + " | ".join(f"n={n}" for n in ns)
      + " | exponent in n |", "|---|" + "---|" * (len(ns) + 1)]
  for name, row in rows.items():
    lines.append(f"| {name} | " + " | ".join(str(v) for _, v in row["by_n"])
                 + f" | {_fmt(row['n_exponent'])} |")
  lines += ["", "The O(n) sequential operations of the seed's RNN row are a "
            "property of the scan that runs it and of its nonlinear cell: "
            "a linear recurrence has an associative combine and runs in "
            "O(log n) dependent steps."]
  return lines


# ---------------------------------------------------------------------------
# Sub-quadratic attention: local, linear and Performer attention.
#
# jattn's local attention runs on the blockwise implementation, whose tile
# loops are a `while` (trip count known only at run time) inside a batching
# rule (`custom_vmap_call`). XLA's cost analysis counts a loop body once, and
# `analysis.xla_flops` corrects `scan`s only, so for these layers the FLOPs
# and the critical path are counted on an *executed* run: the jaxpr is
# evaluated primitive by primitive, every loop and branch as it actually runs,
# and each body executed is charged XLA's cost of that body compiled on its
# own (`analysis.executed_cost`). For loop-free programs this equals
# `analysis.xla_flops`, and the subquadratic' rows report both.

WINDOW = 32          # local window of the n and d sweeps: |j - i| < w
NUM_FEATURES = 64    # Performer random features per head
SUBQUADRATIC = ("local", "linear", "linear causal", "performer")

SUBQUADRATIC_CLAIMS = {
    # name: (layer complexity, n exponent, d exponent of the core, path)
    "local": ("O(n w d) (+ O(n d^2) projections)", 1.0, 1.0,
              "O(n / w) for a stack"),
    "linear": ("O(n d^2)", 1.0, 2.0, "O(1)"),
    "linear causal": ("O(n d^2) (+ O(n C d) chunks)", 1.0, 2.0, "O(1)"),
    "performer": ("O(n m d) (+ O(n d^2) projections)", 1.0, 1.0, "O(1)"),
}


def _projection(d: int, num_features: int = NUM_FEATURES):
  from jattn.attention import performer as performer_lib  # pylint: disable=g-import-not-at-top
  return performer_lib.random_features(jax.random.key(7), num_features,
                                       d // HEADS)


def subquadratic_layer(name: str, d: int, *, window: int = WINDOW):
  """(layer_fn(params, x), params) of a sub-quadratic self-attention layer."""
  params = jattn.init_self_attention(KEY, d, HEADS)
  if name == "local":
    return (lambda p, x: jattn.local_self_attention(p, x, window=window),
            params)
  if name in ("linear", "linear causal"):
    causal = name == "linear causal"
    return (lambda p, x: jattn.linear_self_attention(p, x, is_causal=causal),
            params)
  if name == "performer":
    w = _projection(d)
    return (lambda p, x: jattn.performer_self_attention(p, x, projection=w),
            params)
  raise ValueError(name)


def subquadratic_core(name: str, d: int, *, window: int = WINDOW):
  """(core_fn(params, x), {}): the attention alone, q = k = v = x split into
  HEADS heads (as the "dot-product attention" row)."""
  def heads(x_ND):
    return x_ND.reshape(x_ND.shape[0], HEADS, -1)

  if name == "local":
    attend = lambda q: jattn.local_attention(q, q, q, window)
  elif name in ("linear", "linear causal"):
    causal = name == "linear causal"
    attend = lambda q: jattn.linear_attention(q, q, q, is_causal=causal)
  elif name == "performer":
    w = _projection(d)
    attend = lambda q: jattn.performer_attention(q, q, q, projection=w)
  else:
    raise ValueError(name)
  return (lambda p, x: attend(heads(x)).reshape(x.shape)), {}


def subquadratic_closed_form(name: str, n: int, d: int, *, core: bool,
                        window: int = WINDOW, chunk: int = 64) -> int:
  """Leading terms in XLA's convention (2 FLOPs per multiply-add, 1 per
  elementwise op): what the maths needs, not what the tiles compute."""
  H, K = HEADS, d // HEADS
  projections = 0 if core else 8 * n * d * d
  if name == "local":
    pairs = sum(min(n, i + window) - max(0, i - window + 1) for i in range(n))
    return projections + H * pairs * (4 * K + analysis_softmax_flops())
  if name == "linear":
    # features of q and k (elu + 1: compare, select, add), phi(k)^T v and
    # phi(q) S (2 K V each per token and head), the normaliser and division.
    return projections + H * n * (2 * 3 * K + 4 * K * K + 3 * K + K)
  if name == "linear causal":
    c = min(chunk, -(-n // 8) * 8)
    return projections + H * n * (2 * 3 * K + 4 * K * K + 3 * K + K
                                  + 4 * c * K + c)
  if name == "performer":
    P = NUM_FEATURES
    # features: 2 K P projection per token and head for q and k plus the
    # norm and shift; then phi(k)^T v and phi(q) S (2 P V each).
    return projections + H * n * (2 * (2 * K * P + 3 * P + 2 * K)
                                  + 4 * P * K + 3 * P + K)
  raise ValueError(name)


def analysis_softmax_flops() -> int:
  from jattn.analysis import closed_form  # pylint: disable=g-import-not-at-top
  return closed_form.SOFTMAX_FLOPS_PER_LOGIT


def pattern_rev(layer_fn, x_ND) -> np.ndarray:
  """`analysis.dependency_pattern` by reverse mode (the blockwise local
  attention has no forward-mode derivative)."""
  jac = jax.jacrev(layer_fn)(x_ND)  # (N, D', N, D)
  return np.asarray(jnp.sum(jnp.abs(jac), axis=(1, 3)) > 0)


def _flops_row(make, name, grid, sizes_n, sizes_d, use_executed):
  """FLOPs over the n grid (d fixed) and the d grid (n fixed)."""
  @functools.lru_cache(maxsize=None)
  def count(n, d):
    fn, p = make(name, d)
    x = _x(n, d)
    if use_executed:
      measured = analysis.executed_cost(fn, p, x)
      return measured["flops"], measured["xla_flops"]
    flops = analysis.xla_flops(fn, p, x)
    return flops, flops

  row = {"by_n": [], "by_d": []}
  for n in sizes_n:
    flops, raw = count(n, grid["d_fixed"])
    row["by_n"].append((n, flops, raw))
  for d in sizes_d:
    flops, raw = count(grid["n_fixed"], d)
    row["by_d"].append((d, flops, raw))
  ns, fl_n, _ = zip(*row["by_n"])
  ds, fl_d, _ = zip(*row["by_d"])
  row.update(n_exponent=analysis.growth_exponent(ns, fl_n),
             n_exponent_local=local_exponent(ns, fl_n),
             d_exponent=analysis.growth_exponent(ds, fl_d),
             d_exponent_local=local_exponent(ds, fl_d))
  return row


def measure_subquadratic(grid, log=print):
  """Every column of the table for the sub-quadratic family (see SUBQUADRATIC_CLAIMS)."""
  out = {"window": WINDOW, "num_features": NUM_FEATURES, "flops": {},
         "flops_core": {}, "sequential": {}, "path_length": {}, "time": {}}
  for name in SUBQUADRATIC:
    t0 = time.perf_counter()
    executed = name == "local"
    sizes_n = grid.get("n_subquadratic", grid["n"])
    sizes_d = grid.get("d_subquadratic", grid["d"])
    layer = _flops_row(subquadratic_layer, name, grid, sizes_n, sizes_d, executed)
    core = _flops_row(subquadratic_core, name, grid, sizes_n, sizes_d, executed)
    for row, is_core in ((layer, False), (core, True)):
      closed = [subquadratic_closed_form(name, n, grid["d_fixed"], core=is_core)
                for n, _, _ in row["by_n"]]
      closed += [subquadratic_closed_form(name, grid["n_fixed"], d, core=is_core)
                 for d, _, _ in row["by_d"]]
      measured = [f for _, f, _ in row["by_n"] + row["by_d"]]
      row["closed_form"] = closed
      row["measured_over_closed_form"] = [m / c for m, c in
                                          zip(measured, closed)]
    out["flops"][name], out["flops_core"][name] = layer, core
    log(f"  subquadratic flops {name}: {time.perf_counter() - t0:.1f} s")
  # Local FLOPs against the window at fixed n (claimed exponent 1).
  t0 = time.perf_counter()
  n_w, d_w = grid["n_window"], grid["d_fixed"]
  by_w = []
  for w in grid["windows"]:
    fn, p = subquadratic_core("local", d_w, window=w)
    measured = analysis.executed_cost(fn, p, _x(n_w, d_w))
    by_w.append((w, measured["flops"], measured["xla_flops"]))
  ws, fl_w, raw_w = zip(*by_w)
  out["local_by_window"] = {
      "n": n_w, "d": d_w, "by_w": by_w,
      "w_exponent": analysis.growth_exponent(ws, fl_w),
      "w_exponent_xla_flops": analysis.growth_exponent(ws, raw_w)}
  log(f"  subquadratic local window sweep: {time.perf_counter() - t0:.1f} s")

  # Critical path (executed) at d = 8 over n.
  t0 = time.perf_counter()
  for name in SUBQUADRATIC:
    depths = []
    for n in grid["n_seq"]:
      fn, p = subquadratic_layer(name, 8, window=grid["window_small"])
      depths.append(analysis.executed_cost(fn, p, _x(n, 8),
                                           flops=False)["critical_path"])
    out["sequential"][name] = {
        "by_n": list(zip(grid["n_seq"], depths)),
        "n_exponent": analysis.growth_exponent(grid["n_seq"], depths)}
  log(f"  subquadratic critical path: {time.perf_counter() - t0:.1f} s")

  # Maximum path length: one layer, and a stack of the same layer.
  t0 = time.perf_counter()
  for name in SUBQUADRATIC:
    rows = {}
    windows = grid["path_windows"] if name == "local" else [None]
    for w in windows:
      by_n = {}
      for n in grid["n_path"]:
        fn, p = subquadratic_layer(name, 8, window=w or WINDOW)
        # Reverse mode for the blockwise local attention (no jvp rule).
        pattern = (pattern_rev if name == "local" else
                   analysis.dependency_pattern)(lambda x: fn(p, x), _x(n, 8))
        offsets = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        by_n[n] = {"stack": analysis.max_path_length(pattern),
                   "one_layer_reach": int(offsets[pattern].max()),
                   "one_layer_connected": float(pattern.mean())}
      rows["all" if w is None else f"w={w}"] = by_n
    out["path_length"][name] = rows
  log(f"  subquadratic path length: {time.perf_counter() - t0:.1f} s")

  # Wall-clock time and compiled memory at d_time.
  t0 = time.perf_counter()
  d = grid["d_time"]
  for name in SUBQUADRATIC:
    fn, p = subquadratic_layer(name, d)
    samples = []
    for n in grid["n_time_subquadratic"]:
      x = _x(n, d)
      t = analysis.time_layer(fn, p, x, repeats=grid["repeats"],
                              min_seconds=grid["min_seconds"])
      memory = jax.jit(fn).lower(p, x).compile().memory_analysis()
      temp = getattr(memory, "temp_size_in_bytes", None) if memory else None
      samples.append({"n": n, **t, "temp_bytes": temp})
    ns = [s["n"] for s in samples]
    out["time"][name] = {
        "samples": samples,
        "forward_n_exponent": analysis.growth_exponent(
            ns, [s["forward"] for s in samples]),
        "forward_backward_n_exponent": analysis.growth_exponent(
            ns, [s["forward_backward"] for s in samples]),
        "memory_n_exponent": analysis.growth_exponent(
            ns, [s["temp_bytes"] or 0 for s in samples])}
  log(f"  subquadratic time: {time.perf_counter() - t0:.1f} s")
  return out


def subquadratic_markdown(results) -> list[str]:
  """The section of complexity.md on the sub-quadratic family."""
  var, grid = results["subquadratic"], results["grid"]
  fl, core = var["flops"], var["flops_core"]
  seq, path, tm = var["sequential"], var["path_length"], var["time"]
  n_max = max(grid["n_path"])
  lines = [
      "", "## Sub-quadratic attention: local, linear and Performer attention",
      "",
      f"Local attention: window w = {var['window']} (|j - i| < w) in the n "
      f"and d sweeps; Performer: m = {var['num_features']} random features "
      "per head; causal linear attention: chunked prefix sums (chunks of "
      "64). Every layer has the projections of `self_attention` (4 heads); "
      "the core rows are the attention alone (q = k = v = x). FLOPs of "
      "local attention are counted on an executed run "
      "(`analysis.executed_cost`: "
      "its blockwise tiles run in `while` loops, which XLA's cost analysis, "
      "and so `analysis.xla_flops`, counts once); for the loop-free "
      "subquadratic the executed count equals `analysis.xla_flops`.",
      "",
      "| layer | complexity (claimed) | FLOPs exponent in n, layer / core "
      "(largest sizes) | FLOPs exponent in d, core (layer) | critical path "
      "(executed) exponent in n | max path length (claimed) | measured at "
      f"n={n_max} |",
      "|---|---|---|---|---|---|---|",
  ]
  for name in SUBQUADRATIC:
    claim = SUBQUADRATIC_CLAIMS[name]
    if name == "local":
      measured = ", ".join(
          f"{key} stack: {by_n[n_max]['stack']} (one layer reaches "
          f"|i - j| <= {by_n[n_max]['one_layer_reach']})"
          for key, by_n in path[name].items())
    else:
      measured = str(path[name]["all"][n_max]["stack"])
    lines.append(
        f"| {name} | {claim[0]} | {_fmt(fl[name]['n_exponent_local'])} / "
        f"{_fmt(core[name]['n_exponent_local'])} | "
        f"{_fmt(core[name]['d_exponent_local'])} "
        f"({_fmt(fl[name]['d_exponent_local'])}) | "
        f"{_fmt(seq[name]['n_exponent'])} | {claim[3]} | {measured} |")
  bw = var["local_by_window"]
  lines += ["", "### Verdicts", "",
            "| layer | column | claimed exponent | measured | verdict |",
            "|---|---|---|---|---|"]
  for name in SUBQUADRATIC:
    claim = SUBQUADRATIC_CLAIMS[name]
    for column, want, got in (
        ("FLOPs in n, layer (largest two n)", claim[1],
         fl[name]["n_exponent_local"]),
        ("FLOPs in n, core (largest two n)", claim[1],
         core[name]["n_exponent_local"]),
        ("FLOPs in d, core (largest two d)", claim[2],
         core[name]["d_exponent_local"])):
      lines.append(f"| {name} | {column} | {want:g} | {_fmt(got)} | "
                   f"{verdict(got, want)} |")
  lines.append(f"| local | FLOPs in w, core (n={bw['n']}, fit over w) | 1 | "
               f"{_fmt(bw['w_exponent'])} | {verdict(bw['w_exponent'], 1.0)} |")
  ns = sorted(grid["n_path"])
  for key, by_n in path["local"].items():
    e = analysis.growth_exponent(ns, [by_n[n]["stack"] for n in ns])
    lines.append(f"| local {key} (stack of the layer) | path length in n | 1 "
                 f"| {_fmt(e)} | {verdict(e, 1.0)} |")
  for name in SUBQUADRATIC[1:]:
    e = analysis.growth_exponent(ns, [path[name]["all"][n]["stack"]
                                      for n in ns])
    lines.append(f"| {name} | path length in n | 0 | {_fmt(e)} | "
                 f"{verdict(e, 0.0)} |")

  lines += ["", "### FLOPs: measured, XLA's loop-once count, closed form", "",
            f"n grid {grid.get('n_subquadratic', grid['n'])} at "
            f"d={grid['d_fixed']}; d grid {grid.get('d_subquadratic', grid['d'])} "
            f"at n={grid['n_fixed']}. Closed forms count what the maths "
            "needs (local: the in-window pairs only); measured / closed "
            "form > 1 is work the implementation adds (local: whole "
            "tiles).", "",
            "| layer | size | FLOPs (executed) | analysis.xla_flops | closed "
            "form | measured / closed |", "|---|---|---|---|---|---|"]
  for label, rows in (("layer", fl), ("core", core)):
    for name in SUBQUADRATIC:
      row = rows[name]
      sizes = ([f"n={n}" for n, _, _ in row["by_n"]]
               + [f"d={d}" for d, _, _ in row["by_d"]])
      for size, (_, f, raw), c, r in zip(
          sizes, row["by_n"] + row["by_d"], row["closed_form"],
          row["measured_over_closed_form"]):
        lines.append(f"| {name} ({label}) | {size} | {f:.3g} | {raw:.3g} | "
                     f"{c:.3g} | {r:.2f} |")
  lines += ["", f"### Local attention against the window (core, n={bw['n']}, "
            f"d={bw['d']})", "",
            "| w | FLOPs (executed) | analysis.xla_flops |", "|---|---|---|"]
  for w, f, raw in bw["by_w"]:
    lines.append(f"| {w} | {f:.3g} | {raw:.3g} |")
  lines.append(f"\nExponent in w: {_fmt(bw['w_exponent'])} executed, "
               f"{_fmt(bw['w_exponent_xla_flops'])} by analysis.xla_flops.")

  lines += ["", "### Critical path (executed, d = 8)", "",
            "| layer | " + " | ".join(f"n={n}" for n in grid["n_seq"]) +
            " | exponent |", "|---|" + "---|" * (len(grid["n_seq"]) + 1)]
  for name in SUBQUADRATIC:
    s = seq[name]
    label = (f"local (w={grid['window_small']})" if name == "local"
             else name)
    lines.append(f"| {label} | " + " | ".join(str(d) for _, d in s["by_n"])
                 + f" | {_fmt(s['n_exponent'])} |")

  lines += ["", "### Maximum path length (layers of a stack of the layer)",
            "", "| layer | " + " | ".join(f"n={n}" for n in ns) + " |",
            "|---|" + "---|" * len(ns)]
  for name in SUBQUADRATIC:
    for key, by_n in path[name].items():
      label = name if key == "all" else f"{name} {key}"
      lines.append(f"| {label} | " + " | ".join(
          f"{by_n[n]['stack']} ({100 * by_n[n]['one_layer_connected']:.0f}% "
          "of pairs in one layer)" for n in ns) + " |")

  dense = {s["n"]: s for s in results.get("time", {}).get(
      "self-attention", {}).get("samples", [])}
  lines += ["", f"### Wall-clock time and memory ({results['device']})", "",
            f"d={grid['d_time']}; median of {grid['repeats']} samples after "
            "compilation; dense self-attention of the table above beside "
            "them where measured. Times taken on a shared machine: upper "
            "bounds.", "",
            "| layer | n | forward ms | forward+backward ms | compiled temp "
            "memory (forward) | dense self-attention forward ms / temp |",
            "|---|---|---|---|---|---|"]
  for name in SUBQUADRATIC:
    for s in tm[name]["samples"]:
      mem = ("n/a" if s["temp_bytes"] is None
             else f"{s['temp_bytes'] / 2**10:.0f} KiB")
      ref = dense.get(s["n"])
      ref_text = "-" if ref is None else (
          f"{ref['forward'] * 1e3:.3f} / "
          f"{(ref['temp_bytes'] or 0) / 2**10:.0f} KiB")
      lines.append(f"| {name} | {s['n']} | {s['forward'] * 1e3:.3f} | "
                   f"{s['forward_backward'] * 1e3:.3f} | {mem} | {ref_text} |")
  lines += ["", "| layer | time exponent in n (forward) | (forward+backward) "
            "| memory exponent in n |", "|---|---|---|---|"]
  for name in SUBQUADRATIC:
    row = tm[name]
    lines.append(f"| {name} | {_fmt(row['forward_n_exponent'])} | "
                 f"{_fmt(row['forward_backward_n_exponent'])} | "
                 f"{_fmt(row['memory_n_exponent'])} |")
  return lines


def write_plots(out: pathlib.Path, results) -> list[str]:
  """OUT/*.png drawn by `jattn.plot.write_complexity_plots`; their names."""
  try:
    written = jattn_plot.write_complexity_plots(results, out)
  except ImportError as e:  # matplotlib is an optional extra
    print(f"skipping the plots: {e}", file=sys.stderr)
    return []
  return [pathlib.Path(path).name for path in written]


def _int_keys(tree):
  """JSON turned int dict keys into strings; turn digit keys back."""
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
            for k, v in tree.items()}
  return tree


def grid_for(quick: bool) -> dict:
  if quick:
    return {"n": [16, 32], "d": [16, 32], "d_fixed": 16, "n_fixed": 16,
            "k": [3], "n_seq": [8, 16], "n_path": [8, 16],
            "n_path_jaxpr": [8, 16], "n_linear": [16, 64, 256],
            "n_time": [16], "d_time": 16, "repeats": 1,
            "min_seconds": 0.001, "n_subquadratic": [16, 32], "d_subquadratic": [16],
            "n_window": 32, "windows": [4], "window_small": 4,
            "path_windows": [4], "n_time_subquadratic": [16]}
  return {"n": [128, 256, 512, 1024, 2048], "d": [32, 64, 128, 256],
          "d_fixed": 32, "n_fixed": 256, "k": [3, 5, 7],
          "n_seq": [16, 32, 64, 128, 256], "n_path": [16, 32, 64, 128],
          "n_path_jaxpr": [8, 16, 32, 64], "n_linear": [16, 64, 256],
          "n_time": [64, 128, 256, 512, 1024, 2048], "d_time": 64,
          "repeats": 5, "min_seconds": 0.05,
          # sub-quadratic family
          "n_window": 2048, "windows": [8, 16, 32, 64, 128, 256],
          "window_small": 4, "path_windows": [4, 8],
          "n_time_subquadratic": [64, 256, 1024, 2048, 4096, 8192]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--quick", action="store_true",
                      help="tiny grid for a CI smoke run")
  parser.add_argument("--only-subquadratic", action="store_true",
                      help="measure only the local / linear / Performer rows "
                      "and merge them into OUT/complexity.json")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  grid = grid_for(args.quick)
  if args.only_subquadratic:
    return main_subquadratic(out, grid)
  start = time.perf_counter()
  machine = analysis.describe_device()
  results = {"device": machine["device"], "jax_version": jax.__version__,
             "load_average": machine["load_average"], "quick": args.quick,
             "grid": grid}
  for key, measure in (("flops", measure_flops),
                       ("sequential", measure_sequential),
                       ("sequential_linear_recurrence",
                        measure_linear_recurrence),
                       ("path_length", measure_path_length),
                       ("path_length_jaxpr", measure_path_length_jaxpr),
                       ("time", measure_time_and_memory),
                       ("subquadratic", measure_subquadratic)):
    t0 = time.perf_counter()
    results[key] = measure(grid)
    print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
  results["seconds"] = time.perf_counter() - start
  results["load_average_end"] = analysis.describe_device()["load_average"]
  results["plots"] = write_plots(out, results)
  write_markdown(out, results)
  (out / "complexity.json").write_text(
      json.dumps(results, indent=1, default=str))
  print((out / "complexity.md").read_text())
  return 0


def main_subquadratic(out: pathlib.Path, grid: dict) -> int:
  """--only-subquadratic: the subquadratic' rows merged into an earlier run."""
  previous = out / "complexity.json"
  if not previous.exists():
    print(f"--only-subquadratic: expected {previous} from an earlier run",
          file=sys.stderr)
    return 1
  results = _int_keys(json.loads(previous.read_text()))
  results["grid"].update({k: grid[k] for k in (
      "n_window", "windows", "window_small", "path_windows",
      "n_time_subquadratic") if k in grid})
  for key in ("n_subquadratic", "d_subquadratic"):
    if key in grid:
      results["grid"][key] = grid[key]
  start = time.perf_counter()
  machine = analysis.describe_device()
  results["subquadratic"] = measure_subquadratic(grid)
  results["subquadratic"].update(
      seconds=time.perf_counter() - start, device=machine["device"],
      jax_version=jax.__version__, load_average=machine["load_average"],
      load_average_end=analysis.describe_device()["load_average"])
  results["plots"] = write_plots(out, results)
  write_markdown(out, results)
  previous.write_text(json.dumps(results, indent=1, default=str))
  print((out / "complexity.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
