import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emorl_lib.data.labels import UNIFIED
from emorl_lib.method.parsing import (
    LABELLED,
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


def test_without_required_tag_reads_whole_text_as_a_fallback():
    assert parse_answer("I think the speaker sounds sad.", require_tag=False) == Parsed("sad", "fallback")
    assert parse_answer("I think the speaker sounds sad.").reason == "no_answer_tag"
    # with a tag, the tag is read, never the rest
    assert parse_answer("sad sad sad <answer>happy</answer>", require_tag=False) == Parsed("happy", "ok")


@pytest.mark.parametrize("text,expected", [
    ("<answer>not angry</answer>", Parsed(None, "negated")),
    ("<answer>never sad</answer>", Parsed(None, "negated")),
    ("<answer>isn't happy</answer>", Parsed(None, "negated")),
    ("<answer>The speaker isn’t happy.</answer>", Parsed(None, "negated")),
    ("<answer>doesn't sound very angry</answer>", Parsed(None, "negated")),
    ("<answer>not angry, but sad</answer>", Parsed("sad", "ok")),
    ("<answer>not at all happy; neutral</answer>", Parsed("neutral", "ok")),
    ("<answer>angry, not sad</answer>", Parsed("angry", "ok")),
    ("<answer>Not happy. Angry.</answer>", Parsed("angry", "ok")),
    ("<answer>happy</answer>", Parsed("happy", "ok")),
])
def test_a_negated_emotion_is_not_that_emotion(text, expected):
    assert parse_answer(text) == expected


def test_negation_holds_in_fallback_reads_too():
    assert parse_answer("The voice is not angry at all, it is sad", require_tag=False) == Parsed("sad", "fallback")
    assert parse_answer("She never sounds happy", require_tag=False) == Parsed(None, "negated")


SPELLINGS = [("<answer>", "</answer>"), ("<ANSWER>", "</Answer>"), ("< answer >", "</ answer >"),
             ("<answer >", "< / answer>"), ("<answer/>", "</answer>"), ("[answer]", "[/answer]"),
             ("<answers>", "</answers>"), ("<answer", "</answer>")]


@pytest.mark.parametrize("open_tag,close_tag", SPELLINGS)
def test_parser_and_format_check_accept_the_same_tag_spellings(open_tag, close_tag):
    text = f"{open_tag}happy{close_tag}"
    parsed_ok = parse_answer(text).reason == "ok"
    assert parsed_ok == structure_ok(text, "IR"), text
    esr = (f"<think><content>a</content><acoustics>b</acoustics><summary>c</summary></think>"
           f"{open_tag}happy{close_tag}")
    assert (parse_answer(esr).reason == "ok") == structure_ok(esr, "ESR"), esr


def test_tag_spellings_accepted_are_the_documented_ones():
    accepted = [o for o, c in SPELLINGS if structure_ok(f"{o}happy{c}", "IR")]
    assert accepted == ["<answer>", "<ANSWER>", "< answer >", "<answer >"]


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
    assert (p.label is None) == (p.reason not in LABELLED)
    assert p.label is None or p.label in UNIFIED
    assert structure_ok(text, cond, allow_whitespace=ws) in (True, False)


def test_huge_input_is_handled():
    soup = "<answer><think>" * 50000 + "x" * 200000
    assert parse_answer(soup).reason == "several_answers"
    assert structure_ok(soup, "ESR") is False
    assert parse_answer("<answer>" + "sad " * 100000).label == "sad"
