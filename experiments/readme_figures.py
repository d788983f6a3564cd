"""Writes every measured figure the READMEs quote from the results files.

    python experiments/readme_figures.py           # rewrite the blocks
    python experiments/readme_figures.py --check   # exit 1 naming stale ones

A figure block is the text between a line `<!-- figures: NAME -->` and the
next line `<!-- /figures -->` in README.md, docs/DESIGN.md or any
experiments/**/README.md. NAME picks one renderer of RENDERERS below; each
reads only results files (JSON written by the experiment scripts) and
formats them with the scripts' own table functions, so a README figure is
never typed by hand and a rerun of an experiment followed by this script
updates every README that quotes it. `tests/test_readme_figures.py` runs
the check: a README whose figures differ from the JSON fails the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                   r"(<!-- /figures -->)", re.S)


def _json(root: pathlib.Path, rel: str):
  return json.loads((root / rel).read_text())


def _pct(x: float) -> str:
  return f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------
# experiments/tasks: the README commands' runs and positional encodings.


def _task_row(root, config: str) -> dict:
  rows = _json(root, "experiments/tasks/results.json")
  return next(r for r in rows if r["config"] == config)


def main_job(root) -> str:
  r = _task_row(root, "attention,copy")
  return (f"The first command, as recorded by "
          f"`experiments/tasks_headline.py`: {_pct(r['eval_accuracy'])} "
          f"copy accuracy on fresh batches after {r['steps']} steps, "
          f"{r['seconds']:.0f} s of training on {r['device']} (load average "
          f"{r['load_before'][0]} before).\n")


def test_run(root) -> str:
  r = _json(root, "experiments/test_run/results.json")
  return (f"The second, as recorded by `experiments/test_run.py` in a clean "
          f"clone: pytest's summary `{r['summary']}`, exit code "
          f"{r['returncode']}, {r['seconds'] / 60:.1f} min wall-clock with "
          f"the install, on {r['device']}, load average "
          f"{r['load_before'][0]} before and {r['load_after'][0]} after. "
          "`-m slow` runs the slower tests it skips: lowering matrices, "
          "training smoke runs (on a mesh, on gs://), fault injection, the "
          "bigger fuzz sweeps, fresh-interpreter README snippets.\n")


def tasks_headline(root) -> str:
  v = _task_row(root, "attention,variable_copy")
  s = _task_row(root, "attention,selective_copy")
  return (
      f"Recorded in [experiments/tasks/results.md](experiments/tasks/"
      f"results.md) (`python experiments/tasks_headline.py --out "
      f"experiments/tasks`, {v['device']}): attention reaches "
      f"{v['eval_accuracy']:.4f} accuracy on fresh batches of variable-delay "
      f"copy (delays {v['task']['min_delay']}..{v['task']['delay']}) in "
      f"{v['steps']} steps ({v['seconds']:.0f} s, load average "
      f"{v['load_before'][0]} to {v['load_after'][0]}) and "
      f"{s['eval_accuracy']:.4f} on selective copy in {s['steps']} steps "
      f"({s['seconds']:.0f} s, load average {s['load_before'][0]} to "
      f"{s['load_after'][0]}); on delays it never saw "
      f"({v['task']['ood_min_delay']}..{v['task']['ood_max_delay']}) it "
      f"gets {v['eval_ood_accuracy']:.4f} and {s['eval_ood_accuracy']:.4f}: "
      "it retrieves by content within the trained range but does not "
      "extrapolate to longer delays (the positional encodings decide how "
      "far it carries: [experiments/README.md](experiments/README.md)).\n")


def tasks_table(root) -> str:
  import tasks_headline as script  # noqa: PLC0415
  return script.markdown(_json(root, "experiments/tasks/results.json"))


def positional(root) -> str:
  import positional as script  # noqa: PLC0415
  return script.markdown(_json(root, "experiments/tasks/positional.json"))


# ---------------------------------------------------------------------------
# experiments/sweep: nine architectures under equal budgets.


def _sweep(root):
  return _json(root, "experiments/sweep/results/sweep.json")


def _sweep_block(root, mode: str) -> str:
  import sweep as script  # noqa: PLC0415
  r = _sweep(root)
  lines = [f"Budget: {script.budget_text(r, mode)}; {r['device']}; load "
           f"average {r['load_start'][0]} at the start of the sweep, "
           f"{r['load_end'][0]} at the end. Copy accuracy on fresh batches, "
           f"mean ± "
           f"sample std over seeds {r['seeds']} (seeds that reached 99%):",
           ""]
  return "\n".join(lines + script.accuracy_table(r, mode)) + "\n"


def sweep_steps(root) -> str:
  return _sweep_block(root, "steps")


def sweep_wall(root) -> str:
  return _sweep_block(root, "wall")


def sweep_steps_taken(root) -> str:
  import sweep as script  # noqa: PLC0415
  r = _sweep(root)
  return "\n".join(["Mean steps taken / mean seconds per run, equal "
                    "wall-clock budget:", ""]
                   + script.steps_table(r, "wall")) + "\n"


def sweep_findings(root) -> str:
  """Which architectures solved which delays, per budget, from the JSON."""
  r = _sweep(root)
  lines = []
  names = {"steps": "Equal steps", "wall": "Equal wall-clock"}
  for mode in r["modes"]:
    s = r["summary"].get(mode, {})
    run = {a: s[a] for a in r["archs"] if a in s}
    always = [a for a, c in run.items()
              if all(v["solved"] == v["seeds"] for v in c.values())]
    never = [a for a, c in run.items()
             if not any(v["solved"] for v in c.values())]
    partly = [a for a in run if a not in always and a not in never]
    recurrent_or_conv = [a for a in run if a in ("cnn", "tcn", "rnn", "gru",
                                                 "lstm")]
    best = []
    for d in r["delays"]:
      cells = [(run[a][str(d)]["accuracy_mean"], a) for a in recurrent_or_conv
               if str(d) in run[a]]
      if cells:
        acc, arch = max(cells)
        best.append(f"{arch} {_pct(acc)} at delay {d}")
    lines.append(
        f"- {names[mode]}: every seed reached 99% at every delay run for "
        f"{', '.join(always) or 'none'}; at some delays for "
        f"{', '.join(partly) or 'none'}; at none for "
        f"{', '.join(never) or 'none'}. Best convolutional or recurrent "
        f"model: {'; '.join(best)}.")
  return "\n".join(lines) + "\n"


def sweep_params(root) -> str:
  r = _sweep(root)
  spread = [w["relative_to_target"] for w in r["widths"].values()]
  return (f"Parameter counts {min(w['num_params'] for w in r['widths'].values()):,}"
          f" to {max(w['num_params'] for w in r['widths'].values()):,} "
          f"({100 * min(spread):+.1f}% to {100 * max(spread):+.1f}% of the "
          f"attention model's {r['target_params']:,}), sweep time "
          f"{r['seconds'] / 60:.0f} min (`{r['command']}`); cells over the "
          f"{r['max_cell_s']:.0f} s limit (estimated for all seeds), listed "
          f"in sweep.md: {len(r['not_run']) or 'none'}.\n")


# ---------------------------------------------------------------------------
# experiments/complexity: the chapter's table, claimed vs measured.


def _complexity(root):
  return _json(root, "experiments/complexity/results/complexity.json")


def _series(pairs_or_map) -> dict:
  if isinstance(pairs_or_map, dict):
    return {int(k): v for k, v in pairs_or_map.items()}
  return {int(p[0]): p[1] for p in pairs_or_map}


def _values(by_n: dict) -> str:
  return ", ".join(str(v) for _, v in sorted(by_n.items()))


def chapter_table(root) -> str:
  r = _complexity(root)
  fl, seq, path = r["flops"], r["sequential"], r["path_length_jaxpr"]
  lin = r["sequential_linear_recurrence"]
  ns_seq = sorted(_series(seq["rnn"]["by_n"]))
  ns_path = sorted(int(n) for n in path["rnn"])
  cnn3 = {int(n): v["steps"] for n, v in path["cnn"]["3"].items()}
  rows = [
      ("CNN (k = 3)", "O(k n d^2)", fl["cnn"], "O(1)",
       _values(_series(seq["cnn"]["by_n"])), "O(n/k)",
       _values(cnn3) + " (shallowest stack connecting every pair)"),
      ("RNN (Elman, `lax.scan`)", "O(n d^2)", fl["rnn"], "O(n)",
       _values(_series(seq["rnn"]["by_n"])), "O(n)",
       _values(_series(path["rnn"]))),
      ("self-attention", "O(n^2 d)", fl["self-attention"], "O(1)",
       _values(_series(seq["self-attention"]["by_n"])), "O(1)",
       _values(_series(path["self-attention"]))),
  ]
  lines = [
      f"Measured by `experiments/complexity.py` on {r['device']} (jax "
      f"{r['jax_version']}); counts are exact. FLOPs: exponents of XLA's "
      f"counts between the two largest sizes (n up to {max(r['grid']['n'])} "
      f"at d = {r['grid']['d_fixed']}; d up to {max(r['grid']['d'])} at "
      f"n = {r['grid']['n_fixed']}); sequential operations: critical path "
      f"of the jaxpr at n = {', '.join(map(str, ns_seq))}; maximum path "
      f"length: primitive steps on the unrolled jaxpr at n = "
      f"{', '.join(map(str, ns_path))}.", "",
      "| layer | complexity: claimed | measured exponent in n / d | "
      "sequential ops: claimed | measured | max path length: claimed | "
      "measured |", "|---|---|---|---|---|---|---|"]
  for name, claim, f, seq_claim, seq_measured, path_claim, path_measured in rows:
    lines.append(f"| {name} | {claim} | {f['n_exponent_local']:.2f} / "
                 f"{f['d_exponent_local']:.2f} | {seq_claim} | {seq_measured}"
                 f" | {path_claim} | {path_measured} |")
  scan = _series(lin["lax.scan"]["by_n"])
  assoc = _series(lin["lax.associative_scan"]["by_n"])
  pscan = _series(path["linear recurrence, lax.scan"])
  passoc = _series(path["linear recurrence, lax.associative_scan"])
  lines.append(
      f"| linear recurrence, `lax.scan` | O(n d) | - | O(n) | "
      f"{_values(scan)} (n = {', '.join(map(str, sorted(scan)))}) | O(n) | "
      f"{_values(pscan)} |")
  lines.append(
      f"| the same, `lax.associative_scan` | O(n d) | - | O(log n) | "
      f"{_values(assoc)} | O(log n) | {_values(passoc)} |")
  return "\n".join(lines) + "\n"


def complexity_time(root) -> str:
  import complexity as script  # noqa: PLC0415
  r = script._int_keys(_complexity(root))  # pylint: disable=protected-access
  fastest = script.fastest_by_n(r["time"])
  by_layer = {}
  for n, name in fastest.items():
    by_layer.setdefault(name, []).append(n)
  att = {s["n"]: s for s in r["time"]["self-attention"]["samples"]}
  n_max = max(att)
  temp = {name: {s["n"]: s["temp_bytes"] for s in row["samples"]}
          for name, row in r["time"].items()}
  load = r.get("load_average") or [math.nan]
  return (
      f"On {r['device']} (load average {load[0]} at the start of the "
      "run), the fastest layer forward (median of "
      f"{r['grid']['repeats']} samples, d = {r['grid']['d_time']}) is "
      + "; ".join(f"the {name} at n = {', '.join(map(str, ns))}"
                  for name, ns in by_layer.items())
      + f". Self-attention forward at n = {n_max}: "
      f"{att[n_max]['forward'] * 1e3:.1f} ms. Compiled temporary memory of "
      f"the forward pass at n = {n_max}: self-attention "
      f"{temp['self-attention'][n_max] / 2**20:.1f} MiB, CNN "
      f"{temp['cnn'][n_max] / 2**20:.2f} MiB, RNN "
      f"{temp['rnn'][n_max] / 2**20:.2f} MiB.\n")


# ---------------------------------------------------------------------------
# experiments/copy: accuracy against the number of symbols.


def copy_symbols(root) -> str:
  r = _json(root, "experiments/copy/results/copy.json")
  sweep = r["symbols"]
  counts = sweep["num_symbols"]
  lines = [f"Delay {sweep['delay']}, seed(s) {r['seeds']}, budget "
           f"{r['max_steps']} steps or {r['budget_s']:.0f} s (compilation "
           f"included), {r['device']}; final accuracy (solved runs / runs):",
           "", "| architecture | " + " | ".join(f"S = {n}" for n in counts)
           + " |", "|---|" + "---|" * len(counts)]
  for arch in sweep["archs"]:
    cells = []
    for n in counts:
      c = sweep["summary"].get(arch, {}).get(str(n))
      cells.append("not run" if c is None else
                   f"{_pct(c['accuracy_mean'])} ({c['solved']})")
    lines.append(f"| {arch} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def copy_gradients(root) -> str:
  r = _json(root, "experiments/copy/results/copy.json")
  g = r["gradients"]["rnn"]["init"]
  last = len(g) - 1
  return (f"At initialisation, delay {r['gradient_delay']}, the Elman RNN's "
          f"gradient norm is {g[0]:.1e} at input position 0 against "
          f"{g[last]:.1e} at position {last}.\n")


# ---------------------------------------------------------------------------
# experiments/attention: blockwise attention against its peers.


def attention_speed(root) -> str:
  r = _json(root, "experiments/attention/results.json")
  times = {(s["L"], s["impl"], s["mode"]): s.get("seconds")
           for s in r["speed"]}
  ls = [L for L in sorted({s["L"] for s in r["speed"]}) if 1024 <= L <= 4096]

  def ratios(peer):
    return ", ".join(f"{times[(L, peer, 'fwdbwd')] / times[(L, 'jattn', 'fwdbwd')]:.2f}"
                     for L in ls)
  best = r["max_length"]["jattn"]
  dense = r["max_length"]["jattn-dense"]
  peak = next(t["peak_rss"] for t in best["trials"] if t["L"] == best["max_L"])
  load = r.get("load_average")
  load_text = (f"load average {load[0]} at the start" if load else
               "the machine's load was not recorded in that run, and it was "
               "shared, so read the ratios as upper bounds rather than idle "
               "figures")
  return (f"On {r['device']} (`experiments/attention/results.json`; "
          f"{load_text}), forward+backward at B = {r['B']}, H = {r['H']}, "
          f"K = {r['K']}, L = {', '.join(map(str, ls))}: jax.nn's "
          f"`dot_product_attention` takes {ratios('xla')} times jattn's time "
          f"and Flax's {ratios('flax')}; a single head trains at L = "
          f"{best['max_L']:,} with a peak RSS of {peak / 2**30:.2f} GiB where "
          f"dense attention stops at L = {dense['max_L']:,}.\n")


# ---------------------------------------------------------------------------
# experiments/scaling: the train step over 1..8 (fake) devices.


def _scaling(root):
  return _json(root, "experiments/scaling/results/scaling.json")


def _scaling_row(run, mode, regime):
  return next(r for r in run["rows"]
              if r["mode"] == mode and r["regime"] == regime)


def scaling_machine(root) -> str:
  r = _scaling(root)
  m = r["machine"]
  return (f"{r['seconds']:.0f} s in all, on {m['cpu_count']} cores "
          f"({m['cpu']}), {'fake CPU devices' if m['fake_devices'] else 'real devices'}, "
          f"jax {r['runs'][0]['jax']}, load average {m['load_before'][0]} "
          f"before and {m['load_after'][0]} after the run: every time is an "
          "upper bound, measured on that CPU.\n")


def scaling_memory(root) -> str:
  runs = _scaling(root)["runs"]
  cols = [("data", "strong"), ("seq", "strong"), ("seq", "weak")]
  first = runs[0]
  heads = []
  for mode, regime in cols:
    row = _scaling_row(first, mode, regime)
    size = (f"N = {row['seq_len']} p" if regime == "weak" and mode == "seq"
            else f"N = {row['seq_len']}")
    heads.append(f"{mode}, {regime} (B = {row['batch']}, {size})")
  lines = ["| devices p | " + " | ".join(heads) + " |",
           "|---|" + "---|" * len(cols)]
  for run in runs:
    lines.append(f"| {run['devices']} | " + " | ".join(
        f"{_scaling_row(run, m, g)['bytes_per_device'] / 2**20:.1f}"
        for m, g in cols) + " |")
  return "\n".join(lines) + "\n"


def scaling_longest(root) -> str:
  r = _scaling(root)
  lines = [f"Budget {r['memory_budget_bytes'] / 2**20:.0f} MiB per device:",
           "", "| devices p | longest N | per-device MiB there | N / p |",
           "|---|---|---|---|"]
  for run in r["runs"]:
    mem, p = run["memory"], run["devices"]
    n = mem["longest_seq_len"]
    lines.append(f"| {p} | {n:,} | {mem['measured'][str(n)] / 2**20:.1f} | "
                 f"{n // p:,} |" if n else f"| {p} | none found | - | - |")
  return "\n".join(lines) + "\n"


def scaling_time(root) -> str:
  runs = _scaling(root)["runs"]
  cols = [("data", "strong"), ("data", "weak"), ("seq", "strong"),
          ("seq", "weak")]
  lines = ["| devices p | data strong | data weak | seq strong | seq weak |",
           "|---|---|---|---|---|"]
  for run in runs:
    lines.append(f"| {run['devices']} | " + " | ".join(
        f"{1e3 * _scaling_row(run, m, g)['step_s']:.1f}" for m, g in cols)
                 + " |")
  return "\n".join(lines) + "\n"


def _speed(results) -> dict:
  return {(x["L"], x["impl"], x["mode"]): x for x in results["speed"]}


def _ratio_list(speed, peer, ls) -> str:
  cells = []
  for L in ls:
    mine, theirs = speed.get((L, "jattn", "fwdbwd")), speed.get((L, peer,
                                                                "fwdbwd"))
    if mine and theirs and mine.get("seconds") and theirs.get("seconds"):
      cells.append(f"{theirs['seconds'] / mine['seconds']:.2f}x")
    else:
      cells.append("skipped")
  return " / ".join(cells)


def attention_targets(root) -> str:
  r = _json(root, "experiments/attention/results.json")
  c = _json(root, "experiments/attention/results_causal.json")
  speed, causal = _speed(r), _speed(c)
  ls = sorted({L for L, _, _ in speed if L >= 1024})
  cls = sorted({L for L, _, _ in causal if L >= 1024})
  at = " / ".join(map(str, ls))

  def verdict(peer):
    got = [speed[(L, peer, "fwdbwd")]["seconds"] /
           speed[(L, "jattn", "fwdbwd")]["seconds"] for L in ls
           if speed.get((L, peer, "fwdbwd"), {}).get("seconds")]
    return "met" if got and min(got) >= 2 else "**missed**"
  slower = []
  for (L, impl, mode), x in sorted(speed.items()):
    if impl in ("xla", "flax") and x.get("seconds"):
      mine = speed[(L, "jattn", mode)]["seconds"]
      if x["seconds"] < mine:
        slower.append(f"L = {L} {mode}: {x['seconds'] / mine:.2f}x of {impl}")
  fractions = [speed[(L, "jattn", "fwd")]["fraction_of_matmul"] for L in ls]
  cfractions = [causal[(L, "jattn", "fwd")].get("fraction_of_matmul")
                for L in cls]
  best = r["max_length"]["jattn"]
  trial = next(t for t in best["trials"] if t["L"] == best["max_L"])
  dense = r["max_length"]["jattn-dense"]
  rows = [
      ("fwd+bwd at L >= 1024 at least 2x faster than `jax.nn` (xla)",
       f"{_ratio_list(speed, 'xla', ls)} at L = {at}; causal "
       f"{_ratio_list(causal, 'xla', cls)}", verdict("xla")),
      ("fwd+bwd at L >= 1024 at least 2x faster than Flax",
       f"{_ratio_list(speed, 'flax', ls)} at L = {at}; causal "
       f"{_ratio_list(causal, 'flax', cls)}", verdict("flax")),
      ("never slower than either peer at any L",
       "slower at " + "; ".join(slower) if slower else "never slower",
       "**missed**" if slower else "met"),
      ("fwd at L >= 1024 reaches 40% of the same run's f32 matmul GFLOP/s",
       " / ".join(f"{100 * f:.0f}%" for f in fractions) + f" at L = {at}; "
       "causal " + " / ".join("-" if f is None else f"{100 * f:.0f}%"
                              for f in cfractions),
       "met" if min(fractions) >= 0.4 else
       f"**missed** at {sum(f < 0.4 for f in fractions)} of {len(fractions)}"),
      (f"fwd+bwd at L = {best['max_L']:,}, B = H = 1, K = 64 within 24 GiB",
       f"completed in {trial['seconds']:.1f} s with "
       f"{trial['peak_rss'] / 2**30:.2f} GiB peak RSS (compiled temporaries "
       f"{trial['compiled_memory']['temp'] / 2**20:.0f} MiB); dense stops at "
       f"L = {dense['max_L']:,} ({dense['limit']})",
       "met" if trial["peak_rss"] < 24 * 2**30 else "**missed**"),
      ("GPU: bf16 fwd+bwd at L = 8192 within 1.25x of cuDNN",
       "not measured: no GPU was lent to this project's sessions", "not run"),
  ]
  load = r.get("load_average")
  lines = [f"{r['device']}, jax {r['jax']}, {r['dtype']}, B = {r['B']}, "
           f"H = {r['H']}, K = {r['K']}; "
           + (f"load average {load[0]} at the start."
              if load else "the load was not recorded by that run and the "
              "machine was shared, so the ratios are not idle figures."),
           "", "| target | measured | verdict |", "|---|---|---|"]
  lines += [f"| {a} | {b} | {v} |" for a, b, v in rows]
  mem = [speed[(L, "jattn", "fwdbwd")]["compiled_memory"]["temp"] / 2**20
         for L in ls]
  lines += ["", "Compiled temporary memory, fwd+bwd, jattn: " +
            " / ".join(f"{m:.0f} MiB" for m in mem) + f" at L = {at}."]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Published anchors.


def anchors(root) -> str:
  rows = _json(root, "experiments/anchors.json")["anchors"]
  lines = ["| source | published | ours |", "|---|---|---|"]
  lines += [f"| {a['source']} | {a['claim']} | {a['ours']} |" for a in rows]
  return "\n".join(lines) + "\n"


RENDERERS = {
    "main-job": main_job,
    "test-run": test_run,
    "tasks-headline": tasks_headline,
    "tasks-table": tasks_table,
    "positional": positional,
    "sweep-steps": sweep_steps,
    "sweep-wall": sweep_wall,
    "sweep-steps-taken": sweep_steps_taken,
    "sweep-params": sweep_params,
    "sweep-findings": sweep_findings,
    "chapter-table": chapter_table,
    "complexity-time": complexity_time,
    "copy-symbols": copy_symbols,
    "copy-gradients": copy_gradients,
    "attention-speed": attention_speed,
    "scaling-machine": scaling_machine,
    "scaling-memory": scaling_memory,
    "scaling-longest": scaling_longest,
    "scaling-time": scaling_time,
    "attention-targets": attention_targets,
    "anchors": anchors,
}


def readme_files(root: pathlib.Path) -> list[pathlib.Path]:
  """README.md, docs/DESIGN.md and every experiments/**/README.md."""
  found = [root / "README.md", root / "docs" / "DESIGN.md"]
  found += sorted((root / "experiments").rglob("README.md"))
  return [p for p in found if p.is_file() and "runs" not in p.parts]


def render_text(text: str, root: pathlib.Path) -> str:
  """`text` with every figure block rewritten from the results files.

  Raises:
    KeyError: a block names no renderer.
  """
  def replace(match):
    name = match.group("name")
    if name not in RENDERERS:
      raise KeyError(f"figures block {name!r}: expected one of "
                     f"{sorted(RENDERERS)}")
    return match.group(1) + RENDERERS[name](root) + match.group(4)
  return BLOCK.sub(replace, text)


def stale_blocks(root: pathlib.Path = ROOT) -> list[str]:
  """'FILE: NAME' for every block whose text differs from its rendering."""
  stale = []
  for path in readme_files(root):
    text = path.read_text()
    for match in BLOCK.finditer(text):
      rendered = render_text(match.group(0), root)
      if rendered != match.group(0):
        stale.append(f"{path.relative_to(root)}: {match.group('name')}")
  return stale


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="change nothing; exit 1 if a block is stale")
  args = parser.parse_args(argv)
  if args.check:
    stale = stale_blocks(ROOT)
    for line in stale:
      print(f"stale: {line} (run python experiments/readme_figures.py)")
    return 1 if stale else 0
  for path in readme_files(ROOT):
    text = path.read_text()
    new = render_text(text, ROOT)
    if new != text:
      path.write_text(new)
      print(f"rewrote {path.relative_to(ROOT)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
