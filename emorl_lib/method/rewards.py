"""Rewards as plain callables with TRL's reward signature: `f(completions, **kwargs) -> list[float]`.

TRL 1.16 (GRPOTrainer._calculate_rewards) calls each reward with `prompts=`, `completions=`, `completion_ids=`,
every dataset column except `prompt` as a list aligned with completions (`label`, `candidates`, ...),
`trainer_state=` (transformers.TrainerState: global_step, max_steps), `log_extra=` and `log_metric=`.
It logs each reward under its `__name__` (rewards/<name>/mean). Completions are strings, or conversations
`[{"role": "assistant", "content": "..."}]`.

No completion, however malformed, makes a reward raise; each stays within its documented range. A missing
`label` column or misaligned lengths are set-up errors and raise with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pandas only for the notebook tables' return types
    import pandas as pd

from ..data.labels import UNIFIED
from ..infra.config import setting
from .parsing import parse_answer, structure_ok
from .priors import (
    Prior,
    PriorConfig,
    build_prior,
    confusion_prior,
    plutchik_prior,
    read_confusion_csv,
    similarity_matrix,
    va_prior,
)
from .prompts import canonical_condition

ALPHA_SCHEDULES = ("constant", "linear")
REWARDS = ("eswr", "binary")  # the accuracy term a GRPO run optimises (its entry of experiments.grpo_runs)


@dataclass
class RewardConfig:
    """The `reward` section. Paper (docs/paper.md): ESWR on Plutchik's wheel with gamma 0.7, plus a binary format reward;
    alpha and its schedule are not known (parameters)."""

    gamma: float = setting(0.7, "quoted", "Eq. 8: partial credit only where S > gamma")
    alpha: float = setting(0.5, "kit", "weight of partial credit: the paper says below 1, the value is unknown")
    alpha_schedule: str = setting("constant", "kit", "constant | linear (alpha -> 0 at alpha_decay_end): unknown")
    alpha_decay_end: float = setting(1.0, "kit", "fraction of max_steps where alpha's linear decay reaches 0 (the "
                                                 "paper's schedule is unknown)")
    prior: PriorConfig = field(default_factory=PriorConfig)
    use_format: bool = setting(True, "quoted", "section 3.3.1: a binary format reward, 1 only on an exact match")
    accuracy_weight: float = setting(1.0, "inferred", "rewards summed, as R1-AQA")
    format_weight: float = setting(1.0, "inferred", "rewards summed, as R1-AQA")
    format_allow_whitespace: bool = setting(True, "inferred", "whitespace between tags still counts as the paper's "
                                                              "exact structural match (its whitespace rule is unknown)")
    format_require_nonempty: bool = setting(True, "inferred", "every free-text tag must hold some text (unknown in "
                                                              "the paper)")
    require_answer_tag: bool = True          # accuracy needs <answer>; off: read the label from the whole text

    def __post_init__(self) -> None:
        if self.alpha_schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"reward.alpha_schedule '{self.alpha_schedule}': expected one of {ALPHA_SCHEDULES}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"reward.alpha {self.alpha} outside [0, 1]")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"reward.gamma {self.gamma} outside [0, 1]")
        if not 0.0 < self.alpha_decay_end <= 1.0:
            raise ValueError(f"reward.alpha_decay_end {self.alpha_decay_end} outside (0, 1]")


def _column(kwargs: dict, name: str, n: int, required: bool) -> list:
    col = kwargs.get(name)
    if col is None:
        if required:
            raise ValueError(f"reward needs the dataset column '{name}' (got columns {sorted(kwargs)})")
        return [None] * n
    col = list(col)
    if len(col) != n:
        raise ValueError(f"column '{name}' has {len(col)} rows for {n} completions")
    return col


def _candidates(value: Any) -> Sequence[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return value
    return None


def credited_label(completion: Any, candidates: Sequence[str] | None, require_tag: bool) -> str | None:
    """The label a completion earns accuracy credit for: read from a closed <answer> (or, when the tag is not
    required, from tagless text). An unclosed <answer> earns nothing: a completion cut off by the length limit is
    wrong, however its last words read."""
    p = parse_answer(completion, candidates, require_tag)
    return p.label if p.reason in ("ok", "fallback") else None


def training_progress(trainer_state: Any) -> float:
    """global_step / max_steps in [0, 1]; 0 when unknown (no state, or max_steps not set)."""
    step = getattr(trainer_state, "global_step", None)
    total = getattr(trainer_state, "max_steps", None)
    try:
        if step is None or not total or total <= 0:
            return 0.0
        return min(1.0, max(0.0, float(step) / float(total)))
    except (TypeError, ValueError):
        return 0.0


def alpha_at(alpha: float, schedule: str, progress: float, decay_end: float = 1.0) -> float:
    """alpha under its schedule: constant, or linear from alpha at progress 0 to 0 at `decay_end`."""
    if schedule == "constant":
        return alpha
    return alpha * max(0.0, 1.0 - min(1.0, max(0.0, progress)) / decay_end)


def eswr_value(pred: str | None, gold: str | None, prior: Prior, alpha: float, gamma: float) -> float:
    """Paper Eq. 8: 1 on an exact match; alpha * S if S > gamma; else 0 (no label, unknown label: 0)."""
    if pred is None or gold is None:
        return 0.0
    if pred == gold:
        return 1.0
    if not (prior.knows(pred) and prior.knows(gold)):
        return 0.0
    s = prior(pred, gold)
    return alpha * s if s > gamma else 0.0


class _Reward:
    """Base of the reward callables: a `__name__` for TRL's logs and the shared column handling."""

    __name__ = "reward"
    low, high = 0.0, 1.0

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"


