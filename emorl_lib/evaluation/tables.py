"""The paper's tables from a ScoreBook: main results, ablations (ESWR on/off; IR/EUR/ESR), cross-corpus transfer,
inference cost; each written as CSV (numbers), Markdown and LaTeX (value [95 % CI]), plus the comparison report.

A cell whose run is missing shows "—" and the table's notes say why; a smoke subset (eval.max_utterances) is
stated in every table. Numbers are percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..data.testsets import crosscorpus_corpora
from ..infra.io import atomic_write_text
from ..method.metrics import METRICS
from ..method.prompts import CONDITIONS
from ..training.experiments import Recipe
from .matrix import ScoreBook, environment

# ----------------------------------------------------------------------------------------------------------------
# The cross-corpus transfer matrix, laid out like EmoBox's Table 5: rows the training corpus, columns the test corpus
# (its balanced 4-class track-2 set); a model is never scored on its own corpus's set, so the diagonal is empty.
# ----------------------------------------------------------------------------------------------------------------
CORPUS_ORDER = ("iemocap", "meld", "ravdess", "savee")
NAMES = {"iemocap": "IEMOCAP", "meld": "MELD", "ravdess": "RAVDESS", "savee": "SAVEE"}


def ordered(corpora) -> list[str]:
    known = [c for c in CORPUS_ORDER if c in corpora]
    return known + sorted(c for c in corpora if c not in CORPUS_ORDER)


def transfer_matrix(cells: Mapping[tuple[str, str], float], train: list[str], test: list[str]) -> pd.DataFrame:
    """DataFrame (index train corpus, columns test corpus) of `cells[(train, test)]`; NaN where a pair is missing
    and on the diagonal (not scored by protocol)."""
    train, test = ordered(train), ordered(test)
    m = pd.DataFrame(np.nan, index=pd.Index(train, name="train"), columns=pd.Index(test, name="test"))
    for (a, b), v in cells.items():
        if a == b:
            raise ValueError(f"transfer_matrix: a {a}-trained model scored on its own corpus's set")
        if a in m.index and b in m.columns:
            m.loc[a, b] = v
    return m


def with_mean(m: pd.DataFrame) -> pd.DataFrame:
    """The matrix with a row-mean column (average transfer from each training corpus)."""
    out = m.copy()
    out["mean"] = m.mean(axis=1, skipna=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Published reference numbers, the one place the report takes them from (sources: the papers named). In percent.
# EmoBox: Ma et al., INTERSPEECH 2024 (arXiv 2406.07162), linear probes on frozen SSL features. Qwen2-Audio
# zero-shot: third-party measurements whose protocols differ from EmoBox's (stated beside them).
# ----------------------------------------------------------------------------------------------------------------
EMOBOX = "EmoBox (Ma et al., INTERSPEECH 2024)"

# corpus -> model -> (UA, WA, macro-F1)
INTRA: dict[str, dict[str, tuple[float, float, float]]] = {
    "iemocap": {"Whisper-large-v3": (73.54, 72.86, 73.11), "WavLM-large": (69.47, 69.07, 69.29)},
    "meld": {"Whisper-large-v3": (31.54, 51.89, 32.95), "WavLM-large": (28.18, 49.31, 29.11)},
    "ravdess": {"Whisper-large-v3": (75.32, 75.87, 75.19), "WavLM-large": (72.00, 72.22, 71.42)},
    "savee": {"Whisper-large-v3": (74.07, 77.24, 75.31), "WavLM-large": (66.74, 70.80, 66.37)},
}

# EmoBox track 2, Whisper-large-v3, accuracy: (train corpus, test corpus) -> WA
CROSS_WHISPER: dict[tuple[str, str], float] = {
    ("iemocap", "meld"): 51.42, ("iemocap", "ravdess"): 48.12, ("iemocap", "savee"): 49.30,
    ("meld", "iemocap"): 46.14, ("meld", "ravdess"): 40.68, ("meld", "savee"): 42.18,
    ("ravdess", "iemocap"): 38.24, ("ravdess", "meld"): 47.00, ("ravdess", "savee"): 49.63,
    ("savee", "iemocap"): 46.12, ("savee", "meld"): 36.44, ("savee", "ravdess"): 66.91,
}

# Qwen2-Audio-7B-Instruct zero-shot, third party: corpus -> {metric: value}, with how it was measured.
QWEN_ZEROSHOT: dict[str, tuple[dict[str, float], str]] = {
    "iemocap": ({"wa": 54.0}, "accuracy, third-party protocol"),
    "meld": ({"ua": 48.84, "wa": 57.39, "f1": 44.59}, "MELD test with the transcript in the prompt"),
}

CHANCE_XC = 25.0  # balanced 4-class track-2 sets


MISSING = "—"
METRIC_NAMES = {"ua": "UA", "wa": "WA", "f1": "F1"}
IN_CORPUS = ("meld", "iemocap")  # the paper's column order


def main_rows(cond: str = "IR") -> list[Recipe]:
    """The paper's main-table rows; all but the last answer directly (`cond`), the last reasons with ESR."""
    return [Recipe("zeroshot", cond, label="Zero-shot"), Recipe("sft", cond, label="SFT"),
            Recipe("grpo", cond, "binary", "GRPO (binary reward)"), Recipe("grpo", cond, "eswr", "GRPO + ESWR"),
            Recipe("grpo", "ESR", "eswr", "GRPO + ESWR + ESR")]


