// Typeset every `<span class="math">` of the page with the KaTeX copied beside it (no network).
// A formula KaTeX cannot read stays as its source, in red, and is reported on the console,
// where the tests (tests/test_docs.py) look for it.
document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll(".math")) {
    const tex = el.textContent;
    try {
      katex.render(tex, el, { displayMode: el.classList.contains("display"), throwOnError: true });
    } catch (e) {
      el.classList.add("math-error");
      el.title = e.message;
      console.error(`KaTeX cannot typeset $${tex}$: ${e.message}`);
    }
  }
  document.documentElement.dataset.math = "done";
  // A link to a line of the folded bookkeeping (#L400) unfolds it first.
  const unfold = () => {
    const target = location.hash && document.getElementById(location.hash.slice(1));
    const folded = target && target.closest("details:not([open])");
    if (folded) { folded.open = true; target.scrollIntoView(); }
  };
  window.addEventListener("hashchange", unfold);
  unfold();
});
