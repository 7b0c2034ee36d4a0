"""Build the project's site: the annotated scripts, docco/pycco style, and the documentation pages.

    python docs/build.py                  # writes docs/_site/: index.html, one page per script, the docs pages
    python docs/build.py --out DIR        # somewhere else
    python docs/build.py --katex DIR      # KaTeX from a folder (katex.min.js, katex.min.css, fonts/)

Each script is cut into sections. A section starts at a block of full-line `#` comments (or
the module docstring, or a function or class with a docstring): that block, read as Markdown
with the math in `$...$`, goes in the left column, a function's docstring with it, as on
nn.labml.ai; the code that follows goes in the right column, every line as it is in the file,
numbered. Trailing comments and pragmas (`# fmt: skip`, `# noqa`) stay in the code. The
bookkeeping tail, the same in every script, is folded under one line. The math is typeset by
KaTeX in the browser, from a copy of npm's `katex` package placed beside the pages (fetched
with `npm pack`, checked against a pinned hash), so the pages work offline, also straight from
disk. The index lists the scripts with the lecture section of each, read from the scripts table
of README.md. README.md, CONTRIBUTING.md, docs/*.md and the benchmark pages become pages of the
same look, their links pointed at the site's own files.

Needs: markdown-it-py and pygments (requirements-dev.txt); npm, unless --katex is given.
"""

import argparse
import ast
import base64
import hashlib
import html
import inspect
import io
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt
from pygments.lexers import PythonLexer
from pygments.token import STANDARD_TYPES

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
ASSETS = ("style.css", "math.js")  # beside this file, copied next to the pages
TITLE = "Policy gradients, one file per method"

KATEX_VERSION = "0.19.1"
KATEX_INTEGRITY = "sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA=="
KATEX_FILES = ("katex.min.js", "katex.min.css")

# A comment line that is a tool's instruction, not prose: it stays in the code column.
PRAGMA = re.compile(r"#!|#\s*(-\*-|fmt:|noqa|type:|pragma|pylint:|ruff:|isort:|mypy:)")


class BuildError(RuntimeError):
    """Something the build needs is missing; the message says what to install."""


@dataclass
class Section:
    notes: list[str] = field(default_factory=list)
    """Markdown source of the left column (comment markers or docstring quotes removed)"""
    notes_lines: list[int] = field(default_factory=list)
    """1-based line numbers in the script that the notes come from"""
    code_lines: list[int] = field(default_factory=list)
    """1-based line numbers of the right column, shown verbatim"""
    kind: str = "code"
    """what started the section: "docstring", "comment", "definition" (a def or class with a docstring), or "code"
    (the file's first lines)"""


# ## Cutting a script into sections
def comment_only_lines(source: str) -> set[int]:
    """Lines that hold nothing but a comment (found by the tokenizer, so `#` inside strings never counts)."""
    lines = set()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT and not tok.line[: tok.start[1]].strip() and not PRAGMA.match(tok.string):
            lines.add(tok.start[0])
    return lines


def module_docstring(source: str) -> tuple[int, int, str] | None:
    """(first line, last line, text) of the module docstring. The text is the string's value,
    so `r\"\"\"\\hat{A}\"\"\"` and `\"\"\"\\\\hat{A}\"\"\"` both give `\\hat{A}`."""
    body = ast.parse(source).body
    if not body or not isinstance(body[0], ast.Expr):
        return None
    node = body[0].value
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None
    return node.lineno, node.end_lineno, inspect.cleandoc(node.value)


def definition_docstrings(source: str) -> dict[int, tuple[int, int, int, str]]:
    """The docstrings of functions and classes, nn.labml.ai style: {first line of the definition (its first
    decorator): (that line, docstring's first line, docstring's last line, text)}. Only a docstring on lines of its
    own counts (`def f(): \"\"\"x\"\"\"` stays code)."""
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or not node.body:
            continue
        doc = node.body[0]
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            continue
        alone = (
            not lines[doc.lineno - 1][: doc.col_offset].strip()
            and not lines[doc.end_lineno - 1][doc.end_col_offset :].strip()
        )
        if doc.lineno > node.lineno and alone:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[start] = (start, doc.lineno, doc.end_lineno, inspect.cleandoc(doc.value.value))
    return found


