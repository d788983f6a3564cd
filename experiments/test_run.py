"""Times README's test command in this checkout and records the outcome.

    python experiments/test_run.py --out experiments/test_run

Runs the second bash block of README.md (the install-and-test command) as
it stands, and writes OUT/results.json: pytest's summary line, the wall
seconds, the exit code, the device and the load average before and after,
which `experiments/readme_figures.py` quotes under README's commands.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jattn import analysis  # noqa: E402  pylint: disable=wrong-import-position


def readme_test_command(root: pathlib.Path = ROOT) -> str:
  """The second ```bash block of README.md."""
  blocks = re.findall(r"```bash\n(.*?)\n```", (root / "README.md").read_text(),
                      flags=re.S)
  return blocks[1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  args = parser.parse_args(argv)
  command = readme_test_command()
  before = analysis.describe_device()
  start = time.perf_counter()
  done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True,
                        text=True, check=False)
  seconds = time.perf_counter() - start
  lines = [line for line in done.stdout.splitlines() if line.strip()]
  summary = next((line.strip("= ") for line in reversed(lines)
                  if re.search(r"\d+ (passed|failed)", line)), "")
  results = {"command": command, "returncode": done.returncode,
             "summary": summary, "seconds": seconds,
             "device": before["device"], "cpu_count": os.cpu_count(),
             "load_before": before["load_average"],
             "load_after": analysis.describe_device()["load_average"]}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
  print(json.dumps(results, indent=1))
  return done.returncode


if __name__ == "__main__":
  sys.exit(main())
