"""Files the kit writes: atomically (a temp file or folder, then a rename), so an interrupt never leaves a half-written
file or folder that looks finished, and jsonl/CSV in one shape everywhere.

Every writer of the kit goes through here: manifests, predictions, logs, tables, the wav cache, adapters, the tiny
model, the synthetic corpora.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

# What the kit writes is for the user to read and share: 0644 files / 0755 folders (subject to the umask), not the
# 0600 / 0700 that mkstemp / mkdtemp give.
_FILE_MODE = 0o666
_DIR_MODE = 0o777


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kw: Any) -> Iterator[IO]:
    """Open a temp file beside `path`; on a clean exit it replaces `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if "b" not in mode:
        open_kw.setdefault("encoding", "utf-8")
    try:
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
        os.chmod(tmp, _FILE_MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path) as f:
        f.write(text)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temp folder beside `path` to fill; on a clean exit it becomes `path`.

    `replace=False` keeps an existing `path` (another process finished first: its copy is as good as ours)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, _DIR_MODE & ~_umask())
    try:
        yield tmp
        if path.exists():
            if not replace:
                shutil.rmtree(tmp)
                return
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "x")  # moved aside, then removed: `path` is never half-deleted
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if replace or not path.exists():
                raise
            shutil.rmtree(tmp)  # another process put its (equal) copy there between our check and our rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: str | Path, shared: bool = False) -> Iterator[None]:
    """An advisory lock between processes (flock on `path`, created if missing): a cache that several processes may
    build at once (the tiny model, synthetic corpora, the wav cache, numba's) is built by one while the others wait,
    then found complete. Released when the block ends or the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock (the kit's scripts need a POSIX shell anyway)
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _json_line(row: Any) -> str:
    if hasattr(row, "to_json"):
        return row.to_json()
    return json.dumps(row, ensure_ascii=False, default=str)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """One JSON object per line (objects with `to_json`, such as manifest rows, write themselves)."""
    return atomic_write_text(path, "".join(_json_line(r) + "\n" for r in rows))


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Add lines to a jsonl file and flush them to disk: resumable work (predictions, sampled completions) appends as
    it goes. A line cut by a kill is dropped by `read_jsonl(..., tolerate_partial_last=True)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(_json_line(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def repair_jsonl_tail(path: str | Path) -> None:
    """Drop a torn last line (an append cut by a kill), so the next append starts on a clean line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | Path, tolerate_partial_last: bool = False) -> Iterator[dict]:
    """Rows of a jsonl file; a malformed line is an error naming the file and line (except, when asked, a last line
    without its newline: the trace of an interrupted append)."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            yield json.loads(text)
        except json.JSONDecodeError as e:
            if tolerate_partial_last and n == len(lines) and not line.endswith("\n"):
                return
            raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """CSV of dict rows; without `columns`, every key in order of first appearance (rows may differ in keys)."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns or ["empty"], restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    return atomic_write_text(path, csv_text(rows, columns))


def write_frame(path: str | Path, frame, index: bool = False) -> Path:
    """A pandas DataFrame as CSV, atomically (every table the notebooks write goes through here)."""
    return atomic_write_text(path, frame.to_csv(index=index))


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_csv_until(path: str | Path, step: int) -> list[dict[str, str]]:
    """The rows of a per-step CSV log up to and including `step` ([] when there is none): what a run resumed at
    `step` keeps of the log its interrupted attempt wrote (the later rows are computed again)."""
    path = Path(path)
    if not path.exists():
        return []
    return [r for r in read_csv(path) if r.get("step") and int(float(r["step"])) <= step]


def append_csv(path: str | Path, row: dict[str, Any]) -> Path:
    """Add a row to a CSV whose columns grow as new keys appear (old rows keep theirs): an atomic rewrite."""
    path = Path(path)
    rows: list[dict[str, Any]] = read_csv(path) if path.exists() else []
    return write_csv(path, rows + [row])
