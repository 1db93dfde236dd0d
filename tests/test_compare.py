"""Declared comparisons (evaluation/compare.py), training seeds in run names, held-out slices: the paired
bootstrap answers B - A on the same utterances, pooled over seeds; a missing run is reported, not crashed on."""

from __future__ import annotations

import numpy as np
import pytest

from emorl_lib.data.corpora.splits import heldout_slice, train_heldout
from emorl_lib.data.manifest import Utterance
from emorl_lib.infra.io import write_jsonl
from emorl_lib.training.experiments import ExperimentsConfig, Run, grpo_runs, sft_runs

FOUR = ("neutral", "happy", "sad", "angry")


def _utt(uid, corpus, label, fold=None, split=None):
    return Utterance(uid, corpus, "s", None, label, label, label if label in FOUR else None, split, fold, 1.0,
                     f"/x/{uid}.wav", f"/x/{uid}.wav", None)


# ---- seeds and held-out slices ----------------------------------------------------------------------------------
def test_seeds_multiply_the_matrix_and_name_the_runs():
    cfg = ExperimentsConfig(corpora=["meld"], sft_conditions=["IR"], grpo_runs=[["eswr", "IR"]], seeds=[1, 2, 3])
    names = [r.name for r in grpo_runs(cfg)]
    assert names == ["meld_grpo_eswr_IR_s1", "meld_grpo_eswr_IR_s2", "meld_grpo_eswr_IR_s3"]
    assert [r.sft_parent(cfg).name for r in grpo_runs(cfg)] == [r.name for r in sft_runs(cfg)]
    assert Run("meld", "sft", "IR").name == "meld_sft_IR"  # no seeds: the names stay as they were
    with pytest.raises(ValueError, match="seeds"):
        ExperimentsConfig(seeds=[1, 1])


def test_a_grpo_run_can_be_kept_to_one_corpus_and_cross_corpus_to_some_recipes():
    from emorl_lib.training.experiments import all_runs, scored_cross_corpus

    cfg = ExperimentsConfig(corpora=["iemocap", "meld"], iemocap_folds=[1], sft_conditions=["IR"],
                            grpo_runs=[["binary", "IR", "meld"], ["eswr", "IR"]],
                            cross_corpus=["sft IR", "grpo eswr IR"])
    assert [r.name for r in grpo_runs(cfg)] == ["iemocap-f1_grpo_eswr_IR", "meld_grpo_binary_IR", "meld_grpo_eswr_IR"]
    scored = {r.name for r in all_runs(cfg) if scored_cross_corpus(cfg, r)}
    assert scored == {"iemocap-f1_sft_IR", "meld_sft_IR", "iemocap-f1_grpo_eswr_IR", "meld_grpo_eswr_IR"}
    for bad in ({"grpo_runs": [["eswr", "IR", "ravdess"]]}, {"cross_corpus": ["grpo binary ESR"]}):
        with pytest.raises(ValueError, match="grpo_runs|cross_corpus"):
            ExperimentsConfig(**{"corpora": ["iemocap", "meld"], "sft_conditions": ["IR"],
                                 "grpo_runs": [["eswr", "IR"]], **bad})


def test_an_sft_condition_can_be_kept_to_one_corpus_and_grpo_needs_its_start():
    from emorl_lib.training.experiments import zeroshot_runs

    cfg = ExperimentsConfig(corpora=["iemocap", "meld"], iemocap_folds=[1], sft_conditions=["IR", ["ESR", "iemocap"]],
                            grpo_runs=[["eswr", "IR"], ["eswr", "ESR", "iemocap"]])
    assert [r.name for r in sft_runs(cfg)] == ["iemocap-f1_sft_IR", "iemocap-f1_sft_ESR", "meld_sft_IR"]
    assert [r.name for r in zeroshot_runs(cfg)] == ["iemocap-f1_zeroshot_ESR", "iemocap-f1_zeroshot_IR",
                                                    "meld_zeroshot_IR"]
    sft = {r.name for r in sft_runs(cfg)}
    assert all(r.sft_parent(cfg).name in sft for r in grpo_runs(cfg))
    with pytest.raises(ValueError, match=r"ESR on meld"):  # an ESR GRPO run on MELD without its SFT start
        ExperimentsConfig(corpora=["iemocap", "meld"], sft_conditions=["IR", ["ESR", "iemocap"]],
                          grpo_runs=[["eswr", "ESR"]])
    with pytest.raises(ValueError, match="sft_conditions"):
        ExperimentsConfig(corpora=["iemocap", "meld"], sft_conditions=[["ESR", "savee"]], grpo_runs=[])

