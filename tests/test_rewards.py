import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emorl_lib.data.labels import CORPUS_LABELS, FOUR_CLASS, UNIFIED
from emorl_lib.infra.config import from_dict
from emorl_lib.method.priors import (
    PriorConfig,
    plutchik_prior,
    similarity_matrix,
    va_prior,
)
from emorl_lib.method.rewards import (
    AccuracyReward,
    ESWRReward,
    FormatReward,
    RewardConfig,
    alpha_at,
    build_rewards,
    confusion_pattern,
    eswr_value,
    reward_table,
    training_progress,
    zero_advantage_share,
)

NEIGHBOUR = (math.cos(math.radians(45)) + 1) / 2


def ans(label):
    return f"<answer>{label}</answer>"


def test_eswr_fear_vs_surprise_is_alpha_times_0854():
    f = ESWRReward(plutchik_prior(), alpha=0.5, gamma=0.7)
    r = f([ans("surprise")], label=["fear"])
    assert r[0] == pytest.approx(0.5 * NEIGHBOUR) and r[0] == pytest.approx(0.5 * 0.854, abs=1e-3)


def test_exact_match_is_one_including_neutral():
    f = ESWRReward(plutchik_prior(), alpha=0.5, gamma=0.7)
    assert f([ans("neutral"), ans("calm"), ans("sad")], label=["neutral", "calm", "sad"]) == [1.0, 1.0, 1.0]


def test_iemocap_four_class_wrong_answers_earn_nothing_under_plutchik():
    prior = plutchik_prior()
    f = ESWRReward(prior, alpha=0.9, gamma=0.7)
    for gold in FOUR_CLASS:
        wrong = [p for p in FOUR_CLASS if p != gold]
        assert f([ans(p) for p in wrong], label=[gold] * len(wrong)) == [0.0] * len(wrong)
    assert np.array_equal(reward_table(FOUR_CLASS, prior, 0.9, 0.7), np.eye(4))


def test_gamma_threshold_is_strict_and_parametric():
    prior = plutchik_prior()
    assert eswr_value("sad", "neutral", prior, 1.0, 0.5) == 0.0     # S = 0.5 is not > 0.5
    assert eswr_value("sad", "neutral", prior, 1.0, 0.4) == 0.5
    assert eswr_value("happy", "surprise", prior, 1.0, 0.1) == pytest.approx((math.cos(math.radians(135)) + 1) / 2)


def test_alpha_decay_schedule():
    assert alpha_at(0.5, "constant", 0.9) == 0.5
    assert alpha_at(0.5, "linear", 0.0) == 0.5
    assert alpha_at(0.5, "linear", 0.5) == pytest.approx(0.25)
    assert alpha_at(0.5, "linear", 1.0) == 0.0
    assert alpha_at(0.5, "linear", 0.25, decay_end=0.5) == pytest.approx(0.25)
    assert alpha_at(0.5, "linear", 0.75, decay_end=0.5) == 0.0
    f = ESWRReward(plutchik_prior(), alpha=0.5, gamma=0.7, schedule="linear")
    logged = {}
    state = SimpleNamespace(global_step=30, max_steps=40)
    r = f([ans("surprise")], label=["fear"], trainer_state=state, log_metric=lambda k, v: logged.setdefault(k, v))
    assert r[0] == pytest.approx(0.125 * NEIGHBOUR)
    assert logged == {"eswr_reward/alpha": pytest.approx(0.125)}
    assert training_progress(None) == 0.0 and training_progress(SimpleNamespace(global_step=5, max_steps=0)) == 0.0


def test_binary_accuracy_and_candidates_column():
    f = AccuracyReward()
    comps = [ans("fear"), ans("sad"), "sad", [{"role": "assistant", "content": ans("joy")}]]
    cands = [list(FOUR_CLASS), None, None, None]
    assert f(comps, label=["fear", "sad", "sad", "happy"], candidates=cands) == [0.0, 1.0, 0.0, 1.0]


def test_missing_label_column_is_a_clear_error():
    with pytest.raises(ValueError, match="label"):
        AccuracyReward()([ans("sad")], prompts=["x"])
    with pytest.raises(ValueError, match="rows"):
        AccuracyReward()([ans("sad")], label=["sad", "sad"])


