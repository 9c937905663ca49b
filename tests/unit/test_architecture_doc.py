"""docs/architecture.md's module map is the one the code gives: every module, its docstring's
first line, nothing that no longer exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _render() -> str:
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered: str = module.render()
    return rendered


def test_the_module_map_in_the_doc_is_the_code_s() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    begin, end = "<!-- module map: begin -->\n", "<!-- module map: end -->"
    documented = doc.split(begin, 1)[1].split(end, 1)[0]
    assert documented == _render(), "run: python scripts/module_map.py (docs/architecture.md)"


def test_every_module_has_a_line_saying_its_job() -> None:
    rows = [line for line in _render().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    assert all(row.split("|")[2].strip() for row in rows)
