# --- self-contained documentation: the repository cites no file it does not contain ---
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# Paths of material outside the repository that code or docs once cited. Built from parts so that this file does
# not match itself.
OUTSIDE = tuple("".join(p) for p in (("shared", "/reference"), ("..", "/shared"), ("/wo", "rk/"),
                                     ("corpora", "-layouts")))
# A mention of a Markdown page by name: `name.md`, optionally with a folder in front.
MD_NAME = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*)([\w-]+)\.md\b")
# Pages that are the repository's own documentation: a bare mention of one of these names must say `docs/...`.
DOC_NAMES = ("paper", "protocols", "pitfalls", "corpora", "descriptors")
# Markdown files the kit writes at run time or keeps elsewhere in the tree (not documentation pages).
OTHER_MD = {"README", "EMOBOX_TRACK2", "evaluation_report", "main_results"}
# Folders a run writes (git-ignored): a path under them names an output, not a file the repository should hold.
RUN_OUTPUTS = ("results/", "runs/", "cache/")


def problems(rel: str, text: str, root: Path = REPO) -> list[str]:
    """Every reference in one file's text to a file outside the repository, or to a docs page that does not exist.
    `rel` is the file's path relative to the repository root."""
    out = [f"{rel}: mentions {frag!r} (a path outside the repository)" for frag in OUTSIDE if frag in text]
    in_docs = rel.startswith("docs/")
    for m in MD_NAME.finditer(text):
        folder, name = m.group(1), m.group(2)
        if folder.startswith("docs/") or folder == "docs/":
            if not (root / folder / f"{name}.md").is_file():
                out.append(f"{rel}: {m.group(0)} does not exist in the repository")
        elif name in DOC_NAMES:
            # bare `pitfalls.md`: allowed only as a link between docs pages, to a page that exists
            if not (in_docs and not folder and (root / "docs" / f"{name}.md").is_file()):
                out.append(f"{rel}: {m.group(0)} is not a repository path (write docs/{name}.md)")
        elif folder and name not in OTHER_MD and not (root / folder / f"{name}.md").is_file() \
                and not any(ch in folder for ch in "<>*{") and not folder.startswith(RUN_OUTPUTS):
            out.append(f"{rel}: {m.group(0)} does not exist in the repository")
    return out


def repo_text_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (what a clone holds), as text."""
    try:
        names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked archive)
        skip = {".git", ".venv", "cache", "runs", "results", "__pycache__"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    return [REPO / n for n in names if (REPO / n).is_file()]


def test_the_checker_flags_outside_files_and_missing_pages(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "pitfalls.md").write_text("x")
    root = tmp_path
    assert problems("a.py", "see docs/pitfalls.md", root) == []
    assert problems("docs/paper.md", "see [pitfalls](pitfalls.md)", root) == []
    assert len(problems("a.py", "see pitfalls.md", root)) == 1                       # bare name outside docs/
    assert len(problems("a.py", "see docs/protocols.md", root)) == 1                 # page that does not exist
    assert len(problems("docs/x.md", "see [p](protocols.md)", root)) == 1            # sibling that does not exist
    assert len(problems("a.py", f"the layouts ({OUTSIDE[3]}.md)", root)) >= 1
    outside_page = OUTSIDE[1] + OUTSIDE[0].removeprefix("shared") + "/paper.md"  # a page beside the repository
    assert len(problems("a.py", outside_page, root)) >= 2
    assert problems("a.py", "writes results/<profile>/evaluation_report.md", root) == []


def test_no_file_in_the_repository_cites_a_file_outside_it():
    files = repo_text_files()
    assert any(f.name == "README.md" for f in files) and any(f.suffix == ".py" for f in files)
    found = []
    for f in files:
        if f == Path(__file__).resolve():
            continue  # this file's fixtures name outside paths on purpose (test_the_checker_flags_...)
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        found += problems(str(f.relative_to(REPO)), text)
    assert not found, "\n".join(found)


def test_every_docs_page_is_listed_in_the_docs_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert set(DOC_NAMES) == {p.removesuffix(".md") for p in pages}
    assert all(f"({p})" in index for p in pages), pages