def eswr_rows(grpo_runs: list[list[str]]) -> list[Recipe]:
    """ESWR on/off for each prompt condition trained with both rewards."""
    pairs = {tuple(entry[:2]) for entry in grpo_runs}
    conds = [c for c in ("IR", "EUR", "ESR") if ("binary", c) in pairs and ("eswr", c) in pairs]
    return [Recipe("grpo", c, r, f"{c}, {'ESWR' if r == 'eswr' else 'binary'}") for c in conds
            for r in ("binary", "eswr")]


def reasoning_rows() -> list[Recipe]:
    """IR / EUR / ESR, untrained and after GRPO + ESWR (the paper: ESR > EUR > IR after RL)."""
    return [Recipe("zeroshot", c, label=f"Zero-shot {c}") for c in CONDITIONS] + \
           [Recipe("grpo", c, "eswr", f"GRPO + ESWR, {c}") for c in CONDITIONS]


# ----------------------------------------------------------------------------------------------------------------
# Building (numbers)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    name: str
    caption: str
    numbers: pd.DataFrame                 # numeric, for CSV and figures
    display: pd.DataFrame                 # strings, for Markdown and LaTeX
    notes: list[str] = field(default_factory=list)


def fmt(v: float, lo: float | None = None, hi: float | None = None) -> str:
    if v is None or not np.isfinite(v):
        return MISSING
    s = f"{v:.1f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        s += f" [{lo:.1f}, {hi:.1f}]"
    return s


def iemocap_scope(book: ScoreBook) -> str:
    """What an IEMOCAP number is under this profile: one fold's score, or the mean of the configured folds."""
    folds = list(book.settings.exp.iemocap_folds)
    if len(folds) == 1:
        return f"IEMOCAP = fold {folds[0]} only (Session {folds[0]} held out), not the 5-fold mean"
    if sorted(folds) == [1, 2, 3, 4, 5]:
        return "IEMOCAP = mean of the 5 leave-one-session-out folds"
    return f"IEMOCAP = mean of folds {', '.join(map(str, folds))} (of the 5 leave-one-session-out folds)"


