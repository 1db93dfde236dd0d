"""Folder inference: every audio file labelled or listed as unreadable; CSV + JSONL written; CLI wiring."""

import csv
import json

import pytest

from emorl_lib.evaluation.infer import find_audio, infer_folder, tag_text


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir, kit_paths):
    from emorl_lib.model.backbones import BackboneConfig, load_backbone

    return load_backbone(BackboneConfig(path=str(tiny_backbone_dir)), kit_paths, trainable=False)


def test_folder_with_a_corrupt_file(backbone, eval_wavs, tmp_path):
    import shutil

    import soundfile as sf

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(eval_wavs[0], folder / "a.wav")
    x, sr = sf.read(eval_wavs[1])
    sf.write(folder / "sub" / "b.flac", x, sr)
    (folder / "broken.mp3").write_bytes(b"\x00not an mp3" * 20)
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in find_audio(folder)] == ["a.wav", "broken.mp3", "b.flac"]
    res = infer_folder(folder, tmp_path / "out" / "emotions.csv", condition="ESR", batch_size=2, max_new_tokens=6,
                       labels=["neutral", "happy"], backbone=backbone, progress=False)
    assert len(res.results) == 3 and len(res.unreadable) == 1
    assert res.unreadable[0].file == "broken.mp3" and "not decodable" in res.unreadable[0].error
    rows = list(csv.DictReader(res.csv_path.open()))
    assert [r["file"] for r in rows] == ["a.wav", "broken.mp3", "sub/b.flac"]
    assert rows[1]["error"] and not rows[0]["error"] and rows[0]["raw"] and int(rows[0]["tokens"]) >= 1
    assert all(r["emotion"] in ("", "neutral", "happy") for r in rows)
    jl = [json.loads(l) for l in res.jsonl_path.read_text().splitlines()]
    assert [j["file"] for j in jl] == [r["file"] for r in rows]
    assert "1 unreadable" in res.summary()


def test_missing_adapter_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio files"):
        infer_folder(tmp_path, tmp_path / "o.csv", backbone=object())
    (tmp_path / "a.wav").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        infer_folder(tmp_path, tmp_path / "o.csv", adapter=tmp_path / "nope", backbone=object())


def test_reasoning_parts():
    text = "<think><content>words</content><acoustics>loud</acoustics><summary>both</summary></think><answer>sad"
    assert tag_text(text, "acoustics") == "loud" and tag_text(text, "answer") == "sad"
    assert tag_text(text, "content") == "words" and tag_text("no tags", "think") == ""


def test_cli_has_evaluate_and_infer():
    from emorl_lib.cli import build_parser

    a = build_parser().parse_args(["infer", "--input", "d", "--adapter", "x", "--condition", "ESR", "--out", "r.csv"])
    assert (a.input, a.adapter, a.condition, a.out) == ("d", "x", "ESR", "r.csv")
    e = build_parser().parse_args(["evaluate", "--stage", "zeroshot", "--max-utterances", "4", "--tables-only"])
    assert e.stage == ["zeroshot"] and e.max_utterances == 4 and e.tables_only


# ---- defaults from the adapter, answer reading, outputs, labels, long audio (no model: generation is faked) -----
class _FE:
    sampling_rate = 16000
    n_samples = 2 * 16000  # a 2 s window


def _fake_backbone():
    from types import SimpleNamespace

    return SimpleNamespace(processor=SimpleNamespace(feature_extractor=_FE()))


def _tones(folder, seconds):
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seconds):
        sf.write(folder / f"f{i}.wav", (0.1 * np.sin(np.arange(int(s * 16000)) / 9)).astype("float32"), 16000)
    return folder


@pytest.fixture()
def fake_generate(monkeypatch):
    """Replaces generation: `answers` (a list consumed in order, or one text) are the model's outputs; every call's
    messages and audio lengths are recorded."""
    from emorl_lib.evaluation import infer
    from emorl_lib.model.generate import Generated

    state = {"answers": "<answer>happy</answer>", "messages": [], "seconds": []}

    def gen(backbone, messages, audios, max_new_tokens, *a, **k):
        out = []
        for m, x in zip(messages, audios):
            state["messages"].append(m)
            state["seconds"].append(len(x) / 16000)
            ans = state["answers"]
            out.append(Generated(ans.pop(0) if isinstance(ans, list) else ans, 4))
        return out

    monkeypatch.setattr(infer, "generate_batch", gen)
    return state


