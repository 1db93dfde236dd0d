"""Transcript clean-up: MELD's CSVs mix UTF-8, cp1252 bytes read as Latin-1 (U+0092 for an apostrophe) and
double-encoded UTF-8 ("â€™"). Prompts should see one plain spelling."""

from __future__ import annotations

import re
from pathlib import Path

_C1 = re.compile("[\u0080-\u009f]")
_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00e2][\u0080-\u00bf\u20ac\u2122\u0153\u201c\u201d\u2018\u2019]")
_PLAIN = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u00a0": " ",
}


def _undo_double_utf8(s: str) -> str:
    """'â€™' -> '’' where the text is UTF-8 that was decoded as cp1252/Latin-1 once too often."""
    for enc in ("cp1252", "latin-1"):
        try:
            fixed = s.encode(enc).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        return fixed
    return s


def _c1_to_cp1252(m: re.Match) -> str:
    try:
        return m.group(0).encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:
        return ""


def clean_text(s: str | None) -> str | None:
    if s is None:
        return None
    if _MOJIBAKE_HINT.search(s):
        s = _undo_double_utf8(s)
    s = _C1.sub(_c1_to_cp1252, s)
    for k, v in _PLAIN.items():
        s = s.replace(k, v)
    return " ".join(s.split())


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), falling back to cp1252: the encodings these corpora's text files come in."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")
