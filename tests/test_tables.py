"""Tables, report and figures from hand-made manifests and prediction files (no model): values in range, missing
runs shown as missing, cross-corpus sets chosen by protocol."""


import numpy as np
import pandas as pd
import pytest

from emorl_lib.data.manifest import Utterance
from emorl_lib.evaluation.matrix import (
    prediction_key,  # a prediction line counts only under its model's key
)
from emorl_lib.infra.io import write_jsonl
from emorl_lib.training.experiments import Run

FOUR = ("neutral", "happy", "sad", "angry")


def _utt(uid, corpus, label, fold=None, split=None):
    return Utterance(uid, corpus, "s", None, label, label, label if label in FOUR else None, split, fold, 1.0,
                     f"/x/{uid}.wav", f"/x/{uid}.wav", None)


@pytest.fixture()
def settings(tmp_path):
    from emorl_lib.profile import eval_setup, load_profile

    root = tmp_path
    prof = load_profile("default", {
        "paths": {"cache": str(root / "cache"), "runs": str(root / "runs"), "results": str(root / "results")},
        "experiments": {"corpora": ["iemocap", "meld"], "iemocap_folds": [1, 2], "cross_corpus": True,
                        "grpo_runs": [["binary", "IR"], ["eswr", "IR"], ["eswr", "ESR"]], "sft_conditions": ["IR", "ESR"]},
        "eval": {"max_utterances": None, "bootstrap": 200},
    })
    s = eval_setup(prof)
    s.prof = prof  # the profile it came from: tests derive variants of it
    m = s.paths.ensure().manifests
    iem = [_utt(f"i{f}_{k}", "iemocap", FOUR[k % 4], fold=f) for f in (1, 2) for k in range(8)]
    meld = [_utt(f"m{k}", "meld", ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust")[k % 7],
                 split="test") for k in range(14)] + [_utt("mt0", "meld", "sad", split="train")]
    write_jsonl(m / "iemocap.jsonl", iem)
    write_jsonl(m / "meld.jsonl", meld)
    for c in ("iemocap", "meld", "savee"):
        write_jsonl(m / f"crosscorpus_{c}.jsonl", [_utt(f"x{c}{k}", c, FOUR[k % 4]) for k in range(8)])
    return s


def _predict(s, run, test_set, correct_every=2):
    from emorl_lib.evaluation.matrix import load_test_set

    ts = load_test_set(test_set, run, s)
    path = run.predictions(s.paths, test_set)
    rows = []
    for i, r in enumerate(ts.rows):
        gold = ts.gold(r)
        label = gold if i % correct_every == 0 else (None if i % 3 == 0 else next(c for c in ts.candidates if c != gold))
        rows.append({"utt_id": r.utt_id, "gold": gold, "raw": f"<answer>{label}</answer>", "label": label,
                     "reason": "ok" if label else "unknown_label", "n_tokens": 5 + i % 3, "seconds": 0.01,
                     "batch_size": 4, "condition": run.condition, "key": prediction_key(s, run)})
    write_jsonl(path, rows)


def test_test_sets_follow_the_protocol(settings):
    from emorl_lib.evaluation.matrix import test_set_names

    assert test_set_names(Run("meld", "grpo", "ESR", "eswr"), settings) == ["meld-test", "xc-iemocap", "xc-savee"]
    assert test_set_names(Run("iemocap", "sft", "IR", None, 1), settings) == ["iemocap-f1", "xc-meld", "xc-savee"]
    assert test_set_names(Run("iemocap", "sft", "IR", None, 2), settings) == ["iemocap-f2"]  # first fold only