def split_sections(source: str) -> list[Section]:
    """Sections in file order. A comment block (or the module docstring) starts one; so does a function or class
    with a docstring, whose docstring joins the notes (after the comment block right above it, if any) and leaves
    the code column, which shows the `def` line and the body."""
    lines = source.splitlines()
    comments = comment_only_lines(source)
    doc = module_docstring(source)
    definitions = definition_docstrings(source)
    in_definition_doc = {n: d for d in definitions.values() for n in range(d[1], d[2] + 1)}
    sections = [Section()]
    for number, line in enumerate(lines, start=1):
        in_doc = doc is not None and doc[0] <= number <= doc[1]
        if number in in_definition_doc:
            definition = in_definition_doc[number]
            current = sections[-1]
            current.notes_lines.append(number)
            if number == definition[1]:
                current.notes.extend(([""] if current.notes else []) + definition[3].splitlines())
            continue
        kind = "docstring" if in_doc else "comment" if number in comments else "code"
        current = sections[-1]
        if number in definitions and current.code_lines:
            current = Section(kind="definition")
            sections.append(current)
        if kind == "code":
            current.code_lines.append(number)
            continue
        if current.code_lines or current.kind != kind:
            current = Section(kind=kind)
            sections.append(current)
        current.notes_lines.append(number)
        if kind == "comment":
            text = line.strip()[1:]
            current.notes.append(text[1:] if text.startswith(" ") else text)
        elif number == doc[0]:
            current.notes.extend(doc[2].splitlines())
    if not sections[0].code_lines and not sections[0].notes_lines and len(sections) > 1:
        sections.pop(0)
    return sections


def line_ranges(numbers: list[int]) -> str:
    """[3, 4, 5, 9, 10] -> "3-5,9-10": the lines a section's notes come from, as the page records them."""
    ranges = []
    for n in numbers:
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join(f"{a}-{b}" for a, b in ranges)


# ## Markdown with math
# Markdown would read the `_` and `\` of $\hat{A}_t$ as emphasis and escapes, so every math span
# is swapped for a placeholder before Markdown runs and put back after, HTML-escaped, in a
# `<span class="math">` that KaTeX typesets in the browser. Code spans are left alone.
# Inline math is `$...$` with no space just inside the dollars and no digit right after the
# closing one (so "$5 and $10" is not math); display math is `$$...$$`.
MATH = re.compile(
    r"(?P<code>(?P<ticks>`+).+?(?P=ticks))"
    r"|\$\$(?P<display>.+?)\$\$"
    r"|(?<![\\$])\$(?P<inline>[^\s$](?:[^$]*?[^\s\\$])?)\$(?!\d)",
    re.S,
)
# A line that is one formula and nothing else (but a trailing comma or stop) reads, in the file,
# as a displayed equation, and is shown as one.
FORMULA_LINE = re.compile(r"^[ \t]*\$(?!\$)([^$\n]+)\$[ \t]*([,.;:]?)[ \t]*$", re.M)
PLACEHOLDER = "MATHPLACEHOLDER{}X"


