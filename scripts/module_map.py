"""Print the module map for docs/architecture.md: one line per module, from its docstring."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sipstack", "carrier", "workers", "cli", "models", "migrations")


def modules() -> list[tuple[str, str]]:
    """(dotted module name, first docstring line) for every module of the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            empty_init = path.name == "__init__.py" and path.stat().st_size == 0
            if "versions" in path.parts or empty_init:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            found.append((name, doc.strip().split("\n")[0]))
    return found


def render() -> str:
    """The map as Markdown: a table per package (sub-packages of workers/ get their own)."""
    out: list[str] = []
    current = None
    for name, line in modules():
        parts = name.split(".")
        package = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        if package != current:
            current = package
            out.append(f"\n### {package}\n| module | job |\n|---|---|")
        out.append(f"| `{name}` | {line} |")
    return "\n".join(out).lstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