def test_heldout_slice_is_stratified_seeded_and_disjoint():
    rows = [_utt(f"u{i:03d}", "iemocap", FOUR[i % 4], fold=2 + i % 4) for i in range(80)]
    train, val = heldout_slice(rows, 0.25, seed=0)
    assert len(val) == 20 and len(train) == 60
    assert {u.utt_id for u in train}.isdisjoint(u.utt_id for u in val)
    assert sorted(sum(u.label == lab for u in val) for lab in FOUR) == [5, 5, 5, 5]
    again = heldout_slice(list(reversed(rows)), 0.25, seed=0)[1]
    assert {u.utt_id for u in again} == {u.utt_id for u in val}  # order of the rows does not matter
    assert {u.utt_id for u in heldout_slice(rows, 0.25, seed=1)[1]} != {u.utt_id for u in val}
    assert heldout_slice(rows, 0.0)[1] == []
    with pytest.raises(ValueError, match="fraction"):
        heldout_slice(rows, 1.0)


def test_train_heldout_never_touches_the_test_side():
    rows = [_utt(f"i{i}", "iemocap", FOUR[i % 4], fold=1 + i % 5) for i in range(50)]
    train, val = train_heldout(rows, "iemocap", 1, 0.2, 0)
    assert all(u.fold != 1 for u in train + val) and len(train) + len(val) == 40 and val
    meld = [_utt(f"m{i}", "meld", FOUR[i % 4], split=("train", "dev", "test")[i % 3]) for i in range(30)]
    train, val = train_heldout(meld, "meld", None, 0.2, 0)
    assert {u.split for u in train} == {"train"} and {u.split for u in val} == {"dev"}


# ---- comparisons ------------------------------------------------------------------------------------------------
SEEDS = [1, 2, 3]


@pytest.fixture()
def setup(tmp_path):
    from emorl_lib.profile import eval_setup, load_profile

    prof = load_profile("default", {
        "paths": {"cache": str(tmp_path / "cache"), "runs": str(tmp_path / "runs"), "results": str(tmp_path / "res")},
        "experiments": {"corpora": ["meld"], "sft_conditions": ["IR"], "grpo_runs": [["eswr", "IR"]],
                        "seeds": SEEDS, "cross_corpus": True},
        "eval": {"max_utterances": None, "bootstrap": 400},
    })
    s = eval_setup(prof)
    s.paths.ensure()
    s.prof = prof  # the profile it came from, for _profile_with
    meld = [_utt(f"m{k:03d}", "meld", FOUR[k % 4], split="test") for k in range(120)]
    write_jsonl(s.paths.manifests / "meld.jsonl", meld + [_utt("mt0", "meld", "sad", split="train")])
    write_jsonl(s.paths.manifests / "crosscorpus_savee.jsonl", [_utt(f"x{k}", "savee", FOUR[k % 4]) for k in range(40)])
    return s


def _write(s, run, test_set, correct):
    """Predictions of `run` on `test_set`: right where `correct[i]`, else another candidate."""
    from emorl_lib.evaluation.matrix import load_test_set

    ts = load_test_set(test_set, run, s)
    rows = []
    for r, ok in zip(ts.rows, correct):
        gold = ts.gold(r)
        label = gold if ok else next(c for c in ts.candidates if c != gold)
        rows.append({"utt_id": r.utt_id, "gold": gold, "raw": f"<answer>{label}</answer>", "label": label,
                     "reason": "ok", "n_tokens": 4,
                     "seconds": 0.01, "batch_size": 8, "condition": run.condition, "max_new_tokens": 16})
    write_jsonl(run.predictions(s.paths, test_set), rows)


