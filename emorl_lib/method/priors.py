"""Similarity priors over emotion labels: S(i, j) in [0, 1] for two unified labels (labels.UNIFIED).

ESWR (paper Eq. 7-8) gives a wrong answer partial credit when it is "close" to the gold emotion; what "close"
means is a prior. Three are offered, all built from a `PriorConfig` (nested as `reward.prior` in a profile):

- `plutchik`: Plutchik's wheel, as the paper does (Eq. 7): 1/2 if either label is neutral, else
  (cos(angle) + 1) / 2; exact match 1.
- `va`: distance in the valence-arousal plane, coordinates from the NRC VAD lexicon v1 (Mohammad 2018).
- `confusion`: data-driven, from a confusion matrix (row-normalised, symmetrised, rescaled).

Unified labels reach a prior's own emotion names through `PriorConfig.mapping` (data, overridable), e.g.
happy -> joy, calm -> neutral. Identical unified labels always get S = 1 (the paper's literal reading would give a
correct "neutral" 1/2; see docs/paper.md, ESWR).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.labels import UNIFIED
from ..infra.config import setting

# Unified label -> emotion name used by the priors. "neutral" is special for Plutchik (S = 1/2).
DEFAULT_MAPPING: dict[str, str] = {
    "neutral": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger",
    "fear": "fear", "disgust": "disgust", "surprise": "surprise", "calm": "neutral",
}

# Plutchik's eight primaries, 45 degrees apart (docs/paper.md, ESWR, Eq. 7).
PLUTCHIK_ANGLES: dict[str, float] = {
    "joy": 0.0, "trust": 45.0, "fear": 90.0, "surprise": 135.0,
    "sadness": 180.0, "disgust": 225.0, "anger": 270.0, "anticipation": 315.0,
}

# Valence, arousal, dominance in [0, 1] from the NRC VAD Lexicon v1.0 (Mohammad, S. M. 2018. "Obtaining Reliable
# Human Ratings of Valence, Arousal, and Dominance for 20,000 English Words". ACL 2018; entries for the words below,
# cross-checked against several independent copies of the lexicon). "calm" is not listed: by default it maps to
# "neutral"; add its row under reward.prior.va_coords if you map calm -> calm.
NRC_VAD: dict[str, tuple[float, float, float]] = {
    "neutral": (0.469, 0.184, 0.357),
    "joy": (0.980, 0.824, 0.794),
    "sadness": (0.052, 0.288, 0.164),
    "anger": (0.167, 0.865, 0.657),
    "fear": (0.073, 0.840, 0.293),
    "disgust": (0.052, 0.775, 0.317),
    "surprise": (0.875, 0.875, 0.562),
}

PRIOR_KINDS = ("plutchik", "va", "confusion")


@dataclass
class PriorConfig:
    """Which similarity prior ESWR uses and its data. `kind`: plutchik | va | confusion."""

    kind: str = setting("plutchik", "quoted", "Eq. 7: Plutchik's wheel")
    mapping: dict[str, str] = setting(dict(DEFAULT_MAPPING), "inferred", "corpus labels onto the wheel; calm as "
                                                                          "neutral")
    # plutchik
    plutchik_angles: dict[str, float] = field(default_factory=lambda: dict(PLUTCHIK_ANGLES))
    neutral_similarity: float = setting(0.5, "quoted", "Eq. 7: S when either label is neutral")
    neutral_names: list[str] = field(default_factory=lambda: ["neutral"])
    # va: coordinates (valence, arousal[, dominance]) in [0, 1]; S = 1 - distance / max possible distance
    va_coords: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in NRC_VAD.items()})
    va_use_dominance: bool = False
    # confusion: a square CSV of counts (header row = predicted labels, first column = gold labels)
    confusion_csv: str | None = None
    confusion_rescale: str = "max"           # "max": divide off-diagonal by its largest value | "none"

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind '{self.kind}' unknown; expected one of {PRIOR_KINDS}")
        if self.confusion_rescale not in ("max", "none"):
            raise ValueError(f"confusion_rescale '{self.confusion_rescale}': expected 'max' or 'none'")
        if not 0.0 <= self.neutral_similarity <= 1.0:
            raise ValueError(f"neutral_similarity {self.neutral_similarity} outside [0, 1]")


@dataclass(eq=False)
class Prior:
    """A similarity table over unified labels with a name (plain data: picklable, fast to look up)."""

    name: str
    labels: tuple[str, ...]
    matrix: np.ndarray

    def __post_init__(self) -> None:
        self.matrix = np.clip(np.asarray(self.matrix, dtype=float), 0.0, 1.0)
        self._index = {lab: i for i, lab in enumerate(self.labels)}
        if self.matrix.shape != (len(self.labels), len(self.labels)):
            raise ValueError(f"prior '{self.name}': {len(self.labels)} labels but a {self.matrix.shape} matrix")

    @classmethod
    def from_function(cls, name: str, labels: Sequence[str], fn: Callable[[str, str], float]) -> "Prior":
        labels = tuple(labels)
        return cls(name, labels, np.array([[1.0 if a == b else fn(a, b) for b in labels] for a in labels]))

    def __call__(self, a: str, b: str) -> float:
        if a not in self._index or b not in self._index:
            bad = a if a not in self._index else b
            raise KeyError(f"prior '{self.name}' knows no label '{bad}'; it covers {self.labels}")
        if a == b:
            return 1.0
        return float(self.matrix[self._index[a], self._index[b]])

    def knows(self, label: object) -> bool:
        return isinstance(label, str) and label in self._index


def _mapped(mapping: dict[str, str], labels: Sequence[str], known: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for lab in labels:
        if lab not in mapping:
            raise ValueError(f"{what}: no mapping for label '{lab}' (reward.prior.mapping has {sorted(mapping)})")
        target = mapping[lab]
        if target not in known:
            raise ValueError(f"{what}: label '{lab}' maps to '{target}', which has no entry (known: {sorted(known)})")
        out[lab] = target
    return out


def plutchik_prior(cfg: PriorConfig | None = None, labels: Sequence[str] = UNIFIED) -> Prior:
    cfg = cfg or PriorConfig(kind="plutchik")
    neutral = set(cfg.neutral_names)
    m = _mapped(cfg.mapping, labels, list(cfg.plutchik_angles) + list(neutral), "plutchik prior")

    def fn(a: str, b: str) -> float:
        ea, eb = m[a], m[b]
        if ea in neutral or eb in neutral:
            return cfg.neutral_similarity
        angle = math.radians(cfg.plutchik_angles[ea] - cfg.plutchik_angles[eb])
        return (math.cos(angle) + 1.0) / 2.0

    return Prior.from_function("plutchik", labels, fn)


def va_prior(cfg: PriorConfig | None = None, labels: Sequence[str] = UNIFIED) -> Prior:
    cfg = cfg or PriorConfig(kind="va")
    dims = 3 if cfg.va_use_dominance else 2
    m = _mapped(cfg.mapping, labels, list(cfg.va_coords), "va prior")
    for lab, e in m.items():
        if len(cfg.va_coords[e]) < dims:
            raise ValueError(f"va prior: coordinates of '{e}' need {dims} values, got {cfg.va_coords[e]}")
    coords = {lab: np.asarray(cfg.va_coords[e][:dims], dtype=float) for lab, e in m.items()}
    max_dist = math.sqrt(dims)  # diagonal of the unit square/cube: coordinates are in [0, 1]

    def fn(a: str, b: str) -> float:
        return 1.0 - float(np.linalg.norm(coords[a] - coords[b])) / max_dist

    return Prior.from_function("va", labels, fn)


def read_confusion_csv(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """A square confusion CSV: header `gold,<pred labels...>`, then one row per gold label."""
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(path.read_text())))
    except OSError as e:
        raise ValueError(f"{path}: cannot read confusion matrix CSV ({e})") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row of labels and one row per gold label")
    cols = tuple(c.strip() for c in rows[0][1:])
    gold = tuple(r[0].strip() for r in rows[1:])
    if cols != gold:
        raise ValueError(f"{path}: row labels {gold} must equal column labels {cols} (same order)")
    try:
        mat = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric cell ({e})") from None
    if mat.shape != (len(cols), len(cols)):
        raise ValueError(f"{path}: expected a {len(cols)}x{len(cols)} matrix, got {mat.shape}")
    return cols, mat


def confusion_similarity(counts: np.ndarray, rescale: str = "max") -> np.ndarray:
    """Row-normalise (P(pred | gold)), symmetrise, set the diagonal to 1, optionally rescale the off-diagonal."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("confusion matrix has negative counts")
    sums = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    s = (p + p.T) / 2.0
    np.fill_diagonal(s, 0.0)
    if rescale == "max" and s.max() > 0:
        s = s / s.max()
    np.fill_diagonal(s, 1.0)
    return np.clip(s, 0.0, 1.0)


