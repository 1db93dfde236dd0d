# --- data loaders (issue 3): decoding into 16 kHz mono and the clip cache ---
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emorl_lib.data import audio


def sine(sr: int, seconds: float, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = amp * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def write_aac_mp4(path: Path, x: np.ndarray, sr: int = 48000) -> Path:
    """An AAC-in-mp4 clip like MELD's (multi-channel, 48 kHz), written with PyAV."""
    import av

    channels = x.shape[1]
    with av.open(str(path), "w", format="mp4") as out:
        st = out.add_stream("aac", rate=sr, layout={2: "stereo", 6: "5.1"}[channels])
        planar = np.ascontiguousarray(x.T.astype(np.float32))
        for i in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + 1024]), format="fltp",
                                               layout=st.layout.name)
            frame.sample_rate = sr
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def test_wav_44k_stereo_becomes_16k_mono(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, sine(44100, 1.0, channels=2), 44100)
    y = audio.load_16k(p)
    assert y.ndim == 1 and y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert 0.25 < np.max(np.abs(y)) < 0.35


def test_mp4_aac_multichannel_is_decoded_and_downmixed(tmp_path):
    p = write_aac_mp4(tmp_path / "dia0_utt0.mp4", sine(48000, 0.5, channels=6))
    y = audio.load_16k(p)
    assert y.ndim == 1 and abs(len(y) - 8000) < 1200  # AAC priming/padding adds a few frames
    spec = np.abs(np.fft.rfft(y[2000:6000]))
    assert abs(np.argmax(spec) * 16000 / 4000 - 440) < 10  # still the 440 Hz tone after the round trip


@pytest.mark.parametrize("kind,reason", [
    ("corrupt", audio.UNDECODABLE), ("empty", audio.EMPTY), ("silent", audio.SILENT),
    ("nan", audio.NONFINITE), ("zero-bytes", audio.UNDECODABLE), ("corrupt-mp4", audio.UNDECODABLE),
])
def test_unusable_clips_raise_audio_error_with_reason(tmp_path, kind, reason):
    p = tmp_path / ("x.mp4" if kind == "corrupt-mp4" else "x.wav")
    if kind in ("corrupt", "corrupt-mp4"):
        p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" if kind == "corrupt" else b"\x00\x00\x00\x18ftypmp42junk")
    elif kind == "empty":
        sf.write(p, np.zeros(0, np.float32), 16000)
    elif kind == "silent":
        sf.write(p, np.zeros(16000, np.float32), 16000)
    elif kind == "nan":
        x = sine(16000, 0.2)
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    else:
        p.write_bytes(b"")
    with pytest.raises(audio.AudioError) as e:
        audio.load_16k(p)
    assert e.value.reason == reason and str(p) in str(e.value)


def test_cache_clip_writes_once_then_reuses_and_redecodes_stale(tmp_path):
    src, dst = tmp_path / "s.wav", tmp_path / "cache" / "u.wav"
    sf.write(src, sine(48000, 0.5), 48000)
    r1 = audio.cache_clip(("u", str(src), str(dst), 1e-4))
    assert r1.reason is None and not r1.reused and abs(r1.duration - 0.5) < 1e-3
    info = sf.info(dst)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    r2 = audio.cache_clip(("u", str(src), str(dst), 1e-4))
    assert r2.reused and r2.duration == r1.duration
    t = dst.stat().st_mtime + 10
    os.utime(src, (t, t))  # source newer than the cached copy: decode again
    assert not audio.cache_clip(("u", str(src), str(dst), 1e-4)).reused
    assert [p.name for p in dst.parent.iterdir()] == ["u.wav"]  # no temp file left behind


def test_cache_clip_reports_instead_of_raising(tmp_path):
    src = tmp_path / "bad.wav"
    src.write_bytes(b"not audio")
    r = audio.cache_clip(("k", str(src), str(tmp_path / "out.wav"), 1e-4))
    assert r.reason == audio.UNDECODABLE and not (tmp_path / "out.wav").exists()
    r = audio.cache_clip(("k", str(tmp_path / "missing.wav"), str(tmp_path / "out.wav"), 1e-4))
    assert r.reason == audio.UNDECODABLE


def test_write_wav_atomic_leaves_no_partial_file_on_error(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    import wave

    monkeypatch.setattr(wave.Wave_write, "writeframes", boom)
    with pytest.raises(KeyboardInterrupt):
        audio.write_wav_atomic(tmp_path / "x.wav", np.zeros(10, np.float32))
    assert list(tmp_path.iterdir()) == []
