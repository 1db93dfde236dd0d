import math

import numpy as np
import pytest

from emorl_lib.data.labels import CORPUS_LABELS, UNIFIED
from emorl_lib.infra.config import ConfigError, from_dict
from emorl_lib.method.priors import (
    NRC_VAD,
    PriorConfig,
    build_prior,
    confusion_prior,
    confusion_similarity,
    plutchik_prior,
    read_confusion_csv,
    similarity_matrix,
    va_prior,
)

NEIGHBOUR = (math.cos(math.radians(45)) + 1) / 2  # 0.8536


def test_plutchik_values_follow_eq7():
    p = plutchik_prior()
    assert p("fear", "surprise") == pytest.approx(NEIGHBOUR)
    assert p("fear", "surprise") == pytest.approx(0.854, abs=1e-3)
    assert p("happy", "sad") == pytest.approx(0.0)        # joy 0 vs sadness 180
    assert p("happy", "fear") == pytest.approx(0.5)       # 90 degrees
    assert p("neutral", "angry") == 0.5 and p("sad", "neutral") == 0.5
    assert p("calm", "happy") == 0.5                     # calm is treated like neutral by default
    assert p("neutral", "neutral") == 1.0 and p("calm", "calm") == 1.0


def test_meld_pairs_at_45_degrees_are_the_papers_four():
    p = plutchik_prior()
    labs = CORPUS_LABELS["meld"]
    above = {frozenset((a, b)) for a in labs for b in labs if a != b and p(a, b) > 0.7}
    assert above == {frozenset(x) for x in [("fear", "surprise"), ("surprise", "sad"),
                                           ("sad", "disgust"), ("disgust", "angry")]}


def test_matrix_is_symmetric_in_range_with_unit_diagonal():
    for prior in (plutchik_prior(), va_prior()):
        for labs in CORPUS_LABELS.values():
            m = similarity_matrix(prior, labs)
            assert m.shape == (len(labs), len(labs))
            assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
            assert (m >= 0).all() and (m <= 1).all()


def test_va_prior_uses_nrc_coordinates_and_distance():
    v = va_prior()
    joy, sur = np.array(NRC_VAD["joy"][:2]), np.array(NRC_VAD["surprise"][:2])
    assert v("happy", "surprise") == pytest.approx(1 - np.linalg.norm(joy - sur) / math.sqrt(2))
    # nearer pairs are more similar: anger is closer to fear than to joy in valence-arousal
    assert v("angry", "fear") > v("angry", "happy")
    assert v("calm", "neutral") == pytest.approx(1.0)  # both map to neutral


def test_mapping_is_data_and_overridable():
    cfg = PriorConfig(mapping={**PriorConfig().mapping, "calm": "trust"})
    p = plutchik_prior(cfg)
    assert p("calm", "happy") == pytest.approx(NEIGHBOUR)  # trust 45 vs joy 0
    with pytest.raises(ValueError, match="calm"):
        va_prior(cfg)  # trust has no VA coordinates: a clear error, not a silent default


def test_unknown_label_raises_keyerror_naming_it():
    with pytest.raises(KeyError, match="frustrated"):
        plutchik_prior()("frustrated", "sad")


def test_confusion_prior_row_normalised_symmetrised_rescaled():
    counts = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 5]])
    s = confusion_similarity(counts, "none")
    assert s[0, 1] == pytest.approx((0.2 + 0.1) / 2) and s[0, 2] == 0
    s = confusion_similarity(counts, "max")
    assert s[0, 1] == pytest.approx(1.0) and np.allclose(np.diag(s), 1)
    p = confusion_prior(counts, ("neutral", "sad", "angry"), "none")
    assert p("sad", "neutral") == pytest.approx(0.15)


def test_confusion_prior_from_csv(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("gold,neutral,sad\nneutral,3,1\nsad,1,3\n")
    labs, mat = read_confusion_csv(f)
    assert labs == ("neutral", "sad") and mat.tolist() == [[3, 1], [1, 3]]
    p = build_prior(PriorConfig(kind="confusion", confusion_csv=str(f)))
    assert p("neutral", "sad") == pytest.approx(1.0)
    f.write_text("gold,neutral,sad\nsad,3,1\nneutral,1,3\n")
    with pytest.raises(ValueError, match="must equal"):
        read_confusion_csv(f)


def test_prior_config_from_params_rejects_unknown_kind_and_keys():
    cfg = from_dict(PriorConfig, {"kind": "va", "va_use_dominance": True}, "x")
    assert va_prior(cfg)("sad", "angry") < 1
    with pytest.raises(ConfigError):
        from_dict(PriorConfig, {"kind": "wheel"}, "x")
    with pytest.raises(ConfigError):
        from_dict(PriorConfig, {"knd": "va"}, "x")


def test_build_prior_covers_all_unified_labels():
    for kind in ("plutchik", "va"):
        p = build_prior(PriorConfig(kind=kind))
        assert set(p.labels) == set(UNIFIED)
