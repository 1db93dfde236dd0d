import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emorl_lib.data.labels import UNIFIED
from emorl_lib.method.parsing import (
    REASONS,
    SYNONYMS,
    Parsed,
    completion_text,
    parse_answer,
    structure_ok,
)


@pytest.mark.parametrize("text,label", [
    ("<answer>happy</answer>", "happy"),
    ("<answer> Joy </answer>", "happy"),
    ("<ANSWER>\n  Excited.\n</Answer>", "happy"),
    ("<answer>mad</answer>", "angry"),
    ("< answer >Sadness</ answer >", "sad"),
    ("<answer>scared</answer>", "fear"),
    ("<answer>surprised!</answer>", "surprise"),
    ("<answer>disgusted</answer>", "disgust"),
    ("<answer>calm</answer>", "calm"),
    ("<think>maybe sad? or angry</think><answer>neutral</answer>", "neutral"),
    ("<answer>The emotion is: happiness</answer>", "happy"),
    ("<answer>sad, sad</answer>", "sad"),
])
def test_labels_read_through_tags_case_and_synonyms(text, label):
    p = parse_answer(text)
    assert p == Parsed(label, "ok")


@pytest.mark.parametrize("text,reason", [
    ("happy", "no_answer_tag"),
    ("", "no_answer_tag"),
    ("<answer></answer>", "empty"),
    ("<answer>   </answer>", "empty"),
    ("<answer>frustrated</answer>", "unknown_label"),
    ("<answer>happy or sad</answer>", "several_labels"),
    ("<answer>happy</answer><answer>sad</answer>", "several_answers"),
])
def test_failures_carry_a_reason(text, reason):
    p = parse_answer(text)
    assert p.label is None and p.reason == reason and not p.ok


def test_candidates_restrict_labels():
    p = parse_answer("<answer>fear</answer>", candidates=("neutral", "happy", "sad", "angry"))
    assert p == Parsed(None, "not_a_candidate")
    assert parse_answer("<answer>fear</answer>", candidates=("fear", "sad")).label == "fear"


def test_missing_closing_tag_reads_to_end():
    assert parse_answer("<think>x</think><answer> Angry") == Parsed("angry", "unclosed_tag")


def test_without_required_tag_reads_whole_text():
    assert parse_answer("I think the speaker sounds sad.", require_tag=False).label == "sad"
    assert parse_answer("I think the speaker sounds sad.").reason == "no_answer_tag"


def test_conversational_completions_and_non_text():
    conv = [{"role": "assistant", "content": "<answer>sad</answer>"}]
    assert completion_text(conv) == "<answer>sad</answer>"
    assert parse_answer(conv).label == "sad"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "<answer>joy</answer>"}]}]
    assert parse_answer(blocks).label == "happy"
    assert parse_answer(None).reason == "not_text" and parse_answer(42).reason == "not_text"
    assert structure_ok(conv, "IR") and not structure_ok(None, "IR")


def test_synonym_table_maps_only_to_unified_labels():
    assert set(SYNONYMS.values()) == set(UNIFIED)


@pytest.mark.parametrize("text,cond,ok", [
    ("<answer>happy</answer>", "IR", True),
    ("  <answer> happy </answer>\n", "IR", True),
    ("The answer: <answer>happy</answer>", "IR", False),
    ("<answer>happy</answer> because", "IR", False),
    ("<answer>happy", "IR", False),
    ("<answer></answer>", "IR", False),
    ("<think>bright voice</think><answer>happy</answer>", "IR", False),
    ("<think>bright voice</think>\n<answer>happy</answer>", "EUR", True),
    ("<think></think><answer>happy</answer>", "EUR", False),
    ("<answer>happy</answer><think>x</think>", "EUR", False),
    ("<think><content>a</content><acoustics>b</acoustics><summary>c</summary></think><answer>sad</answer>", "ESR", True),
    ("<think>\n<content>a</content>\n<acoustics>b</acoustics>\n<summary>c</summary>\n</think>\n<answer>sad</answer>",
     "ESR", True),
    ("<think><acoustics>b</acoustics><content>a</content><summary>c</summary></think><answer>sad</answer>", "ESR", False),
    ("<think><content>a</content><summary>c</summary></think><answer>sad</answer>", "ESR", False),
    ("<think><content>a</content>x<acoustics>b</acoustics><summary>c</summary></think><answer>sad</answer>", "ESR", False),
    ("<think><content>a</content><acoustics>b</acoustics><summary>c</summary></think><answer>sad</answer>", "EUR", False),
])
def test_structure_exact_match(text, cond, ok):
    assert structure_ok(text, cond) is ok


def test_whitespace_tolerance_is_a_switch():
    t = "<think>x</think>\n<answer>sad</answer>"
    assert structure_ok(t, "EUR", allow_whitespace=True)
    assert not structure_ok(t, "EUR", allow_whitespace=False)
    assert structure_ok("<think>x</think><answer>sad</answer>", "EUR", allow_whitespace=False)
    assert structure_ok("<think> </think><answer>sad</answer>", "EUR", require_nonempty=False)


TAGGY = st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "<content>", "</content>", "<acoustics>",
                         "</acoustics>", "<summary>", "</summary>", "< answer >", "<ANSWER>", "happy", "sad", "joy",
                         " ", "\n", "<", ">", "/", "fear", "ångström", "😀", "\x00"])
TEXTS = st.one_of(st.text(), st.lists(TAGGY, max_size=60).map("".join))


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.sampled_from(["IR", "EUR", "ESR"]), st.booleans())
def test_parser_and_structure_never_crash(text, cond, ws):
    p = parse_answer(text)
    assert p.reason in REASONS
    assert (p.label is None) == (p.reason not in ("ok", "unclosed_tag"))
    assert p.label is None or p.label in UNIFIED
    assert structure_ok(text, cond, allow_whitespace=ws) in (True, False)


def test_huge_input_is_handled():
    soup = "<answer><think>" * 50000 + "x" * 200000
    assert parse_answer(soup).reason == "several_answers"
    assert structure_ok(soup, "ESR") is False
    assert parse_answer("<answer>" + "sad " * 100000).label == "sad"