def _adapter(tmp_path, meta):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    if meta is not None:
        (d / "emorl_run.json").write_text(json.dumps(meta))
    return d


def test_labels_condition_and_prompt_default_to_the_adapters(tmp_path, fake_generate):
    files = _tones(tmp_path / "in", [1.0])
    ad = _adapter(tmp_path, {"labels": ["neutral", "happy", "sad", "angry"], "condition": "IR",
                             "prompt": {"system_prompt": "You judge voices.", "condition": "IR"},
                             "run": {"corpus": "iemocap", "condition": "IR"}})
    res = infer_folder(files, tmp_path / "o.csv", adapter=ad, backbone=_fake_backbone(), progress=False)
    system, user = fake_generate["messages"][0]
    assert system["content"][0]["text"] == "You judge voices."
    text = user["content"][1]["text"]
    assert "neutral, happy, sad, angry." in text and "<think>" not in text  # IR: answer only
    assert res.settings["labels"] == "neutral,happy,sad,angry" and res.settings["labels from"] == "the adapter"
    assert res.settings["condition"] == "IR" and res.settings["condition from"] == "the adapter"
    # explicit arguments win
    res = infer_folder(files, tmp_path / "o.csv", adapter=ad, backbone=_fake_backbone(), progress=False,
                       labels=["sad", "happy"], condition="ESR")
    text = fake_generate["messages"][-1][1]["content"][1]["text"]
    assert "sad, happy." in text and "<think>" in text and res.settings["labels from"] == "--labels"
    # an adapter saved before labels were recorded: its run's corpus says which
    old = tmp_path / "old"
    old.mkdir()
    (old / "adapter_config.json").write_text("{}")
    (old / "emorl_run.json").write_text(json.dumps({"run": {"corpus": "iemocap", "condition": "EUR"}}))
    res = infer_folder(files, tmp_path / "o.csv", adapter=old, backbone=_fake_backbone(), progress=False)
    assert res.settings["labels"] == "neutral,happy,sad,angry" and res.settings["condition"] == "EUR"


def test_an_adapter_is_read_from_its_answer_the_base_model_may_fall_back(tmp_path, fake_generate):
    files = _tones(tmp_path / "in", [1.0])
    fake_generate["answers"] = "it sounds happy"
    ad = _adapter(tmp_path, {"labels": ["neutral", "happy"], "condition": "IR"})
    trained = infer_folder(files, tmp_path / "a.csv", adapter=ad, backbone=_fake_backbone(), progress=False)
    assert (trained.results[0].emotion, trained.results[0].parse) == ("", "no_answer_tag")
    base = infer_folder(files, tmp_path / "b.csv", backbone=_fake_backbone(), progress=False)
    assert (base.results[0].emotion, base.results[0].parse) == ("happy", "fallback")
    strict = infer_folder(files, tmp_path / "c.csv", backbone=_fake_backbone(), progress=False,
                          require_answer_tag=True)
    assert strict.results[0].emotion == ""


