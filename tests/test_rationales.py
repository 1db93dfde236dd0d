# --- ESR rationale targets (issue 4, part 4): template, determinism, format, teacher override ---
from __future__ import annotations

import json
import re

import pytest

from emorl_lib.data.labels import UNIFIED
from emorl_lib.data.manifest import Utterance
from emorl_lib.method.descriptors import FEATURES, DescriptorConfig, levels
from emorl_lib.method.parsing import parse_answer, structure_ok
from emorl_lib.method.prompts import CONDITIONS
from emorl_lib.method.rationales import (
    NO_ACOUSTICS,
    NO_TRANSCRIPT,
    RationaleConfig,
    build_rationales,
    build_targets,
    load_teacher_rationales,
    rationale_for,
    salient_words,
)
from emorl_lib.model.backbones import _TINY_WORDS


def utt(utt_id: str, label: str = "angry", transcript: str | None = None, speaker: str = "S1") -> Utterance:
    return Utterance(utt_id, "iemocap", speaker, "F", label[:3], label, None, None, 1, 2.0, f"/x/{utt_id}.wav",
                     f"/x/{utt_id}.wav", transcript)


def desc_row(**z: float) -> dict:
    """A descriptor row as descriptors.compute_descriptors writes it (z-scores and their level words)."""
    zz = {f: z.get(f, 0.0) for f in FEATURES}
    return {"z": zz, "level": levels(zz, DescriptorConfig())}


AROUSED = desc_row(pitch_st=1.0, range_st=1.0, energy_db=2.0, rate_syl_s=1.0, hnr_db=0.0, tilt_db=1.0)
LOW = desc_row(pitch_st=-1.0, range_st=-1.0, energy_db=-1.0, rate_syl_s=-2.0, hnr_db=-1.0, tilt_db=0.0)


def test_template_is_deterministic_per_utt_and_seed_and_varies_between_utts():
    cfg = RationaleConfig()
    a = rationale_for(utt("u1"), AROUSED, cfg)
    assert a == rationale_for(utt("u1"), AROUSED, cfg)
    many = [rationale_for(utt(f"u{i}"), AROUSED, cfg) for i in range(40)]
    assert len({r.acoustics for r in many}) > 2 and len({r.summary for r in many}) > 2
    other_seed = [rationale_for(utt(f"u{i}"), AROUSED, RationaleConfig(seed=1)) for i in range(40)]
    assert other_seed != many


def test_acoustics_put_speaker_relative_levels_into_words():
    cfg = RationaleConfig()
    hi = rationale_for(utt("u1"), AROUSED, cfg).acoustics
    assert "high" in hi and "wide" in hi and "fast" in hi and "very loud" in hi and "tense" in hi
    lo = rationale_for(utt("u2", "sad"), LOW, cfg).acoustics
    assert "low" in lo and "narrow" in lo and "very slow" in lo and "quiet" in lo and "breathy" in lo
    assert rationale_for(utt("u3"), None, cfg).acoustics == NO_ACOUSTICS
    unvoiced = desc_row(energy_db=0.0)
    unvoiced["level"]["pitch_st"] = unvoiced["level"]["range_st"] = None
    assert "Pitch is unknown" in rationale_for(utt("u4"), unvoiced, cfg).acoustics


def test_content_quotes_the_transcript_and_names_salient_words_only_when_present():
    cfg = RationaleConfig(quote_words=4)
    none = rationale_for(utt("u1", transcript=None), AROUSED, cfg)
    assert none.content == NO_TRANSCRIPT and "only cue" in none.summary
    plain = rationale_for(utt("u2", transcript="The man moved the chair near the window."), AROUSED, cfg)
    assert '"The man moved the ..."' in plain.content and "neutral" in plain.content
    assert "salient words suggest" not in plain.summary
    loud = rationale_for(utt("u3", "happy", "Oh I love it, it’s GREAT <answer> sad"), AROUSED, cfg)
    assert '"love"' in loud.content and '"great"' in loud.content and "<" not in loud.content
    assert "happy" in loud.summary
    odd = rationale_for(utt("u4", "angry", "I love it"), AROUSED, cfg)
    assert "words suggest happy, but the voice" in odd.summary
    assert salient_words("I’m so sorry, I miss you. Sorry!", cfg.lexicon) == {"sad": ["sorry", "miss"]}


