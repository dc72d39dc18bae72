"""The documentation site (make docs): every page, pdoc's reference of every public module, no broken link."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

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


def broken_links(site: Path) -> list[tuple[str, str]]:
    """Every link of the site's pages to a file or an anchor that is not there."""
    broken = []
    for page in sorted(site.glob("*.html")):
        for link in re.findall(r'href="([^"]+)"', page.read_text()):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            if link.startswith("file://"):
                target, anchor = Path(unquote(urlparse(link).path)), urlparse(link).fragment
            else:
                base, _, anchor = link.partition("#")
                target = page.parent / base if base else page
            if not target.exists() or (
                    anchor and target.suffix == ".html" and f'id="{anchor}"' not in target.read_text()):
                broken.append((page.name, link))
    return broken


def test_make_docs_builds_one_site_of_the_pages_and_the_api_reference(tmp_path):
    done = subprocess.run([sys.executable, "docs/site.py", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    pages = {p.name for p in tmp_path.glob("*.html")}
    assert {"index.html", "ARCHITECTURE.html", "service.html", "deploy-ansible.html"} <= pages
    assert len(pages) == 1 + len(list((ROOT / "docs").glob("*.md"))) + 5  # and the other folders' READMEs
    assert broken_links(tmp_path) == []
    index = (tmp_path / "index.html").read_text()
    assert '<a href="service.html">' in index and '<a href="api/edge.html">API reference</a>' in index
    api = tmp_path / "api"
    modules = public_modules()
    assert len(modules) > 40 and "edge.runtime.stream" in modules
    missing = [m for m in modules if not (api / (m.replace(".", "/") + ".html")).is_file()]
    assert not missing, f"no page for {missing}"
    # NumPy sections are rendered, not shown as raw text.
    page = (api / "edge" / "runtime" / "models.html").read_text()
    assert "load_detector" in page and "<h6" in page and "Raises" in page


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "index.html").write_text('<a href="gone.html">x</a><a href="index.html#nowhere">y</a>')
    assert broken_links(tmp_path) == [("index.html", "gone.html"), ("index.html", "index.html#nowhere")]


SCHEMA_MARK = "<!-- schema: the output of `python -m edge.bundle` -->\n```json\n"


def test_the_bundle_page_embeds_the_manifests_current_schema():
    from edge.bundle import schema_json

    page = (ROOT / "docs" / "bundle.md").read_text()
    assert SCHEMA_MARK in page, "docs/bundle.md lost the schema's marker"
    embedded = page.split(SCHEMA_MARK, 1)[1].split("\n```", 1)[0]
    assert embedded == schema_json(), "regenerate the block in docs/bundle.md with `python -m edge.bundle`"


def test_the_readme_is_a_front_door():
    # What it is, what is proven where, the two commands, one example per command, and links:
    # the details live in docs/.
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    commands = ("edge run", "edge serve", "make convert", "make deploy", "edge train", "make demo",
                "make test")
    assert [c for c in commands if c not in readme] == []
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", readme))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}, "a docs page the README does not link"
