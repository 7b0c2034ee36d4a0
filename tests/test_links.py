"""The documents a reader meets (README.md, CONTRIBUTING.md, docs/*.md): every relative link and image leads to a
file of the repository, every `#anchor` to a heading of its page (as GitHub names it), nothing points outside the
repository or at the project's history; and on the built site every link and image resolves too."""

import functools
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.helpers import ROOT

markdown_it = pytest.importorskip(
    "markdown_it", reason="markdown-it-py is not installed: pip install -r requirements-dev.txt"
)
pytest.importorskip("pygments", reason="pygments is not installed: pip install -r requirements-dev.txt")

DOCUMENTS = ["README.md", "CONTRIBUTING.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))
PARSER = markdown_it.MarkdownIt("commonmark").enable("table")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, every character but letters, digits, `_`, `-` and spaces dropped,
    spaces to hyphens."""
    return "".join(c for c in heading.strip().lower() if c.isalnum() or c in "_- ").replace(" ", "-")


def headings_and_links(text: str) -> tuple[list[str], list[str]]:
    """The anchors of a Markdown page's headings (-1, -2 on repeats) and the targets of its links and images."""
    anchors, links, seen = [], [], {}
    tokens = PARSER.parse(text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            plain = "".join(c.content for c in tokens[i + 1].children if c.type in ("text", "code_inline"))
            base = slug(plain)
            anchors.append(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
        for child in token.children or []:
            if child.type == "link_open":
                links.append(child.attrGet("href"))
            elif child.type == "image":
                links.append(child.attrGet("src"))
    return anchors, links


def broken_links(root: Path, document: str) -> list[str]:
    """What is wrong with the relative links of `document` (a path under `root`), one line each."""
    text = (root / document).read_text()
    own_anchors, links = headings_and_links(text)
    problems = []
    for link in links:
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", link):
            continue  # https:, mailto: ...: not checked offline
        path, _, anchor = unquote(link).partition("#")
        target = (root / document).parent / path if path else root / document
        try:
            relative = target.resolve().relative_to(root.resolve())
        except ValueError:
            problems.append(f"{document}: {link} points outside the repository")
            continue
        if not target.exists():
            problems.append(f"{document}: {link}: no such file")
        elif anchor and target.suffix == ".md":
            anchors = own_anchors if not path else headings_and_links(target.read_text())[0]
            if anchor not in anchors:
                problems.append(f"{document}: {link}: no heading #{anchor} in {relative}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_and_anchor_resolves(document):
    assert broken_links(ROOT, document) == []


def test_the_checker_sees_a_dead_link_a_dead_anchor_and_a_way_out(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.py").write_text("")
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Usage and more\n\nText.\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n## What a run gives\n\n[ok](a.py) [ok](docs/page.md#usage-and-more) [ok](#what-a-run-gives) "
        "[ok](https://example.org/x) `[not a link](nowhere.md)`\n\n"
        "[dead](b.py) [anchor](docs/page.md#usage) [own](#results) [out](../shared/CONVENTIONS.md) ![img](c.png)\n"
    )
    assert broken_links(tmp_path, "README.md") == [
        "README.md: b.py: no such file",
        "README.md: docs/page.md#usage: no heading #usage in docs/page.md",
        "README.md: #results: no heading #results in README.md",
        "README.md: ../shared/CONVENTIONS.md points outside the repository",
        "README.md: c.png: no such file",
    ]


def test_github_anchors():
    """The anchors GitHub gives these headings, as its pages show them."""
    assert slug("GPU, MuJoCo, benchmarks") == "gpu-mujoco-benchmarks"
    assert slug("ppo.py: proximal policy optimization (PPO)") == "ppopy-proximal-policy-optimization-ppo"
    assert slug("Saving, evaluating, watching") == "saving-evaluating-watching"
    assert slug("More than one machine") == "more-than-one-machine"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_nothing_only_the_projects_history_explains(document):
    """No issue numbers, no file outside the repository (the contract is CONTRIBUTING.md)."""
    text = (ROOT / document).read_text()
    assert not re.search(r"\bissues? #?\d+", text, re.I), re.search(r".{40}\bissues? #?\d+.{20}", text, re.I)
    assert "CONVENTIONS.md" not in text and "../shared" not in text


def test_readme_is_a_front_page_linking_every_script_and_its_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, f"README.md has {len(readme.splitlines())} lines"
    assert "Python 3.11" in readme and "python3 -m pytest" in readme
    table = readme.split("<!-- scripts-table -->")[1].split("<!-- /scripts-table -->")[0]
    for script in SCRIPTS:
        row = next(line for line in table.splitlines() if f"[`{script}`]({script})" in line)
        assert f"(docs/{script.removesuffix('.py')}.md)" in row, script


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_docs_page_has_the_sections_and_links_its_neighbours(script):
    name = script.removesuffix(".py")
    text = (ROOT / "docs" / f"{name}.md").read_text()
    anchors, links = headings_and_links(text)
    for section in ("overview", "usage", "logged-metrics", "implementation-details", "results", "known-limits"):
        assert section in anchors, f"docs/{name}.md: no section #{section}"
    assert f"../{script}" in links and "../README.md#the-scripts" in links
    assert any(link.startswith("../benchmarks/curves/") for link in links), f"docs/{name}.md shows no curve"
    others = {link for link in links if re.fullmatch(r"\w+\.md", link)}
    position = SCRIPTS_IN_ORDER.index(script)
    neighbours = {f"{s.removesuffix('.py')}.md" for s in SCRIPTS_IN_ORDER[max(0, position - 1) : position + 2]}
    assert neighbours - {f"{name}.md"} <= others, f"docs/{name}.md: links {others}"


SCRIPTS_IN_ORDER = [
    re.search(r"\[`(\w+\.py)`\]", line).group(1)
    for line in (ROOT / "README.md").read_text().split("<!-- scripts-table -->")[1].splitlines()
    if line.startswith("| [`")
]


# ## The site: the same documents as HTML, their links pointed at the site's own files
class Targets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "link", "script"):
                self.links.append(attrs[key])


@functools.cache
def read_targets(path: Path) -> Targets:
    reader = Targets()
    reader.feed(path.read_text())
    return reader


def test_every_link_of_the_site_resolves(tmp_path):
    from docs.build import build

    site = tmp_path / "_site"
    build(site, with_katex=False)
    pages = sorted(site.rglob("*.html"))
    assert {"README.html", "CONTRIBUTING.html", "docs/ppo.html"} <= {p.relative_to(site).as_posix() for p in pages}
    problems = []
    for page in pages:
        if "&lt;!--" in page.read_text():
            problems.append(f"{page.relative_to(site)}: an HTML comment shown as text")
        for link in read_targets(page).links:
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", link) or link.startswith("katex/") or "/katex/" in link:
                continue  # KaTeX is left out of this build
            path, _, anchor = unquote(link).partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.is_file() or site.resolve() not in target.parents:
                problems.append(f"{page.relative_to(site)}: {link}")
            elif anchor and target.suffix == ".html" and anchor not in read_targets(target).ids:
                problems.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert problems == []
    # a script's link on a docs page opens its annotated page
    assert 'href="../ppo.html"' in (site / "docs" / "ppo.html").read_text()