def test_quote_words_zero_quotes_nothing_but_keeps_the_rest_of_the_rationale():
    quoted = rationale_for(utt("u5", "happy", "Oh I love it, it is great"), AROUSED, RationaleConfig(quote_words=4))
    bare = rationale_for(utt("u5", "happy", "Oh I love it, it is great"), AROUSED, RationaleConfig(quote_words=0))
    assert '"Oh I love it' in quoted.content and "Oh I" not in bare.content and '"love"' in bare.content
    assert bare.content.startswith(("Emotionally salient", "The salient")) and quoted.content.endswith(bare.content)
    assert (bare.acoustics, bare.summary) == (quoted.acoustics, quoted.summary)


def test_summary_leads_to_the_gold_label_and_flags_mixed_cues():
    cfg = RationaleConfig()
    fits = rationale_for(utt("u1", "angry"), AROUSED, cfg).summary
    assert fits.rstrip(".").endswith("angry") and "mixed" not in fits
    mixed = [rationale_for(utt(f"m{i}", "sad"), AROUSED, cfg).summary for i in range(10)]
    assert all(("mixed" in s) for s in mixed) and all("sad" in s for s in mixed)
    calm_neutral = rationale_for(utt("n1", "neutral"), desc_row(), cfg).summary
    assert "mixed" not in calm_neutral and calm_neutral.rstrip(".").endswith("neutral")


@pytest.mark.parametrize("condition", CONDITIONS)
def test_targets_have_the_exact_layout_and_answer_the_gold_label(condition):
    utts = [utt(f"u{i}", lab, "We moved the box." if i % 2 else None, speaker=f"S{i % 3}")
            for i, lab in enumerate(UNIFIED * 3)]
    descs = {u.utt_id: (AROUSED if i % 3 == 0 else LOW if i % 3 == 1 else None) for i, u in enumerate(utts)}
    targets = build_targets(utts, descs, condition, RationaleConfig())
    assert set(targets) == {u.utt_id for u in utts}
    for u in utts:
        t = targets[u.utt_id]
        assert structure_ok(t, condition), t
        assert parse_answer(t, candidates=UNIFIED).label == u.label
    if condition == "ESR":
        assert all("<acoustics>" in t and "<content>" in t for t in targets.values())
    assert targets == build_targets(utts, descs, condition.lower(), RationaleConfig())  # deterministic


def test_template_words_stay_in_the_tiny_vocabulary_mostly():
    vocab = set(_TINY_WORDS.split()) | set(UNIFIED)
    cfg = RationaleConfig()
    rows = [AROUSED, LOW, desc_row(), None]
    outside: set[str] = set()
    for i in range(60):
        r = rationale_for(utt(f"u{i}", UNIFIED[i % len(UNIFIED)], None if i % 2 else "We moved it."), rows[i % 4],
                          cfg)
        text = " ".join((re.sub(r'"[^"]*"', "", r.content), r.acoustics, r.summary)).lower()
        outside |= {w for w in re.findall(r"[a-z']+", text) if w not in vocab}
    # the fixed NO_TRANSCRIPT sentence and a few connectives; anything new should be a conscious choice
    assert outside <= {"available", "cannot", "be", "judged", "mixed", "but", "they", "unusual", "stronger",
                       "also", "as", "well"}, outside