def test_out_jsonl_writes_both_files_with_normal_permissions(tmp_path, fake_generate):
    import os
    import stat

    files = _tones(tmp_path / "in", [1.0, 0.5])
    old = os.umask(0o022)
    try:
        res = infer_folder(files, tmp_path / "out" / "r.jsonl", backbone=_fake_backbone(), progress=False)
    finally:
        os.umask(old)
    assert res.csv_path == tmp_path / "out" / "r.csv" and res.jsonl_path == tmp_path / "out" / "r.jsonl"
    assert res.csv_path.read_text().startswith("file,emotion,")
    assert [json.loads(l)["file"] for l in res.jsonl_path.read_text().splitlines()] == ["f0.wav", "f1.wav"]
    for p in (res.csv_path, res.jsonl_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    with pytest.raises(ValueError, match=r"expected a file name ending in \.csv or \.jsonl"):
        infer_folder(files, tmp_path / "r.txt", backbone=_fake_backbone(), progress=False)


@pytest.mark.parametrize("labels,message", [
    (["happy", ""], "--labels has an empty entry"),
    (["happy", "joy"], "unknown label 'joy' .*read as 'happy'"),
    (["happy", "bored"], "unknown label 'bored'; known labels: neutral, happy"),
    (["sad", "Sad"], "'sad' given twice"),
])
def test_bad_labels_are_errors(labels, message):
    from emorl_lib.evaluation.infer import check_labels

    with pytest.raises(ValueError, match=message):
        check_labels(labels)


def test_cli_errors_carry_one_prefix(tmp_path, capsys):
    from emorl_lib.cli import main

    assert main(["infer", "--input", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"emorl infer: {tmp_path / 'nope'} is not a folder\n"
    _tones(tmp_path / "in", [0.5])
    assert main(["infer", "--input", str(tmp_path / "in"), "--labels", "happy,,sad"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("emorl infer: --labels has an empty entry") and err.count("infer:") == 1
    assert main(["infer", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "x.tsv")]) == 1
    assert capsys.readouterr().err.count("infer:") == 1


def test_long_audio_is_never_cut_silently(tmp_path, fake_generate, caplog):
    from emorl_lib.evaluation.infer import combine

    files = _tones(tmp_path / "in", [5.0, 1.0])  # window 2 s: f0 is 2.5 windows long
    with caplog.at_level("WARNING"):
        res = infer_folder(files, tmp_path / "o.csv", backbone=_fake_backbone(), progress=False)
    assert fake_generate["seconds"] == [2.0, 1.0]  # first window only, said so
    assert res.long_files == ["f0.wav"] and "1 longer than the audio window" in res.summary()
    assert any("f0.wav: 5.0 s, longer than the model's 2 s audio window" in r.getMessage() for r in caplog.records)
    assert res.results[0].windows == "0-2 s of 5.0 s: happy" and res.results[1].windows == ""
    fake_generate["answers"] = ["<answer>sad</answer>", "<answer>happy</answer>", "<answer>sad</answer>",
                                "<answer>neutral</answer>"]
    fake_generate["seconds"].clear()
    res = infer_folder(files, tmp_path / "o.csv", backbone=_fake_backbone(), progress=False, long_audio="windows")
    assert fake_generate["seconds"] == [2.0, 2.0, 1.0, 1.0]
    r = res.results[0]
    assert r.emotion == "sad" and r.windows == "0-2.0 s: sad; 2-4.0 s: happy; 4-5.0 s: sad" and r.tokens == 12
    assert res.results[1].emotion == "neutral"
    # ties go to the label heard for longer, then to the earlier one
    assert combine(["happy", "sad"], [(0, 2), (2, 3)]) == "happy"
    assert combine(["sad", "happy"], [(0, 1), (1, 3)]) == "happy"
    assert combine(["sad", "happy"], [(0, 2), (2, 4)]) == "sad"
    assert combine([None, None], [(0, 2), (2, 4)]) is None
    with pytest.raises(ValueError, match="long-audio"):
        infer_folder(files, tmp_path / "o.csv", backbone=_fake_backbone(), progress=False, long_audio="all")


def test_long_audio_windows_on_the_tiny_model(backbone, tmp_path):
    """The tiny model's window is its own 4 s chunk: a 9 s file is 3 windows, each labelled by the real model."""
    from emorl_lib.model.backbones import processor_window_seconds

    assert processor_window_seconds(backbone.processor) == 4.0
    files = _tones(tmp_path / "in", [9.0])
    res = infer_folder(files, tmp_path / "o.csv", backbone=backbone, progress=False, long_audio="windows",
                       max_new_tokens=4, labels=["neutral", "happy"])
    assert res.long_files == ["f0.wav"] and res.results[0].windows.count(" s: ") == 3
    assert res.results[0].duration == pytest.approx(9.0)
