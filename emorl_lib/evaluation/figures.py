"""Figures for the paper's tables and the training logs; each function takes data, returns a Figure (or None when
there is nothing to draw), and `save` writes PNG + PDF under results/<profile>/figures/."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data.testsets import in_corpus_name
from ..method.metrics import METRICS, UNPARSEABLE
from ..method.priors import Prior, similarity_matrix
from ..model.backbones import SMOKE_NOTE
from ..training.experiments import Recipe, Run, grpo_runs, sft_runs
from ..training.runs import accuracy_column  # the log's column names are the trainer's
from .matrix import ScoreBook
from .tables import IN_CORPUS, METRIC_NAMES, NAMES


def save(fig, figures_dir: Path, name: str) -> list[Path]:
    """Every figure of the kit goes through here: the same formats (PNG for the notebooks and the README, PDF for a
    paper) at the same resolution, under the profile's figures folder."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    out = [figures_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in out:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    return out


def title_note(book: ScoreBook) -> str:
    """What a figure's title must say about the numbers it shows: SMOKE on a tiny model or synthetic data, and the
    cap on utterances per test set ("" when neither applies)."""
    s = book.settings
    bits = []
    if s.smoke:
        bits.append(SMOKE_NOTE.strip(" []"))
    if s.eval.max_utterances is not None:
        bits.append(f"<= {s.eval.max_utterances} utt/set")
    return f" [{'; '.join(bits)}]" if bits else ""


def pooled_confusion(book: ScoreBook, corpus: str, rec: Recipe) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """A recipe's in-corpus confusion counts (summed over its IEMOCAP folds and training seeds)."""
    total, labels = None, None
    for run in book.models(corpus, rec.stage, rec.condition, rec.reward):
        name = in_corpus_name(corpus, run.fold)
        e = book.get(run, name)
        if e and e.scores:
            total = e.scores.confusion if total is None else total + e.scores.confusion
            labels = e.scores.labels
    return (total, labels) if total is not None else None


def confusion_grid(book: ScoreBook, rows: list[Recipe], corpora=IN_CORPUS):
    """Row-normalised confusion matrices (recall on the diagonal; last column unparseable)."""
    cells = [(r, c, pooled_confusion(book, c, r)) for r in rows for c in corpora]
    cells = [x for x in cells if x[2] is not None]
    if not cells:
        return None
    n = len(cells)
    cols = min(n, 4)
    nrows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.9 * nrows), squeeze=False)
    for ax, (rec, corpus, (cm, labels)) in zip(axes.flat, cells):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(norm.shape[0]):
            for j in range(norm.shape[1]):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(labels) + 1), [*labels, UNPARSEABLE], rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(f"{rec.label} ({rec.condition})\n{NAMES[corpus]}, n={int(cm.sum())}", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Confusion matrices (row-normalised)" + title_note(book), fontsize=9)
    fig.tight_layout()
    return fig


def transfer_heatmaps(mats: Mapping[str, pd.DataFrame], reference: pd.DataFrame | None = None, note: str = ""):
    panels = {k: v.drop(columns=["mean"], errors="ignore") for k, v in mats.items()
              if v.drop(columns=["mean"], errors="ignore").notna().any().any()}
    if reference is not None:
        panels["EmoBox Whisper-large-v3 (reference)"] = reference
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, m) in zip(axes.flat, panels.items()):
        v = m.to_numpy(dtype=float)
        ax.imshow(np.ma.masked_invalid(v), vmin=0, vmax=100, cmap="viridis")
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                ax.text(j, i, "—" if not np.isfinite(v[i, j]) else f"{v[i, j]:.1f}", ha="center", va="center",
                        fontsize=7, color="white" if np.isfinite(v[i, j]) and v[i, j] < 60 else "black")
        ax.set_xticks(range(v.shape[1]), [NAMES.get(c, c) for c in m.columns], rotation=45, fontsize=7)
        ax.set_yticks(range(v.shape[0]), [NAMES.get(c, c) for c in m.index], fontsize=7)
        ax.set_xlabel("test set", fontsize=8)
        ax.set_ylabel("trained on", fontsize=8)
        ax.set_title(title, fontsize=8)
    fig.suptitle("Cross-corpus accuracy (%), balanced 4-class sets (chance 25)" + note, fontsize=9)
    fig.tight_layout()
    return fig