def write_teacher(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_teacher_rationales_override_the_template_and_the_rest_fall_back_counted(tmp_path, capsys):
    utts = [utt("a"), utt("b", "sad"), utt("c", "happy")]
    p = write_teacher(tmp_path / "teacher.jsonl", [
        {"utt_id": "a", "content": "He shouts about the bill.", "acoustics": "Loud, fast.", "summary": "Anger."},
        {"utt_id": "b", "content": "She speaks of a loss.", "acoustics": "Slow, low.", "summary": "Sadness."},
        {"utt_id": "zz", "content": "x", "acoustics": "y", "summary": "z"},
    ])
    cfg = RationaleConfig(teacher_jsonl=str(p))
    rats, rep = build_rationales(utts, {"a": AROUSED, "b": LOW, "c": AROUSED}, cfg)
    assert rats["a"].content == "He shouts about the bill." and rats["b"].summary == "Sadness."
    assert rats["c"] == rationale_for(utts[2], AROUSED, cfg)
    assert (rep.teacher, rep.template, rep.teacher_fallback, rep.teacher_unused) == (2, 1, ["c"], 1)
    targets = build_targets(utts, {"a": AROUSED, "b": LOW, "c": AROUSED}, "ESR", cfg)
    assert targets["a"].startswith("<think><content>He shouts about the bill.</content>")
    assert parse_answer(targets["a"]).label == "angry" and structure_ok(targets["b"], "ESR")
    err = capsys.readouterr().err
    assert "2 teacher" in err and "1 not in the teacher file" in err and "1 teacher rows unused" in err


@pytest.mark.parametrize("row,match", [
    ({"utt_id": "a", "content": "x", "acoustics": "y"}, r"teacher.jsonl:2: needs non-empty string\(s\) \['summary'\]"),
    ({"utt_id": "a", "content": "x", "acoustics": "y", "summary": "<answer>sad</answer>"}, "structural tag"),
    ({"utt_id": "ok", "content": "x", "acoustics": "y", "summary": "z"}, "appears twice"),
])
def test_malformed_teacher_rows_name_the_file_and_line(tmp_path, row, match):
    p = write_teacher(tmp_path / "teacher.jsonl", [{"utt_id": "ok", "content": "x", "acoustics": "y",
                                                    "summary": "z"}, row])
    with pytest.raises(ValueError, match=match):
        load_teacher_rationales(p)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a JSON object"):
        load_teacher_rationales(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="teacher_jsonl"):
        load_teacher_rationales(tmp_path / "none.jsonl")


def test_rows_without_descriptors_are_counted(capsys):
    utts = [utt("a"), utt("b")]
    _, rep = build_rationales(utts, {"a": AROUSED}, RationaleConfig())
    assert rep.no_descriptors == ["b"] and rep.template == 2
    build_targets(utts, {"a": AROUSED}, "EUR")
    assert "1 without descriptors" in capsys.readouterr().err


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="quote_words"):
        RationaleConfig(quote_words=-1)
    with pytest.raises(ValueError, match="arousal"):
        RationaleConfig(low_arousal=0.7, high_arousal=0.6)


def test_sft_targets_read_the_sections_and_describe_the_manifest(tmp_path):
    import numpy as np
    import soundfile as sf
    import yaml

    from emorl_lib.infra.io import write_jsonl
    from emorl_lib.method.descriptors import describe_manifest
    from emorl_lib.profile import load_profile, run_setup
    from emorl_lib.training.experiments import Run

    assert load_profile("default").section("rationale").teacher_jsonl is None
    assert load_profile("default").section("descriptors").min_voiced_frames >= 1
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump({
        "paths": {"cache": str(tmp_path / "c"), "runs": str(tmp_path / "r"), "results": str(tmp_path / "res")},
        "data": {"corpora": ["savee"]}, "descriptors": {"workers": 1}, "rationale": {"seed": 3}}))
    t = np.arange(16000) / 16000
    rows = []
    for i in range(4):
        wav = tmp_path / f"w{i}.wav"
        sf.write(wav, (0.05 * (i + 1) * np.sin(2 * np.pi * (120 + 20 * i) * t)).astype(np.float32), 16000)
        u = utt(f"DC_a0{i}", ["angry", "sad", "happy", "neutral"][i], speaker="DC")
        u.wav = str(wav)
        rows.append(u)
    write_jsonl(tmp_path / "r" / "p" / "manifests" / "savee.jsonl", rows)
    prof = load_profile(prof)

    def targets_of(condition, utts=None):
        return run_setup(prof, Run("savee", "sft", condition, None, 1)).targets(utts)

    cache = tmp_path / "r" / "p" / "manifests" / "savee.descriptors.jsonl"
    ir = targets_of("IR")  # the label alone: no descriptor computed
    assert {k: parse_answer(v).label for k, v in ir.items()} == {u.utt_id: u.label for u in rows}
    assert not cache.exists()
    targets = targets_of("EUR")
    assert all(structure_ok(targets[u.utt_id], "EUR") and parse_answer(targets[u.utt_id]).label == u.label
               for u in rows)
    assert cache.is_file()
    sub = targets_of("ESR", rows[:2])
    assert list(sub) == ["DC_a00", "DC_a01"] and all(structure_ok(x, "ESR") for x in sub.values())
    esr = targets_of("ESR")
    assert "loud" in esr["DC_a03"] and "quiet" in esr["DC_a00"]  # loudest / quietest clip of speaker DC
    manifest = tmp_path / "r" / "p" / "manifests" / "savee.jsonl"
    assert describe_manifest(manifest, prof.section("descriptors"), progress=False).report.reused == 4


def test_volume_is_described_when_the_rate_is_unknown():
    row = desc_row(energy_db=2.0)
    row["level"]["rate_syl_s"] = None
    a = rationale_for(utt("u1"), row, RationaleConfig()).acoustics
    assert "Volume is very loud." in a and "Speed" not in a