def highlight_fence(code: str, lang: str, _attrs) -> str:
    """Fenced code in Markdown (```bash, ```python), coloured by pygments; other languages stay plain."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang or "text")
    except ClassNotFound:
        return ""
    return highlight(code, lexer, HtmlFormatter(nowrap=True))


_markdown = MarkdownIt("commonmark", {"html": False, "highlight": highlight_fence}).enable("table")


def markdown_to_html(text: str, inline: bool = False) -> str:
    spans = []

    def protect(match: re.Match) -> str:
        if match.group("code"):
            return match.group(0)
        display = match.group("display") is not None
        tex = match.group("display") if display else match.group("inline")
        spans.append(f'<span class="math{" display" if display else ""}">{html.escape(tex)}</span>')
        return PLACEHOLDER.format(len(spans) - 1)

    if not inline:
        text = FORMULA_LINE.sub(lambda m: f"$${m.group(1)}{m.group(2)}$$", text)
    text = MATH.sub(protect, text)
    out = _markdown.renderInline(text) if inline else _markdown.render(text)
    for i, span in enumerate(spans):
        if PLACEHOLDER.format(i) not in out:
            raise BuildError(f"math span {i} was lost by Markdown in: {text[:80]!r}")
        out = out.replace(PLACEHOLDER.format(i), span)
    return out


# ## Code: highlighted once for the whole file, then cut into lines
def css_class(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def highlight_lines(source: str) -> list[str]:
    """One HTML string per source line; the file is lexed whole so strings that span lines stay right."""
    lexer = PythonLexer(stripnl=False, ensurenl=False, tabsize=0)
    lines, current = [], []
    text = ""
    for ttype, value in lexer.get_tokens(source):
        text += value
        for i, piece in enumerate(value.split("\n")):
            if i:
                lines.append("".join(current))
                current = []
            if piece:
                cls = css_class(ttype)
                escaped = html.escape(piece, quote=False)
                current.append(f'<span class="{cls}">{escaped}</span>' if cls else escaped)
    if text != source:
        raise BuildError("pygments changed the source while highlighting it")
    if current or not source.endswith("\n"):
        lines.append("".join(current))
    return lines


# ## Pages
def page(title: str, body: str, prefix: str = "") -> str:
    """A whole HTML page; `prefix` leads from the page's folder to the site's root ("" or "../")."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{prefix}katex/katex.min.css">
<link rel="stylesheet" href="{prefix}pygments.css">
<link rel="stylesheet" href="{prefix}style.css">
<script defer src="{prefix}katex/katex.min.js"></script>
<script defer src="{prefix}math.js"></script>
</head>
<body>
<header class="bar"><a href="{prefix}index.html">{html.escape(TITLE)}</a></header>
{body}
</body>
</html>
"""


TAIL = "# ## Bookkeeping"  # the identical tail of every script starts at this line: folded on its page
TAIL_SUMMARY = (
    "The bookkeeping (lines {first}-{last}): the same text in all nine scripts, read once and skip it "
    "(run folder, progress.csv, metrics, W&B, status line, NaN guard, Ctrl-C, saving and loading, evaluation, "
    "summary, argument checks, <code>main()</code>). Click to unfold."
)


def section_html(i: int, section: Section, code_html: list[str], head: str = "") -> str:
    notes = markdown_to_html("\n".join(section.notes)) if section.notes else ""
    code = "\n".join(f'<span class="line" id="L{n}" data-n="{n}">{code_html[n - 1]}</span>' for n in section.code_lines)
    return (
        f'<div class="section" id="s{i}" data-notes="{line_ranges(section.notes_lines)}">'
        f'<div class="notes"><a class="pilcrow" href="#s{i}">&para;</a>{head}{notes}</div>'
        f'<div class="code"><pre><code>{code}</code></pre></div></div>'
    )


def script_page(name: str, source: str, lecture: str | None, doc_page: str | None = None) -> str:
    """The annotated page: notes beside code, line numbers in the code column, the bookkeeping tail folded."""
    code_html = highlight_lines(source)
    head = f'<h1><a href="{name}" title="the script as a file">{name}</a></h1>'
    if lecture:
        head += f'<p class="lecture">Lecture: {markdown_to_html(lecture, inline=True)}</p>'
    if doc_page:
        head += (
            f'<p class="lecture"><a href="{doc_page}">Documentation</a>: usage, logged metrics, '
            "implementation details, results</p>"
        )
    lines = source.splitlines()
    tail = next((n for n, line in enumerate(lines, start=1) if line.startswith(TAIL)), None)
    method, folded = [], []
    for i, section in enumerate(split_sections(source)):
        first = min(section.notes_lines + section.code_lines)
        row = section_html(i, section, code_html, head if i == 0 else "")
        (folded if tail is not None and first >= tail else method).append(row)
    body = "\n".join(method)
    if folded:
        summary = TAIL_SUMMARY.format(first=tail, last=len(lines))
        body += f'\n<details class="tail" id="tail"><summary>{summary}</summary>\n' + "\n".join(folded) + "\n</details>"
    return page(f"{name}: annotated", '<main class="annotated">\n' + body + "\n</main>")


def readme_table(readme: Path) -> list[dict[str, str]]:
    """Rows of README.md's table between `<!-- scripts-table -->` markers, keyed by lower-case header."""
    text = readme.read_text() if readme.exists() else ""
    match = re.search(r"<!-- scripts-table -->(.*?)<!-- /scripts-table -->", text, re.S)
    if not match:
        return []
    rows = [line.strip().strip("|").split("|") for line in match.group(1).strip().splitlines()]
    header = [cell.strip().lower() for cell in rows[0]]
    table = []
    for cells in rows[2:]:
        row = dict(zip(header, (cell.strip() for cell in cells)))
        found = re.search(r"[\w.-]+\.py", row.get("script", ""))
        if found:
            row["script"] = found.group(0)
            table.append(row)
    return table


