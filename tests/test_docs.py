"""The site (docs/build.py): on the annotated pages every line of every script once and in order, every
comment block beside the code it precedes, every function's and class's docstring in the notes beside its
`def`, line numbers, the bookkeeping tail folded; the documentation pages rendered with their links made to
work; and, in headless Chromium, the two columns side by side, all math typeset offline, images loaded, no
console errors, a screenshot per page."""

import ast
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytest.importorskip("markdown_it", reason="markdown-it-py is not installed: pip install -r requirements-dev.txt")
pytest.importorskip("pygments", reason="pygments is not installed: pip install -r requirements-dev.txt")
from docs.build import build, markdown_to_html, scripts, split_sections  # noqa: E402

SCRIPTS = [p.name for p in scripts(ROOT)]
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
SCREENSHOTS = Path(os.environ.get("DOCS_SCREENSHOTS", ROOT / "docs" / "_screenshots"))
PRAGMA = re.compile(r"\s*#\s*(fmt:|noqa|type:|pragma|ruff:)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built from the repository's scripts, with KaTeX when npm can bring it."""
    out = tmp_path_factory.mktemp("docs") / "_site"
    build(out, with_katex=shutil.which("npm") is not None)
    return out


# ## What a page shows, read back from its HTML
class PageReader(HTMLParser):
    """Sections in page order: notes' line range, notes text (math apart), math sources, code lines."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        role = next((c for c in ("section", "notes", "code", "line", "math", "tail") if c in classes), None)
        if role == "section":
            folded = any(r == "tail" for _, r in self.stack)
            self.sections.append(
                {"notes_range": attrs.get("data-notes"), "text": "", "math": [], "code": [], "folded": folded}
            )
        elif role == "line":
            assert attrs["data-n"] == attrs["id"][1:], attrs  # the line number shown is the line's own
            self.sections[-1]["code"].append([int(attrs["id"][1:]), ""])
        elif role == "math":
            self.sections[-1]["math"].append("")
        self.stack.append((tag, role))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        roles = {role for _, role in self.stack}
        if "line" in roles:
            self.sections[-1]["code"][-1][1] += data
        elif "math" in roles:
            self.sections[-1]["math"][-1] += data
        elif "notes" in roles:
            self.sections[-1]["text"] += data


def read_page(path: Path) -> list[dict]:
    reader = PageReader()
    reader.feed(path.read_text())
    return reader.sections


def comment_blocks(source: str) -> list[tuple[int, int]]:
    """(first, last) line of each run of full-line `#` comments, found by a regex outside multi-line strings."""
    lines = source.splitlines()
    in_string = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            in_string.update(range(node.lineno + 1, node.end_lineno + 1))
    is_comment = [
        n not in in_string and line.lstrip().startswith("#") and not PRAGMA.match(line) and not line.startswith("#!")
        for n, line in enumerate(lines, start=1)
    ]
    blocks = []
    for n, flag in enumerate(is_comment, start=1):
        if flag and (blocks and blocks[-1][1] == n - 1):
            blocks[-1] = (blocks[-1][0], n)
        elif flag:
            blocks.append((n, n))
    return blocks


def docstring_range(source: str) -> tuple[int, int] | None:
    first = ast.parse(source).body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.lineno, first.end_lineno
    return None


def words_and_math(markdown: str) -> tuple[list[str], list[str]]:
    """The words a reader sees (math and link targets removed) and the math sources, in order."""
    math = re.findall(r"\$\$?([^$]+?)\$\$?", markdown)
    text = re.sub(r"\]\([^)]*\)", "]", re.sub(r"\$\$?[^$]+?\$\$?", " ", markdown))
    return re.findall(r"[A-Za-z]{2,}", text), math


def assert_in_order(needles: list[str], haystack: list[str], what: str):
    position = 0
    for needle in needles:
        hits = [i for i in range(position, len(haystack)) if needle in haystack[i]]
        assert hits, f"{what}: {needle!r} missing (or out of order)"
        position = hits[0] + 1


def notes_lines(section: dict) -> list[int]:
    """The lines of the file a section's notes come from: its data-notes, "3-5,9-10"."""
    spans = [tuple(map(int, r.split("-"))) for r in (section["notes_range"] or "").split(",") if r]
    return [n for first, last in spans for n in range(first, last + 1)]


def definition_docstrings(source: str) -> dict[tuple[int, int], int]:
    """{(first, last) line of a function's or class's docstring on lines of its own: the `def`/`class` line}."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node) is not None:
            doc = node.body[0]
            if doc.lineno > node.lineno:
                found[(doc.lineno, doc.end_lineno)] = node.lineno
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_line_appears_once_in_order(site, name):
    """Each line is shown once, as notes or as code; the code column runs in file order, each section covers
    one stretch of the file, and the sections follow each other."""
    source_lines = (ROOT / name).read_text().splitlines()
    sections = read_page(site / (name.removesuffix(".py") + ".html"))
    shown, code_order, previous_end = [], [], 0
    for s in sections:
        for number, text in s["code"]:
            assert text == source_lines[number - 1], f"{name}:{number} shown as {text!r}"
        lines = sorted(notes_lines(s) + [n for n, _ in s["code"]])
        assert lines == list(range(lines[0], lines[-1] + 1)), f"{name}: a section is not one stretch: {lines}"
        assert lines[0] == previous_end + 1, f"{name}: section at line {lines[0]} does not follow {previous_end}"
        previous_end = lines[-1]
        shown += lines
        code_order += [n for n, _ in s["code"]]
    assert sorted(shown) == list(range(1, len(source_lines) + 1)), f"{name}: lines missing or repeated"
    assert code_order == sorted(code_order), f"{name}: the code column is out of order"


@pytest.mark.parametrize("name", SCRIPTS)
def test_notes_are_the_comments_and_docstrings_beside_their_code(site, name):
    source = (ROOT / name).read_text()
    lines = source.splitlines()
    page = read_page(site / (name.removesuffix(".py") + ".html"))
    blocks = comment_blocks(source)
    doc = docstring_range(source)
    definitions = definition_docstrings(source)
    expected = set(blocks) | ({doc} if doc else set()) | set(definitions)
    shown = set()
    for s in page:
        for span in (s["notes_range"] or "").split(","):
            if span:
                shown.add(tuple(map(int, span.split("-"))))
    assert shown == expected, f"{name}: the notes are not exactly the comment blocks and the docstrings"
    holder = {span: s for s in page for span in expected if span[0] in notes_lines(s)}
    if doc:
        words, math = words_and_math(ast.get_docstring(ast.parse(source)))
        assert_in_order(words, re.findall(r"[A-Za-z]{2,}", holder[doc]["text"]), f"{name}: docstring")
        assert_in_order(math, holder[doc]["math"], f"{name}: docstring math")
    for first, last in blocks:
        section = holder[(first, last)]
        code = [n for n, _ in section["code"]]
        assert not code or code[0] == last + 1, f"{name}:{first}: not beside the code after it"
        comment = "\n".join(re.sub(r"^\s*# ?", "", line) for line in lines[first - 1 : last])
        words, math = words_and_math(comment)
        assert_in_order(words, re.findall(r"[A-Za-z]{2,}", section["text"]), f"{name}:{first} notes")
        assert_in_order(math, section["math"], f"{name}:{first} math")
    for (first, last), def_line in definitions.items():
        section = holder[(first, last)]
        assert def_line in [n for n, _ in section["code"]], f"{name}:{first}: docstring not beside its def"
        text = ast.literal_eval("\n".join(lines[first - 1 : last]).strip())
        words, math = words_and_math(text)
        assert_in_order(words, re.findall(r"[A-Za-z]{2,}", section["text"]), f"{name}:{first} docstring")
        assert_in_order(math, section["math"], f"{name}:{first} docstring math")


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_bookkeeping_tail_is_folded(site, name):
    """From `# ## Bookkeeping` on, every section sits in the collapsed <details>; none of the method does."""
    lines = (ROOT / name).read_text().splitlines()
    tail = next(n for n, line in enumerate(lines, start=1) if line.startswith("# ## Bookkeeping"))
    page_html = (site / (name.removesuffix(".py") + ".html")).read_text()
    assert '<details class="tail" id="tail">' in page_html and "<details open" not in page_html
    for s in read_page(site / (name.removesuffix(".py") + ".html")):
        first = min(notes_lines(s) + [n for n, _ in s["code"]])
        assert s["folded"] == (first >= tail), f"{name}: the section at line {first}"


def test_split_sections_keeps_pragmas_strings_and_indented_comments():
    source = '''r"""Doc with $\\hat{A}_t$."""

import os  # trailing comment stays in code

# ## A heading
# $x_1$ explained
x = """
# not a comment: inside a string
"""
# fmt: off
def f():
    # indented block
    return 1
'''
    sections = split_sections(source)
    assert [(s.kind, s.notes_lines, s.code_lines) for s in sections] == [
        ("docstring", [1], [2, 3, 4]),
        ("comment", [5, 6], [7, 8, 9, 10, 11]),
        ("comment", [12], [13]),
    ]
    assert sections[0].notes == ["Doc with $\\hat{A}_t$."]
    assert sections[1].notes == ["## A heading", "$x_1$ explained"]


def test_docstrings_of_functions_and_classes_join_the_notes_beside_their_def():
    source = '''x = 1
# ## The loss
# $L = -\\hat{A}$
@decorator
def loss(a,
         b):
    r"""The clipped loss, $\\min(r A, \\text{clip}(r) A)$."""
    return a
class Agent:
    """Actor and critic."""

    def sample(self):
        r"""Draw $a \\sim \\pi$."""
        return 1

    def mode(self): """stays in the code: on the def line"""
'''
    sections = split_sections(source)
    assert [(s.notes_lines, s.code_lines) for s in sections] == [
        ([], [1]),
        ([2, 3, 7], [4, 5, 6, 8]),  # the comment above, then the docstring; the def and its body as code
        ([10], [9, 11]),
        ([13], [12, 14, 15, 16]),
    ]
    assert sections[1].notes == [
        "## The loss",
        "$L = -\\hat{A}$",
        "",
        "The clipped loss, $\\min(r A, \\text{clip}(r) A)$.",
    ]
    assert sections[3].notes == ["Draw $a \\sim \\pi$."]


def test_markdown_leaves_math_alone():
    out = markdown_to_html(r"a $\hat{A}_t = r_{t+1}$ and _emph_, `$x_1$`, \$5 and $10, $$\sum_i x_i$$")
    assert '<span class="math">\\hat{A}_t = r_{t+1}</span>' in out
    assert "<em>emph</em>" in out and "<code>$x_1$</code>" in out
    assert '<span class="math display">\\sum_i x_i</span>' in out
    assert out.count('class="math') == 2, out
    line = markdown_to_html("so\n$\\delta_t = r_t - V(s_t)$,\nthen")
    assert '<span class="math display">\\delta_t = r_t - V(s_t),</span>' in line


def test_index_links_every_script(site):
    index = (site / "index.html").read_text()
    for name in SCRIPTS:
        page = name.removesuffix(".py") + ".html"
        assert f'href="{page}"' in index and (site / page).exists(), name


FAILING_NPM = "#!/bin/sh\nprintf 'npm ERR! code E404\\nnpm ERR! 404 Not Found: katex\\n' >&2\nexit 1\n"


@pytest.mark.parametrize(
    "npm, before, message",
    [("missing", "nothing", "error: npm is needed"), ("failing", "a site", "error: npm pack katex@")],
)
def test_build_without_katex_is_one_error_line_and_leaves_the_folder_as_it_was(tmp_path, npm, before, message):
    out, bin_dir = tmp_path / "_site", tmp_path / "bin"
    bin_dir.mkdir()
    if npm == "failing":
        (bin_dir / "npm").write_text(FAILING_NPM)
        (bin_dir / "npm").chmod(0o755)
    if before == "a site":
        out.mkdir()
        (out / "index.html").write_text("the site from before")
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    if before == "a site":
        assert [p.name for p in out.iterdir()] == ["index.html"] and "from before" in (out / "index.html").read_text()
    else:
        assert not out.exists(), [str(p) for p in out.rglob("*")]


# ## In a real browser: Chromium driven over its DevTools pipe (no driver, no extra package)
class Chromium:
    def __init__(self, binary: str, profile: Path, log: Path):
        commands_r, self.commands_w = os.pipe()
        self.results_r, results_w = os.pipe()

        def give_pipes():  # Chromium reads commands on fd 3 and writes results on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, results_w)]  # never 3 or 4 themselves
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = ["--headless", "--remote-debugging-pipe", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                 f"--user-data-dir={profile}", "--no-sandbox" if os.geteuid() == 0 else "--enable-sandbox"]  # fmt: skip
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [binary, *flags, "about:blank"], preexec_fn=give_pipes, close_fds=False, stdout=self.log, stderr=self.log
        )
        os.close(commands_r)
        os.close(results_w)
        self.buffer, self.events, self.next_id, self.session = b"", [], 0, None

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.results_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.results_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited; see {self.log.name}")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._message(deadline))

    def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        if self.session is None:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.events = []
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads since the last `open`."""
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                found.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a)) for a in p["args"]))
            elif e.get("method") == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return found

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.commands_w)
        os.close(self.results_r)
        self.log.close()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory, request):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (or set CHROMIUM=/path/to/chrome)")
    if not (site / "katex" / "katex.min.js").exists():
        pytest.skip("npm is not installed, so the site has no KaTeX: apt-get install npm")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\ndocs screenshots: {SCREENSHOTS}")
    tmp = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(CHROMIUM, tmp / "profile", tmp / "chromium.log")
    yield chromium
    chromium.close()


