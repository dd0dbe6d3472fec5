"""The documentation site without Spark or mkdocs: mkdocs.yml's nav names pages that exist,
every relative link of README.md and docs/*.md reaches a file, and the README stays short."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) or [text](target "title"), not an image's; targets have no spaces
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def nav_pages(nav) -> list[str]:
    """Every page a mkdocs nav names, nested sections included (external URLs left out)."""
    if isinstance(nav, str):
        return [] if re.match(r"[a-z]+://", nav) else [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a Markdown page, outside fenced code blocks, anchors stripped."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s)://, mailto: ...; or an anchor on the same page
        out.append(target.split("#", 1)[0])
    return out


def test_mkdocs_nav_pages_exist():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs_dir = ROOT / cfg.get("docs_dir", "docs")
    pages = nav_pages(cfg["nav"])
    assert pages, "mkdocs.yml has no nav"
    missing = [p for p in pages if not (docs_dir / p).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"
    # and every page of docs/ is in the nav (a page left out is hard to find on the site)
    assert sorted(p.name for p in docs_dir.glob("*.md")) == sorted(pages)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file(page):
    links = relative_links(page)
    broken = [t for t in links if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_link_finder_sees_links_and_skips_code_and_urls(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](usage.md#x) [b](https://e.org/y.md) [c](#top) ![i](pic.png)\n"
                    "`[d](not-a-link.md)`\n```md\n[e](in-a-fence.md)\n```\n[f](../x/Y.md)\n")
    assert relative_links(page) == ["usage.md", "../x/Y.md"]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 220, f"README.md has {n} lines: move detail to docs/ (at most 220)"