def first_line(source: str) -> str:
    doc = module_docstring(source)
    return doc[2].split("\n\n")[0].replace("\n", " ") if doc else ""


def index_page(entries: list[dict], figures: bool = False) -> str:
    rows = []
    for e in entries:
        name = f'<a href="{e["page"]}"><code>{e["script"]}</code></a>' if e["page"] else f"<code>{e['script']}</code>"
        if e.get("doc"):
            name += f' (<a href="{e["doc"]}">docs</a>)'
        rows.append(
            f"<tr><td>{name}</td><td>{markdown_to_html(e['lecture'], inline=True)}</td>"
            f"<td>{markdown_to_html(e['summary'], inline=True)}</td><td>{html.escape(e['spaces'])}</td></tr>"
        )
    body = f"""<main class="index">
<h1>{html.escape(TITLE)}</h1>
<p>Each script of the lecture <em>Policy Gradient Methods</em>, annotated: the script's own comments,
with the lecture's math, on the left; the code they explain on the right, every line of the file in order.
Each has a documentation page (usage, logged metrics, implementation details, results): the "docs" links.
Start with the <a href="README.html">README</a>; contributors read <a href="CONTRIBUTING.html">CONTRIBUTING</a>.</p>
<table>
<thead><tr><th>script</th><th>lecture section</th><th>what it is</th><th>action spaces</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{FIGURES_LINK if figures else ""}
</main>"""
    return page(TITLE, body)


# The lecture's claims, measured: docs/lecture_figures.md and docs/figures/, which
# `python benchmarks/lecture_figures.py` writes, become one more page of the site.
FIGURES_MD, FIGURES_HTML = "lecture_figures.md", "lecture_figures.html"
FIGURES_LINK = (
    f'<p><a href="{FIGURES_HTML}">The lecture\'s claims, measured</a>: one figure per slide, each drawn with the '
    "scripts' own functions (finite differences, REINFORCE's variance, the critic's trade-off, PPO's clip, "
    "TRPO's step, importance sampling).</p>"
)


def figures_page(docs: Path, out: Path) -> bool:
    """Write the figures page and its PNGs into `out`, if `docs` has them; say whether it did."""
    source = docs / FIGURES_MD
    if not source.exists():
        return False
    body = f'<main class="index figures">\n{markdown_to_html(source.read_text())}\n</main>'
    (out / FIGURES_HTML).write_text(page("The lecture's claims, measured", body))
    shutil.copytree(docs / "figures", out / "figures", ignore=shutil.ignore_patterns("*.json"))
    return True