LAYOUT = """(async () => {
  await document.fonts.ready;
  const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, width: r.width}; };
  const shown = [...document.querySelectorAll(".section")].filter((s) => !s.closest("details:not([open])"));
  const rows = shown.map((s) => ({id: s.id, notes: box(s.querySelector(".notes")), code: box(s.querySelector(".code"))}));
  const raw = [...document.querySelectorAll(".notes, main.index td")].map((n) => {
    const copy = n.cloneNode(true);
    copy.querySelectorAll(".katex, code, pre").forEach((k) => k.remove());
    return copy.textContent;
  }).filter((t) => /\\$[^$\\n]+\\$/.test(t));
  // On the docs pages any $ outside code is math that did not come through (a table cell cut at a |, say).
  raw.push(...[...document.querySelectorAll("main.doc p, main.doc li, main.doc td")].map((n) => {
    const copy = n.cloneNode(true);
    copy.querySelectorAll(".katex, code, pre").forEach((k) => k.remove());
    return copy.textContent;
  }).filter((t) => t.includes("$")));
  const fonts = [...document.fonts].filter((f) => f.family.includes("KaTeX"));
  const lines = [...document.querySelectorAll(".line")];
  const numbered = lines.filter((l) => getComputedStyle(l, "::before").content === `"${l.id.slice(1)}"`).length;
  const images = [...document.images].map((i) => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  return {rows, raw, math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll(".math > .katex, .math > .katex-display").length,
    done: document.documentElement.dataset.math, width: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth, lines: lines.length, numbered, images,
    folded: document.querySelectorAll("details.tail:not([open]) .section").length,
    fontsLoaded: fonts.filter((f) => f.status === "loaded").length,
    fontsFailed: fonts.filter((f) => f.status === "error").map((f) => f.family)};
})()"""
ANNOTATED = [n.removesuffix(".py") + ".html" for n in SCRIPTS]
DOC_PAGES = [
    "README.html",
    "CONTRIBUTING.html",
    "benchmarks/results.html",
    *(f"docs/{p.stem}.html" for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "lecture_figures.md"),
]