def results_table(book: ScoreBook, rows: list[Recipe], name: str, caption: str,
                  corpora: tuple[str, ...] = IN_CORPUS) -> Table:
    """Rows = recipes, columns = corpus x (UA, WA, F1) with CIs, and how many labels were read without an
    <answer> tag (zero-shot fallback); in-corpus; IEMOCAP as `iemocap_scope` says."""
    num, disp, notes = [], [], []
    for rec in rows:
        nrow: dict = {"row": rec.label, "stage": rec.stage, "reward": rec.reward or "", "condition": rec.condition}
        drow: dict = {"": rec.label}
        for c in corpora:
            res, note = book.in_corpus(c, rec.stage, rec.condition, rec.reward)
            if note and note != "missing":  # plain missing shows as the table's "—" note
                notes.append(f"{rec.label} / {NAMES[c]}: {note}")
            nrow[f"{c}_unparseable"] = 100 * res.value("unparseable") if res else np.nan
            for m in METRICS:
                v = 100 * res.value(m) if res else np.nan
                lo, hi = (100 * x for x in res.ci[m]) if res and m in res.ci else (np.nan, np.nan)
                nrow[f"{c}_{m}"], nrow[f"{c}_{m}_lo"], nrow[f"{c}_{m}_hi"] = v, lo, hi
                drow[f"{NAMES[c]} {METRIC_NAMES[m]}"] = fmt(v, lo, hi)
            nrow[f"{c}_n"] = res.n if res else 0
            nrow[f"{c}_fallback"] = res.n_fallback if res else 0
            drow[f"{NAMES[c]} fallback"] = f"{res.n_fallback}/{res.n}" if res else MISSING
        num.append(nrow)
        disp.append(drow)
    return Table(name, caption, pd.DataFrame(num), pd.DataFrame(disp), _dedupe(notes))


def crosscorpus_tables(book: ScoreBook, rows: list[Recipe]) -> tuple[Table, dict[str, pd.DataFrame]]:
    """Long table (recipe, train, test, accuracy, EmoBox Whisper reference) and one transfer matrix per recipe."""
    s = book.settings
    test = crosscorpus_corpora(s.paths)
    train = [c for c in s.exp.corpora]
    long, mats, notes = [], {}, []
    for rec in rows:
        cells = {}
        for a in train:
            for b in test:
                if a == b:
                    continue
                v, k = book.cross(a, b, rec.stage, rec.condition, rec.reward)
                long.append({"row": rec.label, "stage": rec.stage, "reward": rec.reward or "",
                             "condition": rec.condition, "train": a, "test": b, "wa": v, "models": k,
                             "emobox_whisper_large_v3": CROSS_WHISPER.get((a, b), np.nan)})
                if k:
                    cells[(a, b)] = v
                if a == "iemocap" and k and k < len(s.exp.iemocap_folds) and s.eval.crosscorpus_all_folds:
                    notes.append(f"{rec.label}: IEMOCAP row averages {k}/{len(s.exp.iemocap_folds)} fold models")
        mats[rec.label] = with_mean(transfer_matrix(cells, train, test))
    # explicit columns: a profile with one corpus (or cross_corpus off) has no pairs, and still gets its table
    df = pd.DataFrame(long, columns=["row", "stage", "reward", "condition", "train", "test", "wa", "models",
                                     "emobox_whisper_large_v3"])
    disp = df.assign(wa=df.wa.map(fmt), emobox_whisper_large_v3=df.emobox_whisper_large_v3.map(fmt))
    disp = disp[["row", "train", "test", "wa", "emobox_whisper_large_v3"]].rename(
        columns={"row": "", "wa": "ours WA", "emobox_whisper_large_v3": "EmoBox Whisper-large-v3 WA"})
    if not s.eval.crosscorpus_all_folds:
        notes.append(f"IEMOCAP-trained row: the fold-{s.exp.iemocap_folds[0]} model (trained on the other "
                     "sessions); eval.crosscorpus_all_folds averages every fold's model")
    notes.append(f"accuracy on the balanced 4-class EmoBox track-2 sets (WA = UA there; chance {CHANCE_XC:.0f} %); "
                 "a model is never scored on its own corpus's set (MELD's set holds train, dev and test clips)")
    t = Table("crosscorpus", "Cross-corpus accuracy (%), rows = training corpus, columns = test set", df, disp,
              _dedupe(notes))
    return t, mats


