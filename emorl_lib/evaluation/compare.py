"""Declared comparisons: what a profile compares with what, on which metric, answered with a paired bootstrap.

A profile lists its comparisons BEFORE it runs (section `comparisons`, name -> comparison), and the results page
reports every one of them whatever the outcome. A comparison is recipe B minus recipe A, on the same utterances of
the same test sets, for every training seed (and IEMOCAP fold) of the profile:

    comparisons:
      meld_grpo_vs_sft:
        corpus: meld
        a: sft IR                 # <stage> [<reward>] <condition> (Run.recipe): zeroshot IR | sft ESR | grpo eswr IR
        b: grpo eswr IR
        metric: ua                # ua | wa | f1
        test_sets: in-corpus      # in-corpus | cross-corpus (every other corpus's 4-class set) | xc-<corpus>

The difference is in points (percent). Its interval is a paired percentile bootstrap: each replicate redraws the
utterances of every test set once (the same draw for A and B, and for every seed, since they answered the same
utterances) and, pooled over seeds, also redraws the seeds (a two-level bootstrap: the interval covers training
randomness as well as the test sample). Per-seed rows redraw utterances only. Several test sets (folds, cross-corpus
sets) are averaged with equal weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.testsets import crosscorpus_corpora, crosscorpus_targets, in_corpus_name
from ..infra.config import ConfigError, from_dict
from ..method.metrics import METRICS, encode, metric_replicates
from ..model.backbones import SMOKE_NOTE
from ..training.experiments import Recipe, Run, seeds
from .matrix import EvalSetup, answer_tag_required, load_test_set
from .predictions import read_predictions, reparse


@dataclass
class ComparisonConfig:
    """One entry of the `comparisons` section (its key is the name)."""

    corpus: str  # the training corpus (iemocap | meld)
    a: str  # the reference recipe
    b: str  # the recipe compared with it (the difference is b - a)
    metric: str = "ua"
    test_sets: str = "in-corpus"  # in-corpus | cross-corpus | xc-<corpus>
    question: str = ""  # what the comparison asks, in words (shown on the results page)
    name: str = ""  # set from the section's key

    def __post_init__(self) -> None:
        where = f"comparisons.{self.name or '<entry>'}"
        if self.metric not in METRICS:
            raise ValueError(f"{where}.metric: {self.metric!r} is not one of {METRICS}")
        if self.corpus not in ("iemocap", "meld"):
            raise ValueError(f"{where}.corpus: {self.corpus!r} is not a training corpus (iemocap, meld)")
        if not (self.test_sets in ("in-corpus", "cross-corpus") or self.test_sets.startswith("xc-")):
            raise ValueError(f"{where}.test_sets: {self.test_sets!r} is not in-corpus, cross-corpus or xc-<corpus>")
        self.recipe_a = Recipe.parse(self.a, f"{where}.a")
        self.recipe_b = Recipe.parse(self.b, f"{where}.b")


@dataclass
class ComparisonsConfig:
    """The `comparisons` section: comparison name -> ComparisonConfig, in the order written."""

    entries: dict[str, ComparisonConfig] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: dict | None, where: str) -> "ComparisonsConfig":
        if not isinstance(data or {}, dict):
            raise ConfigError(f"{where}: expected a mapping of comparison name -> {{corpus, a, b, metric, "
                              f"test_sets}}, got {type(data).__name__}")
        out = {}
        for name, spec in (data or {}).items():
            if not isinstance(spec, dict):
                raise ConfigError(f"{where}.{name}: expected a mapping {{corpus, a, b, metric, test_sets}}, got {spec!r}")
            out[str(name)] = from_dict(ComparisonConfig, {**spec, "name": str(name)}, where=f"{where}.{name}")
        return cls(out)


# ----------------------------------------------------------------------------------------------------------------
# The cells of a comparison: (seed, test set) pairs of aligned gold / A / B predictions
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    seed: int | None
    test_set: str  # e.g. iemocap-f1, meld-test, xc-ravdess (with the fold for IEMOCAP's in-corpus sets)
    k: int  # number of candidate classes
    gold: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray


@dataclass
class Outcome:
    comparison: ComparisonConfig
    scope: str  # "pooled" or "seed <s>"
    n_seeds: int = 0
    n_utterances: int = 0
    value_a: float = math.nan  # points
    value_b: float = math.nan
    diff: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    favour_b: int = 0  # seeds whose difference is > 0
    missing: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return math.isfinite(self.diff)

    def sentence(self, ci: float) -> str:
        c = self.comparison
        what = _what(c)
        if not self.answered:
            return f"Not answered: {', '.join(self.missing[:4]) or 'no predictions'}."
        a, b = c.recipe_a.label, c.recipe_b.label
        seeds_txt = (f"; {self.favour_b} of {self.n_seeds} seeds favour {b}" if self.scope == "pooled"
                     and self.n_seeds > 1 else "")
        band = f"{self.diff:+.1f} points [{self.lo:+.1f}, {self.hi:+.1f}]"
        if self.lo > 0:
            return f"{b} beats {a} on {what} by {band}{seeds_txt}."
        if self.hi < 0:
            return f"{b} falls behind {a} on {what} by {band}{seeds_txt}."
        return (f"No difference detectable between {b} and {a} on {what}: {band}, the {ci:.0%} interval "
                f"includes 0{seeds_txt}.")


def _what(c: ComparisonConfig) -> str:
    from .tables import METRIC_NAMES, NAMES

    sets = {"in-corpus": "its test set", "cross-corpus": "the other corpora's 4-class sets"}.get(
        c.test_sets, NAMES.get(c.test_sets.removeprefix("xc-"), c.test_sets) + "'s 4-class set")
    return f"{NAMES[c.corpus]} ({sets}) {METRIC_NAMES[c.metric]}"


def _test_set_names(c: ComparisonConfig, run: Run, s: EvalSetup) -> list[str]:
    if c.test_sets == "in-corpus":
        return [in_corpus_name(run.corpus, run.fold)]
    available = crosscorpus_targets(c.corpus, crosscorpus_corpora(s.paths))
    if c.test_sets == "cross-corpus":
        return ["xc-" + t for t in available]
    return [c.test_sets] if c.test_sets.removeprefix("xc-") in available else []


def cells(c: ComparisonConfig, s: EvalSetup) -> tuple[list[Cell], list[str]]:
    """Aligned predictions of A and B for every seed, fold and test set, and what is missing."""
    folds = s.exp.iemocap_folds if c.corpus == "iemocap" else [None]
    if c.test_sets != "in-corpus" and c.corpus == "iemocap" and not s.eval.crosscorpus_all_folds:
        folds = folds[:1]  # only the first fold's model is scored cross-corpus
    out, missing = [], []
    sets_cache: dict[str, object] = {}
    for seed in seeds(s.exp):
        for fold in folds:
            ra, rb = c.recipe_a.run(c.corpus, fold, seed), c.recipe_b.run(c.corpus, fold, seed)
            names = _test_set_names(c, ra, s)
            if not names:
                missing.append(f"no test set {c.test_sets} for {c.corpus}")
            for name in names:
                if name not in sets_cache:
                    try:
                        sets_cache[name] = load_test_set(name, ra, s)
                    except (FileNotFoundError, ValueError) as e:
                        sets_cache[name] = None
                        missing.append(f"{name}: {e}")
                ts = sets_cache[name]
                if ts is None:
                    continue
                preds = []
                for r in (ra, rb):
                    have = {p["utt_id"]: p for p in read_predictions(r.predictions(s.paths, name))}
                    if not all(u.utt_id in have for u in ts.rows):
                        missing.append(f"{r.name} on {name}")
                        preds = []
                        break
                    # read as the tables read them: today's parser, this run's answer-tag rule
                    preds.append([reparse(have[u.utt_id], ts.candidates, answer_tag_required(r, s))["label"]
                                  for u in ts.rows])
                if not preds:
                    continue
                cands = ts.candidates
                g, pa = encode([ts.gold(u) for u in ts.rows], preds[0], cands)
                _, pb = encode([ts.gold(u) for u in ts.rows], preds[1], cands)
                out.append(Cell(seed, name, len(cands), g, pa, pb))
    return out, list(dict.fromkeys(missing))


def _diff_stats(cs: list[Cell], metric: str, n_boot: int, rng: np.random.Generator, resample_seeds: bool,
                level: float) -> tuple[float, float, float, float, float]:
    """(A, B, B - A, lo, hi) in points: means over seeds of the mean over test sets, with the bootstrap interval."""
    by_seed: dict = {}
    for cell in cs:
        by_seed.setdefault(cell.seed, []).append(cell)
    seed_keys = sorted(by_seed, key=lambda x: (x is None, x))
    names = sorted({cell.test_set for cell in cs})
    sizes = {n: next(cell.gold.size for cell in cs if cell.test_set == n) for n in names}
    # one utterance draw per test set per replicate, shared by A and B and by every seed (paired)
    draws = {n: rng.integers(0, sizes[n], size=(n_boot, sizes[n])) for n in names} if n_boot else {}
    point_a, point_b, reps = [], [], []
    for sk in seed_keys:
        va, vb, ra, rb = [], [], [], []
        for cell in by_seed[sk]:
            full = np.arange(cell.gold.size)[None, :]
            va.append(metric_replicates(cell.gold, cell.pred_a, cell.k, full)[metric][0])
            vb.append(metric_replicates(cell.gold, cell.pred_b, cell.k, full)[metric][0])
            if n_boot:
                idx = draws[cell.test_set]
                ra.append(metric_replicates(cell.gold, cell.pred_a, cell.k, idx)[metric])
                rb.append(metric_replicates(cell.gold, cell.pred_b, cell.k, idx)[metric])
        point_a.append(np.mean(va))
        point_b.append(np.mean(vb))
        if n_boot:
            reps.append(np.mean(rb, axis=0) - np.mean(ra, axis=0))
    a, b = 100 * float(np.mean(point_a)), 100 * float(np.mean(point_b))
    lo = hi = math.nan
    if n_boot:
        reps_arr = np.stack(reps)  # seeds x replicates
        if resample_seeds and len(seed_keys) > 1:
            pick = rng.integers(0, len(seed_keys), size=(n_boot, len(seed_keys)))
            boot = reps_arr[pick, np.arange(n_boot)[:, None]].mean(axis=1)
        else:
            boot = reps_arr.mean(axis=0)
        boot = boot[np.isfinite(boot)]
        if boot.size:
            q = (1 - level) / 2
            lo, hi = (100 * float(x) for x in np.quantile(boot, [q, 1 - q]))
    return a, b, b - a, lo, hi


def answer(c: ComparisonConfig, s: EvalSetup) -> list[Outcome]:
    """The pooled outcome, then one per seed (where the profile has several)."""
    cs, missing = cells(c, s)
    pooled = Outcome(c, "pooled", missing=missing)
    if missing or not cs:
        pooled.missing = missing or ["no predictions"]
        return [pooled]
    level = s.eval.ci
    seed_keys = sorted({cell.seed for cell in cs}, key=lambda x: (x is None, x))
    per = []
    for i, sk in enumerate(seed_keys):
        sub = [cell for cell in cs if cell.seed == sk]
        rng = np.random.default_rng([s.eval.seed, i + 1])
        a, b, d, lo, hi = _diff_stats(sub, c.metric, s.eval.bootstrap, rng, False, level)
        per.append(Outcome(c, f"seed {sk}", 1, sum(x.gold.size for x in sub), a, b, d, lo, hi, int(d > 0)))
    a, b, d, lo, hi = _diff_stats(cs, c.metric, s.eval.bootstrap, np.random.default_rng([s.eval.seed, 0]), True,
                                  level)
    pooled = Outcome(c, "pooled", len(seed_keys), sum(x.gold.size for x in cs if x.seed == seed_keys[0]),
                     a, b, d, lo, hi, sum(o.diff > 0 for o in per))
    return [pooled] + (per if len(per) > 1 else [])


def outcomes_frame(outcomes: list[Outcome], ci: float) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        c = o.comparison
        rows.append({"comparison": c.name, "scope": o.scope, "corpus": c.corpus, "test_sets": c.test_sets,
                     "metric": c.metric, "a": c.a, "b": c.b, "a_value": o.value_a, "b_value": o.value_b,
                     "diff": o.diff, "diff_lo": o.lo, "diff_hi": o.hi, "seeds": o.n_seeds,
                     "seeds_favouring_b": o.favour_b, "utterances_per_seed": o.n_utterances,
                     "answer": o.sentence(ci)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# The results page: every declared comparison answered, the learning curves, where the time went
# ----------------------------------------------------------------------------------------------------------------
def training_frame(s: EvalSetup) -> pd.DataFrame:
    """Per trained run: seconds, steps, reward and batch accuracy over the first and last 10 logged steps, and
    held-out UA at the start and at the end of training."""
    import json

    from ..training.experiments import grpo_runs, sft_runs
    from ..training.heldout import heldout_summary, read_heldout
    from ..training.policy import policy_columns
    from ..training.runs import log_summary
    from .figures import read_log

    rows = []
    for run in sft_runs(s.exp) + grpo_runs(s.exp):
        row: dict = {"run": run.name, "stage": run.stage, "corpus": run.corpus, "condition": run.condition,
                     "reward": run.reward or "", "seed": run.seed}
        meta = run.adapter_dir(s.paths) / "emorl_run.json"
        if meta.exists():
            m = json.loads(meta.read_text())
            row.update(seconds=m.get("seconds"), steps=m.get("steps"))
        log = read_log(run.log_csv(s.paths))
        if log is not None and run.stage == "grpo":
            summ = log_summary({run: log})
            if not summ.empty:
                row.update({k: v for k, v in summ.iloc[0].items() if k.startswith(("reward_", "accuracy_"))})
        held = read_heldout(run.heldout_csv(s.paths))
        if held is not None:
            row.update(heldout_summary(held))
        row.update(policy_columns(run.policy_csv(s.paths)))
        rows.append(row)
    return pd.DataFrame(rows)


def cost_frame(s: EvalSetup) -> pd.DataFrame:
    """Where the time went: each notebook stage's wall seconds as the runner recorded them (runs/<profile>/stamps),
    training seconds summed per stage and evaluation seconds summed per stage of the models scored."""
    import json

    rows = []
    stamps = s.paths.run / "stamps"
    for f in sorted(stamps.glob("*.json")) if stamps.exists() else []:
        try:
            rows.append({"what": f"notebook {f.stem}", "seconds": float(json.loads(f.read_text())["seconds"])})
        except (ValueError, KeyError):
            continue
    train = training_frame(s)
    if not train.empty and "seconds" in train:
        for stage, g in train.dropna(subset=["seconds"]).groupby("stage"):
            rows.append({"what": f"training, {stage} ({len(g)} runs)", "seconds": float(g.seconds.sum())})
    from ..training.experiments import all_runs
    from .matrix import test_set_names

    per_stage: dict[str, float] = {}
    for run in all_runs(s.exp):
        for name in test_set_names(run, s):
            preds = read_predictions(run.predictions(s.paths, name))
            per_stage[run.stage] = per_stage.get(run.stage, 0.0) + sum(float(p.get("seconds", 0.0)) for p in preds)
    rows += [{"what": f"evaluation generation, {st} models", "seconds": v} for st, v in per_stage.items()]
    return pd.DataFrame(rows, columns=["what", "seconds"])


def write_results(s: EvalSetup, smooth: int = 5) -> list:
    """results/<profile>/results.md and results.csv (every declared comparison, pooled and per seed), the
    learning-curve figure and the per-run training table; returns the paths written."""
    from ..infra.io import atomic_write_text
    from ..training.experiments import grpo_runs
    from ..training.heldout import read_heldout
    from ..training.policy import read_policy
    from . import figures
    from .figures import read_log
    from .tables import fmt, to_markdown

    comps = s.comparisons
    outcomes = [o for c in comps for o in answer(c, s)]
    frame = outcomes_frame(outcomes, s.eval.ci)
    res = s.paths.results
    # results.csv beside results.md for readers; the same rows among the tables, so the golden check covers them
    written = [atomic_write_text(res / "results.csv", frame.to_csv(index=False)),
               atomic_write_text(s.paths.tables / "comparisons.csv", frame.to_csv(index=False))]

    logs = {r: d for r in grpo_runs(s.exp) if (d := read_log(r.log_csv(s.paths))) is not None}
    held = {r: d for r in grpo_runs(s.exp) if (d := read_heldout(r.heldout_csv(s.paths))) is not None}
    policy = {r: d for r in grpo_runs(s.exp) if (d := read_policy(r.policy_csv(s.paths))) is not None}
    smoke = s.smoke
    note = SMOKE_NOTE if smoke else ""
    fig = figures.learning_curves(logs, held, smooth, note, policy)
    curve_png = None
    if fig is not None:
        written += figures.save(fig, s.paths.figures, "learning_curves")
        curve_png = "figures/learning_curves.png"
    train = training_frame(s)
    written.append(atomic_write_text(s.paths.tables / "training_runs.csv", train.to_csv(index=False)))
    cost = cost_frame(s)
    written.append(atomic_write_text(s.paths.tables / "cost.csv", cost.to_csv(index=False)))

    sd = seeds(s.exp)
    L = [f"# Results: profile `{s.profile}`", ""]
    if smoke:
        L += [f"> A miniature of the paper's experiment: backbone `{s.backbone.name}`, synthetic corpora, CPU. What "
              "it shows is whether the kit's mechanism (SFT warm-up, then GRPO with the configured rewards and "
              "prompts) learns and what each comparison does at this scale, never what EMO-RL achieves on real "
              "speech.", ""]
    L += [f"Training seeds: {', '.join(map(str, sd)) if sd != [None] else 'one (the section seeds)'}; every test "
          f"set complete{'' if s.eval.max_utterances is None else f' (NO: at most {s.eval.max_utterances} per set)'}; "
          f"differences are B - A in points with {s.eval.ci:.0%} paired bootstrap intervals ({s.eval.bootstrap} "
          "replicates; pooled rows also redraw the seeds). Comparisons are declared in the profile "
          f"(`{Path(s.profile_file).name if s.profile_file else s.profile}`, section `comparisons`) before the run.", ""]
    L += ["## Declared comparisons", ""]
    if not comps:
        L += ["This profile declares no comparisons.", ""]
    else:
        pooled = frame[frame.scope == "pooled"]
        table = pd.DataFrame({
            "comparison": pooled.comparison, "A": pooled.a, "B": pooled.b, "sets": pooled.test_sets,
            "metric": pooled.metric.str.upper(),
            "A value": pooled.a_value.map(fmt), "B value": pooled.b_value.map(fmt),
            "B - A [CI]": [fmt(d, lo, hi) for d, lo, hi in zip(pooled["diff"], pooled.diff_lo, pooled.diff_hi)],
            "seeds favouring B": [f"{f}/{n}" if n else "—" for f, n in zip(pooled.seeds_favouring_b, pooled.seeds)]})
        L += [to_markdown(table), ""]
        for c, (_, row) in zip(comps, pooled.iterrows()):
            q = f" {c.question}" if c.question else ""
            L.append(f"- **{c.name}**:{q} {row.answer}")
        L.append("")
        per = frame[frame.scope != "pooled"]
        if not per.empty:
            L += ["Per seed:", "", to_markdown(pd.DataFrame({
                "comparison": per.comparison, "seed": per.scope.str.removeprefix("seed "),
                "A": per.a_value.map(fmt), "B": per.b_value.map(fmt),
                "B - A [CI]": [fmt(d, lo, hi) for d, lo, hi in zip(per["diff"], per.diff_lo, per.diff_hi)]})), ""]
    L += ["## Learning curves", ""]
    if curve_png:
        L += [f"![GRPO learning curves]({curve_png})", "",
              "Reward and batch accuracy are of the sampled completions GRPO trains on; held-out UA is greedy, on "
              "held-out training data (MELD dev; the validation slice of IEMOCAP's training sessions), step 0 "
              "being the SFT start.", ""]
    else:
        L += ["No GRPO logs yet.", ""]
    if not train.empty:
        cols = [c for c in ("run", "steps", "seconds", "reward_first", "reward_last", "accuracy_first",
                            "accuracy_last", "heldout_ua_start", "heldout_ua_end") if c in train.columns]
        L += ["Per run (first vs last 10 logged steps; held-out UA in %):", "",
              to_markdown(train[cols].round(3)), ""]
    L += ["## Where the time went", "", to_markdown(cost.assign(seconds=cost.seconds.round(1))) if not cost.empty
          else "Nothing timed yet.", "",
          "Notebook rows are wall time recorded by the runner; training and evaluation rows sum each run's own "
          "wall time (they overlap the notebook rows).", ""]
    written.append(atomic_write_text(res / "results.md", "\n".join(L) + "\n"))
    return written
