"""README's commands stay the ones CI runs, and its example code runs."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bash_blocks():
  return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(),
                    flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
  main_command, test_command = _bash_blocks()[:2]
  assert main_command.startswith("pip install -e .")
  assert "jattn.main --config=configs/copy.py " in main_command
  assert "pytest" in test_command
  ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
  assert test_command in ci_lines


def _python_blocks():
  return re.findall(r"```python\n(.*?)\n```",
                    (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_self_contained_python_examples():
  # Each runs alone in a fresh interpreter in the slow run (below).
  sources = _python_blocks()
  assert 8 <= len(sources) <= 10, len(sources)
  for index, source in enumerate(sources):
    assert re.search(r"^(import|from) jattn", source, re.M), index


@pytest.mark.slow
@pytest.mark.parametrize("index", range(10))
def test_readme_snippet_runs_in_a_fresh_interpreter(index, tmp_path):
  sources = _python_blocks()
  if index >= len(sources):
    pytest.skip(f"README has {len(sources)} snippets")
  proc = subprocess.run([sys.executable, "-c", sources[index]], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