def cost_table(book: ScoreBook) -> Table:
    """Seconds and generated tokens per utterance for each stage x prompt condition (all sets pooled)."""
    rows: dict[tuple, list] = {}
    for e in book.entries.values():
        if e.scores is None or not np.isfinite(e.seconds):
            continue
        rows.setdefault((e.run.condition, e.run.stage, e.run.reward or ""), []).append(e)
    num = []
    for (cond, stage, reward), es in sorted(rows.items()):
        n = sum(e.n_expected for e in es)
        num.append({"condition": cond, "stage": stage, "reward": reward, "utterances": n,
                    "seconds_per_utt": sum(e.seconds * e.n_expected for e in es) / n,
                    "tokens_per_utt": sum(e.tokens * e.n_expected for e in es) / n,
                    "batch_size": float(np.mean([e.batch_size for e in es]))})
    df = pd.DataFrame(num, columns=["condition", "stage", "reward", "utterances", "seconds_per_utt",
                                    "tokens_per_utt", "batch_size"])
    disp = df.assign(seconds_per_utt=df.seconds_per_utt.map(lambda v: f"{v:.3f}"),
                     tokens_per_utt=df.tokens_per_utt.map(lambda v: f"{v:.1f}"),
                     batch_size=df.batch_size.map(lambda v: f"{v:.0f}"))
    env = environment(book.settings)
    notes = [f"greedy decoding, batched (eval.batch_size {book.settings.eval.batch_size}); seconds = a batch's wall "
             f"time shared among its utterances, on {env['device']}",
             "max_new_tokens per condition: " + ", ".join(f"{k} {v}" for k, v in book.settings.eval.max_new_tokens.items())]
    if df.empty:
        notes.append("no predictions yet")
    return Table("inference_cost", "Inference cost per utterance by prompt condition", df, disp, notes)


def _dedupe(xs: list[str]) -> list[str]:
    return list(dict.fromkeys(xs))


def smoke_notes(book: ScoreBook) -> list[str]:
    s = book.settings
    out = []
    if s.eval.max_utterances is not None:
        out.append(f"SMOKE SUBSET: at most {s.eval.max_utterances} utterances per test set (eval.max_utterances); "
                   "not the full protocol")
    if s.smoke:
        out.append(f"profile '{s.profile}': backbone {s.backbone.name}, "
                   f"{'synthetic' if s.synthetic else 'real'} data: SMOKE numbers, not results")
    return out


def build_tables(book: ScoreBook) -> tuple[list[Table], dict[str, pd.DataFrame]]:
    s = book.settings
    smoke = smoke_notes(book)
    main = results_table(book, main_rows(s.eval.main_condition), "main_results",
                         f"Main results (%): UA / WA / macro-F1 [95 % bootstrap CI]; {iemocap_scope(book)}")
    eswr = results_table(book, eswr_rows(s.exp.grpo_runs), "ablation_eswr",
                         "Ablation: GRPO with binary accuracy reward vs ESWR (%)")
    reas = results_table(book, reasoning_rows(), "ablation_reasoning",
                         "Ablation: implicit (IR), explicit unstructured (EUR) and structured (ESR) reasoning (%)")
    xc, mats = crosscorpus_tables(book, main_rows(s.eval.main_condition))
    cost = cost_table(book)
    tables = [main, eswr, reas, xc, cost]
    for t in tables:
        t.notes = smoke + t.notes
    for t in (main, eswr, reas):
        t.notes.append("fallback: labels read from an output with no <answer> tag (allowed for zero-shot rows only, "
                       "eval.require_answer_tag: false; trained adapters are read from <answer> only)")
    for t in (main, eswr, reas, xc):
        if t.display.isin([MISSING]).any().any():
            t.notes.append(f"{MISSING}: run not trained or not evaluated yet (see eval_status.csv)")
    return tables, mats


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in d.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in r.tolist()) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return fmt(v)
    return str(v)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, caption: str, label: str, notes: list[str], index: bool = False) -> str:
    d = df.reset_index() if index else df
    cols = [tex_escape(c) for c in d.columns]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * (len(cols) - 1) + "}",
           r"\toprule", " & ".join(cols) + r" \\", r"\midrule"]
    for _, r in d.iterrows():
        out.append(" & ".join(tex_escape(_cell(v)) for v in r.tolist()) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(caption)}"
            + "".join(" " + tex_escape(n) + "." for n in notes) + "}", rf"\label{{tab:{label}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_table(t: Table, tables_dir: Path) -> list[Path]:
    tables_dir = Path(tables_dir)
    md = f"**{t.caption}**\n\n" + to_markdown(t.display) + "\n" + "".join(f"\n- {n}" for n in t.notes) + "\n"
    paths = [tables_dir / f"{t.name}.csv", tables_dir / f"{t.name}.md", tables_dir / f"{t.name}.tex"]
    atomic_write_text(paths[0], t.numbers.to_csv(index=False))
    atomic_write_text(paths[1], md)
    atomic_write_text(paths[2], to_latex(t.display, t.caption, t.name, t.notes))
    return paths