@pytest.mark.parametrize("page", ["index.html", "lecture_figures.html", *ANNOTATED, *DOC_PAGES])
def test_page_in_chromium(site, browser, page):
    browser.open((site / page).as_uri())
    report = browser.evaluate(LAYOUT)
    browser.screenshot(SCREENSHOTS / page.replace("/", "_").replace(".html", ".png"))
    assert browser.problems() == [], f"{page}: console errors"
    assert report["done"] == "done", f"{page}: math.js did not run"
    assert report["typeset"] == report["math"], f"{page}: {report['math'] - report['typeset']} formulas not typeset"
    assert report["raw"] == [], f"{page}: raw $...$ left after rendering"
    assert report["scrollWidth"] <= report["width"], f"{page}: the page scrolls sideways"
    assert all(image["ok"] for image in report["images"]), f"{page}: images not loaded: {report['images']}"
    if page in DOC_PAGES and page.startswith("docs/"):
        assert report["math"] > 0 and report["fontsLoaded"] > 0 and not report["fontsFailed"], report
        assert report["images"], f"{page}: a docs page shows its learning curves"
    if page not in ANNOTATED:
        return
    assert report["math"] > 0 and report["fontsLoaded"] > 0 and not report["fontsFailed"], report
    assert report["lines"] > 0 and report["numbered"] == report["lines"], f"{page}: lines without their number"
    assert report["folded"] > 0, f"{page}: the bookkeeping is not folded"
    assert len(report["rows"]) > 5
    for row in report["rows"]:
        notes, code = row["notes"], row["code"]
        assert notes["right"] <= code["left"] + 1 and abs(notes["top"] - code["top"]) < 1, f"{page} {row}"
        assert notes["width"] > 400 and code["width"] > 850, f"{page} {row}: a column is squeezed"


