"""Every measured figure a README quotes matches the results JSON
(experiments/readme_figures.py renders the blocks from the files)."""

import importlib.util
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _figures():
  spec = importlib.util.spec_from_file_location(
      "readme_figures", ROOT / "experiments" / "readme_figures.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_readme_figure_block_matches_its_results_file():
  assert _figures().stale_blocks(ROOT) == []


def test_every_renderer_is_quoted_and_every_block_has_a_renderer():
  figures = _figures()
  names = set()
  for path in figures.readme_files(ROOT):
    names |= {m.group("name") for m in figures.BLOCK.finditer(path.read_text())}
  assert names == set(figures.RENDERERS)


def _tree_with_results(tmp_path):
  """A copy of the READMEs and results files the renderers read."""
  for rel in ["README.md", "docs/DESIGN.md", "experiments/anchors.json"]:
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / rel, tmp_path / rel)
  for path in (ROOT / "experiments").rglob("*"):
    rel = path.relative_to(ROOT)
    if path.is_file() and "runs" not in rel.parts and (
        path.name == "README.md" or path.suffix == ".json"):
      (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(path, tmp_path / rel)
  return tmp_path


def test_an_edited_figure_or_a_changed_result_is_caught(tmp_path):
  figures = _figures()
  root = _tree_with_results(tmp_path)
  assert figures.stale_blocks(root) == []
  # A number typed over in a README block.
  readme = root / "experiments" / "README.md"
  text = readme.read_text()
  body = figures.BLOCK.search(text)
  start = body.start("body")
  digit = next(i for i in range(start, body.end("body")) if text[i].isdigit())
  readme.write_text(text[:digit] + str((int(text[digit]) + 1) % 10)
                    + text[digit + 1:])
  assert figures.stale_blocks(root) != []
  readme.write_text(text)
  # A rerun of an experiment that changes a result.
  path = root / "experiments" / "sweep" / "results" / "sweep.json"
  results = json.loads(path.read_text())
  cell = next(iter(results["summary"]["steps"]["attention"].values()))
  cell["accuracy_mean"] = cell["accuracy_mean"] / 2
  path.write_text(json.dumps(results))
  assert any("sweep-steps" in s for s in figures.stale_blocks(root))


def test_an_unknown_block_name_is_an_error():
  figures = _figures()
  with pytest.raises(KeyError, match="no-such"):
    figures.render_text("<!-- figures: no-such -->\nx\n<!-- /figures -->",
                        ROOT)
