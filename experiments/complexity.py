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
  if "variants" in results:
    lines += variants_markdown(results)
  (out / "complexity.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# Sub-quadratic variants: local, linear and Performer attention.
#
# jattn's local attention runs on the blockwise implementation, whose tile
# loops are a `while` (trip count known only at run time) inside a batching
# rule (`custom_vmap_call`). XLA's cost analysis counts a loop body once, and
# `analysis.xla_flops` corrects `scan`s only, so for these layers the FLOPs
# and the critical path are counted on an *executed* run: the jaxpr is
# evaluated primitive by primitive, every loop and branch as it actually runs,
# and each body executed is charged XLA's cost of that body compiled on its
# own (`executed_cost`). For loop-free programs this equals
# `analysis.xla_flops`, and the variants' rows report both.

WINDOW = 32          # local window of the n and d sweeps: |j - i| < w
NUM_FEATURES = 64    # Performer random features per head
VARIANTS = ("local", "linear", "linear causal", "performer")

VARIANT_CLAIMS = {
    # name: (layer complexity, n exponent, d exponent of the core, path)
    "local": ("O(n w d) (+ O(n d^2) projections)", 1.0, 1.0,
              "O(n / w) for a stack"),
    "linear": ("O(n d^2)", 1.0, 2.0, "O(1)"),
    "linear causal": ("O(n d^2) (+ O(n C d) chunks)", 1.0, 2.0, "O(1)"),
    "performer": ("O(n m d) (+ O(n d^2) projections)", 1.0, 1.0, "O(1)"),
}


def _projection(d: int, num_features: int = NUM_FEATURES):
  from jattn import performer as performer_lib  # pylint: disable=g-import-not-at-top
  return performer_lib.random_features(jax.random.key(7), num_features,
                                       d // HEADS)


def variant_layer(name: str, d: int, *, window: int = WINDOW):
  """(layer_fn(params, x), params) of a variant's self-attention layer."""
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


def variant_core(name: str, d: int, *, window: int = WINDOW):
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


def variant_closed_form(name: str, n: int, d: int, *, core: bool,
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


# -- executed cost -----------------------------------------------------------

LAYOUT = frozenset({
    "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose",
    "convert_element_type", "copy", "copy_p", "stop_gradient", "device_put",
    "optimization_barrier",
})


def _open(jaxpr):
  return jaxpr.jaxpr if hasattr(jaxpr, "consts") else jaxpr


def _consts(jaxpr):
  return list(jaxpr.consts) if hasattr(jaxpr, "consts") else []


def _sub_jaxpr(eqn):
  """The jaxpr a call-like equation (jit, custom_vjp/jvp, custom_vmap, remat)
  runs on its inputs one-to-one, or None."""
  if eqn.primitive.name in ("scan", "while", "cond"):
    return None
  for value in eqn.params.values():
    inner = _open(value)
    if hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars):
      return value
  return None


def _is_index(aval) -> bool:
  """Integer and boolean values: the only ones computed (they decide loop
  trip counts and branches); floating values are never evaluated."""
  dtype = getattr(aval, "dtype", None)
  return dtype is not None and (jnp.issubdtype(dtype, jnp.integer)
                                or dtype == jnp.bool_)


class ExecutedCost:
  """FLOPs and critical path of one call, loops and branches as executed.

  Only integer and boolean values are computed (index arithmetic decides
  every trip count and branch in jattn's layers); floating values stay
  unknown (None), so no floating-point work is run. A loop or branch whose
  control depends on a floating value raises.
  """

  def __init__(self, field: str = "flops", count_flops: bool = True):
    self.field = field
    self.count_flops = count_flops
    self._cost_cache = {}

  def body_cost(self, closed_jaxpr) -> float:
    if not self.count_flops:
      return 0.0
    key = id(closed_jaxpr)
    if key not in self._cost_cache:
      try:
        from jax.extend.core import jaxpr_as_fun  # pylint: disable=g-import-not-at-top
      except ImportError:  # pragma: no cover
        from jax.core import jaxpr_as_fun  # pylint: disable=g-import-not-at-top
      structs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
                 for v in _open(closed_jaxpr).invars]
      fn = jaxpr_as_fun(closed_jaxpr)
      self._cost_cache[key] = (
          analysis.compiled_cost(lambda *a: fn(*a), *structs)[self.field],
          closed_jaxpr)   # keep the jaxpr alive: ids must stay unique
    return self._cost_cache[key][0]

  def run(self, jaxpr, args, depths):
    """Evaluates `jaxpr` on concrete args; returns (outs, depths, extra)
    where extra = executed FLOPs minus XLA's count of `jaxpr` compiled."""
    inner = _open(jaxpr)
    env = {}
    for var, value in zip(inner.constvars, _consts(jaxpr)):
      env[var] = (value, 0)
    for var, value, depth in zip(inner.invars, args, depths):
      env[var] = (value, depth)

    def read(atom):
      if type(atom).__name__ == "Literal":
        return atom.val, 0
      return env[atom]

    extra = 0.0
    for eqn in inner.eqns:
      ins = [read(a) for a in eqn.invars]
      vals = [v for v, _ in ins]
      ds = [d for _, d in ins]
      name = eqn.primitive.name
      if name == "scan":
        outs, out_ds, more = self._scan(eqn, vals, ds)
      elif name == "while":
        outs, out_ds, more = self._while(eqn, vals, ds)
      elif name == "cond":
        outs, out_ds, more = self._cond(eqn, vals, ds)
      elif _sub_jaxpr(eqn) is not None:
        outs, out_ds, more = self.run(_sub_jaxpr(eqn), vals, ds)
      else:
        if (all(v is not None for v in vals)
            and all(_is_index(v.aval) for v in eqn.outvars)):
          result = eqn.primitive.bind(*vals, **eqn.params)
          outs = result if eqn.primitive.multiple_results else [result]
        else:
          outs = [None] * len(eqn.outvars)
        step = 0 if name in LAYOUT else 1
        out_ds = [max(ds, default=0) + step] * len(outs)
        more = 0.0
      extra += more
      for var, value, depth in zip(eqn.outvars, outs, out_ds):
        env[var] = (value, depth)
    outs = [read(v) for v in inner.outvars]
    return [v for v, _ in outs], [d for _, d in outs], extra

  def _scan(self, eqn, vals, ds):
    p = eqn.params
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = vals[:nc], vals[nc:nc + nk], vals[nc + nk:]
    c_ds, k_ds, x_ds = ds[:nc], ds[nc:nc + nk], ds[nc + nk:]
    ys, y_ds, extra = [], None, (length - 1) * self.body_cost(p["jaxpr"])
    for t in range(length):
      i = length - 1 - t if p["reverse"] else t
      outs, out_ds, more = self.run(
          p["jaxpr"], consts + carry + [None if x is None else x[i]
                                        for x in xs], c_ds + k_ds + x_ds)
      extra += more
      carry, k_ds = outs[:nk], out_ds[:nk]
      ys.append(outs[nk:])
      y_ds = out_ds[nk:] if y_ds is None else [max(a, b) for a, b in
                                                zip(y_ds, out_ds[nk:])]
    if p["reverse"]:
      ys = ys[::-1]
    stacked = [None if any(v is None for v in col) else jnp.stack(col)
               for col in zip(*ys)] if ys else [None] * (len(eqn.outvars)
                                                          - nk)
    return carry + stacked, k_ds + (y_ds or []), extra

  def _while(self, eqn, vals, ds):
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = vals[:nc], vals[nc:nc + nb], vals[nc + nb:]
    cds, bds, k_ds = ds[:nc], ds[nc:nc + nb], ds[nc + nb:]
    trips, extra = 0, 0.0
    while True:
      (pred,), (pred_d,), more = self.run(p["cond_jaxpr"], cconsts + carry,
                                          cds + k_ds)
      extra += more
      if pred is None:
        raise ValueError("executed_cost: a while loop's condition depends "
                         "on floating-point values")
      if not bool(pred):
        break
      carry, out_ds, more = self.run(p["body_jaxpr"], bconsts + carry,
                                     bds + k_ds)
      extra += more
      k_ds = [max(d, pred_d + 1) for d in out_ds]
      trips += 1
    # XLA counted the body and the condition once each.
    extra += ((trips - 1) * self.body_cost(p["body_jaxpr"])
              + trips * self.body_cost(p["cond_jaxpr"]))
    return carry, k_ds, extra

  def _cond(self, eqn, vals, ds):
    branches = eqn.params["branches"]
    if vals[0] is None:
      raise ValueError("executed_cost: a branch index depends on "
                       "floating-point values")
    index = int(vals[0])
    index = min(max(index, 0), len(branches) - 1)
    outs, out_ds, extra = self.run(branches[index], vals[1:], ds[1:])
    # XLA charges the most expensive branch; this one ran.
    extra += (self.body_cost(branches[index])
              - max(self.body_cost(b) for b in branches))
    return outs, [max(d, ds[0] + 1) for d in out_ds], extra


def executed_cost(fn, *args, flops: bool = True) -> dict:
  """{"flops": executed FLOPs, "xla_flops": analysis.xla_flops,
  "critical_path": executed critical path} of `fn(*args)` on concrete args
  (only the critical path when `flops` is False)."""
  closed = jax.make_jaxpr(fn)(*args)
  counter = ExecutedCost(count_flops=flops)
  flat = jax.tree.leaves(args)
  _, out_ds, extra = counter.run(closed, flat, [0] * len(flat))
  result = {"critical_path": int(max(out_ds, default=0))}
  if flops:
    top = analysis.compiled_cost(fn, *args)["flops"]
    result.update(flops=top + extra,
                  xla_flops=analysis.xla_flops(fn, *args))
  return result


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
      measured = executed_cost(fn, p, x)
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


def measure_variants(grid, log=print):
  """Every column of the table for the variants (see VARIANT_CLAIMS)."""
  out = {"window": WINDOW, "num_features": NUM_FEATURES, "flops": {},
         "flops_core": {}, "sequential": {}, "path_length": {}, "time": {}}
  for name in VARIANTS:
    t0 = time.perf_counter()
    executed = name == "local"
    sizes_n = grid.get("n_variants", grid["n"])
    sizes_d = grid.get("d_variants", grid["d"])
    layer = _flops_row(variant_layer, name, grid, sizes_n, sizes_d, executed)
    core = _flops_row(variant_core, name, grid, sizes_n, sizes_d, executed)
    for row, is_core in ((layer, False), (core, True)):
      closed = [variant_closed_form(name, n, grid["d_fixed"], core=is_core)
                for n, _, _ in row["by_n"]]
      closed += [variant_closed_form(name, grid["n_fixed"], d, core=is_core)
                 for d, _, _ in row["by_d"]]
      measured = [f for _, f, _ in row["by_n"] + row["by_d"]]
      row["closed_form"] = closed
      row["measured_over_closed_form"] = [m / c for m, c in
                                          zip(measured, closed)]
    out["flops"][name], out["flops_core"][name] = layer, core
    log(f"  variants flops {name}: {time.perf_counter() - t0:.1f} s")
  # Local FLOPs against the window at fixed n (claimed exponent 1).
  t0 = time.perf_counter()
  n_w, d_w = grid["n_window"], grid["d_fixed"]
  by_w = []
  for w in grid["windows"]:
    fn, p = variant_core("local", d_w, window=w)
    measured = executed_cost(fn, p, _x(n_w, d_w))
    by_w.append((w, measured["flops"], measured["xla_flops"]))
  ws, fl_w, raw_w = zip(*by_w)
  out["local_by_window"] = {
      "n": n_w, "d": d_w, "by_w": by_w,
      "w_exponent": analysis.growth_exponent(ws, fl_w),
      "w_exponent_xla_flops": analysis.growth_exponent(ws, raw_w)}
  log(f"  variants local window sweep: {time.perf_counter() - t0:.1f} s")

  # Critical path (executed) at d = 8 over n.
  t0 = time.perf_counter()
  for name in VARIANTS:
    depths = []
    for n in grid["n_seq"]:
      fn, p = variant_layer(name, 8, window=grid["window_small"])
      depths.append(executed_cost(fn, p, _x(n, 8),
                                  flops=False)["critical_path"])
    out["sequential"][name] = {
        "by_n": list(zip(grid["n_seq"], depths)),
        "n_exponent": analysis.growth_exponent(grid["n_seq"], depths)}
  log(f"  variants critical path: {time.perf_counter() - t0:.1f} s")

  # Maximum path length: one layer, and a stack of the same layer.
  t0 = time.perf_counter()
  for name in VARIANTS:
    rows = {}
    windows = grid["path_windows"] if name == "local" else [None]
    for w in windows:
      by_n = {}
      for n in grid["n_path"]:
        fn, p = variant_layer(name, 8, window=w or WINDOW)
        # Reverse mode for the blockwise local attention (no jvp rule).
        pattern = (pattern_rev if name == "local" else
                   analysis.dependency_pattern)(lambda x: fn(p, x), _x(n, 8))
        offsets = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        by_n[n] = {"stack": analysis.max_path_length(pattern),
                   "one_layer_reach": int(offsets[pattern].max()),
                   "one_layer_connected": float(pattern.mean())}
      rows["all" if w is None else f"w={w}"] = by_n
    out["path_length"][name] = rows
  log(f"  variants path length: {time.perf_counter() - t0:.1f} s")

  # Wall-clock time and compiled memory at d_time.
  t0 = time.perf_counter()
  d = grid["d_time"]
  for name in VARIANTS:
    fn, p = variant_layer(name, d)
    samples = []
    for n in grid["n_time_variants"]:
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
  log(f"  variants time: {time.perf_counter() - t0:.1f} s")
  return out


def variants_markdown(results) -> list[str]:
  """The section of complexity.md on the sub-quadratic variants."""
  var, grid = results["variants"], results["grid"]
  fl, core = var["flops"], var["flops_core"]
  seq, path, tm = var["sequential"], var["path_length"], var["time"]
  n_max = max(grid["n_path"])
  lines = [
      "", "## Sub-quadratic variants: local, linear and Performer attention",
      "",
      f"Local attention: window w = {var['window']} (|j - i| < w) in the n "
      f"and d sweeps; Performer: m = {var['num_features']} random features "
      "per head; causal linear attention: chunked prefix sums (chunks of "
      "64). Every layer has the projections of `self_attention` (4 heads); "
      "the core rows are the attention alone (q = k = v = x). FLOPs of "
      "local attention are counted on an executed run (`executed_cost`: "
      "its blockwise tiles run in `while` loops, which XLA's cost analysis, "
      "and so `analysis.xla_flops`, counts once); for the loop-free "
      "variants the executed count equals `analysis.xla_flops`.",
      "",
      "| layer | complexity (claimed) | FLOPs exponent in n, layer / core "
      "(largest sizes) | FLOPs exponent in d, core (layer) | critical path "
      "(executed) exponent in n | max path length (claimed) | measured at "
      f"n={n_max} |",
      "|---|---|---|---|---|---|---|",
  ]
  for name in VARIANTS:
    claim = VARIANT_CLAIMS[name]
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
  for name in VARIANTS:
    claim = VARIANT_CLAIMS[name]
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
  for name in VARIANTS[1:]:
    e = analysis.growth_exponent(ns, [path[name]["all"][n]["stack"]
                                      for n in ns])
    lines.append(f"| {name} | path length in n | 0 | {_fmt(e)} | "
                 f"{verdict(e, 0.0)} |")

  lines += ["", "### FLOPs: measured, XLA's loop-once count, closed form", "",
            f"n grid {grid.get('n_variants', grid['n'])} at "
            f"d={grid['d_fixed']}; d grid {grid.get('d_variants', grid['d'])} "
            f"at n={grid['n_fixed']}. Closed forms count what the maths "
            "needs (local: the in-window pairs only); measured / closed "
            "form > 1 is work the implementation adds (local: whole "
            "tiles).", "",
            "| layer | size | FLOPs (executed) | analysis.xla_flops | closed "
            "form | measured / closed |", "|---|---|---|---|---|---|"]
  for label, rows in (("layer", fl), ("core", core)):
    for name in VARIANTS:
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
  for name in VARIANTS:
    s = seq[name]
    label = (f"local (w={grid['window_small']})" if name == "local"
             else name)
    lines.append(f"| {label} | " + " | ".join(str(d) for _, d in s["by_n"])
                 + f" | {_fmt(s['n_exponent'])} |")

  lines += ["", "### Maximum path length (layers of a stack of the layer)",
            "", "| layer | " + " | ".join(f"n={n}" for n in ns) + " |",
            "|---|" + "---|" * len(ns)]
  for name in VARIANTS:
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
  for name in VARIANTS:
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
  for name in VARIANTS:
    row = tm[name]
    lines.append(f"| {name} | {_fmt(row['forward_n_exponent'])} | "
                 f"{_fmt(row['forward_backward_n_exponent'])} | "
                 f"{_fmt(row['memory_n_exponent'])} |")
  return lines


def write_variant_plots(out: pathlib.Path, results) -> list[str]:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  var = results["variants"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  ax = axes[0]
  for name in VARIANTS:
    ns, flops, _ = zip(*var["flops"][name]["by_n"])
    ax.loglog(ns, flops, "o-", label=name)
  if "self-attention" in results.get("flops", {}):
    ns, flops, _ = zip(*results["flops"]["self-attention"]["by_n"])
    ax.loglog(ns, flops, "k--", label="self-attention (dense)")
  ax.set(xlabel="n (tokens)", ylabel="FLOPs per layer",
         title=f"FLOPs vs n, d={results['grid']['d_fixed']}")
  ax.legend(fontsize=8)
  for ax, key, label in ((axes[1], "forward", "forward ms"),
                         (axes[2], "temp_bytes", "compiled temp MiB")):
    scale = 1e3 if key == "forward" else 2.0 ** -20
    for name in VARIANTS:
      samples = var["time"][name]["samples"]
      ax.loglog([s["n"] for s in samples],
                [(s[key] or 0) * scale for s in samples], "o-", label=name)
    dense = results.get("time", {}).get("self-attention", {}).get("samples")
    if dense:
      ax.loglog([s["n"] for s in dense],
                [(s[key] or 0) * scale for s in dense], "k--",
                label="self-attention (dense)")
    ax.set(xlabel="n (tokens)", ylabel=label,
           title=f"{label}, d={results['grid']['d_time']}\n"
                 f"{results['device']}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "variants_vs_n.png", dpi=120)
  plt.close("all")
  return ["variants_vs_n.png"]


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
            "n_time": [16], "d_time": 16, "repeats": 1,
            "min_seconds": 0.001, "n_variants": [16, 32], "d_variants": [16],
            "n_window": 32, "windows": [4], "window_small": 4,
            "path_windows": [4], "n_time_variants": [16]}
  return {"n": [128, 256, 512, 1024, 2048], "d": [32, 64, 128, 256],
          "d_fixed": 32, "n_fixed": 256, "k": [3, 5, 7],
          "n_seq": [16, 32, 64, 128, 256], "n_path": [16, 32, 64, 128],
          "n_time": [64, 128, 256, 512, 1024, 2048], "d_time": 64,
          "repeats": 5, "min_seconds": 0.05,
          # sub-quadratic variants
          "n_window": 2048, "windows": [8, 16, 32, 64, 128, 256],
          "window_small": 4, "path_windows": [4, 8],
          "n_time_variants": [64, 256, 1024, 2048, 4096, 8192]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--quick", action="store_true",
                      help="tiny grid for a CI smoke run")
  parser.add_argument("--only-variants", action="store_true",
                      help="measure only the local / linear / Performer rows "
                      "and merge them into OUT/complexity.json")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  grid = grid_for(args.quick)
  if args.only_variants:
    return main_variants(out, grid)
  start = time.perf_counter()
  results = {"device": analysis.device_name(), "jax_version": jax.__version__,
             "quick": args.quick, "grid": grid}
  for key, measure in (("flops", measure_flops),
                       ("sequential", measure_sequential),
                       ("path_length", measure_path_length),
                       ("time", measure_time_and_memory),
                       ("variants", measure_variants)):
    t0 = time.perf_counter()
    results[key] = measure(grid)
    print(f"{key}: {time.perf_counter() - t0:.1f} s", flush=True)
  results["seconds"] = time.perf_counter() - start
  results["plots"] = (write_plots(out, results)
                      + write_variant_plots(out, results))
  write_markdown(out, results)
  (out / "complexity.json").write_text(
      json.dumps(results, indent=1, default=str))
  print((out / "complexity.md").read_text())
  return 0


def main_variants(out: pathlib.Path, grid: dict) -> int:
  """--only-variants: the variants' rows merged into an earlier run."""
  previous = out / "complexity.json"
  if not previous.exists():
    print(f"--only-variants: expected {previous} from an earlier run",
          file=sys.stderr)
    return 1
  results = _int_keys(json.loads(previous.read_text()))
  results["grid"].update({k: grid[k] for k in (
      "n_window", "windows", "window_small", "path_windows",
      "n_time_variants") if k in grid})
  for key in ("n_variants", "d_variants"):
    if key in grid:
      results["grid"][key] = grid[key]
  start = time.perf_counter()
  results["variants"] = measure_variants(grid)
  results["variants"].update(seconds=time.perf_counter() - start,
                             device=analysis.device_name(),
                             jax_version=jax.__version__)
  results["plots"] = sorted(set(results.get("plots", []))
                            | set(write_variant_plots(out, results)))
  write_markdown(out, results)
  previous.write_text(json.dumps(results, indent=1, default=str))
  print((out / "complexity.md").read_text())
  return 0


if __name__ == "__main__":
  sys.exit(main())