def status_frame(book: ScoreBook) -> pd.DataFrame:
    return pd.DataFrame([{"run": e.run.name, "test_set": e.test_set, "status": e.status, "n": e.n_expected,
                          "n_full_set": e.n_total} for e in book.entries.values()])


def scores_frame(book: ScoreBook) -> pd.DataFrame:
    """Every scored (run, test set), one row each: the long table figures and users start from."""
    out = []
    for e in book.entries.values():
        if e.scores is None:
            continue
        r = e.run
        out.append({"run": r.name, "corpus": r.corpus, "fold": r.fold, "stage": r.stage, "reward": r.reward or "",
                    "condition": r.condition, "test_set": e.test_set, **e.scores.as_row(),
                    "seconds_per_utt": e.seconds, "tokens_per_utt": e.tokens})
    return pd.DataFrame(out)


def write_all(book: ScoreBook) -> list[Path]:
    """Every table (CSV, Markdown, LaTeX), the per-set scores and status, and the report."""
    d = book.settings.paths.tables
    tables, mats = build_tables(book)
    written = []
    for t in tables:
        written += write_table(t, d)
    for label, m in mats.items():
        slug = "crosscorpus_matrix_" + "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")
        atomic_write_text(d / f"{slug}.csv", m.to_csv())
        written.append(d / f"{slug}.csv")
    atomic_write_text(d / "eval_scores.csv", scores_frame(book).to_csv(index=False))
    atomic_write_text(d / "eval_status.csv", status_frame(book).to_csv(index=False))
    written += [d / "eval_scores.csv", d / "eval_status.csv"]
    report = book.settings.paths.results / "evaluation_report.md"
    atomic_write_text(report, render_report(book, tables, mats))
    written.append(report)
    return written


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def _ours(book: ScoreBook, corpus: str, rec: Recipe) -> tuple[str, str, str]:
    res, _ = book.in_corpus(corpus, rec.stage, rec.condition, rec.reward)
    if res is None:
        return (MISSING,) * 3
    return tuple(fmt(100 * res.value(m)) for m in METRICS)


