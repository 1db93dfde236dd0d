"""Scores of one prediction set: WA (accuracy), UA (macro recall), macro-F1, per-class recall, the confusion
matrix with an `unparseable` column, the unparseable rate, and percentile-bootstrap CIs over utterances.

An output with no parseable candidate label counts as wrong (it lowers WA, the recall of its gold class and UA);
it never counts as a prediction of any class, so it does not lower another class's precision. UA averages recall
over the candidate classes that occur in the gold labels (as sklearn's `balanced_accuracy_score`); macro-F1 is
sklearn's `f1_score(gold, pred, labels=<the declared candidates>, average="macro", zero_division=0)`: every declared
class counts, one with no gold utterance and no prediction scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

UNPARSEABLE = "unparseable"
METRICS = ("ua", "wa", "f1")


def encode(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices into `labels`; a prediction outside them (None, or not a candidate) gets index len(labels)."""
    idx = {l: i for i, l in enumerate(labels)}
    bad = sorted({g for g in gold if g not in idx})
    if bad:
        raise ValueError(f"gold label(s) {bad} not among the candidates {list(labels)}")
    g = np.array([idx[x] for x in gold], dtype=np.int64)
    p = np.array([idx.get(x, len(labels)) if x is not None else len(labels) for x in pred], dtype=np.int64)
    return g, p


def confusion(g: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """k x (k+1) counts: rows gold, columns predicted, the last column unparseable."""
    return np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)


def _from_confusions(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of a stack of confusion matrices (..., k, k+1), vectorised for the bootstrap."""
    k = cm.shape[-2]
    tp = np.diagonal(cm[..., :k], axis1=-2, axis2=-1).astype(float)
    support = cm.sum(-1).astype(float)
    predicted = cm[..., :k].sum(-2).astype(float)
    n = support.sum(-1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / np.where(present, support, 1), np.nan)
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + support); 0 where both are 0 (sklearn, zero_division=0)
        denom = predicted + support
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        return {
            "wa": tp.sum(-1) / n,
            "ua": np.nanmean(recall, axis=-1),
            "f1": f1.mean(-1),
            "unparseable": cm[..., k].sum(-1) / n,
            "recall": recall,
        }


@dataclass
class Scores:
    labels: tuple[str, ...]
    n: int
    wa: float
    ua: float
    f1: float
    unparseable: float
    recall: dict[str, float]           # per class (nan where the class has no gold utterance)
    confusion: np.ndarray              # k x (k+1), last column unparseable
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (low, high)
    boot: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # bootstrap replicates (fold means)
    n_fallback: int = 0                # labels read from text without an <answer> tag (zero-shot only)

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))

    def as_row(self) -> dict:
        row = {"n": self.n, **{m: self.value(m) for m in (*METRICS, "unparseable")}, "fallback": self.n_fallback}
        for m, (lo, hi) in self.ci.items():
            row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
        row.update({f"recall_{l}": r for l, r in self.recall.items()})
        return row


def percentile_ci(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))


def score(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str], n_boot: int = 1000,
          seed: int = 0, level: float = 0.95, fallback: Sequence[bool] | None = None) -> Scores:
    """All metrics of one prediction set, with bootstrap CIs (resampling utterances) when n_boot > 0.
    `fallback[i]`: prediction i was read from text without an <answer> tag (counted, not scored differently)."""
    labels = tuple(labels)
    if len(gold) != len(pred):
        raise ValueError(f"score: {len(gold)} gold labels but {len(pred)} predictions")
    if fallback is not None and len(fallback) != len(pred):
        raise ValueError(f"score: {len(fallback)} fallback flags for {len(pred)} predictions")
    if len(gold) == 0:
        raise ValueError("score: no predictions to score")
    g, p = encode(gold, pred, labels)
    k = len(labels)
    cm = confusion(g, p, k)
    m = _from_confusions(cm)
    s = Scores(labels, len(g), float(m["wa"]), float(m["ua"]), float(m["f1"]), float(m["unparseable"]),
               {l: float(r) for l, r in zip(labels, m["recall"])}, cm,
               n_fallback=int(sum(bool(x) for x in fallback)) if fallback is not None else 0)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        flat = g[idx] * (k + 1) + p[idx]
        offs = (np.arange(n_boot) * k * (k + 1))[:, None]
        cms = np.bincount((flat + offs).ravel(), minlength=n_boot * k * (k + 1)).reshape(n_boot, k, k + 1)
        bm = _from_confusions(cms)
        s.boot = {name: bm[name] for name in (*METRICS, "unparseable")}
        s.ci = {name: percentile_ci(bm[name], level) for name in (*METRICS, "unparseable")}
    return s


@dataclass
class FoldMean:
    """Mean over folds (IEMOCAP's 5-fold protocol) and its CI from the folds' bootstrap replicates averaged
    replicate by replicate (each fold resampled on its own: a stratified bootstrap of the mean)."""

    folds: list[int]
    n: int
    values: dict[str, float]
    ci: dict[str, tuple[float, float]]
    per_fold: dict[int, Scores]
    n_fallback: int = 0

    def value(self, metric: str) -> float:
        return self.values[metric]


def fold_mean(per_fold: dict[int, Scores], level: float = 0.95) -> FoldMean:
    if not per_fold:
        raise ValueError("fold_mean: no folds")
    folds = sorted(per_fold)
    vals = {m: float(np.mean([per_fold[f].value(m) for f in folds])) for m in (*METRICS, "unparseable")}
    ci: dict[str, tuple[float, float]] = {}
    if all(per_fold[f].boot for f in folds):
        for m in (*METRICS, "unparseable"):
            reps = [per_fold[f].boot[m] for f in folds]
            b = min(len(r) for r in reps)
            ci[m] = percentile_ci(np.mean([r[:b] for r in reps], axis=0), level)
    return FoldMean(folds, sum(per_fold[f].n for f in folds), vals, ci, per_fold,
                    sum(per_fold[f].n_fallback for f in folds))


def metric_replicates(g: np.ndarray, p: np.ndarray, k: int, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of the prediction set (encoded gold `g`, predictions `p`, `k` classes) resampled by each row
    of `idx` (replicates x utterance indices): the paired bootstrap of a comparison draws `idx` once and applies
    it to both systems."""
    idx = np.atleast_2d(idx)
    n_rep = idx.shape[0]
    flat = g[idx] * (k + 1) + p[idx]
    offs = (np.arange(n_rep) * k * (k + 1))[:, None]
    cms = np.bincount((flat + offs).ravel(), minlength=n_rep * k * (k + 1)).reshape(n_rep, k, k + 1)
    return _from_confusions(cms)
