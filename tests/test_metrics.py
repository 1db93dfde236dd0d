"""Metrics on hand-computed examples, bootstrap CIs, fold means, the transfer-matrix layout."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
)

from emorl_lib.evaluation.tables import transfer_matrix, with_mean
from emorl_lib.method.metrics import fold_mean, score

LABELS = ("a", "b", "c")


def test_hand_computed_with_unparseable():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", None, "c"]
    s = score(gold, pred, LABELS, n_boot=0)
    assert s.n == 5
    assert s.wa == pytest.approx(3 / 5)
    assert s.recall == pytest.approx({"a": 0.5, "b": 0.5, "c": 1.0})
    assert s.ua == pytest.approx(2 / 3)
    # precision a 1/1, b 1/2, c 1/1; the unparseable output is nobody's prediction
    assert s.f1 == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s.unparseable == pytest.approx(1 / 5)
    assert s.confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]


def test_non_candidate_prediction_counts_as_unparseable():
    s = score(["a", "b"], ["a", "zebra"], LABELS, n_boot=0)
    assert s.wa == 0.5 and s.unparseable == 0.5 and s.confusion[1, 3] == 1


def test_unknown_gold_is_an_error():
    with pytest.raises(ValueError, match="not among the candidates"):
        score(["a", "x"], ["a", "a"], LABELS, n_boot=0)


def test_matches_sklearn_when_everything_parses():
    rng = np.random.default_rng(1)
    gold = list(rng.choice(LABELS, 300))
    pred = [g if rng.random() < 0.6 else rng.choice(LABELS) for g in gold]
    s = score(gold, pred, LABELS, n_boot=0)
    assert s.wa == pytest.approx(accuracy_score(gold, pred))
    assert s.ua == pytest.approx(balanced_accuracy_score(gold, pred))
    assert s.f1 == pytest.approx(f1_score(gold, pred, average="macro"))
    assert list(s.recall.values()) == pytest.approx(list(recall_score(gold, pred, labels=list(LABELS), average=None)))


def test_absent_class_is_left_out_of_ua_but_counts_in_macro_f1():
    s = score(["a", "a", "b"], ["a", "c", "b"], LABELS, n_boot=0)
    assert np.isnan(s.recall["c"])
    assert s.ua == pytest.approx((0.5 + 1.0) / 2)
    # sklearn, declared labels: a 2/3, b 1, c 0 (predicted once, never gold)
    assert s.f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert s.f1 == pytest.approx(f1_score(["a", "a", "b"], ["a", "c", "b"], labels=list(LABELS), average="macro",
                                          zero_division=0))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_macro_f1_is_sklearns_for_the_declared_label_set(seed):
    """Unparseable outputs, classes never predicted, classes absent from the gold labels, small sets: macro-F1
    equals sklearn's f1_score over the declared labels (an unparseable output is a label outside them)."""
    rng = np.random.default_rng(seed)
    labels = ("a", "b", "c", "d", "e")
    n = int(rng.integers(3, 40))
    gold = list(rng.choice(labels[:3 + seed % 3], n))  # some declared classes have no gold utterance
    pred = [g if rng.random() < 0.4 else (None if rng.random() < 0.3 else str(rng.choice(labels))) for g in gold]
    s = score(gold, pred, labels, n_boot=0)
    expected = f1_score(gold, [p if p is not None else "unparseable" for p in pred], labels=list(labels),
                        average="macro", zero_division=0)
    assert s.f1 == pytest.approx(expected)
    assert s.ua == pytest.approx(balanced_accuracy_score(gold, [p if p is not None else "unparseable" for p in pred]))


def test_bootstrap_f1_replicates_use_the_same_rule():
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", None]
    s = score(gold, pred, LABELS, n_boot=50, seed=0)
    # every replicate of a set where class c never occurs still averages over all three declared labels
    assert np.nanmax(s.boot["f1"]) <= 2 / 3 + 1e-9


def test_fallback_reads_are_counted():
    s = score(["a", "b", "c"], ["a", "b", None], LABELS, n_boot=0, fallback=[True, False, False])
    assert s.n_fallback == 1 and s.as_row()["fallback"] == 1
    with pytest.raises(ValueError, match="fallback flags"):
        score(["a"], ["a"], LABELS, n_boot=0, fallback=[True, True])


def test_bootstrap_ci_contains_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    gold = list(rng.choice(LABELS, 200))
    pred = [g if rng.random() < 0.5 else (None if rng.random() < 0.3 else rng.choice(LABELS)) for g in gold]
    s = score(gold, pred, LABELS, n_boot=500, seed=3)
    for m in ("wa", "ua", "f1", "unparseable"):
        lo, hi = s.ci[m]
        assert 0 <= lo <= s.value(m) <= hi <= 1, m
        assert hi - lo > 0.01
    assert score(gold, pred, LABELS, n_boot=500, seed=3).ci == s.ci


def test_fold_mean():
    per = {1: score(["a", "b"], ["a", "b"], LABELS, n_boot=200), 2: score(["a", "b", "c", "c"], ["a", None, "a", "c"],
                                                                         LABELS, n_boot=200)}
    fm = fold_mean(per)
    assert fm.folds == [1, 2] and fm.n == 6
    assert fm.value("wa") == pytest.approx((1.0 + 0.5) / 2)
    assert fm.value("ua") == pytest.approx((1.0 + (1 + 0 + 0.5) / 3) / 2)
    lo, hi = fm.ci["wa"]
    assert lo <= fm.value("wa") <= hi


def test_transfer_matrix_layout():
    cells = {("iemocap", "meld"): 40.0, ("meld", "iemocap"): 30.0, ("meld", "savee"): 50.0}
    m = transfer_matrix(cells, ["meld", "iemocap"], ["savee", "meld", "iemocap"])
    assert list(m.index) == ["iemocap", "meld"] and m.index.name == "train"
    assert list(m.columns) == ["iemocap", "meld", "savee"] and m.columns.name == "test"
    assert m.loc["iemocap", "meld"] == 40.0 and m.loc["meld", "savee"] == 50.0
    assert np.isnan(m.loc["iemocap", "iemocap"]) and np.isnan(m.loc["meld", "meld"])
    assert np.isnan(m.loc["iemocap", "savee"])  # missing pair stays empty
    assert with_mean(m).loc["meld", "mean"] == pytest.approx(40.0)
    with pytest.raises(ValueError, match="own corpus"):
        transfer_matrix({("meld", "meld"): 1.0}, ["meld"], ["meld"])