# ## Documentation pages: README.md, CONTRIBUTING.md and docs/*.md, in the look of the annotated pages
# Their links are written for GitHub (relative to the Markdown file); on the site, a link to a script opens its
# annotated page, a link to another of these pages its HTML, and any other file of the repository it links to
# (an image, results.md, a test) is copied beside the pages at the same path. A link to a file that does not
# exist stops the build. Headings get GitHub's anchors, so `#results` works in both places.
DOC_ROOT_PAGES = (
    "README.md",
    "CONTRIBUTING.md",
    "benchmarks/results.md",
    "benchmarks/cuda_speed.md",
    "benchmarks/cleanrl_speed.md",
)
LINK = re.compile(r'(?P<attr>href|src)="(?P<url>[^"#]*)(?P<fragment>#[^"]*)?"')
HTML_COMMENT = re.compile(r"^<!--.*?-->[ \t]*\n", re.S | re.M)
HEADING = re.compile(r"<h(?P<level>[1-6])>(?P<inner>.*?)</h(?P=level)>", re.S)


def doc_sources(root: Path) -> list[str]:
    """The Markdown pages the site renders, as paths relative to `root`."""
    pages = [name for name in DOC_ROOT_PAGES if (root / name).exists()]
    return pages + [f"docs/{p.name}" for p in sorted((root / "docs").glob("*.md")) if p.name != FIGURES_MD]


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return f"{slug}-{count}" if count else slug


def with_heading_ids(body: str) -> str:
    seen: dict[str, int] = {}

    def add_id(match: re.Match) -> str:
        text = html.unescape(re.sub(r"<[^>]+>", "", match.group("inner")))
        level = match.group("level")
        return f'<h{level} id="{github_slug(text, seen)}">{match.group("inner")}</h{level}>'

    return HEADING.sub(add_id, body)


def site_path(rel: str, script_names: set[str], docs: set[str]) -> str:
    """Where the repository's file `rel` is on the site."""
    if rel in script_names:
        return rel.removesuffix(".py") + ".html"
    if rel == f"docs/{FIGURES_MD}":
        return FIGURES_HTML
    if rel in docs:
        return rel.removesuffix(".md") + ".html"
    return rel


def rewrite_links(body: str, source: str, root: Path, script_names: set[str], docs: set[str], copies: set[str]):
    """Point the relative links of the page rendered from `source` at their places on the site; collect in `copies`
    the repository files they need there."""
    here = posixpath.dirname(source)
    page_dir = posixpath.dirname(site_path(source, script_names, docs))

    def fix(match: re.Match) -> str:
        url, fragment = html.unescape(match.group("url")), match.group("fragment") or ""
        if not url or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", url) or url.startswith("/"):
            return match.group(0)
        rel = posixpath.normpath(posixpath.join(here, url))
        if rel.startswith("../") or not (root / rel).is_file():
            raise BuildError(f"{source}: the link {url} leads to no file of the repository")
        target = site_path(rel, script_names, docs)
        if target == rel:
            copies.add(rel)
        link = posixpath.relpath(target, page_dir or ".")
        return f'{match.group("attr")}="{html.escape(link)}{fragment}"'

    return LINK.sub(fix, body)


def doc_page(source: str, root: Path, script_names: set[str], docs: set[str], copies: set[str]) -> str:
    text = HTML_COMMENT.sub("", (root / source).read_text())  # marker lines (results.py's), invisible on GitHub too
    body = rewrite_links(with_heading_ids(markdown_to_html(text)), source, root, script_names, docs, copies)
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), source)
    prefix = "../" * source.count("/")
    return page(title, f'<main class="index doc">\n{body}\n</main>', prefix)