def test_evaluation_workers_get_balanced_disjoint_shares(settings):
    from emorl_lib.evaluation.matrix import balanced_shares
    from emorl_lib.training.experiments import all_runs

    runs = all_runs(settings.exp)
    shares = balanced_shares(runs, settings, 2)
    assert sorted(r.name for sh in shares for r in sh) == sorted(r.name for r in runs)  # each model once
    esr_xc = [r for r in runs if r.condition == "ESR" and r.stage != "zeroshot" and r.fold in (None, 1)]
    assert len(esr_xc) == 4 and [sum(r in sh for r in esr_xc) for sh in shares] == [2, 2]  # the costly ones split
    assert balanced_shares(runs[:1], settings, 2) == [runs[:1]]  # no empty share


def test_tables_values_in_range_and_missing_shown(settings):
    from emorl_lib.evaluation.matrix import collect
    from emorl_lib.evaluation.tables import MISSING, write_all

    zs = [Run("iemocap", "zeroshot", "IR", None, f) for f in (1, 2)] + [Run("meld", "zeroshot", "IR")]
    for r in zs:
        for t in (["iemocap-f1"] if r.fold == 1 else ["iemocap-f2"]) if r.corpus == "iemocap" else ["meld-test"]:
            _predict(settings, r, t)
    _predict(settings, Run("meld", "grpo", "ESR", "eswr"), "meld-test", correct_every=1)
    _predict(settings, Run("meld", "grpo", "ESR", "eswr"), "xc-savee", correct_every=1)
    _predict(settings, Run("iemocap", "grpo", "ESR", "eswr", 1), "xc-meld")
    # an interrupted file counts as not evaluated, not as a score on fewer utterances
    write_jsonl(Run("meld", "sft", "IR").predictions(settings.paths, "meld-test"),
                [{"utt_id": "m0", "gold": "neutral", "raw": "", "label": "neutral", "reason": "ok", "n_tokens": 1,
                  "seconds": 0.1, "batch_size": 1, "condition": "IR",
                  "key": prediction_key(settings, Run("meld", "sft", "IR"))}])
    book = collect(settings)
    written = write_all(book)
    d = settings.paths.tables
    assert {p.name for p in written} >= {"main_results.csv", "main_results.md", "main_results.tex",
                                         "ablation_eswr.csv", "ablation_reasoning.csv", "crosscorpus.csv",
                                         "inference_cost.csv"}
    main = pd.read_csv(d / "main_results.csv")
    assert list(main.row) == ["Zero-shot", "SFT", "GRPO (binary reward)", "GRPO + ESWR", "GRPO + ESWR + ESR"]
    vals = main[[c for c in main.columns if c.split("_")[0] in ("meld", "iemocap")]].to_numpy(float)
    assert np.nanmin(vals) >= 0 and np.nanmax(vals) <= 100
    zs_row = main.iloc[0]
    assert zs_row.iemocap_wa_lo <= zs_row.iemocap_wa <= zs_row.iemocap_wa_hi
    assert main.iloc[4].meld_wa == pytest.approx(100.0)
    assert np.isnan(main.iloc[4].iemocap_ua) and np.isnan(main.iloc[1].meld_ua)  # missing / incomplete
    md = (d / "main_results.md").read_text()
    assert MISSING in md and "not trained or not evaluated" in md
    assert "\\begin{tabular}" in (d / "main_results.tex").read_text()
    status = pd.read_csv(d / "eval_status.csv")
    assert status[(status.run == "meld_sft_IR") & (status.test_set == "meld-test")].status.item().startswith("incomplete")
    xc = pd.read_csv(d / "crosscorpus.csv")
    esr = xc[xc.row == "GRPO + ESWR + ESR"]
    assert not ((esr.train == esr.test).any())
    assert esr[(esr.train == "meld") & (esr.test == "savee")].wa.item() == pytest.approx(100.0)
    assert esr[(esr.train == "meld") & (esr.test == "iemocap")].wa.isna().item()
    mat = pd.read_csv(d / "crosscorpus_matrix_grpo___eswr___esr.csv", index_col=0)
    assert list(mat.index) == ["iemocap", "meld"] and mat.loc["meld", "savee"] == pytest.approx(100.0)
    cost = pd.read_csv(d / "inference_cost.csv")
    assert set(cost.condition) == {"IR", "ESR"} and (cost.tokens_per_utt >= 5).all()
    report = (settings.paths.results / "evaluation_report.md").read_text()
    assert "SMOKE numbers from a tiny model on synthetic data" in report
    assert "73.54" in report and "51.42" in report and "48.84" in report  # reference numbers beside ours
    assert f"profile `{settings.profile}`" in report