def confusion_prior(counts: np.ndarray, labels: Sequence[str], rescale: str = "max") -> Prior:
    """Data-driven prior: labels that a model (or listeners) confuse often are 'similar'."""
    return Prior("confusion", tuple(labels), confusion_similarity(counts, rescale))


def build_prior(cfg: PriorConfig, labels: Sequence[str] = UNIFIED, confusion: np.ndarray | None = None,
                confusion_labels: Sequence[str] | None = None) -> Prior:
    """The prior named by `cfg.kind`; a confusion prior reads `confusion` or else `cfg.confusion_csv`."""
    if cfg.kind == "plutchik":
        return plutchik_prior(cfg, labels)
    if cfg.kind == "va":
        return va_prior(cfg, labels)
    if confusion is None:
        if not cfg.confusion_csv:
            raise ValueError("prior kind 'confusion' needs reward.prior.confusion_csv (or a matrix passed in)")
        confusion_labels, confusion = read_confusion_csv(cfg.confusion_csv)
    return confusion_prior(confusion, confusion_labels or labels, cfg.confusion_rescale)


def similarity_matrix(prior: Prior, labels: Sequence[str]) -> np.ndarray:
    """S(i, j) over `labels` (rows, columns in that order): for heatmaps and tables."""
    return np.array([[prior(a, b) for b in labels] for a in labels], dtype=float)