# ## KaTeX, from npm
def fetch_katex(dest: Path) -> None:
    """Unpack KaTeX's dist files into `dest` from the pinned npm tarball (npm's cache serves repeats offline)."""
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "npm is needed to bring KaTeX: install Node.js and npm (Debian: apt-get install npm), "
            "or pass --katex DIR with katex.min.js, katex.min.css and fonts/ (Debian: apt-get install libjs-katex, "
            "then --katex /usr/share/javascript/katex)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [npm, "pack", f"katex@{KATEX_VERSION}", "--prefer-offline", "--silent", "--pack-destination", tmp],
            capture_output=True,
            text=True,
        )
        tarballs = list(Path(tmp).glob("katex-*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            raise BuildError(f"npm pack katex@{KATEX_VERSION} failed: {(result.stderr or result.stdout).strip()[:500]}")
        data = tarballs[0].read_bytes()
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if integrity != KATEX_INTEGRITY:
            raise BuildError(f"katex-{KATEX_VERSION}.tgz has integrity {integrity}, expected {KATEX_INTEGRITY}")
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix("package/")
                keep = rel == "LICENSE" or rel.removeprefix("dist/") in KATEX_FILES or rel.startswith("dist/fonts/")
                if member.isfile() and keep:
                    target = dest / rel.removeprefix("dist/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())


def copy_katex(source: Path, dest: Path) -> None:
    missing = [f for f in (*KATEX_FILES, "fonts") if not (source / f).exists()]
    if missing:
        raise BuildError(f"--katex {source}: missing {', '.join(missing)}")
    for f in KATEX_FILES:
        shutil.copy2(source / f, dest / f)
    shutil.copytree(source / "fonts", dest / "fonts", dirs_exist_ok=True)


# ## The build
def scripts(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.py") if p.is_file())


def build(out: Path, root: Path = ROOT, katex: Path | None = None, with_katex: bool = True) -> list[dict]:
    """Write the site to `out` (replaced whole); return the index's entries. The site is written in a temporary
    folder first and replaces `out` only once complete, so a build that fails (no KaTeX, a dead link) leaves `out`
    as it was."""
    if out.exists() and not (out / "index.html").exists() and any(out.iterdir()):
        raise BuildError(f"{out} exists and is not a site this script built; not replacing it")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        if with_katex:
            (site / "katex").mkdir()
            copy_katex(katex, site / "katex") if katex else fetch_katex(site / "katex")
        entries = write_site(site, root)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(site, out)
    return entries


def write_site(out: Path, root: Path) -> list[dict]:
    for asset in ASSETS:
        shutil.copy2(HERE / asset, out / asset)
    from pygments.formatters import HtmlFormatter

    (out / "pygments.css").write_text(HtmlFormatter(style="default").get_style_defs([".code", ".doc pre"]))

    table = {row["script"]: row for row in readme_table(root / "README.md")}
    present = {p.name: p for p in scripts(root)}
    docs = set(doc_sources(root))
    order = list(table) + [name for name in present if name not in table]
    entries = []
    for name in order:
        row = table.get(name, {})
        entry = {"script": name, "lecture": row.get("lecture section", ""), "spaces": row.get("action spaces", "")}
        entry.update(page=None, summary="(not written yet)", doc=None)
        doc = f"docs/{name.removesuffix('.py')}.md"
        if doc in docs:
            entry["doc"] = site_path(doc, set(present), docs)
        if name in present:
            source = present[name].read_text()
            entry.update(page=name.removesuffix(".py") + ".html", summary=first_line(source))
            (out / entry["page"]).write_text(script_page(name, source, entry["lecture"] or None, entry["doc"]))
            shutil.copy2(present[name], out / name)
        entries.append(entry)
    copies: set[str] = set()
    for source in sorted(docs):
        target = out / site_path(source, set(present), docs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(doc_page(source, root, set(present), docs, copies))
    for rel in sorted(copies):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, out / rel)
    (out / "index.html").write_text(index_page(entries, figures_page(root / "docs", out)))
    (out / ".nojekyll").touch()  # GitHub Pages from a branch: serve the files as they are
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "_site", help="output folder (default docs/_site)")
    parser.add_argument("--katex", type=Path, help="a KaTeX folder with katex.min.js, katex.min.css, fonts/")
    args = parser.parse_args()
    try:
        entries = build(args.out, katex=args.katex)
    except BuildError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, even with npm's output in it
        sys.exit(2)
    pages = sum(1 for e in entries if e["page"])
    print(f"{pages} pages and index.html in {args.out} (open {args.out / 'index.html'})")


if __name__ == "__main__":
    main()
