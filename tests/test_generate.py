"""Generation with the tiny base model: resumable prediction files, batched == one-by-one, cross-corpus
candidates, unreadable audio counted, adapters put on and taken off."""

import json

import pytest

from emorl_lib.data.labels import FOUR_CLASS
from emorl_lib.data.manifest import Utterance
from emorl_lib.data.testsets import TestSet, subsample
from emorl_lib.evaluation import predictions as G
from emorl_lib.method.prompts import PromptConfig
from emorl_lib.model.generate import Generated


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir, kit_paths):
    from emorl_lib.model.backbones import BackboneConfig, load_backbone

    return load_backbone(BackboneConfig(path=str(tiny_backbone_dir)), kit_paths, trainable=False)


def _rows(wavs, corpus="iemocap"):
    labels = ["neutral", "happy", "sad", "angry", "happy"]
    return [Utterance(f"u{i}", corpus, "s", None, "x", lab, lab, None, 1, 1.0, str(w), str(w), None)
            for i, (w, lab) in enumerate(zip(wavs, labels))]


def _set(rows, four=False, corpus="iemocap"):
    return TestSet("iemocap-f1" if not four else f"xc-{corpus}", corpus, rows, four, len(rows))


def test_resumable_appends_and_skips_finished(backbone, eval_wavs, tmp_path, monkeypatch):
    rows = _rows(eval_wavs)
    out = tmp_path / "p.jsonl"
    generated = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda bb, m, a, n, *rest: generated.extend(m) or real(bb, m, a, n, *rest))
    first = G.predict_set(backbone, _set(rows[:3]), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert len(generated) == 3 and len(first) == 3
    before = out.read_text().splitlines()
    full = G.predict_set(backbone, _set(rows), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert len(generated) == 5  # only the two new utterances
    lines = out.read_text().splitlines()
    assert lines[:3] == before and len(lines) == 5
    assert [p["utt_id"] for p in full] == [r.utt_id for r in rows]
    rec = full[0]
    assert set(rec) >= {"utt_id", "gold", "raw", "label", "reason", "n_tokens", "seconds"}
    assert rec["gold"] == "neutral" and 1 <= rec["n_tokens"] <= 8 and rec["seconds"] > 0
    G.predict_set(backbone, _set(rows), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert len(generated) == 5 and out.read_text().splitlines() == lines
    # a killed run leaves a torn last line: it is dropped and that utterance redone
    out.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    again = G.predict_set(backbone, _set(rows), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert len(generated) == 6 and [json.loads(l)["utt_id"] for l in out.read_text().splitlines()] == \
        [r.utt_id for r in rows]
    assert again[4]["raw"] == full[4]["raw"]
    # a new token budget makes the old lines stale: every utterance is redone, the last line per id wins
    redo = G.predict_set(backbone, _set(rows), PromptConfig(), "IR", out, 2, 6, progress=False)
    assert len(generated) == 11 and all(p["max_new_tokens"] == 6 and p["n_tokens"] <= 6 for p in redo)


def test_batched_equals_one_by_one(backbone, eval_wavs, tmp_path):
    ts = _set(_rows(eval_wavs))
    one = G.predict_set(backbone, ts, PromptConfig(), "ESR", tmp_path / "b1.jsonl", 1, 20, progress=False)
    many = G.predict_set(backbone, ts, PromptConfig(), "ESR", tmp_path / "b4.jsonl", 4, 20, progress=False)
    assert [p["raw"] for p in one] == [p["raw"] for p in many]
    assert [p["n_tokens"] for p in one] == [p["n_tokens"] for p in many]
    assert {p["batch_size"] for p in many} == {4, 1}


def test_crosscorpus_set_uses_four_classes_and_label4(eval_wavs):
    rows = _rows(eval_wavs, "ravdess")
    rows[0].label, rows[0].label4 = "calm", "neutral"
    ts = _set(rows, four=True, corpus="ravdess")
    assert ts.candidates == FOUR_CLASS and ts.gold(rows[0]) == "neutral"
    assert _set(rows, corpus="ravdess").candidates != FOUR_CLASS


def test_unreadable_audio_is_a_counted_wrong_answer(backbone, eval_wavs, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000garbage")
    rows = _rows(eval_wavs[:2]) + [Utterance("bad", "iemocap", "s", None, "x", "sad", "sad", None, 1, 1.0, str(bad),
                                             str(bad), None)]
    preds = G.predict_set(backbone, _set(rows), PromptConfig(), "IR", tmp_path / "p.jsonl", 8, 4, progress=False)
    assert preds[2]["label"] is None and preds[2]["reason"].startswith(G.AUDIO_ERROR)
    assert len(preds) == 3


def test_transcript_prompt_without_transcripts_is_a_clear_error(backbone, eval_wavs, tmp_path):
    with pytest.raises(ValueError, match="no transcript"):
        G.predict_set(backbone, _set(_rows(eval_wavs)), PromptConfig(transcript=True), "IR", tmp_path / "p.jsonl",
                      2, 4, progress=False)


def test_subsample_keeps_every_class_and_order(eval_wavs):
    rows = _rows(eval_wavs) * 4
    for i, r in enumerate(rows):
        rows[i] = Utterance(**{**vars(r), "utt_id": f"u{i}"})
    sub = subsample(rows, 4, seed=0)
    assert len(sub) == 4 and {r.label for r in sub} == {"neutral", "happy", "sad", "angry"}
    assert [rows.index(r) for r in sub] == sorted(rows.index(r) for r in sub)
    assert subsample(rows, 4, seed=0) == sub and subsample(rows, None, 0) == rows


def test_adapter_on_and_off(backbone, eval_wavs, tmp_path):
    """with_adapter changes the outputs while on (a LoRA with non-zero B) and leaves the bare base after."""
    import torch
    from peft import LoraConfig, get_peft_model

    from emorl_lib.evaluation.matrix import with_adapter
    from emorl_lib.model.backbones import BackboneConfig, load_backbone

    ts = _set(_rows(eval_wavs)[:2])
    base = G.predict_set(backbone, ts, PromptConfig(), "IR", tmp_path / "base.jsonl", 2, 8, progress=False)
    other = load_backbone(BackboneConfig(path=backbone.model_dir), None, trainable=False)
    lcfg = BackboneConfig().lora
    pm = get_peft_model(other.model, LoraConfig(r=4, lora_alpha=8, target_modules=lcfg.target_modules))
    torch.manual_seed(0)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    pm.save_pretrained(tmp_path / "adapter")
    with with_adapter(backbone, tmp_path / "adapter") as bb:
        on = G.predict_set(bb, ts, PromptConfig(), "IR", tmp_path / "on.jsonl", 2, 8, progress=False)
    assert [p["raw"] for p in on] != [p["raw"] for p in base]
    assert type(backbone.model).__name__ == "Qwen2AudioForConditionalGeneration"
    after = G.predict_set(backbone, ts, PromptConfig(), "IR", tmp_path / "after.jsonl", 2, 8, progress=False)
    assert [p["raw"] for p in after] == [p["raw"] for p in base]


def test_interrupted_evaluation_says_where_and_keeps_what_it_finished(eval_wavs, tmp_path, monkeypatch):
    """Ctrl-C during a batch: the finished batches stay in the file, the position names the utterance, the
    run and the set (the CLI prints it in one line), and the next call generates only the rest."""
    from emorl_lib.infra import progress

    rows = _rows(eval_wavs)
    out = tmp_path / "iemocap-f1_sft_IR" / "iemocap-f1.jsonl"
    calls = []

    def fake(bb, msgs, audios, n, *rest):
        calls.append(len(msgs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [Generated("<answer>sad</answer>", 3) for _ in msgs]

    monkeypatch.setattr(G, "generate_batch", fake)
    progress.clear()
    with pytest.raises(KeyboardInterrupt):
        G.predict_set(object(), _set(rows), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert progress.interrupted_line("emorl evaluate") == (
        "emorl evaluate: interrupted at utterance 3 of 5 of iemocap-f1_sft_IR on iemocap-f1; run the same command "
        "again to resume: finished predictions are kept")
    assert len(out.read_text().splitlines()) == 2
    preds = G.predict_set(object(), _set(rows), PromptConfig(), "IR", out, 2, 8, progress=False)
    assert calls == [2, 2, 2, 1] and [p["label"] for p in preds] == ["sad"] * 5


def test_trained_predictions_read_only_the_answer_tag(eval_wavs, tmp_path, monkeypatch):
    """predict_set's default reads <answer> only; a zero-shot call may fall back, recorded as such."""
    monkeypatch.setattr(G, "generate_batch", lambda bb, msgs, a, n, *r: [Generated("sounds sad", 2) for _ in msgs])
    rows = _rows(eval_wavs[:2])
    strict = G.predict_set(object(), _set(rows), PromptConfig(), "IR", tmp_path / "a.jsonl", 2, 8, progress=False)
    assert [(p["label"], p["reason"]) for p in strict] == [(None, "no_answer_tag")] * 2
    loose = G.predict_set(object(), _set(rows), PromptConfig(), "IR", tmp_path / "b.jsonl", 2, 8, progress=False,
                          require_answer_tag=False)
    assert [(p["label"], p["reason"]) for p in loose] == [("sad", "fallback")] * 2
    assert G.reparse(loose[0], FOUR_CLASS, require_tag=True)["label"] is None