def test_max_utterances_is_stated(settings):
    from emorl_lib.evaluation.matrix import collect
    from emorl_lib.evaluation.tables import build_tables
    from emorl_lib.profile import eval_setup

    s = eval_setup(settings.prof.with_overrides({"eval": {"max_utterances": 4}}))
    tables, _ = build_tables(collect(s))
    assert all(any("at most 4 utterances" in n for n in t.notes) for t in tables)


def test_figures_from_logs_and_scores(settings, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from emorl_lib.data.labels import CORPUS_LABELS
    from emorl_lib.evaluation import figures as F
    from emorl_lib.evaluation.matrix import collect
    from emorl_lib.evaluation.tables import build_tables, main_rows
    from emorl_lib.method.priors import plutchik_prior

    _predict(settings, Run("meld", "zeroshot", "IR"), "meld-test")
    for reward in ("binary", "eswr"):
        run = Run("meld", "grpo", "IR", reward)
        run.log_csv(settings.paths).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"step": range(1, 6), "reward": np.linspace(0.2, 0.8, 5), "frac_reward_zero_std": [.5] * 5,
                      "kl": [0.01] * 5, f"rewards/{reward}_accuracy/mean": np.linspace(0.1, 0.6, 5)}
                     ).to_csv(run.log_csv(settings.paths), index=False)
    book = collect(settings)
    tables, mats = build_tables(book)
    logs = F.grpo_logs(book)
    rcfg = settings.prof.section("reward")
    assert len(logs) == 2
    assert F.accuracy_column(next(iter(logs.values()))).startswith("rewards/")
    for name, fig in [("curves", F.training_curves(logs)), ("confusion", F.confusion_grid(book, main_rows())),
                      ("bars", F.metric_bars(tables[0].numbers, "t")),
                      ("prior", F.prior_heatmaps(F.prior_matrices({"plutchik": plutchik_prior(rcfg.prior)},
                                                                   {"meld": CORPUS_LABELS["meld"]}), rcfg.gamma))]:
        assert fig is not None, name
        paths = F.save(fig, tmp_path, name)
        assert all(p.stat().st_size > 0 for p in paths)
    assert F.sft_curves(F.sft_logs(book)) is None  # no SFT logs: nothing to draw, no crash


def test_prior_heatmaps_star_exactly_the_wrong_answers_eswr_credits():
    """The prior figure draws what the reward pays: on MELD under Plutchik with gamma 0.7 the four pairs 45 degrees
    apart (S = 0.854) are starred, both ways; IEMOCAP gets no star; a label the prior cannot place is left out."""
    from emorl_lib.data.labels import CORPUS_LABELS
    from emorl_lib.evaluation import figures as F
    from emorl_lib.method.priors import PriorConfig, plutchik_prior

    mats = F.prior_matrices({"plutchik": plutchik_prior(PriorConfig())},
                            {c: CORPUS_LABELS[c] for c in ("meld", "iemocap")})
    meld = mats["plutchik"]["meld"]
    assert list(meld.index) == list(meld.columns) and meld.index.name == "gold"
    assert meld.loc["fear", "surprise"] == pytest.approx((np.cos(np.pi / 4) + 1) / 2)
    fig = F.prior_heatmaps(mats, gamma=0.7, reward_prior="plutchik")
    stars = {ax.get_title().split(" / ")[-1]: [t.get_text() for t in ax.texts if t.get_text().endswith("*")]
             for ax in fig.axes}
    assert stars["MELD"] == ["0.85*"] * 8 and stars["IEMOCAP"] == []
    assert "the reward's" in fig.axes[0].get_title()
    narrow = F.prior_matrices({"p": plutchik_prior(PriorConfig(), ("neutral", "happy", "sad"))},
                              {"iemocap": CORPUS_LABELS["iemocap"]})
    assert list(narrow["p"]["iemocap"].index) == ["neutral", "happy", "sad"]  # angry: not in that prior
    assert F.prior_heatmaps({}) is None


