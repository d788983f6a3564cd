"""Checks jattn's attention implementations on the accelerator it runs on.

    python experiments/accelerator_check.py            # on one GPU or TPU
    python experiments/accelerator_check.py --quick    # CPU smoke run

One script, meant to finish in under 5 minutes on one GPU or TPU. It

1. checks every implementation the dispatch can pick on this device (dense,
   blockwise; cudnn on an NVIDIA GPU, splash on a TPU) and jattn's opt-in
   Pallas kernel, against a float32 reference at Precision.HIGHEST: outputs
   and gradients on causal, local-window, key-length and GQA cases, a NaN
   check, and a fully-masked-row check (rows with nothing to attend to must
   be exactly 0 with exactly zero gradients);
2. times forward and forward+backward side by side (bf16 and f32, L = 1024,
   4096, 8192, B = 4, H = 8, K = 64, causal) for jattn's automatic choice,
   each jattn implementation, and the peers: jax.nn xla and cudnn on GPU,
   splash (through jattn) and blockwise on TPU;
3. prints one table with the device named and the host load, and writes
   JSON to experiments/attention/accelerator_<platform>.json (or --out).

Times are the median of interleaved rounds after compilation (min and max
beside); a failed or unsupported cell is recorded with its error's first
line instead of a time.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jattn  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from jattn import analysis  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from jattn import attention  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

HIGHEST = jax.lax.Precision.HIGHEST
CASES = {  # name -> keyword arguments of dot_product_attention
    "causal": dict(is_causal=True),
    "local_left_128": dict(is_causal=True, local_window=(127, 0)),
    "key_len": dict(key_valid_len=True),   # filled per example below
    "gqa_causal": dict(is_causal=True, gqa=True),
    "empty_rows": dict(key_valid_len=0),
}


def candidates(platform: str) -> list[str]:
  """The implementations to check here: what the dispatch can pick, and
  jattn's own Pallas kernel."""
  names = ["dense", "blockwise"]
  if platform == "gpu":
    names.append("cudnn")
  if platform == "tpu":
    names.append("splash")
  return names + ["pallas"]


def _inputs(key, B, L, H, G, K, dtype):
  kq, kk, kv, kd = jax.random.split(key, 4)
  q = jax.random.normal(kq, (B, L, H, K), jnp.float32).astype(dtype)
  k = jax.random.normal(kk, (B, L, G, K), jnp.float32).astype(dtype)
  v = jax.random.normal(kv, (B, L, G, K), jnp.float32).astype(dtype)
  d_out = jax.random.normal(kd, (B, L, H, K), jnp.float32).astype(dtype)
  return q, k, v, d_out


def _batched(implementation, case: dict, precision=None):
  """jit(vmap) of one example's attention, with the case's arguments."""
  kwargs = {k: v for k, v in case.items() if k != "gqa"}

  def one(q, k, v, key_len):
    if "key_valid_len" in kwargs:
      kwargs["key_valid_len"] = key_len
    return jattn.dot_product_attention(q, k, v, implementation=implementation,
                                       precision=precision, **kwargs)

  return jax.vmap(one)


def _value_and_grads(fn, q, k, v, key_len, d_out):
  out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, key_len), q, k, v)
  return (out, *vjp(d_out.astype(out.dtype)))


