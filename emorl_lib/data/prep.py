"""Data preparation: corpus roots -> 16 kHz mono wav cache -> manifests + reports (the `data` section).

`prepare(profile)` is what the CLI (`emorl prepare`) and notebook 01 call. Per corpus it runs the loader,
decodes every kept clip once into `cache/audio16k/<corpus>-<root hash>/<utt_id>.wav` (in parallel, reusing
up-to-date copies), drops and lists clips that are undecodable, empty, silent or non-finite, and writes
`runs/<profile>/manifests/<corpus>.jsonl` (schema: emorl_lib/manifest.py), `<corpus>.report.json`, the
track-2 cross-corpus manifests, and `prepare_report.{json,txt}`. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..infra import progress as where
from ..infra.config import ConfigError, setting, to_dict
from ..infra.determinism import RuntimeConfig, apply_runtime
from ..infra.io import atomic_write_text, file_lock, write_jsonl
from ..infra.log import get_logger
from ..infra.parallel import imap_progress
from ..infra.paths import Paths
from . import sizes
from .audio import CacheResult, cache_clip
from .corpora import CORPORA
from .corpora import load as load_corpus
from .corpora.crosscorpus import (
    ATTRIBUTION,
    MELD_TIE_ORDER,
    CrossReport,
    track2_entries,
    write_crosscorpus,
)
from .corpora.report import CorpusReport, compare_official, format_table, summary_rows
from .corpora.splits import MELD_SPLITS
from .manifest import Utterance, read_manifest

log = get_logger(__name__)


@dataclass
class DataConfig:
    """The `data` section of a profile."""

    synthetic: bool = True          # generate synthetic corpora under cache/synthetic and use them as roots
    synthetic_seed: int = 0
    # size knob of the generator: one number for every corpus, or {corpus: size} (corpora not named: 1.0)
    synthetic_size: float | dict[str, float] = 1.0
    corpora: list[str] = field(default_factory=lambda: list(CORPORA))
    roots: dict[str, str | None] = field(default_factory=dict)  # real corpus roots (synthetic: false)
    workers: int = setting(2, "kit", "processes decoding/resampling into the cache", observes=True)
    silence_peak: float = 1e-4      # a clip whose peak |sample| is below this (-80 dBFS) counts as silent
    allow_partial: bool = setting(False, "kit", "go on when real corpora miss official counts or leave track-2 "
                                  "entries unresolved (a corpus known to be partial); off: `emorl prepare` exits 3 "
                                  "and notebook 01 stops")
    meld_tie_order: list[str] = setting(list(MELD_TIE_ORDER), "kit", "the split a MELD track-2 entry is taken from "
                                        "when its label and speaker match in several (2 real entries); which one "
                                        "EmoBox drew them from is not known")
    heldout_fraction: float = setting(0.0, "kit", "held-out TRAINING data for choosing settings and learning "
                                      "curves where a corpus has no dev split: this class-stratified share of a "
                                      "fold's training side, left out of training (MELD: its dev split); 0: none")
    heldout_seed: int = setting(0, "kit", "which utterances the held-out slice holds")

    RENAMED: ClassVar[dict[str, str]] = {"validation_fraction": "heldout_fraction",
                                         "validation_seed": "heldout_seed"}

    def __post_init__(self) -> None:
        unknown = [c for c in self.corpora if c not in CORPORA]
        if unknown:
            raise ValueError(f"corpora: unknown {unknown}; known: {list(CORPORA)}")
        bad_roots = [c for c in self.roots if c not in CORPORA]
        if bad_roots:
            raise ValueError(f"roots: unknown corpus {bad_roots}; known: {list(CORPORA)}")
        self.synthetic_size = sizes.canonical(self.synthetic_size, CORPORA, "synthetic_size")
        if self.workers < 1 or self.silence_peak < 0:
            raise ValueError(f"need workers >= 1 and silence_peak >= 0; got {self.workers}, {self.silence_peak}")
        if sorted(self.meld_tie_order) != sorted(MELD_SPLITS):
            raise ValueError(f"meld_tie_order: expected an order of {list(MELD_SPLITS)}, got {self.meld_tie_order}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), not {self.heldout_fraction}")

    def size_of(self, corpus: str) -> float:
        """The synthetic size `corpus` is generated at (the one place a caller asks it)."""
        return sizes.size_of(self.synthetic_size, corpus)

    def size_setting(self, corpus: str) -> str:
        """The setting that gives `corpus` its size, for messages: data.synthetic_size[.corpus]."""
        return "data.synthetic_size" + (f".{corpus}" if isinstance(self.synthetic_size, dict) else "")

    def synthetic_folder(self, corpus: str) -> str:
        """Folder (under cache/synthetic) of `corpus`'s generated tree: one per (seed, size of that corpus), so trees
        of different sizes never overwrite each other, the 16 kHz cache (one folder per root) never serves a clip of
        another size under the same name, and profiles that give a corpus the same size share its tree. A number
        gives every corpus the folder it always had (seed{seed}-size{size:g})."""
        return f"seed{self.synthetic_seed}-size{self.size_of(corpus):g}"


@dataclass
class DataSetup:
    """What data preparation reads (built from a profile by `profile.data_setup`)."""

    data: DataConfig
    paths: Paths
    runtime: RuntimeConfig
    window_s: float  # the model's audio window: longer clips are kept but counted and listed
    profile: str = ""


class DataIncomplete(ValueError):
    """Real corpora that miss official counts or leave cross-corpus entries unresolved (data.allow_partial off)."""


@dataclass
class Prepared:
    """What `prepare` wrote, and the reports it wrote them with."""

    paths: Paths
    cfg: DataConfig
    roots: dict[str, Path]
    manifests: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, CorpusReport] = field(default_factory=dict)
    crosscorpus: dict[str, Path] = field(default_factory=dict)
    cross_reports: dict[str, CrossReport] = field(default_factory=dict)
    report_txt: Path | None = None

    def table(self) -> str:
        lines = [format_table(list(self.reports.values()))]
        if self.cross_reports:
            lines.append("cross-corpus test sets:")
            lines += [f"  {r.summary()}" for r in self.cross_reports.values()]
            for r in self.cross_reports.values():
                for a in r.ambiguous:
                    lines.append(f"  {r.corpus}: {a['entry']} ({a['speaker']}) matches {', '.join(a['candidates'])}:"
                                 f" took {a['chosen']} (settled by {a['settled_by']})")
        return "\n".join(lines) + "\n"

    def problems(self) -> list[str]:
        """What makes this preparation incomplete: official counts missed, track-2 entries unresolved (entries a
        synthetic corpus leaves out by design are not problems)."""
        out = []
        for c, r in self.reports.items():
            if r.official_mismatches:
                more = ", ..." if len(r.official_mismatches) > 1 else ""
                out.append(f"{c}: kept clips do not match the official counts ({len(r.official_mismatches)} "
                           f"difference(s): {r.official_mismatches[0]}{more})")
        for c, r in self.cross_reports.items():
            if r.unresolved:
                out.append(f"{c}: {len(r.unresolved)} of {r.entries} track-2 entries unresolved "
                           f"(listed in crosscorpus_{c}.report.json)")
        return out

    def utterances(self):
        """Every manifest row as a DataFrame, with `part`: MELD's split, else the leave-one-out fold."""
        import numpy as np
        import pandas as pd

        df = pd.DataFrame([u.__dict__ for c in self.manifests for u in read_manifest(self.manifests[c])])
        df["part"] = np.where(df.split.notna(), df.split, "fold " + df.fold.astype("Int64").astype(str))
        return df

    def tables(self) -> dict:
        """The data tables notebook 01 writes (name -> DataFrame): per corpus what was found, kept and skipped;
        skips by reason; utterances per corpus, part and label; the cross-corpus sets' resolution."""
        import pandas as pd

        summary = pd.DataFrame(summary_rows(list(self.reports.values()))).fillna(0)
        by_reason = pd.DataFrame([{"corpus": c, "reason": r, "count": n}
                                  for c, rep in self.reports.items() for r, n in rep.counts().items()],
                                 columns=["corpus", "reason", "count"])
        counts = self.utterances().groupby(["corpus", "part", "label"]).size().rename("n").reset_index()
        cross = pd.DataFrame([{"corpus": c, "entries": r.entries, "resolved": r.resolved,
                               "not_generated_by_design": len(r.not_generated), "unresolved": len(r.unresolved),
                               "ambiguous": len(r.ambiguous), **{f"from_{k}": v for k, v in r.by_split.items()}}
                              for c, r in self.cross_reports.items()])
        return {"data_summary": summary, "data_skipped_by_reason": by_reason, "data_class_counts": counts,
                "data_crosscorpus": cross}

    def notes(self, max_unresolved: int = 5) -> list[str]:
        """What a reader should know about the data, in lines: official counts checked, cross-corpus entries left
        out by design, ambiguous and unresolved."""
        out = [f"{c} official counts: " + ("match" if not rep.official_mismatches else str(rep.official_mismatches))
               for c, rep in self.reports.items() if rep.official_checked]
        for c, r in self.cross_reports.items():
            if r.not_generated:
                out.append(f"{c}: {len(r.not_generated)} of {r.entries} cross-corpus entries are not in the synthetic "
                           f"corpus, BY DESIGN ({self.cfg.size_setting(c)} {self.cfg.size_of(c)} writes part of "
                           "each list; 2.0 writes all): expected")
            out += [f"{c}: {a['entry']} ({a['speaker']}) matches {', '.join(a['candidates'])}: took {a['chosen']} "
                    f"(settled by {a['settled_by']})" for a in r.ambiguous]
            out += [f"{c}: UNRESOLVED {u['entry']}: {u['reason']}" for u in r.unresolved[:max_unresolved]]
            if len(r.unresolved) > max_unresolved:
                out.append(f"{c}: ... {len(r.unresolved) - max_unresolved} more unresolved "
                           f"(crosscorpus_{c}.report.json)")
        return out

    def check(self) -> None:
        """Raise DataIncomplete listing every problem, unless data.allow_partial is set."""
        bad = self.problems()
        if bad and not self.cfg.allow_partial:
            raise DataIncomplete("data incomplete:\n  " + "\n  ".join(bad) + "\nfix the corpus roots, or set "
                                 "data.allow_partial: true (emorl prepare --allow-partial) for a known partial corpus")


