"""What a loader found, kept and skipped (and why): every dropped item is named, never silently lost."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ...infra.io import atomic_write_text


class LayoutError(ValueError):
    """A corpus root that does not hold the expected layout; the message names what was expected and found."""


def listing(path: Path, limit: int = 12) -> str:
    """A short 'found: a, b, c' listing of a folder, for layout errors."""
    path = Path(path)
    if not path.exists():
        return "the folder does not exist"
    if not path.is_dir():
        return "it is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not names:
        return "found: nothing (empty folder)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "found: " + ", ".join(names[:limit]) + more


@dataclass
class CorpusReport:
    """Counts for one corpus. Invariant: found == kept + sum of skipped lists."""

    corpus: str
    root: str
    found: int = 0
    kept: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    official_checked: bool = False
    official_mismatches: list[str] = field(default_factory=list)
    reused: int = 0
    decoded: int = 0
    # Kept clips longer than the model's audio window (the feature extractor cuts them): "utt_id (N.N s)".
    window_seconds: float | None = None
    longer_than_window: list[str] = field(default_factory=list)

    def skip(self, reason: str, item: str) -> None:
        """An item seen but not kept (counts towards `found`)."""
        self.found += 1
        self.skipped.setdefault(reason, []).append(item)

    def keep(self, n: int = 1) -> None:
        self.found += n
        self.kept += n

    def drop(self, reason: str, item: str) -> None:
        """A kept item that turned out unusable later (e.g. its audio does not decode)."""
        self.kept -= 1
        self.skipped.setdefault(reason, []).append(item)

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.skipped.items())}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped_counts"] = self.counts()
        return d

    def write(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return Path(path)


def summary_rows(reports: list[CorpusReport]) -> list[dict]:
    """One flat dict per corpus: found, kept, skipped, one column per skip reason (for a table)."""
    reasons = sorted({r for rep in reports for r in rep.skipped})
    rows = []
    for rep in reports:
        row = {"corpus": rep.corpus, "found": rep.found, "kept": rep.kept, "skipped": rep.n_skipped,
               "longer_than_window": len(rep.longer_than_window)}
        row.update({r: len(rep.skipped.get(r, [])) for r in reasons})
        row["official"] = ("match" if not rep.official_mismatches else "MISMATCH") if rep.official_checked else "n/a"
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> list[str]:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    return out + ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]


def format_table(reports: list[CorpusReport], max_listed: int = 20) -> str:
    """Human-readable summary: counts per corpus, skips per (corpus, reason), then each skipped item."""
    if not reports:
        return "(no corpora)\n"
    main = [{k: r[k] for k in ("corpus", "found", "kept", "skipped", "longer_than_window", "official")}
            for r in summary_rows(reports)]
    out = _table(main)
    by_reason = [{"corpus": rep.corpus, "skip reason": reason, "count": n}
                 for rep in reports for reason, n in rep.counts().items()]
    if by_reason:
        out += [""] + _table(by_reason)
    for rep in reports:
        out.append("")
        out.append(f"[{rep.corpus}] root {rep.root}: found {rep.found}, kept {rep.kept}, skipped {rep.n_skipped}"
                   f" (cache: {rep.decoded} decoded, {rep.reused} reused)")
        for note in rep.notes:
            out.append(f"  note: {note}")
        for reason, items in sorted(rep.skipped.items()):
            out.append(f"  skipped, {reason}: {len(items)}")
            for it in items[:max_listed]:
                out.append(f"    {it}")
            if len(items) > max_listed:
                out.append(f"    ... {len(items) - max_listed} more (full list in the json report)")
        if rep.window_seconds is not None:
            out.append(f"  kept, longer than the model's {rep.window_seconds:g} s audio window (only the first "
                       f"{rep.window_seconds:g} s is heard): {len(rep.longer_than_window)}")
            for it in rep.longer_than_window[:max_listed]:
                out.append(f"    {it}")
            if len(rep.longer_than_window) > max_listed:
                out.append(f"    ... {len(rep.longer_than_window) - max_listed} more (full list in the json report)")
        if rep.official_checked:
            if rep.official_mismatches:
                out.append("  !!! OFFICIAL COUNTS DO NOT MATCH:")
                out += [f"  !!!   {m}" for m in rep.official_mismatches]
            else:
                out.append("  official counts: match")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Official counts of the real corpora (EmoBox's tables and the corpora's own papers) and the check a real-data
# run is held to. Synthetic corpora do not have these counts, so the check runs only when the roots are real corpora.
# ----------------------------------------------------------------------------------------------------------------
# Each entry: a grouping of the kept manifest rows and the count expected for each group.
OFFICIAL_COUNTS: dict[str, dict[str, dict]] = {
    "iemocap": {
        "total": {"all": 5531},
        "native_label": {"neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041, "hap": 595},
        "fold": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
        "speakers": {"all": 10},
    },
    "meld": {
        "split": {"train": 9988, "dev": 1108, "test": 2610},
        "test_label": {"neutral": 1256, "joy": 402, "anger": 345, "surprise": 281, "sadness": 208,
                       "disgust": 68, "fear": 50},
    },
    "ravdess": {
        "total": {"all": 1440},
        "native_label": {"01": 96, **{f"{e:02d}": 192 for e in range(2, 9)}},
        "speakers": {"all": 24},
    },
    "savee": {
        "total": {"all": 480},
        "native_label": {"n": 120, "a": 60, "d": 60, "f": 60, "h": 60, "sa": 60, "su": 60},
        "speakers": {"all": 4},
    },
}

# MELD's CSVs hold one more row than is usable in train (dia125_utt3 does not decode) and dev (dia110_utt7 is
# missing); the loader's `found` is compared with these.
MELD_CSV_ROWS: dict[str, int] = {"train": 9989, "dev": 1109, "test": 2610}


def _get(row, key):
    return row[key] if isinstance(row, dict) else getattr(row, key)


def observed_counts(corpus: str, rows: Iterable) -> dict[str, dict]:
    rows = list(rows)
    out: dict[str, dict] = {}
    for group in OFFICIAL_COUNTS[corpus]:
        if group == "total":
            out[group] = {"all": len(rows)}
        elif group == "speakers":
            out[group] = {"all": len({_get(r, "speaker") for r in rows})}
        elif group == "test_label":
            out[group] = dict(Counter(_get(r, "native_label") for r in rows if _get(r, "split") == "test"))
        else:
            out[group] = dict(Counter(_get(r, group) for r in rows))
    return out


def compare_official(corpus: str, rows: Iterable) -> list[str]:
    """Every (group, key) whose count differs from the official one, as readable lines; [] when all match."""
    seen = observed_counts(corpus, rows)
    bad = []
    for group, expected in OFFICIAL_COUNTS[corpus].items():
        got = seen.get(group, {})
        for key in sorted(set(expected) | set(got), key=str):
            e, g = expected.get(key, 0), got.get(key, 0)
            if e != g:
                bad.append(f"{corpus} {group}[{key}]: expected {e}, got {g}")
    return bad
