"""The notebooks read like a paper's companion: each opens with its title and purpose, then its papermill
`parameters` cell, then the shared setup cell; a markdown paragraph says what each later code step does and why;
they call the library's public functions only and save figures through `figures.save`."""

from __future__ import annotations

import re

import nbformat
import pytest

from emorl_lib.infra.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def test_there_are_six_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_title_and_purpose_then_parameters_then_setup(path):
    cells = _cells(path)
    title = cells[0]
    assert title.cell_type == "markdown", f"{path.name}: the first cell must be the title, not code"
    first, *rest = title.source.split("\n")
    assert re.fullmatch(rf"# {path.name[:2]} · \S.*", first), f"{path.name}: title line {first!r}"
    purpose = " ".join(rest).strip()
    assert len(purpose.split()) >= 40, f"{path.name}: the title needs a paragraph saying what the notebook does"
    assert cells[1].cell_type == "code" and "parameters" in cells[1].metadata.get("tags", []), \
        f"{path.name}: the second cell must be the papermill parameters cell"
    assert re.search(r"^profile\s*=", cells[1].source, re.M)
    assert cells[2].cell_type == "code" and cells[2].source.startswith("# Setup:"), \
        f"{path.name}: the third cell must be the setup cell (scripts/sync_notebooks.py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_step_is_explained(path):
    cells = _cells(path)
    for i, c in enumerate(cells[3:], start=3):
        if c.cell_type != "code":
            continue
        before = cells[i - 1]
        assert before.cell_type == "markdown" and len(before.source.split()) >= 12, \
            f"{path.name} cell {i}: a code step without a paragraph before it saying what it does and why"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_public_library_calls_only_and_figures_through_the_library(path):
    for i, c in enumerate(_cells(path)):
        if c.cell_type != "code" or c.source.startswith("# Setup:"):
            continue
        assert "__import__(" not in c.source, f"{path.name} cell {i}: import at the top instead"
        private = re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\._[A-Za-z]\w*", c.source)
        assert not private, f"{path.name} cell {i}: private name(s) {private}: make them public in the library"
        assert ".savefig(" not in c.source, f"{path.name} cell {i}: save figures with figures.save"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_reads_cleanly_to_papermill(path):
    """papermill warns at every run about a parameter line with more than one `=` (a comment saying `x = y`)."""
    params = next(c for c in _cells(path) if "parameters" in c.metadata.get("tags", []))
    assert not [line for line in params.source.splitlines() if line.count("=") > 1]


HTML = sorted((REPO_ROOT / "results" / "default" / "notebooks").glob("[0-9][0-9]_*.html"))


def stderr_lines(html_text: str) -> list[str]:
    """The lines a reader sees in an HTML copy's red stderr boxes."""
    import html

    blocks = re.findall(r'data-mime-type="application/vnd\.jupyter\.stderr"[^>]*>(.*?)</div>', html_text, re.S)
    return [line for b in blocks for line in html.unescape(re.sub(r"<[^>]+>", "", b)).splitlines() if line.strip()]


@pytest.mark.parametrize("path", HTML, ids=lambda p: p.stem)
def test_the_committed_html_copies_read_as_a_companion_not_a_log(path):
    text = path.read_text(encoding="utf-8")
    err = stderr_lines(text)
    assert len(err) <= 5, f"{path.name}: {len(err)} stderr lines, e.g. {err[:3]}"
    assert not re.search(r"\{&#x27;(loss|reward|train_runtime)&#x27;|\{'(loss|reward|train_runtime)'", text), \
        f"{path.name}: a raw training log dict"
    assert "Warning:" not in "\n".join(err), f"{path.name}: a warning wall"


def test_the_stderr_counter_would_see_a_warning_wall():
    box = ('<div class="jp-RenderedText" data-mime-type="application/vnd.jupyter.stderr"><pre>'
           + "\n".join(f"UserWarning: w{i}" for i in range(8)) + "</pre></div>")
    assert len(stderr_lines(box)) == 8