def test_trained_rows_read_only_the_answer_and_zero_shot_fallbacks_are_counted(settings):
    """Predictions written by an older parser (a trained adapter's tagless output read whole) are read again:
    a trained run scores only its <answer>; a zero-shot run may fall back to the whole text, counted per table."""
    from emorl_lib.evaluation.matrix import collect, load_test_set
    from emorl_lib.evaluation.tables import build_tables

    def write(run, raw_of):
        ts = load_test_set("meld-test", run, settings)
        rows = []
        for i, r in enumerate(ts.rows):
            raw = raw_of(i, ts.gold(r))
            rows.append({"utt_id": r.utt_id, "gold": ts.gold(r), "raw": raw, "label": ts.gold(r), "reason": "ok",
                         "n_tokens": 3, "seconds": 0.01, "batch_size": 2, "condition": run.condition,
                         "key": prediction_key(settings, run)})
        write_jsonl(run.predictions(settings.paths, "meld-test"), rows)
        return len(rows)

    # every output names the right label; half of them without a tag
    n = write(Run("meld", "zeroshot", "IR"), lambda i, g: f"<answer>{g}</answer>" if i % 2 else f"it sounds {g}")
    write(Run("meld", "sft", "IR"), lambda i, g: f"<answer>{g}</answer>" if i % 2 else f"it sounds {g}")
    book = collect(settings)
    zs = book.get(Run("meld", "zeroshot", "IR"), "meld-test").scores
    sft = book.get(Run("meld", "sft", "IR"), "meld-test").scores
    assert zs.wa == pytest.approx(1.0) and zs.n_fallback == n // 2
    assert sft.wa == pytest.approx((n - n // 2) / n) and sft.n_fallback == 0 and sft.unparseable > 0
    tables, _ = build_tables(book)
    main = tables[0]
    assert list(main.numbers.meld_fallback[:2]) == [n // 2, 0]
    assert list(main.display["MELD fallback"][:2]) == [f"{n // 2}/{n}", f"0/{n}"]
    assert any("fallback" in note for note in main.notes)
    # zero-shot fallback can be switched off: then those outputs are unparseable too
    from emorl_lib.profile import eval_setup

    strict = collect(eval_setup(settings.prof.with_overrides({"eval": {"require_answer_tag": True}})))
    assert strict.get(Run("meld", "zeroshot", "IR"), "meld-test").scores.n_fallback == 0


@pytest.mark.parametrize("folds,says,never", [
    ([1], "IEMOCAP = fold 1 only", "mean of"),
    ([1, 2], "IEMOCAP = mean of folds 1, 2", "fold 1 only"),
    ([1, 2, 3, 4, 5], "IEMOCAP = mean of the 5 leave-one-session-out folds", "only"),
])
def test_main_table_says_which_iemocap_folds_its_numbers_are(settings, folds, says, never):
    from emorl_lib.evaluation.matrix import collect
    from emorl_lib.evaluation.tables import build_tables, render_report
    from emorl_lib.profile import eval_setup

    s = eval_setup(settings.prof.with_overrides({"experiments": {"iemocap_folds": folds}}))
    _predict(s, Run("iemocap", "zeroshot", "IR", None, 1), "iemocap-f1")
    book = collect(s)
    tables, mats = build_tables(book)
    main = tables[0]
    assert says in main.caption and never not in main.caption.split(";", 1)[1]
    report = render_report(book, tables, mats)
    assert says in report
    if len(folds) > 1:  # only fold 1 scored: the note says so
        assert any("fold 1 only (1/" in n for n in main.notes)