class AccuracyReward(_Reward):
    """1 if the credited label (`credited_label`) equals the gold `label`, else 0. Range [0, 1]."""

    def __init__(self, require_tag: bool = True, name: str = "accuracy_reward"):
        self.require_tag = require_tag
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        gold = _column(kwargs, "label", n, required=True)
        cands = _column(kwargs, "candidates", n, required=False)
        out = []
        for c, g, cs in zip(completions, gold, cands):
            label = credited_label(c, _candidates(cs), self.require_tag)
            out.append(1.0 if label is not None and label == g else 0.0)
        return out


class ESWRReward(_Reward):
    """Emotion-similarity-weighted reward (paper Eq. 8). Range [0, 1]; partial credit at most alpha."""

    def __init__(self, prior: Prior, alpha: float = 0.5, gamma: float = 0.7, schedule: str = "constant",
                 decay_end: float = 1.0, require_tag: bool = True, name: str = "eswr_reward"):
        if schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"alpha schedule '{schedule}': expected one of {ALPHA_SCHEDULES}")
        self.prior, self.alpha, self.gamma = prior, alpha, gamma
        self.schedule, self.decay_end, self.require_tag = schedule, decay_end, require_tag
        self.__name__ = name

    def current_alpha(self, trainer_state: Any = None) -> float:
        return alpha_at(self.alpha, self.schedule, training_progress(trainer_state), self.decay_end)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        gold = _column(kwargs, "label", n, required=True)
        cands = _column(kwargs, "candidates", n, required=False)
        alpha = self.current_alpha(kwargs.get("trainer_state"))
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"{self.__name__}/alpha", alpha)
        out = []
        for c, g, cs in zip(completions, gold, cands):
            label = credited_label(c, _candidates(cs), self.require_tag)
            out.append(eswr_value(label, g if isinstance(g, str) else None, self.prior, alpha, self.gamma))
        return out


class FormatReward(_Reward):
    """1 only when the completion is exactly the condition's layout (parsing.structure_ok), else 0."""

    def __init__(self, condition: str, allow_whitespace: bool = True, require_nonempty: bool = True,
                 name: str = "format_reward"):
        self.condition = canonical_condition(condition)
        self.allow_whitespace, self.require_nonempty = allow_whitespace, require_nonempty
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [1.0 if structure_ok(c, self.condition, self.allow_whitespace, self.require_nonempty) else 0.0
                for c in completions]


def accuracy_reward(cfg: RewardConfig, accuracy: str = "eswr", labels: Sequence[str] = UNIFIED) -> _Reward:
    """The accuracy term a run asks for (its `[reward, condition]` entry of the experiment matrix): ESWR with the
    configured prior, or binary accuracy."""
    if accuracy not in REWARDS:
        raise ValueError(f"accuracy reward {accuracy!r}: expected one of {REWARDS}")
    if accuracy == "binary":
        return AccuracyReward(cfg.require_answer_tag)
    prior = build_prior(cfg.prior, labels)
    return ESWRReward(prior, cfg.alpha, cfg.gamma, cfg.alpha_schedule, cfg.alpha_decay_end,
                      cfg.require_answer_tag, name=f"eswr_{prior.name}_reward")