def metric_bars(numbers: pd.DataFrame, title: str, corpora=IN_CORPUS):
    """Grouped bars (UA, WA, F1) with 95 % CI whiskers, one panel per corpus, from a results table's CSV frame."""
    if numbers.empty or not any(numbers.get(f"{c}_{m}", pd.Series(dtype=float)).notna().any()
                                for c in corpora for m in METRICS):
        return None
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 3.6), squeeze=False, sharey=True)
    x = np.arange(len(numbers))
    w = 0.8 / len(METRICS)
    for ax, c in zip(axes.flat, corpora):
        for k, m in enumerate(METRICS):
            v = numbers[f"{c}_{m}"].to_numpy(dtype=float)
            lo = numbers[f"{c}_{m}_lo"].to_numpy(dtype=float)
            hi = numbers[f"{c}_{m}_hi"].to_numpy(dtype=float)
            err = np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])
            ax.bar(x + (k - 1) * w, np.nan_to_num(v), w, yerr=err, capsize=2, label=METRIC_NAMES[m])
            for xi, vi in zip(x + (k - 1) * w, v):
                if not np.isfinite(vi):
                    ax.text(xi, 1, "—", ha="center", fontsize=7)
        ax.set_xticks(x, numbers["row"], rotation=30, ha="right", fontsize=7)
        ax.set_title(NAMES[c], fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def cost_bars(cost: pd.DataFrame, note: str = ""):
    if cost.empty:
        return None
    lab = cost.condition + " " + cost.stage + cost.reward.map(lambda r: f" {r}" if r else "")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].bar(lab, cost.seconds_per_utt)
    axes[0].set_ylabel("seconds / utterance")
    axes[1].bar(lab, cost.tokens_per_utt, color="tab:orange")
    axes[1].set_ylabel("generated tokens / utterance")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.suptitle("Inference cost by prompt condition" + note, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Training logs
# ----------------------------------------------------------------------------------------------------------------
def read_log(path: Path) -> pd.DataFrame | None:
    """A run's per-step log CSV (column `step` plus TRL's log keys), or None when absent/empty."""
    path = Path(path)
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if df.empty or "step" not in df.columns:
        return None
    return df.sort_values("step")


def grpo_logs(book: ScoreBook) -> dict[Run, pd.DataFrame]:
    s = book.settings
    return {r: d for r in grpo_runs(s.exp) if (d := read_log(r.log_csv(s.paths))) is not None}


def sft_logs(book: ScoreBook) -> dict[Run, pd.DataFrame]:
    s = book.settings
    return {r: d for r in sft_runs(s.exp) if (d := read_log(r.log_csv(s.paths))) is not None}


def training_curves(logs: Mapping[Run, pd.DataFrame], smooth: int = 1, note: str = ""):
    """GRPO curves, ESWR (solid) vs binary (dashed): total reward, accuracy reward, share of zero-std groups, KL,
    completion length."""
    if not logs:
        return None
    keys = [("reward", "total reward"), ("__acc__", "accuracy reward (mean)"),
            ("frac_reward_zero_std", "zero-advantage share (groups whose rewards tie)"), ("kl", "KL to reference"),
            ("completions/mean_length", "completion length (tokens)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    colors = {}
    for run, df in logs.items():
        base = f"{run.corpus}{'-f' + str(run.fold) if run.fold else ''} {run.condition}"
        color = colors.setdefault(base, f"C{len(colors) % 10}")
        for ax, (col, title) in zip(axes.flat, keys):
            c = accuracy_column(df) if col == "__acc__" else col
            if c is None or c not in df.columns:
                continue
            y = df[c].rolling(smooth, min_periods=1).mean() if smooth > 1 else df[c]
            ax.plot(df["step"], y, color=color, ls="-" if run.reward == "eswr" else "--",
                    label=f"{base} {run.reward}")
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("step", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels)),
                   bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("GRPO training: ESWR (solid) vs binary reward (dashed)" + note, fontsize=9)
    fig.tight_layout()
    return fig


def reward_components(run: Run, log: pd.DataFrame, smooth: int = 5, note: str = ""):
    """Each reward term of one GRPO run against steps (TRL logs `rewards/<name>/mean`), smoothed over `smooth`
    steps: which term moves, the answer's or the format's. A term of weight 0 is logged but not trained on."""
    cols = [c for c in log.columns if c.startswith("rewards/") and c.endswith("/mean")]
    if not cols:
        return None
    ax = log.set_index("step")[cols].rolling(smooth, min_periods=1).mean().plot(figsize=(6, 3.2))
    ax.set_ylabel("reward (mean over completions)", fontsize=8)
    ax.set_title(f"{run.name}: reward components (weight-0 terms are logged only){note}", fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def sft_curves(logs: Mapping[Run, pd.DataFrame], note: str = ""):
    logs = {r: d for r, d in logs.items() if "loss" in d.columns}
    if not logs:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for run, df in logs.items():
        d = df.dropna(subset=["loss"])
        ax.plot(d["step"], d["loss"], label=run.name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=6)
    ax.set_title("SFT warm-up loss" + note, fontsize=9)
    fig.tight_layout()
    return fig


def prior_matrices(priors: Mapping[str, Prior],
                   label_sets: Mapping[str, Sequence[str]]) -> dict[str, dict[str, pd.DataFrame]]:
    """S(gold, predicted) of each prior over each label set, rows gold: what `prior_heatmaps` draws and what notebook
    02 writes as tables. A label a prior does not know is left out of its matrix rather than failing the grid."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for pname, prior in priors.items():
        out[pname] = {}
        for cname, labels in label_sets.items():
            labs = [l for l in labels if prior.knows(l)]
            out[pname][cname] = pd.DataFrame(similarity_matrix(prior, labs), index=labs,
                                             columns=labs).rename_axis("gold")
    return out


def prior_heatmaps(matrices: Mapping[str, Mapping[str, pd.DataFrame]], gamma: float | None = None,
                   reward_prior: str | None = None):
    """One heatmap per (prior, label set) of `prior_matrices`: a row per prior, a column per label set. With
    `gamma`, a wrong answer whose S exceeds it (partial credit under ESWR) is starred; `reward_prior` names the
    prior the profile's reward uses, so the reader sees which row trains the model."""
    cells = [(p, c, m) for p, row in matrices.items() for c, m in row.items()]
    if not cells:
        return None
    nrows = len(matrices)
    ncols = max(len(row) for row in matrices.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    for r, (pname, row) in enumerate(matrices.items()):
        used = reward_prior is not None and pname.split()[0] == reward_prior
        for c, (cname, m) in enumerate(row.items()):
            ax, v, labs = axes[r, c], m.to_numpy(dtype=float), list(m.index)
            ax.imshow(v, vmin=0, vmax=1, cmap="viridis")
            for i in range(len(labs)):
                for j in range(len(labs)):
                    credit = gamma is not None and i != j and v[i, j] > gamma
                    ax.text(j, i, f"{v[i, j]:.2f}" + ("*" if credit else ""), ha="center", va="center", fontsize=7,
                            color="black" if v[i, j] > 0.6 else "white")
            ax.set_xticks(range(len(labs)), labs, rotation=45, fontsize=7)
            ax.set_yticks(range(len(labs)), labs, fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("gold", fontsize=7)
            mark = " (the reward's)" if used else ""
            ax.set_title(f"{pname}{mark} / {NAMES.get(cname, cname)}", fontsize=8,
                         fontweight="bold" if used else "normal")
        for ax in axes[r, len(row):]:
            ax.axis("off")
    title = "Similarity prior S(gold, predicted)"
    if gamma is not None:
        title += f"; * = partial credit under ESWR (S > gamma = {gamma})"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def learning_curves(logs: Mapping[Run, pd.DataFrame], heldout: Mapping[Run, pd.DataFrame], smooth: int = 5,
                    note: str = "", policy: Mapping[Run, pd.DataFrame] | None = None):
    """GRPO learning curves, one row per training corpus: total reward, sampled batch accuracy (both smoothed over
    `smooth` steps), greedy held-out UA on the validation set and, where a run logged its policy curve
    (training/policy.py), the exact expected accuracy under the sampling temperature on its training prompts and
    the expected UA on the held-out set, against steps; one line per recipe (mean over training seeds, the band
    spanning them). Step 0 of the held-out and policy curves is the SFT start."""
    policy = policy or {}
    if not logs and not heldout:
        return None
    runs = list(dict.fromkeys([*logs, *heldout, *policy]))
    corpora = sorted({r.corpus for r in runs})
    recipes = sorted({(r.reward, r.condition) for r in runs}, key=str)
    panels = [("reward", "total reward (sampled)"), ("__acc__", "batch accuracy (sampled)"),
              ("ua", "held-out UA (greedy, validation set)")]
    if policy:
        panels += [("train:exp_acc", "expected accuracy at T (training prompts)"),
                   ("heldout:exp_ua", "expected UA at T (validation set)")]

    def frame(r: Run, col: str) -> tuple[pd.DataFrame | None, str | None]:
        if ":" in col:
            which, c = col.split(":")
            df = policy.get(r)
            return (None, None) if df is None else (df[df["set"] == which], c)
        df = heldout.get(r) if col == "ua" else logs.get(r)
        return df, (accuracy_column(df) if col == "__acc__" and df is not None else col)

    fig, axes = plt.subplots(len(corpora), len(panels), figsize=(4.3 * len(panels), 3.2 * len(corpora)),
                             squeeze=False)
    for i, corpus in enumerate(corpora):
        for k, (reward, cond) in enumerate(recipes):
            group = [r for r in runs if r.corpus == corpus and (r.reward, r.condition) == (reward, cond)]
            if not group:
                continue
            label = f"{cond}, {reward}" + (f" ({len(group)} seeds)" if len(group) > 1 else "")
            for j, (col, title) in enumerate(panels):
                ax = axes[i, j]
                series = []
                for r in group:
                    df, c = frame(r, col)
                    if df is None or df.empty or c is None or c not in df.columns:
                        continue
                    y = df.set_index("step")[c].astype(float)
                    if col in ("reward", "__acc__") and smooth > 1:
                        y = y.rolling(smooth, min_periods=1).mean()
                    series.append(y)
                if not series:
                    continue
                table = pd.concat(series, axis=1).sort_index()
                mean = table.mean(axis=1)
                ax.plot(mean.index, mean.values, color=f"C{k}", marker=None if col in ("reward", "__acc__") else "o",
                        ms=3, label=label)
                if table.shape[1] > 1:
                    ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=f"C{k}", alpha=0.15)
                ax.set_title(f"{NAMES.get(corpus, corpus)}: {title}", fontsize=8)
                ax.set_xlabel("GRPO step", fontsize=8)
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle("GRPO learning curves (mean over seeds; band: min-max)" + note, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# The data (notebook 01)
# ----------------------------------------------------------------------------------------------------------------
SPLIT_ORDER = {"train": 0, "dev": 1, "test": 2}


def class_distribution(counts: pd.DataFrame):
    """Stacked bars per corpus: utterances per label in each part (MELD's splits, the other corpora's folds)."""
    corpora = list(dict.fromkeys(counts.corpus))
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.5 * len(corpora), 3.8), squeeze=False)
    for ax, c in zip(axes[0], corpora):
        t = counts[counts.corpus == c].pivot(index="part", columns="label", values="n").fillna(0)
        t = t.loc[sorted(t.index, key=lambda p: (SPLIT_ORDER.get(p, 3), p))]
        t.plot.bar(stacked=True, ax=ax, width=0.8, legend=True)
        ax.set_title(f"{c} (n={int(t.values.sum())})")
        ax.set_xlabel("")
        ax.set_ylabel("utterances")
        ax.set_ylim(0, 1.45 * t.sum(axis=1).max())  # room for the legend above the bars
        ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    return fig


def durations(utterances: pd.DataFrame):
    """A histogram of clip durations per corpus, with the median and the longest in the title."""
    corpora = list(dict.fromkeys(utterances.corpus))
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.5 * len(corpora), 3.2), squeeze=False)
    for ax, c in zip(axes[0], corpora):
        d = utterances[utterances.corpus == c].duration
        ax.hist(d, bins=30, color="tab:blue", alpha=0.8)
        ax.set_title(f"{c}: median {d.median():.2f} s, max {d.max():.2f} s")
        ax.set_xlabel("seconds")
    fig.tight_layout()
    return fig


def clip_examples(examples: pd.DataFrame):
    """Waveform and spectrogram of each example clip (rows with wav, corpus, utt_id, label), read from the cache."""
    import soundfile as sf

    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 2.4 * len(examples)), squeeze=False)
    for (ax_w, ax_s), (_, r) in zip(axes, examples.iterrows()):
        y, sr = sf.read(r.wav, dtype="float32")
        ax_w.plot(np.arange(len(y)) / sr, y, lw=0.5)
        ax_w.set_title(f"{r.corpus} {r.utt_id} ({r.label})", fontsize=9)
        ax_w.set_xlabel("s")
        ax_s.specgram(y, NFFT=400, Fs=sr, noverlap=240, cmap="magma")
        ax_s.set_ylabel("Hz")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# The prior's consequences (notebook 02)
# ----------------------------------------------------------------------------------------------------------------
def credit_share_vs_gamma(credit: pd.DataFrame):
    """Share of wrong (gold, prediction) pairs that earn partial credit, against the threshold gamma, per label set
    and prior."""
    import seaborn as sns

    g = sns.relplot(data=credit, x="gamma", y="share_of_wrong_pairs_with_credit", hue="prior", col="label_set",
                    kind="line", marker="o", height=3, aspect=1.0)
    g.set_titles("{col_name}")
    return g.figure


def zero_advantage_vs(sweep: pd.DataFrame, x: str, fixed: str, value) -> "plt.Figure":
    """The share of zero-advantage groups per reward, against `x` ("G" or "accuracy") with `fixed` held at
    `value` (log scale against G)."""
    import seaborn as sns

    g = sns.relplot(data=sweep[sweep[fixed] == value], x=x, y="zero_advantage_share", hue="reward", col="label_set",
                    kind="line", marker="o", height=3, aspect=1.0)
    g.set_titles("{col_name}: " + ("accuracy " if fixed == "accuracy" else "G = ") + str(value))
    g.set(ylabel="share of zero-advantage groups", **({"yscale": "log"} if x == "G" else {}))
    return g.figure