def render_report(book: ScoreBook, tables: list[Table], mats: dict[str, pd.DataFrame]) -> str:
    s = book.settings
    env = environment(s)
    smoke = s.smoke
    L = [f"# Evaluation report: profile `{s.profile}`", ""]
    if smoke:
        L += [f"> **These are SMOKE numbers from a tiny model on synthetic data** (backbone `{s.backbone.name}`, "
              f"synthetic corpora: {s.synthetic}). They show that the pipeline runs end to end; they say nothing "
              "about EMO-RL or about any published number below.", ""]
    else:
        L += [f"Backbone `{s.backbone.name}` ({s.backbone.path or 'registry default'}), real corpora.", ""]
    if s.eval.max_utterances is not None:
        L += [f"> **Smoke subset:** at most {s.eval.max_utterances} utterances per test set (eval.max_utterances), "
              "so the numbers are not the full protocol.", ""]
    L += ["Produced by: " + ", ".join(f"{k} = {v}" for k, v in env.items() if k not in ("eval",)), "",
          f"All numbers are percentages. Ours: UA / WA / macro-F1; {iemocap_scope(book)}.",
          ""]
    for t in tables:
        L += [f"## {t.caption}", "", to_markdown(t.display), ""] + [f"- {n}" for n in t.notes] + [""]
        if t.name == "crosscorpus":
            for label, m in mats.items():
                L += [f"Transfer matrix: {label} (rows train, columns test, accuracy %)", "",
                      to_markdown(m.rename(index=NAMES, columns=NAMES), index=True), ""]
            ref = transfer_matrix(CROSS_WHISPER, list(NAMES), list(NAMES))
            L += [f"Reference: {EMOBOX}, Whisper-large-v3 (rows train, columns test, accuracy %)", "",
                  to_markdown(with_mean(ref).rename(index=NAMES, columns=NAMES), index=True), ""]

    L += ["## Our numbers beside the published reference numbers", "",
          "Every published reference number the kit carries (evaluation/tables.py; sources: docs/protocols.md), with "
          "ours for the same corpus and metric. "
          "EmoBox numbers are linear probes on frozen SSL features with EmoBox's splits; ours follow the same "
          "splits (IEMOCAP 5-fold, MELD official test).", "",
          "| corpus | system | UA | WA | F1 |", "|---|---|---|---|---|"]
    best = main_rows(s.eval.main_condition)
    for corpus in ("iemocap", "meld", "ravdess", "savee"):
        for model, (ua, wa, f1) in INTRA[corpus].items():
            L.append(f"| {NAMES[corpus]} | {EMOBOX}: {model} | {ua:.2f} | {wa:.2f} | {f1:.2f} |")
        if corpus in QWEN_ZEROSHOT:
            vals, how = QWEN_ZEROSHOT[corpus]
            L.append(f"| {NAMES[corpus]} | Qwen2-Audio-7B-Instruct zero-shot, third party ({how}) | "
                     + " | ".join(f"{vals[m]:.2f}" if m in vals else MISSING for m in METRICS) + " |")
        if corpus in s.exp.corpora:
            for rec in best:
                L.append(f"| {NAMES[corpus]} | **ours: {rec.label}** ({rec.condition}) | " + " | ".join(
                    _ours(book, corpus, rec)) + " |")
        else:
            L.append(f"| {NAMES[corpus]} | ours | {MISSING} | {MISSING} | {MISSING} |")
    L += ["", "RAVDESS and SAVEE are not trained on in-corpus by this kit (the paper trains on MELD and IEMOCAP); "
          "they appear as cross-corpus test sets only.", ""]
    L += ["Cross-corpus (accuracy %, EmoBox track-2 sets), EmoBox Whisper-large-v3 vs ours:", "",
          "| train -> test | EmoBox Whisper-large-v3 | " + " | ".join(f"ours: {r.label}" for r in best) + " |",
          "|---|---|" + "---|" * len(best)]
    for (a, b), ref in CROSS_WHISPER.items():
        ours = []
        for r in best:
            v, _ = book.cross(a, b, r.stage, r.condition, r.reward) if a in s.exp.corpora else (math.nan, 0)
            ours.append(fmt(v))
        L.append(f"| {NAMES[a]} -> {NAMES[b]} | {ref:.2f} | " + " | ".join(ours) + " |")
    L += ["", "Claimed by the paper [summary, unverified]: UA +25.1 (MELD) and +18.9 (IEMOCAP) \"compared to previous "
          "methods\" (relative or absolute, and against which baseline, unknown). Ours, GRPO + ESWR + ESR minus "
          "zero-shot, UA points:", ""]
    for corpus in IN_CORPUS:
        a, _ = book.in_corpus(corpus, "zeroshot", s.eval.main_condition)
        b, _ = book.in_corpus(corpus, "grpo", "ESR", "eswr")
        delta = fmt(100 * (b.value("ua") - a.value("ua"))) if a and b else MISSING
        L.append(f"- {NAMES[corpus]}: {delta}")
    missing = status_frame(book)
    missing = missing[missing.status != "ok"]
    L += ["", "## Missing", ""]
    if missing.empty:
        L.append("Every run of the experiment matrix was evaluated on every set it is scored on.")
    else:
        L.append(f"{missing.run.nunique()} run(s), {len(missing)} (run, test set) pair(s) without scores "
                 "(shown as — above): not trained yet, or not evaluated; the full list is tables/eval_status.csv.")
        for run, g in missing.groupby("run"):
            L.append(f"- {run}: " + ", ".join(f"{t} ({st})" for t, st in zip(g.test_set, g.status)))
    return "\n".join(L) + "\n"
