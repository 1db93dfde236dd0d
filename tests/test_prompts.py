import pytest

from emorl_lib.data.labels import CORPUS_LABELS
from emorl_lib.infra.config import ConfigError, from_dict
from emorl_lib.method.parsing import parse_answer, structure_ok
from emorl_lib.method.prompts import (
    CONDITIONS,
    PromptConfig,
    Rationale,
    build_messages,
    format_target,
    user_text,
)


def test_messages_have_system_audio_block_and_candidate_labels():
    cfg = PromptConfig()
    msgs = build_messages(cfg, "/x/a.wav", CORPUS_LABELS["iemocap"], "IR")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == [{"type": "text", "text": cfg.system_prompt}]
    audio, text = msgs[1]["content"]
    assert audio == {"type": "audio", "path": "/x/a.wav"}
    assert text["type"] == "text"
    assert "neutral, happy, sad, angry" in text["text"]
    assert "<answer>" in text["text"] and "<think>" not in text["text"]


def test_each_condition_shows_its_format():
    for cond, tags in [("EUR", ["<think>", "<answer>"]), ("ESR", ["<content>", "<acoustics>", "<summary>"])]:
        t = user_text(PromptConfig(), CORPUS_LABELS["meld"], cond)
        assert all(tag in t for tag in tags)
    assert "<content>" not in user_text(PromptConfig(), ["sad", "happy"], "EUR")


def test_transcript_off_by_default_and_required_when_on():
    assert "hello there" not in user_text(PromptConfig(), ["sad"], "IR", transcript="hello there")
    on = PromptConfig(transcript=True)
    assert "hello there" in user_text(on, ["sad"], "IR", transcript="hello there")
    with pytest.raises(ValueError, match="transcript"):
        user_text(on, ["sad"], "IR", transcript=None)


def test_wording_comes_from_config():
    cfg = from_dict(PromptConfig, {"system_prompt": "SYS", "task_instruction": "Pick {labels}"}, "p")
    msgs = build_messages(cfg, "a.wav", ["sad", "calm"], "eur")
    assert msgs[0]["content"][0]["text"] == "SYS"
    assert msgs[1]["content"][1]["text"].startswith("Pick sad, calm")
    with pytest.raises(ConfigError):
        from_dict(PromptConfig, {"condition": "EUR"}, "p")  # a run's condition is the experiment matrix's


@pytest.mark.parametrize("cond", CONDITIONS)
def test_target_matches_its_own_layout_and_parses(cond):
    r = Rationale(content="She says she lost it.", acoustics="Low pitch, slow.", summary="Both point to sadness.")
    t = format_target(cond, "sad", r)
    assert structure_ok(t, cond)
    assert parse_answer(t).label == "sad"
    others = [c for c in CONDITIONS if c != cond]
    assert not any(structure_ok(t, o) for o in others)


def test_target_exact_strings_and_errors():
    assert format_target("IR", "happy") == "<answer>happy</answer>"
    assert format_target("EUR", "happy", think="bright voice") == "<think>bright voice</think><answer>happy</answer>"
    assert format_target("ESR", "sad", Rationale("a", "b", "c")) == (
        "<think><content>a</content><acoustics>b</acoustics><summary>c</summary></think><answer>sad</answer>")
    with pytest.raises(ValueError, match="non-empty"):
        format_target("ESR", "sad", Rationale("a", "", "c"))
    with pytest.raises(ValueError, match="tag"):
        format_target("EUR", "sad", think="x</think>")
