"""Synthetic corpora: real layouts, names, rates, codecs, defects, track-2 coverage, determinism, learnable cues."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emorl_lib.data.labels import NATIVE_TO_UNIFIED
from emorl_lib.data.synthetic import (
    ROOT_NAMES,
    generate,
    generate_all,
    iemocap,
    meld,
    ravdess,
    savee,
    savee_flat_root,
    track2_included,
    voice,
)
from emorl_lib.data.synthetic.clips import Clip, render_clip

IEMOCAP_UTT = re.compile(r"^Ses0[1-5][MF]_(impro|script)\d\d[ab]?(_\db?)?_[MF]\d{3}$")
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")
SAVEE_NAME = re.compile(r"^(sa|su|a|d|f|h|n)(\d\d)\.wav$")
SAVEE_FLAT = re.compile(r"^(DC|JE|JK|KL)_(sa|su|a|d|f|h|n)(\d\d)\.wav$")
MELD_CLIP = re.compile(r"^(final_videos_test)?dia(\d+)_utt(\d+)\.mp4$")
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
               "Episode", "StartTime", "EndTime"]


def _tree_digest(root: Path, pattern: str = "*.wav") -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob(pattern))}


def _meld_rows(root: Path) -> dict[str, list[dict]]:
    out = {}
    for split, rel in (("train", "train/train_sent_emo.csv"), ("dev", "dev_sent_emo.csv"),
                       ("test", "test_sent_emo.csv")):
        with (root / rel).open(encoding="utf-8", newline="") as f:
            r = csv.reader(f)
            assert next(r) == MELD_HEADER
            out[split] = [dict(zip(MELD_HEADER, row)) for row in r]
    return out


def _iemocap_labels(root: Path) -> dict[str, str]:
    labels = {}
    for p in root.glob("Session*/dialog/EmoEvaluation/*.txt"):
        if p.name.startswith("._"):
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.startswith("["):
                _, utt, code, _ = line.split("\t")
                labels[utt] = code
    return labels


# ---- layout, names, rates -------------------------------------------------------------------------------------
def test_roots_are_what_a_user_passes_to_a_loader(synthetic_corpora):
    assert set(synthetic_corpora) == set(ROOT_NAMES)
    for corpus, root in synthetic_corpora.items():
        assert root.name == ROOT_NAMES[corpus] and root.is_dir()
    assert (savee_flat_root(synthetic_corpora["savee"].parent) / "ALL").is_dir()


def test_iemocap_layout_names_labels_and_junk(synthetic_corpora):
    root = synthetic_corpora["iemocap"]
    assert sorted(p.name for p in root.iterdir()) == [f"Session{s}" for s in range(1, 6)]
    wavs = [p for p in root.glob("Session*/sentences/wav/*/*.wav") if not p.name.startswith("._")]
    assert wavs and all(IEMOCAP_UTT.match(p.stem) for p in wavs)
    assert all(p.parent.name == p.stem.rsplit("_", 1)[0] and p.parts[-5] == f"Session{p.stem[4]}" for p in wavs)
    assert {p.stem[5] for p in wavs} == {"F", "M"} and {p.stem[-4] for p in wavs} == {"F", "M"}
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    labels = _iemocap_labels(root)
    assert set(labels) == {p.stem for p in wavs}
    assert {"neu", "ang", "sad", "fru", "xxx"} <= set(labels.values())
    evdir = root / "Session1/dialog/EmoEvaluation"
    text = (evdir / "Ses01F_impro01.txt").read_text(encoding="utf-8")
    assert text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n")
    assert re.search(r"^\[\d+\.\d{4} - \d+\.\d{4}\]\tSes01F_impro01_F000\t\w{3}\t\[\d\.\d{4}, \d\.\d{4}, \d\.\d{4}\]$",
                     text, re.M)
    assert re.search(r"^C-E2:\t\w+;\t\(\)$", text, re.M) and re.search(r"^A-E3:\tval \d; act \d; dom  \d;\t\(\)$",
                                                                       text, re.M)
    assert all(any((evdir / sub).iterdir()) for sub in ("Categorical", "Attribute", "Self-evaluation"))
    tr = (root / "Session1/dialog/transcriptions/Ses01F_impro01.txt").read_text(encoding="utf-8")
    assert re.search(r"^Ses01F_impro01_F000 \[\d{3}\.\d{4}-\d{3}\.\d{4}\]: \S", tr, re.M)
    assert (root / "Session1/dialog/wav/Ses01F_impro01.wav").is_file()
    assert (root / "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav").is_file()
    assert (evdir / "._Ses01F_impro01.txt").is_file()


def test_meld_csvs_clips_codecs_and_defects(synthetic_corpora):
    av = pytest.importorskip("av")
    root = synthetic_corpora["meld"]
    raw = (root / "train/train_sent_emo.csv").read_bytes()
    raw.decode("utf-8")  # the documented encoding
    rows = _meld_rows(root)
    alltext = "".join(r["Utterance"] for rs in rows.values() for r in rs)
    assert any(ord(ch) > 127 for ch in alltext) and any("," in r["Utterance"] for rs in rows.values() for r in rs)
    assert {r["Emotion"] for rs in rows.values() for r in rs} == set(NATIVE_TO_UNIFIED["meld"])
    folders = {"train": "train/train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
    for split, folder in folders.items():
        names = [p.name for p in (root / folder).iterdir()]
        assert names and all(MELD_CLIP.match(n) for n in names)
    assert any(n.startswith("final_videos_test") for n in (p.name for p in (root / folders["test"]).iterdir()))
    # the two known defects
    assert any(r["Dialogue_ID"] == "125" and r["Utterance_ID"] == "3" for r in rows["train"])
    bad = root / "train/train_splits/dia125_utt3.mp4"
    assert bad.is_file()
    with pytest.raises(av.FFmpegError):
        with av.open(str(bad)) as c:
            for _ in c.decode(audio=0):
                pass
    assert any(r["Dialogue_ID"] == "110" and r["Utterance_ID"] == "7" for r in rows["dev"])
    assert not (root / "dev_splits_complete/dia110_utt7.mp4").exists()
    # every other CSV row has a clip that decodes to AAC, 48 kHz, 2+ channels
    r = rows["dev"][0] if rows["dev"][0]["Dialogue_ID"] != "110" else rows["dev"][1]
    for path in (root / f"dev_splits_complete/dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4",
                 next((root / folders["test"]).glob("final_videos_test*.mp4"))):
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            assert a.codec_context.name == "aac" and a.codec_context.sample_rate == 48000
            assert a.codec_context.channels >= 2
            n = sum(f.samples for f in c.decode(audio=0))
        assert n > 48000 * 0.5
    n_clips = sum(1 for p in (root / folders["train"]).glob("dia*.mp4"))
    assert n_clips == len(rows["train"])  # every train row has a file (one of them undecodable)


def test_ravdess_names_rates_and_files_a_loader_must_filter(synthetic_corpora):
    root = synthetic_corpora["ravdess"]
    actors = sorted(p.name for p in root.iterdir())
    assert actors == [f"Actor_{i:02d}" for i in range(1, 25)]
    files = list(root.glob("Actor_*/*.wav"))
    fields = [RAVDESS_NAME.match(p.name) for p in files]
    assert all(fields)
    assert all(p.parent.name == f"Actor_{m.group(7)}" for p, m in zip(files, fields))
    speech = [m for m in fields if m.group(1) == "03" and m.group(2) == "01"]
    assert {m.group(3) for m in speech} == set(NATIVE_TO_UNIFIED["ravdess"])
    assert not any(m.group(3) == "01" and m.group(4) == "02" for m in fields)  # neutral has no strong intensity
    others = {(m.group(1), m.group(2)) for m in fields} - {("03", "01")}
    assert {("03", "02"), ("02", "01"), ("01", "01")} <= others
    info = sf.info(str(files[0]))
    assert (info.samplerate, info.channels) == (48000, 1)


def test_savee_both_layouts_and_rate(synthetic_corpora):
    root = synthetic_corpora["savee"]
    assert sorted(p.name for p in (root / "AudioData").iterdir()) == ["DC", "JE", "JK", "KL"]
    files = list((root / "AudioData").glob("*/*.wav"))
    assert all(SAVEE_NAME.match(p.name) for p in files)
    per_code = {}
    for p in (root / "AudioData/DC").glob("*.wav"):
        code = SAVEE_NAME.match(p.name).group(1)
        per_code[code] = per_code.get(code, 0) + 1
    assert set(per_code) == set(NATIVE_TO_UNIFIED["savee"])
    assert sf.info(str(files[0])).samplerate == 44100
    flat = sorted(p.name for p in (savee_flat_root(root.parent) / "ALL").iterdir())
    assert all(SAVEE_FLAT.match(n) for n in flat)
    assert flat == sorted(f"{p.parent.name}_{p.name}" for p in files)


# ---- cross-corpus (EmoBox track 2) coverage -----------------------------------------------------------------
def test_track2_entries_exist_with_consistent_labels(synthetic_corpora):
    stamp = synthetic_corpora["iemocap"].parent / f".{ROOT_NAMES['iemocap']}.stamp.json"
    size = json.loads(stamp.read_text())["size"]
    happy_codes = {"neutral": {"neu"}, "happy": {"hap", "exc"}, "sad": {"sad"}, "angry": {"ang"}}
    labels = _iemocap_labels(synthetic_corpora["iemocap"])
    inc = track2_included("iemocap", size)
    assert len(inc) >= 8 and {r["label"] for r in inc} == set(happy_codes)
    for r in inc:
        assert labels[Path(r["wav_filename"]).stem] in happy_codes[r["label"]]
        assert r["speaker"] == Path(r["wav_filename"]).stem[3:6]  # the list names the mocap actor
    meld_emo = {"neutral": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger"}
    rows = _meld_rows(synthetic_corpora["meld"])
    placed = meld.track2_placement(size)
    for r in track2_included("meld", size):
        m = re.match(r"(final_videos_test)?dia(\d+)_utt(\d+)$", Path(r["wav_filename"]).stem)
        split = meld.PLACEMENTS[placed[r["wav_filename"]]][0][0]  # where the entry's own clip lives
        assert split == "test" or not m.group(1)
        hit = [x for x in rows[split] if (x["Dialogue_ID"], x["Utterance_ID"]) == (m.group(2), m.group(3))]
        assert len(hit) == 1 and hit[0]["Speaker"] == r["speaker"] and hit[0]["Emotion"] == meld_emo[r["label"]]
    rav = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}
    for r in track2_included("ravdess", size):
        assert (synthetic_corpora["ravdess"] / r["wav_filename"]).is_file()
        assert Path(r["wav_filename"]).name.split("-")[2] == rav[r["label"]]
    for r in track2_included("savee", size):
        assert (synthetic_corpora["savee"] / "AudioData" / r["wav_filename"]).is_file()


def test_synthetic_meld_reproduces_the_real_name_collisions():
    """As in real MELD, list names exist in several splits with different labels, entries live in dev and test,
    only where those splits have such dialogue ids, and the same seed gives the same plan."""
    full = meld.plan(0, 2.0)
    assert full == meld.plan(0, 2.0)
    placed = meld.track2_placement(2.0)
    splits_of: dict[tuple[int, int], dict[str, str]] = {}
    for split, items in full.items():
        for d, u, _, emo in items:
            splits_of.setdefault((d, u), {})[split] = emo
    entry_splits = {meld.PLACEMENTS[k][0][0] for k in placed.values()}
    assert entry_splits == {"train", "dev", "test"}
    for name, kind in placed.items():
        m = re.search(r"dia(\d+)_utt(\d+)", name)
        d, u = int(m.group(1)), int(m.group(2))
        home = meld.PLACEMENTS[kind][0][0]
        assert d < meld.SPLITS[home][2]  # a dev entry has a dev dialogue id (< 114), a test one < 280
        assert set(splits_of[(d, u)]) >= {s for s, _ in meld.PLACEMENTS[kind]}
    differing = [k for k, v in splits_of.items() if len(v) > 1 and len(set(v.values())) > 1]
    same = [k for k, v in splits_of.items() if len(v) > 1 and len(set(v.values())) == 1]
    assert len(differing) >= 20 and len(same) >= 5
    # the small test corpus holds some of them too, so every test run exercises the resolution rule
    small = {meld.PLACEMENTS[k][0][0] for k in meld.track2_placement(0.1).values()}
    assert small == {"train", "dev", "test"}


def test_track2_subset_grows_with_size():
    assert len(track2_included("meld", 0.1)) == 4 * 3
    assert len(track2_included("meld", 1.0)) == 4 * 30
    assert len(track2_included("savee", 2.0)) == 240
    assert {r["wav_filename"] for r in track2_included("iemocap", 0.1)} <= {
        r["wav_filename"] for r in track2_included("iemocap", 1.0)}


# ---- determinism, stamp, atomicity --------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate("iemocap", tmp_path / "a", seed=3, size=0.05)
    b = generate("iemocap", tmp_path / "b", seed=3, size=0.05)
    c = generate("iemocap", tmp_path / "c", seed=4, size=0.05)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da and da == db
    assert _tree_digest(a, "*.txt") == _tree_digest(b, "*.txt")
    shared = {k for k in set(da) & set(dc) if not Path(k).name.startswith("._")}  # the macOS junk is fixed
    assert shared and all(da[k] != dc[k] for k in shared)


def test_stamp_reuses_and_new_arguments_regenerate(tmp_path):
    root = generate("iemocap", tmp_path, seed=0, size=0.05)
    stamp = tmp_path / f".{ROOT_NAMES['iemocap']}.stamp.json"
    meta = json.loads(stamp.read_text())
    assert (meta["seed"], meta["size"]) == (0, 0.05) and meta["counts"]["utterances"] > 0
    some = next(root.glob("Session1/sentences/wav/*/Ses*.wav"))
    before, digest = some.stat().st_mtime_ns, _tree_digest(root)
    assert generate("iemocap", tmp_path, seed=0, size=0.05) == root
    assert some.stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".tmp-*"))  # no temp folder left behind
    assert generate("iemocap", tmp_path, seed=1, size=0.05) == root
    assert json.loads(stamp.read_text())["seed"] == 1 and _tree_digest(root) != digest
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match="unknown corpus"):
        generate("crema", tmp_path)


# ---- the cue model ----------------------------------------------------------------------------------------------
def _features(x: np.ndarray, sr: int) -> np.ndarray:
    """Mean F0 (voiced frames), log RMS, onset rate, spectral centroid: what a simple probe would use."""
    from emorl_lib.infra.numba_cache import (
        librosa as safe_librosa,  # its numba cache, written by one process
    )

    librosa = safe_librosa()

    f0 = librosa.yin(x, fmin=60, fmax=600, sr=sr, frame_length=1024, hop_length=512)
    rms = librosa.feature.rms(y=x)[0]
    voiced = rms > 0.3 * rms.max()
    onsets = librosa.onset.onset_detect(y=x, sr=sr, units="time")
    cent = librosa.feature.spectral_centroid(y=x, sr=sr)[0]
    return np.array([np.log(np.median(f0[voiced[: len(f0)]])), np.log(np.mean(rms[voiced]) + 1e-9),
                     len(onsets) / (len(x) / sr), np.log(np.mean(cent[voiced]))])


@pytest.fixture(scope="module")
def cue_features():
    """Features of 16 utterances per emotion (8 speakers), recorded through the IEMOCAP channel."""
    emotions = ("happy", "sad", "angry", "fear", "disgust", "surprise")
    feats = {}
    for e in emotions:
        rows = []
        for i in range(16):
            clip = Clip(f"{e}/{i}.wav", "iemocap", e, f"spk{i % 8}", "MF"[i % 2], duration=2.0)
            rows.append(_features(render_clip(clip, seed=0), 16000))
        feats[e] = np.array(rows)
    return feats


def test_angry_and_sad_are_separable_by_a_simple_probe(cue_features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([cue_features["angry"], cue_features["sad"]])
    y = np.array([0] * len(cue_features["angry"]) + [1] * len(cue_features["sad"]))
    acc = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression()), X, y, cv=4).mean()
    assert acc > 0.85


def test_wheel_neighbours_sound_nearer_than_opposites(cue_features):
    allx = np.vstack(list(cue_features.values()))
    mu, sd = allx.mean(0), allx.std(0) + 1e-9
    centre = {e: ((f - mu) / sd).mean(0) for e, f in cue_features.items()}

    def dist(a, b):
        return float(np.linalg.norm(centre[a] - centre[b]))

    neighbours = [("angry", "disgust"), ("fear", "surprise"), ("surprise", "sad"), ("sad", "disgust")]
    opposites = [("happy", "sad"), ("angry", "fear")]
    assert np.mean([dist(*p) for p in neighbours]) < np.mean([dist(*p) for p in opposites])


def test_cue_table_is_smooth_round_the_wheel():
    """In cue space (the model's own parameters), distance grows with angular distance at equal arousal."""
    scale = np.array([abs(v[1]) + abs(v[2]) + 1e-9 for v in voice.CUES.values()])

    def cues_at(angle):
        u, v = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        return np.array([b + cu * u + cv * v for b, cu, cv, _, _ in voice.CUES.values()]) / scale

    d = [np.linalg.norm(cues_at(0) - cues_at(a)) for a in (45, 90, 135, 180)]
    assert all(x < y for x, y in zip(d, d[1:]))
    for e in voice.EMOTIONS:
        voice.wheel_coords(e)  # every table entry names a wheel position
    assert np.allclose(voice.wheel_coords("neutral")[:2], 0) and voice.wheel_coords("calm")[2] < 0


def test_transcripts_carry_no_label_information(synthetic_corpora):
    """Transcripts are drawn from neutral word lists by the utterance id alone: no emotion words, and the text of
    an id does not change with its label."""
    import inspect

    from emorl_lib.data.synthetic import meld

    assert list(inspect.signature(meld._utterance_text).parameters) == ["seed", "split", "d", "u"]
    texts = [r["Utterance"] for rs in _meld_rows(synthetic_corpora["meld"]).values() for r in rs]
    texts += [line.split("]: ", 1)[1] for p in synthetic_corpora["iemocap"].glob("Session*/dialog/transcriptions/*.txt")
              for line in p.read_text(encoding="utf-8").splitlines()]
    words = " ".join(texts).lower()
    assert len(texts) > 20
    for w in ("happy", "sad", "angry", "anger", "joy", "fear", "disgust", "surpris", "excit", "frustrat", "love",
              "hate", "cry", "great", "terrible"):
        assert not re.search(rf"\b{w}", words), w


# ---- a size per corpus; MELD at any size ----------------------------------------------------------------------
# meld.plan digests recorded with the planner as it was before it could reuse dialogue ids (it never finished from
# size 10 up): every size it did finish must plan the very same rows, so no generated MELD tree changes.
MELD_PLAN_DIGESTS = {
    (0, 0.05): "f3db92739d79fc21", (0, 0.1): "3aa8cf78ad8ed546", (0, 0.3): "16dee5189a5cc2ef",
    (0, 1.0): "952f39fa5a24e7d7", (0, 2.0): "8f411b552456cf95", (0, 5.0): "d0d7bcb0a035428c",
    (0, 8.0): "e77e107fc2ba3e8c", (0, 9.0): "13fd3c309c26289a",
    (1, 0.1): "b98147a4d3f9c3e6", (1, 1.0): "92d20f72f9d6c976", (1, 8.0): "02d547b52d85f6a8",
    (1, 9.0): "70370f2082c91cb0",
}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _within(seconds: int):
    """Fail, instead of hanging the suite, if the block runs longer than `seconds` (a planner that loops)."""
    def _timeout(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _planned(corpus: str, size: float, seed: int = 0) -> int:
    """Utterance files a corpus's planner lays out at this size (what the writer renders)."""
    if corpus == "iemocap":
        return sum(len(us) for us in iemocap.plan(seed, size).values())
    if corpus == "meld":
        return sum(len(rows) for rows in meld.plan(seed, size).values())
    return len(ravdess.plan(seed, size)) if corpus == "ravdess" else len(savee.plan(size))


@pytest.mark.parametrize("seed, size", sorted(MELD_PLAN_DIGESTS))
def test_meld_plans_of_size_up_to_9_are_unchanged(seed, size):
    assert _digest(meld.plan(seed, size)) == MELD_PLAN_DIGESTS[(seed, size)]


@pytest.mark.parametrize("size", [10, 12, 40])
def test_meld_plans_any_size_with_unique_ids_in_the_real_layout(size):
    """Dev has 114 dialogue ids: from about size 9.8 the fillers outnumber what fresh dialogues hold (test's 280
    from about 23); the planner then adds utterances to dialogues in use, each (dialogue, utterance) once per split."""
    with _within(20):
        rows = meld.plan(0, size)
    track2 = meld.track2_rows(size)
    assert meld.n_fillers(12) == 360
    for split, items in rows.items():
        ids = [(d, u) for d, u, _, _ in items]
        assert len(set(ids)) == len(ids), split
        assert items == sorted(items)
        assert len(items) == len(track2[split]) + meld.n_fillers(size), split  # the defects are fillers
        fillers = set(ids) - {(d, u) for d, u, _, _ in track2[split]}
        assert all(0 <= d < meld.SPLITS[split][2] and u >= 0 for d, u in fillers), split
        assert {e for *_, e in items} == set(meld.EMOTIONS)
    assert len({d for d, *_ in rows["dev"]}) == meld.SPLITS["dev"][2]  # every dev dialogue id in use
    assert meld.plan(0, size) == rows  # deterministic


def test_meld_refuses_a_size_it_cannot_plan():
    for size in (float("inf"), float("nan"), 0, -1):
        with _within(5), pytest.raises(ValueError, match="finite number > 0"):
            meld.plan(0, size)


def test_a_size_mapping_sizes_each_corpus_on_its_own(tmp_path):
    """generate_all with {corpus: size}: each corpus at its own size (stamp and files), the corpora it does not name
    at 1.0; changing one corpus's size regenerates that corpus only."""
    assert [_planned(c, 2.0) > _planned(c, 1.0) for c in ROOT_NAMES] == [True] * 4  # a size means more files
    made = generate_all(tmp_path, seed=0, size={"iemocap": 0.05, "savee": 0.1, "meld": 40},
                        corpora=("iemocap", "savee"))
    assert set(made) == {"iemocap", "savee"}

    def stamp(corpus: str) -> dict:
        return json.loads((tmp_path / f".{ROOT_NAMES[corpus]}.stamp.json").read_text())

    assert (stamp("iemocap")["size"], stamp("savee")["size"]) == (0.05, 0.1)
    n_iemocap = stamp("iemocap")["counts"]["utterances"]
    assert n_iemocap == _planned("iemocap", 0.05)
    assert len(list((made["savee"] / "AudioData").rglob("*.wav"))) == _planned("savee", 0.1)
    savee_clip = next((made["savee"] / "AudioData").rglob("*.wav"))
    before = savee_clip.stat().st_mtime_ns
    generate_all(tmp_path, seed=0, size={"iemocap": 0.1, "savee": 0.1}, corpora=("iemocap", "savee"))
    assert stamp("iemocap")["counts"]["utterances"] == _planned("iemocap", 0.1) > n_iemocap
    assert savee_clip.stat().st_mtime_ns == before  # savee's size did not change: kept as it was


def test_bad_size_mappings_are_refused_before_anything_is_written(tmp_path):
    known = r"unknown corpus \['crema'\]; known: \['iemocap', 'meld', 'ravdess', 'savee'\]"
    with pytest.raises(ValueError, match=known):
        generate_all(tmp_path, size={"crema": 2})
    with pytest.raises(ValueError, match="every size must be a finite number > 0"):
        generate_all(tmp_path, size={"meld": 0})
    with pytest.raises(ValueError, match="one corpus at one size"):
        generate("meld", tmp_path, size={"meld": 2})
    assert not list(tmp_path.iterdir())