def test_format_reward_per_condition():
    f = FormatReward("ESR")
    good = "<think><content>a</content><acoustics>b</acoustics><summary>c</summary></think><answer>sad</answer>"
    assert f([good, ans("sad"), None, 3]) == [1.0, 0.0, 0.0, 0.0]
    assert FormatReward("ir")([ans("sad")]) == [1.0]


def test_build_rewards_from_config_names_and_weights():
    cfg = from_dict(RewardConfig, {"alpha": 0.3, "format_weight": 0.5, "prior": {"kind": "va"}}, "reward")
    funcs, weights = build_rewards(cfg, "EUR")
    assert [f.__name__ for f in funcs] == ["eswr_va_reward", "format_EUR_reward"] and weights == [1.0, 0.5]
    funcs, weights = build_rewards(RewardConfig(use_format=False), "IR", "binary")
    assert [f.__name__ for f in funcs] == ["accuracy_reward"] and weights == [1.0]
    funcs, weights = build_rewards(RewardConfig(), "IR")
    comps, gold = [ans("surprise"), ans("fear")], ["fear", "fear"]
    total = [sum(w * r for w, r in zip(weights, rs)) for rs in zip(*(f(comps, label=gold) for f in funcs))]
    assert total == pytest.approx([1 + 0.5 * NEIGHBOUR, 2.0])  # what GRPO optimises: TRL's weighted sum


def test_trl_name_lookup_sees_our_names():
    from trl.trainer.utils import get_callable_name
    funcs, _ = build_rewards(RewardConfig(), "ESR")
    assert [get_callable_name(f) for f in funcs] == ["eswr_plutchik_reward", "format_ESR_reward"]


@pytest.mark.parametrize("kind", ["plutchik", "va"])
def test_rewards_are_picklable(kind):
    import pickle
    funcs, _ = build_rewards(RewardConfig(prior=PriorConfig(kind=kind)), "ESR")
    funcs.append(AccuracyReward())
    for f in funcs:
        assert pickle.loads(pickle.dumps(f))([ans("surprise")], label=["fear"]) == f([ans("surprise")], label=["fear"])


COMPLETION = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "<content>", "</content>", "happy",
                              "joy", "sad", "fear", "surprise", " ", "\n", "😀", "<", "/"]), max_size=40).map("".join),
    st.none(), st.integers(),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user"]),
                                    "content": st.one_of(st.text(), st.none(), st.lists(st.text()))}), max_size=3),
)
GOLD = st.one_of(st.sampled_from(UNIFIED), st.none(), st.text(max_size=5))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(COMPLETION, GOLD), min_size=1, max_size=8), st.sampled_from(["IR", "EUR", "ESR"]),
       st.sampled_from(["plutchik", "va"]), st.floats(0, 1), st.floats(0, 1), st.integers(0, 100))
def test_rewards_never_raise_and_stay_in_range(rows, cond, kind, alpha, gamma, step):
    comps, gold = [r[0] for r in rows], [r[1] for r in rows]
    cfg = RewardConfig(alpha=alpha, gamma=gamma, alpha_schedule="linear", prior=PriorConfig(kind=kind))
    funcs, weights = build_rewards(cfg, cond)
    funcs.append(AccuracyReward())
    state = SimpleNamespace(global_step=step, max_steps=50)
    for f in funcs:
        out = f(comps, label=gold, candidates=[None] * len(comps), trainer_state=state)
        assert len(out) == len(comps)
        assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in out)
    total = [sum(w * r for w, r in zip(weights, rs)) for rs in zip(*(f(comps, label=gold) for f in funcs[:2]))]
    assert all(0.0 <= x <= sum(weights) for x in total)


def _simulated_share(answers, rewards, group_size, n_groups=40000, seed=1):
    """The zero-advantage share by simulation: groups of `group_size` answers drawn per gold class."""
    rng = np.random.default_rng(seed)
    k = len(answers)
    ties = 0
    for g in rng.choice(k, size=n_groups):
        preds = rng.choice(k, size=group_size, p=answers[g] / answers[g].sum())
        r = rewards[g, preds]
        ties += bool(np.all(r == r[0]))
    return ties / n_groups