def build_rewards(cfg: RewardConfig, condition: str, accuracy: str = "eswr") -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights for GRPOTrainer(reward_funcs=..., args.reward_weights=...)."""
    funcs: list[Callable] = [accuracy_reward(cfg, accuracy)]
    weights = [cfg.accuracy_weight]
    if cfg.use_format:
        funcs.append(FormatReward(condition, cfg.format_allow_whitespace, cfg.format_require_nonempty,
                                  name=f"format_{canonical_condition(condition)}_reward"))
        weights.append(cfg.format_weight)
    return funcs, weights


# --- Learning signal: how often a GRPO group gets no gradient -------------------------------------------------
# A group of G completions whose rewards all tie has zero advantage (TRL logs frac_reward_zero_std). With a model's
# per-class answer distribution P[gold, pred] and a reward table R[gold, pred], the G answers for one prompt are
# independent draws, so P(tie | gold i) = sum over reward values r of (P(reward = r | i))^G.

def reward_table(labels: Sequence[str], prior: Prior | None, alpha: float = 0.5, gamma: float = 0.7) -> np.ndarray:
    """R[gold, pred] over `labels`: ESWR under `prior`, or binary accuracy when `prior` is None."""
    if prior is None:
        return np.eye(len(labels))
    return np.array([[eswr_value(p, g, prior, alpha, gamma) for p in labels] for g in labels])


def confusion_pattern(similarity: np.ndarray, accuracy: float, sharpness: float = 4.0) -> np.ndarray:
    """A plausible answer distribution P[gold, pred]: `accuracy` on the diagonal, the rest spread over the other
    classes in proportion to similarity**sharpness (0: errors uniform; large: errors go to the nearest class)."""
    s = np.asarray(similarity, dtype=float)
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy {accuracy} outside [0, 1]")
    k = len(s)
    if k < 2:
        return np.ones((k, k))
    off = np.power(np.clip(s, 1e-12, 1.0), sharpness)
    np.fill_diagonal(off, 0.0)
    off = off / off.sum(axis=1, keepdims=True)
    return accuracy * np.eye(k) + (1.0 - accuracy) * off


def zero_advantage_share(answers: np.ndarray, rewards: np.ndarray, group_size: int, class_weights=None,
              p_invalid: float = 0.0) -> float:
    """Expected share of groups whose G rewards all tie (zero advantage), computed exactly.

    `answers[i]`: the model's answer distribution for gold class i; `p_invalid`: chance an answer is unparseable
    (reward 0); `class_weights`: how often each gold class is drawn (default uniform).
    """
    P = np.asarray(answers, dtype=float) * (1.0 - p_invalid)
    R = np.asarray(rewards, dtype=float)
    k = len(P)
    w = np.full(k, 1.0 / k) if class_weights is None else np.asarray(class_weights, float) / np.sum(class_weights)
    total = 0.0
    for i in range(k):
        mass: dict[float, float] = {0.0: p_invalid}
        for j in range(k):
            r = round(float(R[i, j]), 9)
            mass[r] = mass.get(r, 0.0) + P[i, j]
        total += w[i] * sum(q ** group_size for q in mass.values())
    return float(total)


def wrong_answer_rewards(priors: dict[str, Prior], label_sets: dict[str, Sequence[str]], gammas: Sequence[float],
                         alpha: float = 1.0) -> "pd.DataFrame":
    """Every wrong (gold, pred) pair of each label set: its similarity under each prior and its ESWR reward at
    each threshold (alpha = 1 shows S itself where credit is given)."""
    import pandas as pd

    rows = []
    for set_name, labels in label_sets.items():
        for prior_name, prior in priors.items():
            for gold in labels:
                for pred in labels:
                    if pred == gold:
                        continue
                    s = prior(pred, gold)
                    for g in gammas:
                        rows.append({"label_set": set_name, "prior": prior_name, "gamma": g, "gold": gold,
                                     "pred": pred, "similarity": s, "reward": alpha * s if s > g else 0.0})
    return pd.DataFrame(rows)


def zero_advantage_sweep(labels: Sequence[str], answer_similarity: np.ndarray, reward_priors: dict[str, Prior | None],
                    accuracies: Sequence[float], group_sizes: Sequence[int], alpha: float = 0.5, gamma: float = 0.7,
                    sharpness: float = 4.0, p_invalid: float = 0.0) -> "pd.DataFrame":
    """Share of zero-advantage groups for each reward (None = binary) over model accuracy and group size G.

    The model's answers follow `confusion_pattern(answer_similarity, accuracy, sharpness)`: which classes it
    confuses is set by `answer_similarity`, independently of the reward's prior.
    """
    import pandas as pd

    rows = []
    tables = {name: reward_table(labels, p, alpha, gamma) for name, p in reward_priors.items()}
    for acc in accuracies:
        P = confusion_pattern(answer_similarity, acc, sharpness)
        for G in group_sizes:
            for name, R in tables.items():
                rows.append({"reward": name, "accuracy": acc, "G": G,
                             "zero_advantage_share": zero_advantage_share(P, R, G, p_invalid=p_invalid)})
    return pd.DataFrame(rows)


# --- What notebook 02 shows -------------------------------------------------------------------------------------
def priors_to_compare(cfg: PriorConfig, labels: Sequence[str], confusion_csv: str | None = None,
                      answer_prior: str = "va", model_accuracy: float = 0.6, sharpness: float = 4.0
                      ) -> dict[str, Prior]:
    """Plutchik's wheel, the valence-arousal prior and a data-driven one over `labels`: from a real confusion matrix
    (`confusion_csv`, counts) when there is one, else an illustrative one (a simulated model of `model_accuracy`
    whose confusions follow `answer_prior`), named so."""
    priors = {"plutchik": plutchik_prior(cfg, labels), "va": va_prior(cfg, labels)}
    if confusion_csv:
        conf_labels, counts = read_confusion_csv(confusion_csv)
        priors["confusion"] = confusion_prior(counts, conf_labels, cfg.confusion_rescale)
    else:
        shape = similarity_matrix(priors[answer_prior], labels)
        priors["confusion (illustrative)"] = confusion_prior(confusion_pattern(shape, model_accuracy, sharpness),
                                                             labels, cfg.confusion_rescale)
    return priors


def credit_share(wrong: "pd.DataFrame") -> "pd.DataFrame":
    """From `wrong_answer_rewards`: the share of wrong pairs that earn partial credit, per label set, prior and
    gamma."""
    return (wrong.assign(credited=wrong.reward > 0)
            .groupby(["label_set", "prior", "gamma"]).credited.mean().rename("share_of_wrong_pairs_with_credit")
            .reset_index())


def credited_pairs(wrong: "pd.DataFrame", gamma: float) -> list[str]:
    """Lines naming the (unordered) label pairs that earn credit at `gamma`, per label set and prior; a label set
    where no wrong answer earns any says so."""
    at = wrong[(wrong.gamma == gamma) & (wrong.reward > 0)]
    out = []
    for (cname, pname), d in at.groupby(["label_set", "prior"]):
        pairs = sorted({tuple(sorted(x)) for x in zip(d.gold, d.pred)})
        out.append(f"{cname:8s} {pname:26s} " + ", ".join(f"{a}-{b}" for a, b in pairs))
    out += [f"{cname:8s} no wrong answer earns credit under any prior" for cname in dict.fromkeys(wrong.label_set)
            if at[at.label_set == cname].empty]
    return out


def zero_advantage_table(label_sets: dict[str, Sequence[str]], priors: dict[str, Prior], answer_prior: str,
                         accuracies: Sequence[float], group_sizes: Sequence[int], alpha: float = 0.5,
                         gamma: float = 0.7, sharpness: float = 4.0, p_invalid: float = 0.0) -> "pd.DataFrame":
    """`zero_advantage_sweep` for every label set, for the binary reward and ESWR under each prior; the simulated
    model's confusions follow `priors[answer_prior]`. Labels a prior does not know are left out of that set."""
    import pandas as pd

    reward_priors: dict[str, Prior | None] = {"binary": None, **{f"eswr_{k.split()[0]}": p for k, p in priors.items()}}
    sweeps = []
    for cname, labs in label_sets.items():
        labs = [lab for lab in labs if all(p is None or p.knows(lab) for p in reward_priors.values())]
        shape = similarity_matrix(priors[answer_prior], labs)
        sweeps.append(zero_advantage_sweep(labs, shape, reward_priors, accuracies, group_sizes, alpha, gamma,
                                           sharpness, p_invalid).assign(label_set=cname))
    return pd.concat(sweeps, ignore_index=True)
