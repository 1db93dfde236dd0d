"""Write the parts every notebook shares from their one source: the setup cell (notebooks/SETUP_CELL.txt) and the
kernel (emorl_lib.infra.kernel). tests/test_environment.py fails while a notebook differs; run this to fix it:
    .venv/bin/python scripts/sync_notebooks.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from emorl_lib.infra.kernel import DISPLAY_NAME, KERNEL_NAME  # noqa: E402

log = logging.getLogger("sync_notebooks")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SETUP_CELL = NOTEBOOKS / "SETUP_CELL.txt"
SETUP_MARK = "# Setup:"  # a setup cell is the code cell that starts with this
KERNELSPEC = {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": "python"}


def numbered_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def setup_cell_source() -> str:
    return SETUP_CELL.read_text().rstrip("\n")


def setup_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(SETUP_MARK)]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = setup_cell_source()
    for path in numbered_notebooks():
        nb = nbformat.read(path, as_version=4)
        cells = setup_cells(nb)
        if len(cells) != 1:
            log.error("%s: expected one setup cell (a code cell starting %r), found %d", path, SETUP_MARK, len(cells))
            return 1
        if cells[0].source == src and dict(nb.metadata.get("kernelspec", {})) == KERNELSPEC:
            continue
        cells[0].source = src
        nb.metadata["kernelspec"] = KERNELSPEC
        nbformat.write(nb, path)
        log.info("%s: updated", path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