def _rel(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = max(float(np.max(np.abs(want))), 1e-30)
  return float(np.max(np.abs(got - want)) / scale)


def check_correctness(names, *, dtypes, L: int, B: int, H: int, K: int, log):
  """Rows {implementation, dtype, case, errors or error}."""
  rows = []
  for dtype in dtypes:
    for case_name, case in CASES.items():
      G = 2 if case.get("gqa") else H
      q, k, v, d_out = _inputs(jax.random.key(0), B, L, H, G, K, dtype)
      key_len = jnp.asarray(
          [0 if case_name == "empty_rows" else L // 2 + 1] * B, jnp.int32)
      reference = jax.jit(functools.partial(
          _value_and_grads, _batched("dense", case, precision=HIGHEST)))
      f32 = lambda x: x.astype(jnp.float32)
      want = reference(f32(q), f32(k), f32(v), key_len, f32(d_out))
      for name in names:
        row = {"implementation": name, "dtype": jnp.dtype(dtype).name,
               "case": case_name, "L": L}
        try:
          got = jax.jit(functools.partial(
              _value_and_grads, _batched(name, case)))(q, k, v, key_len,
                                                       d_out)
          got = jax.block_until_ready(got)
          row["errors"] = {part: _rel(g, w) for part, g, w in
                           zip(("out", "dq", "dk", "dv"), got, want)}
          row["nan_free"] = bool(all(np.isfinite(np.asarray(g, np.float32)).all()
                                     for g in got))
          if case_name == "empty_rows":
            row["empty_rows_exactly_zero"] = bool(all(
                not np.any(np.asarray(g, np.float32)) for g in got))
        except Exception as err:  # pylint: disable=broad-except
          row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        log(_correctness_line(row))
        rows.append(row)
  return rows


def _correctness_line(row) -> str:
  head = f"{row['implementation']:>9} {row['dtype']:>8} {row['case']:>14}"
  if "error" in row:
    return f"{head}  {row['error']}"
  errs = " ".join(f"{k}={v:.1e}" for k, v in row["errors"].items())
  extra = ("" if "empty_rows_exactly_zero" not in row
           else f" empty-rows-zero={row['empty_rows_exactly_zero']}")
  return f"{head}  {errs} nan-free={row['nan_free']}{extra}"


def _peer(platform: str, name: str):
  """jax.nn's own implementation `name` on (B, L, H, K) arrays, causal."""
  def fn(q, k, v, key_len):
    del key_len
    return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                        implementation=name)
  return fn


def timed_functions(platform: str, names):
  """label -> batched causal attention (q, k, v, key_len) -> out."""
  fns = {"jattn (auto)": _batched(None, CASES["causal"])}
  for name in names:
    fns[f"jattn {name}"] = _batched(name, CASES["causal"])
  if platform == "gpu":
    fns["jax.nn xla"] = _peer(platform, "xla")
    fns["jax.nn cudnn"] = _peer(platform, "cudnn")
  elif platform != "tpu":
    fns["jax.nn xla"] = _peer(platform, None)
  return fns


def time_all(fns, *, dtypes, lengths, B, H, K, rounds, log):
  """Rows {label, dtype, L, mode, median_ms, min_ms, max_ms} or error."""
  rows = []
  for dtype in dtypes:
    for L in lengths:
      q, k, v, d_out = _inputs(jax.random.key(1), B, L, H, H, K, dtype)
      key_len = jnp.full((B,), L, jnp.int32)
      compiled = {}
      for label, fn in fns.items():
        for mode in ("fwd", "fwd+bwd"):
          row = {"label": label, "dtype": jnp.dtype(dtype).name, "L": L,
                 "mode": mode}
          run = (jax.jit(fn) if mode == "fwd" else
                 jax.jit(functools.partial(_value_and_grads, fn)))
          args = (q, k, v, key_len) + (() if mode == "fwd" else (d_out,))
          try:
            jax.block_until_ready(run(*args))          # compile + warm up
            compiled[(label, mode)] = (run, args, row)
          except Exception as err:  # pylint: disable=broad-except
            row["error"] = (f"{type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160]}")
            rows.append(row)
      times = {key: [] for key in compiled}
      for _ in range(rounds):                          # interleaved rounds
        for key, (run, args, _) in compiled.items():
          start = time.perf_counter()
          jax.block_until_ready(run(*args))
          times[key].append(1e3 * (time.perf_counter() - start))
      for key, (_, _, row) in compiled.items():
        row.update(median_ms=statistics.median(times[key]),
                   min_ms=min(times[key]), max_ms=max(times[key]))
        rows.append(row)
      for row in rows[-len(fns) * 2:]:
        log(_time_line(row))
  return rows


def _time_line(row) -> str:
  head = f"{row['label']:>16} {row['dtype']:>8} L={row['L']:>5} {row['mode']:>7}"
  if "error" in row:
    return f"{head}  {row['error']}"
  return (f"{head}  {row['median_ms']:9.2f} ms (min {row['min_ms']:.2f}, "
          f"max {row['max_ms']:.2f})")


def table(results) -> str:
  """The timing table as markdown: median ms per label, one column per
  (dtype, L, mode)."""
  rows = [r for r in results["timing"]]
  cols = sorted({(r["dtype"], r["L"], r["mode"]) for r in rows},
                key=lambda c: (c[0], c[1], c[2]))
  labels = list(dict.fromkeys(r["label"] for r in rows))
  cell = {(r["label"], r["dtype"], r["L"], r["mode"]): r for r in rows}
  lines = [f"Device: {results['machine']['device']}; jax "
           f"{results['versions']['jax']}; load average before "
           f"{results['machine']['load_average']}, after "
           f"{results['load_average_end']}; median of {results['rounds']} "
           "interleaved rounds, ms (causal, B=%d H=%d K=%d)" % (
               results["B"], results["H"], results["K"]), "",
           "| implementation | " + " | ".join(
               f"{d} L={L} {m}" for d, L, m in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
  for label in labels:
    out = []
    for d, L, m in cols:
      r = cell.get((label, d, L, m))
      out.append("-" if r is None else
                 ("failed" if "error" in r else f"{r['median_ms']:.2f}"))
    lines.append(f"| {label} | " + " | ".join(out) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes (a smoke run on CPU)")
  parser.add_argument("--out", type=pathlib.Path, default=None,
                      help="JSON path (default experiments/attention/"
                      "accelerator_<platform>.json)")
  args = parser.parse_args(argv)
  machine = analysis.describe_device()
  platform = machine["platform"]
  if args.quick:
    sizes = dict(B=2, H=4, K=64)
    lengths, check_len, rounds = [384], 384, 2
  else:
    sizes = dict(B=4, H=8, K=64)
    lengths, check_len, rounds = [1024, 4096, 8192], 1024, 10
  dtypes = [jnp.bfloat16, jnp.float32]
  log = lambda line: print(line, flush=True)
  log(f"accelerator check on {machine['device']} (jax {jax.__version__}); "
      f"load average {machine['load_average']}")
  names = candidates(platform)
  start = time.perf_counter()
  correctness = check_correctness(names, dtypes=dtypes, L=check_len, **sizes,
                                  log=log)
  timing = time_all(timed_functions(platform, names), dtypes=dtypes,
                    lengths=lengths, rounds=rounds, **sizes, log=log)
  results = {
      "machine": machine,
      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
      "dispatch_here": attention.choose_implementation(
          lengths[-1], lengths[-1], dtype=jnp.bfloat16, head_dim=sizes["K"],
          is_causal=True),
      "quick": args.quick, "rounds": rounds, **sizes,
      "correctness": correctness, "timing": timing,
      "seconds": round(time.perf_counter() - start, 1),
      "load_average_end": analysis.describe_device()["load_average"],
  }
  text = table(results)
  log("\n" + text)
  out = args.out or ROOT / "experiments" / "attention" / (
      f"accelerator_{platform}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1) + "\n")
  log(f"wrote {out} ({results['seconds']} s)")
  failed = [r for r in correctness if "error" not in r and (
      not r["nan_free"] or r.get("empty_rows_exactly_zero") is False)]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