def _profile_with(s, comparisons):
    from emorl_lib.profile import Profile, eval_setup, validate

    return eval_setup(validate(Profile(s.prof.name, s.prof.path, {**s.prof.sections, "comparisons": comparisons})))


COMP = {"corpus": "meld", "a": "sft IR", "b": "grpo eswr IR", "metric": "wa"}


def test_a_clear_gain_is_detected_with_its_size(setup):
    from emorl_lib.evaluation.compare import answer

    s = _profile_with(setup, {"grpo_vs_sft": COMP})
    rng = np.random.default_rng(0)
    for seed in SEEDS:
        a = rng.random(120) < 0.4
        b = a | (rng.random(120) < 0.5)  # B right wherever A is, and on about half of the rest
        _write(s, Run("meld", "sft", "IR", None, None, seed), "meld-test", a)
        _write(s, Run("meld", "grpo", "IR", "eswr", None, seed), "meld-test", b)
    (c,) = s.comparisons
    pooled, *per = answer(c, s)
    assert pooled.scope == "pooled" and pooled.n_seeds == 3 and len(per) == 3
    assert pooled.diff == pytest.approx(np.mean([o.diff for o in per]))
    assert pooled.diff == pytest.approx(pooled.value_b - pooled.value_a)
    assert 15 < pooled.diff < 45 and 0 < pooled.lo < pooled.diff < pooled.hi
    assert pooled.favour_b == 3
    assert "beats" in pooled.sentence(0.95) and "3 of 3 seeds" in pooled.sentence(0.95)


def test_pairing_narrows_the_interval_and_no_difference_is_said_so(setup):
    from emorl_lib.evaluation.compare import answer

    s = _profile_with(setup, {"grpo_vs_sft": COMP})
    rng = np.random.default_rng(1)
    for seed in SEEDS:
        a = rng.random(120) < 0.5
        b = a.copy()
        flip = rng.choice(120, 6, replace=False)
        b[flip] = ~b[flip]  # B differs from A on 6 utterances only
        _write(s, Run("meld", "sft", "IR", None, None, seed), "meld-test", a)
        _write(s, Run("meld", "grpo", "IR", "eswr", None, seed), "meld-test", b)
    (c,) = s.comparisons
    pooled = answer(c, s)[0]
    assert pooled.lo <= 0 <= pooled.hi
    assert pooled.hi - pooled.lo < 12  # unpaired intervals of two 50 % systems on 120 utterances span ~25 points
    assert pooled.sentence(0.95).startswith("No difference detectable")


def test_missing_runs_are_reported_and_the_page_is_written(setup):
    from emorl_lib.evaluation.compare import answer, write_results

    comps = {"grpo_vs_sft": COMP, "xc": {**COMP, "test_sets": "cross-corpus", "metric": "ua"},
             "other": {**COMP, "a": "zeroshot IR"}}
    s = _profile_with(setup, comps)
    for seed in SEEDS:
        _write(s, Run("meld", "sft", "IR", None, None, seed), "meld-test", [True, False] * 60)
        _write(s, Run("meld", "grpo", "IR", "eswr", None, seed), "meld-test", [True] * 120)
    c = s.comparisons
    xc = answer(c[1], s)[0]
    assert not xc.answered and any("xc-savee" in m for m in xc.missing)
    assert xc.sentence(0.95).startswith("Not answered")
    written = write_results(s)
    page = (s.paths.results / "results.md").read_text()
    assert "grpo_vs_sft" in page and "Not answered" in page and "beats" in page
    assert any(p.name == "results.csv" for p in written)


def test_bad_comparisons_name_the_entry(setup):
    from emorl_lib.infra.config import ConfigError

    for bad, msg in [({**COMP, "b": "grpo IR"}, "grpo <binary|eswr>"), ({**COMP, "metric": "acc"}, "metric"),
                     ({**COMP, "test_sets": "dev"}, "test_sets"), ({**COMP, "colour": 1}, "unknown key")]:
        with pytest.raises(ConfigError, match=f"comparisons.broken.*{msg}"):
            _profile_with(setup, {"broken": bad})
    with pytest.raises(ConfigError, match="mapping"):
        _profile_with(setup, [COMP])
