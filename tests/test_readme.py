"""README's commands stay the ones CI runs, and its example code runs."""

import pathlib
import re

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


def test_readme_python_examples_run():
  sources = re.findall(r"```python\n(.*?)\n```",
                       (ROOT / "README.md").read_text(), flags=re.S)
  assert len(sources) >= 3
  namespace = {}
  for source in sources:  # later examples reuse names of earlier ones
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102
  assert namespace["y_BND"].shape == (2, 6, 16)