def test_chromium_checks_can_fail(site, browser, tmp_path):
    """The checks above see a formula KaTeX rejects, a missing file, and columns that are not side by side."""
    bad = tmp_path / "bad.html"
    bad.write_text((site / "ppo.html").read_text().replace("</main>", '<span class="math">\\frac{a</span></main>'))
    for asset in ("katex", "math.js", "style.css", "pygments.css"):
        (tmp_path / asset).symlink_to(site / asset)
    (tmp_path / "missing.html").write_text(
        '<link rel="stylesheet" href="nowhere.css"><p>$x$ raw</p><img src="nowhere.png">'
        '<main class="doc"><table><tr><td>$a_t</td><td>s_t$</td></tr></table></main>'
    )
    browser.open(bad.as_uri())
    assert any("KaTeX cannot typeset" in p for p in browser.problems())
    browser.open((tmp_path / "missing.html").as_uri())
    assert any("nowhere.css" in p for p in browser.problems())
    report = browser.evaluate(LAYOUT)
    assert report["images"] == [{"src": "nowhere.png", "ok": False}]
    assert report["raw"] == ["$a_t", "s_t$"], report["raw"]  # a formula cut by a table's |
    browser.open((site / "ppo.html").as_uri(), width=700)  # a phone: notes stacked above their code
    rows = browser.evaluate(LAYOUT)["rows"]
    assert all(row["notes"]["right"] > row["code"]["left"] + 1 for row in rows)
