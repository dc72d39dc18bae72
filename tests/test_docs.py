"""The API documentation: pdoc renders every public module of the package from its docstrings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def public_modules() -> list[str]:
    """Every module of `edge/` whose name does not start with an underscore, dotted."""
    names = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.append(".".join(parts))
    return names


def test_make_docs_renders_every_public_module(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pdoc", "--docformat", "numpy", "--output-directory", str(tmp_path), "edge"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = public_modules()
    assert len(modules) > 40 and "edge.runtime.stream" in modules
    missing = [m for m in modules if not (tmp_path / (m.replace(".", "/") + ".html")).is_file()]
    assert not missing, f"no page for {missing}"
    # NumPy sections are rendered, not shown as raw text.
    page = (tmp_path / "edge" / "runtime" / "models.html").read_text()
    assert "load_detector" in page and "<h6" in page and "Raises" in page


SCHEMA_MARK = "<!-- schema: the output of `python -m edge.bundle` -->\n```json\n"


def test_the_bundle_page_embeds_the_manifests_current_schema():
    from edge.bundle import schema_json

    page = (ROOT / "docs" / "bundle.md").read_text()
    assert SCHEMA_MARK in page, "docs/bundle.md lost the schema's marker"
    embedded = page.split(SCHEMA_MARK, 1)[1].split("\n```", 1)[0]
    assert embedded == schema_json(), "regenerate the block in docs/bundle.md with `python -m edge.bundle`"