def test_zero_advantage_share_exact_matches_simulation_and_eswr_reduces_ties():
    labs = CORPUS_LABELS["meld"]
    P = confusion_pattern(similarity_matrix(plutchik_prior(), labs), accuracy=0.5, sharpness=6)
    R_bin = reward_table(labs, None)
    R_eswr = reward_table(labs, plutchik_prior(), 0.5, 0.7)
    for G in (2, 6):
        exact = zero_advantage_share(P, R_eswr, G)
        assert exact == pytest.approx(_simulated_share(P, R_eswr, G), abs=0.01)
        assert zero_advantage_share(P, R_eswr, G) < zero_advantage_share(P, R_bin, G)
    # binary, perfect model: every group ties; a coin-flip between two answers: 2 * 0.5**G
    assert zero_advantage_share(np.eye(3), np.eye(3), 6) == pytest.approx(1.0)
    half = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert zero_advantage_share(half, np.eye(2), 6) == pytest.approx(2 * 0.5 ** 6)
    assert zero_advantage_share(half, np.eye(2), 6, p_invalid=1.0) == pytest.approx(1.0)


def test_confusion_pattern_rows_are_distributions():
    P = confusion_pattern(similarity_matrix(va_prior(), UNIFIED), accuracy=0.7, sharpness=3)
    assert np.allclose(P.sum(axis=1), 1) and np.allclose(np.diag(P), 0.7) and (P >= 0).all()


def test_wrong_answer_table_and_sweep():
    from emorl_lib.method.rewards import wrong_answer_rewards, zero_advantage_sweep
    priors = {"plutchik": plutchik_prior(), "va": va_prior()}
    df = wrong_answer_rewards(priors, {"iemocap": FOUR_CLASS, "meld": CORPUS_LABELS["meld"]}, [0.7], alpha=0.5)
    assert len(df) == 2 * (4 * 3 + 7 * 6)
    assert df[(df.label_set == "iemocap") & (df.prior == "plutchik")].reward.eq(0).all()
    meld = df[(df.label_set == "meld") & (df.prior == "plutchik") & (df.reward > 0)]
    assert len(meld) == 8 and np.allclose(meld.reward, 0.5 * NEIGHBOUR)
    labs = CORPUS_LABELS["meld"]
    sw = zero_advantage_sweep(labs, similarity_matrix(va_prior(), labs), {"binary": None, "eswr": plutchik_prior()},
                         [0.3], [2, 6])
    assert set(sw.columns) >= {"reward", "accuracy", "G", "zero_advantage_share"} and len(sw) == 4
    six = sw[sw.G == 6].set_index("reward").zero_advantage_share
    assert six["eswr"] < six["binary"]


def test_an_unclosed_answer_earns_no_accuracy_credit():
    """A completion cut off inside <answer> (the length limit) is wrong, whatever its last words read; the parser
    still says why (unclosed_tag) for the logs."""
    cut = "<think>bright, fast</think><answer>happy"
    for f in (AccuracyReward(), ESWRReward(plutchik_prior(), alpha=0.5, gamma=0.7)):
        assert f([cut, ans("happy")], label=["happy", "happy"]) == [0.0, 1.0]
    assert FormatReward("EUR")([cut]) == [0.0]


def test_a_negated_answer_earns_no_credit():
    f = AccuracyReward()
    assert f([ans("not angry"), ans("never sad"), ans("isn't happy"), ans("not angry, but sad")],
             label=["angry", "sad", "happy", "sad"]) == [0.0, 0.0, 0.0, 1.0]
    eswr = ESWRReward(plutchik_prior(), alpha=0.5, gamma=0.7)
    assert eswr([ans("not surprise")], label=["surprise"]) == [0.0]
    assert eswr([ans("not surprise")], label=["fear"]) == [0.0]  # no partial credit for a negated neighbour


def test_tagless_credit_only_when_the_tag_is_not_required():
    assert AccuracyReward(require_tag=True)(["sad"], label=["sad"]) == [0.0]
    assert AccuracyReward(require_tag=False)(["sad"], label=["sad"]) == [1.0]
