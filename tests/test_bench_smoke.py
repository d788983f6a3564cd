"""Smoke test: experiments/bench_attention.py --quick runs and writes its JSON."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchAttentionSmokeTest(unittest.TestCase):

  @pytest.mark.slow
  def test_quick_run(self):
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "bench.json")
      proc = subprocess.run(
          [sys.executable, os.path.join(ROOT, "experiments",
                                        "bench_attention.py"),
           "--quick", "--lengths", "128,384", "--json", out],
          cwd=ROOT, capture_output=True, text=True, timeout=600,
          env=dict(os.environ, PYTHONPATH=ROOT))
      self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
      with open(out) as f:
        results = json.load(f)
    rows = {(r["L"], r["impl"], r["mode"]): r for r in results["speed"]}
    for impl in ("jattn", "xla", "flax"):
      for mode in ("fwd", "fwdbwd"):
        self.assertGreater(rows[(384, impl, mode)]["seconds"], 0)
    # L = 384 > 256: automatic dispatch runs blockwise, timed once as "jattn".
    self.assertEqual(rows[(384, "jattn-blockwise", "fwd")]["same_as"], "jattn")
    self.assertEqual(rows[(128, "jattn-dense", "fwd")]["same_as"], "jattn")
    self.assertGreater(rows[(384, "jattn", "fwd")]["fraction_of_matmul"], 0)
    self.assertEqual(results["max_length"]["jattn"]["max_L"], 1024)
    self.assertIn("Speed-up of jattn", results["table"])


if __name__ == "__main__":
  unittest.main()
