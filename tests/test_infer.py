"""Folder inference: every audio file labelled or listed as unreadable; CSV + JSONL written; CLI wiring."""

import csv
import json

import pytest

from emorl_lib.evaluation.infer import find_audio, infer_folder, tag_text


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir, kit_paths):
    from emorl_lib.training.backbones import BackboneConfig, load_backbone

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
