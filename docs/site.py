"""Build the documentation as one site, browsable offline.

The README, the pages of docs/ and the other folders' READMEs, with pdoc's API reference
of the package under ``api/``.

Markdown is rendered by markdown2 (pdoc's own renderer); a link to another page's ``.md``
becomes a link to its ``.html``, a link to another file of the repository becomes a link
to that file in this checkout, so every link of the site works from disk.

    .venv/bin/python docs/site.py --out docs/site      # make docs
"""

from __future__ import annotations

import argparse
import html
import re
import warnings
from pathlib import Path

import markdown2
import pdoc
import pdoc.render

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ["fenced-code-blocks", "tables", "header-ids", "code-friendly", "cuddled-lists"]
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; display: flex; color: #222; }
nav { width: 14em; padding: 1em; background: #f4f4f4; min-height: 100vh; flex: none; }
nav a { display: block; padding: .15em 0; color: #0550ae; text-decoration: none; }
nav a.here { font-weight: bold; color: #222; }
main { padding: 1em 2em; max-width: 60em; overflow-x: auto; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; }
code { font-size: 90%; } table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .2em .5em; vertical-align: top; }
"""
_NOT_SOURCES = {"docs", "build", "dist", "data", "runs", "out"}
"""Top-level folders whose READMEs are not the project's (docs/ is read apart)."""
_LINK = re.compile(r'href="([^"#:]+)(#[^"]*)?"')


def pages() -> dict[Path, str]:
    """Return each page's source and its name in the site.

    The README is ``index.html``, a page of docs/ keeps its name, a README elsewhere is
    named by its folder (``deploy/ansible/README.md`` is ``deploy-ansible.html``).
    """
    found = {ROOT / "README.md": "index.html"}
    found |= {path: f"{path.stem}.html" for path in sorted((ROOT / "docs").glob("*.md"))}
    folders = [p for p in sorted(ROOT.iterdir()) if p.is_dir() and p.name not in _NOT_SOURCES
               and not p.name.startswith(".")]
    others = [readme for folder in folders for readme in sorted(folder.rglob("README.md"))]
    found |= {path: "-".join(path.parent.relative_to(ROOT).parts) + ".html" for path in others}
    return found


def title(text: str, default: str) -> str:
    """Return a page's first heading, or ``default``."""
    match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else default


def relink(body: str, source: Path, names: dict[Path, str]) -> str:
    """Point the page's relative links at the site's pages, or at the checkout's files."""

    def target(match: re.Match[str]) -> str:
        link, anchor = match.group(1), match.group(2) or ""
        path = (source.parent / link).resolve()
        return f'href="{names[path] if path in names else path.as_uri()}{anchor}"'

    return _LINK.sub(target, body)


def render_page(source: Path, names: dict[Path, str]) -> str:
    """Render one page with the site's navigation."""
    text = source.read_text()
    links = [(name, title(path.read_text(), name), path == source) for path, name in names.items()]
    nav = "".join(f'<a href="{name}"{" class=here" if here else ""}>{html.escape(text)}</a>'
                  for name, text, here in links) + '<a href="api/edge.html">API reference</a>'
    body = relink(markdown2.markdown(text, extras=EXTRAS), source, names)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title(text, source.stem))}"
            f"</title><style>{STYLE}</style></head><body><nav>{nav}</nav><main>{body}</main></body></html>")


def build(out: Path) -> list[Path]:
    """Write the site into ``out``; return the pages written (the API reference aside)."""
    out.mkdir(parents=True, exist_ok=True)
    names = pages()
    written = []
    for source, name in names.items():
        (out / name).write_text(render_page(source, names))
        written.append(out / name)
    pdoc.render.configure(docformat="numpy")
    with warnings.catch_warnings():  # pdoc's notes on annotations it cannot resolve, not errors
        warnings.simplefilter("ignore")
        pdoc.pdoc("edge", output_directory=out / "api")
    return written


def main() -> None:
    """Build the site where ``--out`` says."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "site")
    out = parser.parse_args().out.resolve()
    pages_written = build(out)
    print(f"{len(pages_written)} pages and the API reference: open {out / 'index.html'}")


if __name__ == "__main__":
    main()