def cache_dir(paths: Paths, corpus: str, root: Path) -> Path:
    """One cache folder per (corpus, root): a synthetic and a real corpus never share cached clips."""
    h = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return paths.audio16k / f"{corpus}-{h}"


def build_cache(jobs: list[tuple[str, str, str, float]], workers: int, desc: str = "decode",
                progress: bool = True) -> list[CacheResult]:
    """Run `audio.cache_clip` over jobs (key, source, target, silence_peak), in `workers` processes."""
    return imap_progress(cache_clip, jobs, workers, desc, "clip", progress)


def cache_candidates(cands: list[Utterance], report: CorpusReport, target_dir: Path, cfg: DataConfig,
                     progress: bool = True) -> list[Utterance]:
    """Decode candidates into `target_dir` (reusing fresh copies) and return manifest rows for the usable ones;
    unusable clips move from kept to skipped in `report`, each listed with the reason.

    One process at a time per cache folder (a lock): another one preparing the same corpus waits, then reuses the
    clips (without the lock, its clean-up of temp files would delete the first one's clips in flight)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(target_dir.parent / f".{target_dir.name}.lock"):  # beside the folder, not among its clips
        return _cache_candidates_locked(cands, report, target_dir, cfg, progress)


def _cache_candidates_locked(cands: list[Utterance], report: CorpusReport, target_dir: Path, cfg: DataConfig,
                             progress: bool) -> list[Utterance]:
    for stale in target_dir.glob(".*.tmp"):  # left by a killed worker; never mistaken for a clip
        stale.unlink(missing_ok=True)
    jobs = [(c.utt_id, c.source, str(target_dir / f"{c.utt_id}.wav"), cfg.silence_peak) for c in cands]
    fresh, todo = [], []
    for j in jobs:
        dst, src = Path(j[2]), Path(j[1])
        try:
            up_to_date = dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime
        except OSError:
            up_to_date = False
        (fresh if up_to_date else todo).append(j)
    results = [cache_clip(j) for j in fresh]  # cheap: reads the wav header only
    results += build_cache(todo, cfg.workers, desc=f"{report.corpus}: decode to 16 kHz", progress=progress)
    by_key = {r.key: r for r in results}
    rows: list[Utterance] = []
    for c in cands:
        r = by_key[c.utt_id]
        if r.reason:
            report.drop(r.reason, f"{c.utt_id}: {r.detail or c.source}")
            continue
        report.reused += r.reused
        report.decoded += not r.reused
        rows.append(c.with_audio((target_dir / f"{c.utt_id}.wav").resolve(), r.duration))
    return rows


def prepare_corpus(corpus: str, root: str | Path, paths: Paths, cfg: DataConfig, check_official: bool,
                   progress: bool = True, window_s: float | None = None, force: bool = False
                   ) -> tuple[list[Utterance], CorpusReport]:
    """Load one corpus, build its cache (`force`: decode every clip again), write its manifest and report; returns
    the rows and report.
    `window_s`: the model's audio window; longer clips are kept but counted and listed (the model hears only
    their first `window_s` seconds)."""
    cands, report = load_corpus(corpus, root)
    if force:
        import shutil

        shutil.rmtree(cache_dir(paths, corpus, Path(report.root)), ignore_errors=True)
    rows = cache_candidates(cands, report, cache_dir(paths, corpus, Path(report.root)), cfg, progress)
    if window_s is not None:
        report.window_seconds = window_s
        report.longer_than_window = [f"{u.utt_id} ({u.duration:.1f} s)" for u in rows
                                     if u.duration is not None and u.duration > window_s]
        if report.longer_than_window:
            log.warning("%s: %d clip(s) longer than the model's %g s audio window: only their first %g s is heard "
                        "(listed in %s.report.json)", corpus, len(report.longer_than_window), window_s, window_s,
                        corpus)
    if check_official:
        report.official_checked = True
        report.official_mismatches = compare_official(corpus, rows)
        if report.official_mismatches:
            msg = "\n".join(f"!!! {m}" for m in report.official_mismatches)
            log.warning("!!! %s: kept clips do not match the official counts (corpora/report.py, OFFICIAL_COUNTS):\n%s",
                        corpus, msg)
    write_jsonl(paths.manifests / f"{corpus}.jsonl", rows)
    report.write(paths.manifests / f"{corpus}.report.json")
    return rows, report


def _not_generated(cfg: DataConfig, corpus: str) -> set[str] | None:
    """Track-2 entries a synthetic corpus of this size leaves out by design (None for real corpora)."""
    if not cfg.synthetic:
        return None
    from .synthetic import track2_included

    return ({e["wav_filename"] for e in track2_entries(corpus)}
            - {e["wav_filename"] for e in track2_included(corpus, cfg.size_of(corpus))})


def resolve_roots(cfg: DataConfig, paths: Paths, force: bool = False) -> dict[str, Path]:
    """Corpus roots: freshly generated synthetic trees (`force`: written again), or the real roots of the profile."""
    if cfg.synthetic:
        from .synthetic import generate

        return {c: Path(generate(c, paths.synthetic / cfg.synthetic_folder(c), seed=cfg.synthetic_seed,
                                 size=cfg.size_of(c), force=force)) for c in cfg.corpora}
    missing = [c for c in cfg.corpora if not cfg.roots.get(c)]
    if missing:
        raise ConfigError(f"data.roots has no root for {missing} (synthetic: false needs the real corpus folders; "
                          f"set data.roots.<corpus> in the profile or pass --corpus/--root)")
    return {c: Path(str(cfg.roots[c])).expanduser() for c in cfg.corpora}


def prepare(setup: DataSetup, progress: bool = True, force: bool = False) -> Prepared:
    """Build caches, manifests, reports and cross-corpus manifests for the profile's corpora (`force`: synthetic
    corpora and the 16 kHz cache are made again, not reused)."""
    cfg, window_s = setup.data, setup.window_s
    apply_runtime(setup.runtime, log)
    paths = setup.paths.ensure()
    if cfg.synthetic:
        where.at("while generating the synthetic corpora",
                 "run the same command again: a corpus generated completely is kept, a half-written one is redone")
    out = Prepared(paths=paths, cfg=cfg, roots=resolve_roots(cfg, paths, force))
    all_rows: dict[str, list[Utterance]] = {}
    for i, corpus in enumerate(cfg.corpora, 1):
        where.at(f"while preparing {corpus} (corpus {i} of {len(cfg.corpora)})",
                 "run the same command again: clips already decoded into the cache are reused")
        rows, rep = prepare_corpus(corpus, out.roots[corpus], paths, cfg, check_official=not cfg.synthetic,
                                   progress=progress, window_s=window_s, force=force)
        all_rows[corpus] = rows
        out.manifests[corpus] = paths.manifests / f"{corpus}.jsonl"
        out.reports[corpus] = rep
        out.crosscorpus[corpus], out.cross_reports[corpus] = write_crosscorpus(
            corpus, rows, paths.manifests, not_generated=_not_generated(cfg, corpus),
            tie_order=cfg.meld_tie_order)
    summary = {
        "profile": setup.profile, "data": to_dict(cfg), "roots": {c: str(r) for c, r in out.roots.items()},
        "corpora": {c: r.to_dict() for c, r in out.reports.items()},
        "crosscorpus": {c: r.to_dict() for c, r in out.cross_reports.items()},
        "crosscorpus_attribution": ATTRIBUTION,
        "audio_window_seconds": window_s,
        "problems": out.problems(),
    }
    atomic_write_text(paths.manifests / "prepare_report.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    out.report_txt = paths.manifests / "prepare_report.txt"
    atomic_write_text(out.report_txt, out.table())
    return out
