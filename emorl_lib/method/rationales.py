"""ESR rationales for the SFT warm-up: what the model should write in <content>, <acoustics> and <summary>.

Two sources, per utterance:
- a teacher's rationales (a jsonl of utt_id, content, acoustics, summary, e.g. written by a large model), when the
  `rationale` section names one in `teacher_jsonl`; it wins wherever it has the utterance;
- else a deterministic template (`rationale_for`): <content> quotes the transcript and names emotionally salient
  words from a small lexicon (or says there is no transcript); <acoustics> puts the speaker-relative descriptor
  levels (emorl_lib.method.descriptors) into words; <summary> weighs both and arrives at the gold label (this is a
  training target, so it may use the gold label).

The template keeps to a small vocabulary (pitch, range, wide, narrow, loud, quiet, fast, slow, tense, breathy, ...:
the words the tiny test model's tokenizer knows) and varies its phrasing by a choice seeded from (seed, utt_id),
so the same utterance always gets the same text. `build_targets` returns the full assistant texts for a condition
(IR, EUR, ESR) through prompts.format_target, the one place that lays the tags out.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..data.manifest import Utterance
from ..infra.log import get_logger
from .descriptors import DescriptorConfig, describe_manifest
from .priors import DEFAULT_MAPPING, NRC_VAD
from .prompts import TAGS, Rationale, canonical_condition, format_target

log = get_logger(__name__)


def _default_lexicon() -> dict[str, list[str]]:
    return {
        "happy": ["great", "wonderful", "love", "glad", "happy", "fun", "amazing", "awesome", "yay", "thanks"],
        "sad": ["sorry", "miss", "lost", "alone", "cry", "sad", "hurt", "unfortunately", "died"],
        "angry": ["hate", "stupid", "damn", "shut", "angry", "furious", "ridiculous", "idiot"],
        "fear": ["afraid", "scared", "help", "worried", "terrified", "nervous"],
        "surprise": ["wow", "whoa", "unbelievable", "seriously"],
        "disgust": ["gross", "disgusting", "yuck", "eww", "sick"],
    }


@dataclass
class RationaleConfig:
    """The `rationale` section: how SFT targets' reasoning is written."""

    seed: int = 0                      # phrasing choice is seeded from (seed, utt_id)
    quote_words: int = 8               # words of the transcript quoted in <content>; 0: no quote (a model that
                                       # cannot transcribe would learn to invent the words)
    lexicon: dict[str, list[str]] = field(default_factory=_default_lexicon)  # label -> salient words
    teacher_jsonl: str | None = None   # rationales written by a teacher model; they override the template
    high_arousal: float = 0.6          # NRC arousal of a label above which its voice is expected to be aroused
    low_arousal: float = 0.35          # ... below which it is expected to be calm or low

    def __post_init__(self) -> None:
        if self.quote_words < 0:
            raise ValueError(f"quote_words must be >= 0, got {self.quote_words}")
        if not self.low_arousal < self.high_arousal:
            raise ValueError(f"need low_arousal < high_arousal, got {self.low_arousal}, {self.high_arousal}")


# --- content --------------------------------------------------------------------------------------------------
NO_TRANSCRIPT = "No transcript is available; the words cannot be judged."
_WORDS = re.compile(r"[\w'’?]+", re.UNICODE)


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def _rng(cfg: RationaleConfig, utt_id: str) -> random.Random:
    h = hashlib.sha256(f"{cfg.seed}:{utt_id}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def salient_words(transcript: str, lexicon: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """label -> the lexicon's words found in the transcript (in order of appearance, each once)."""
    index = {w.casefold().rstrip("?"): lab for lab, ws in lexicon.items() for w in ws}
    found: dict[str, list[str]] = {}
    for tok in _WORDS.findall(transcript.casefold().replace("’", "'")):
        w = tok.strip("'?")
        lab = index.get(w)
        if lab is not None and w not in found.get(lab, []):
            found.setdefault(lab, []).append(w)
    return found


def _quote(transcript: str, n: int) -> str:
    clean = re.sub(r"[<>\"]", "'", " ".join(transcript.split()))
    words = clean.split(" ")
    if len(words) > n:
        return " ".join(words[:n]).rstrip(".,;:!") + " ..."
    return clean.rstrip(".,;:!")


def content_text(utt: Utterance, cfg: RationaleConfig, rng: random.Random) -> tuple[str, dict[str, list[str]]]:
    """The <content> view, and the salient words it named (label -> words)."""
    t = (utt.transcript or "").strip()
    if not t:
        return NO_TRANSCRIPT, {}
    quote = _quote(t, cfg.quote_words)
    found = salient_words(t, cfg.lexicon)
    said = _pick(rng, [f'The speaker says "{quote}".', f'The words are "{quote}".', f'It is said: "{quote}".'])
    said = said + " " if cfg.quote_words else ""
    if not found:
        return said + _pick(rng, [
            "No word is emotionally salient; the content is neutral.",
            "None of the words is emotionally salient, and the content is neutral.",
        ]), {}
    words = ", ".join(f'"{w}"' for ws in found.values() for w in ws)
    return said + _pick(rng, [f"Emotionally salient words: {words}.",
                                    f"The salient words are {words}."]), found


# --- acoustics ------------------------------------------------------------------------------------------------
_PITCH = {"very high": "very high", "high": "high", "normal": "normal for the speaker", "low": "low",
          "very low": "very low"}
_RANGE = {"very high": "very wide", "high": "wide", "normal": "normal", "low": "narrow", "very low": "very narrow"}
_SPEED = {"very high": "very fast", "high": "fast", "normal": "moderate", "low": "slow", "very low": "very slow"}
_VOLUME = {"very high": "very loud", "high": "loud", "normal": "normal", "low": "quiet", "very low": "very quiet"}


def voice_quality(level: Mapping[str, str | None]) -> str | None:
    """One word for voice quality from the HNR and spectral-tilt levels: breathy, tense, harsh, soft or clear."""
    hnr, tilt = level.get("hnr_db"), level.get("tilt_db")
    if hnr is None and tilt is None:
        return None
    noisy, bright, dark = hnr in ("low", "very low"), tilt in ("high", "very high"), tilt in ("low", "very low")
    if noisy and bright:
        return "harsh"
    if noisy:
        return "breathy"
    if bright:
        return "tense"
    if dark:
        return "soft"
    return "clear"


NO_ACOUSTICS = "The acoustics of this clip are unknown."


def acoustics_text(desc: Mapping | None, rng: random.Random) -> str:
    """The <acoustics> view from a descriptor row's speaker-relative levels."""
    level = (desc or {}).get("level")
    if not level:
        return NO_ACOUSTICS
    parts = []
    p, r = level.get("pitch_st"), level.get("range_st")
    if p is None:
        parts.append("Pitch is unknown for this clip.")
    else:
        parts.append(_pick(rng, [
            f"Pitch is {_PITCH[p]} and its range {_RANGE[r]}." if r else f"Pitch is {_PITCH[p]}.",
            f"Relative to the speaker's average, pitch is {_PITCH[p]}" + (f", with a {_RANGE[r]} range." if r else "."),
        ]))
    rate, vol = level.get("rate_syl_s"), level.get("energy_db")
    if rate and vol:
        parts.append(_pick(rng, [f"Speed is {_SPEED[rate]} and volume is {_VOLUME[vol]}.",
                                 f"The speed is {_SPEED[rate]}; the volume is {_VOLUME[vol]}."]))
    elif rate or vol:  # one of them unknown (e.g. no syllable peaks to count)
        parts.append(f"Speed is {_SPEED[rate]}." if rate else f"Volume is {_VOLUME[vol]}.")
    q = voice_quality(level)
    if q:
        parts.append(_pick(rng, [f"The voice is {q}.", f"Voice quality: {q}.", f"The voice quality is {q}."]))
    return " ".join(parts)


# --- summary --------------------------------------------------------------------------------------------------
def expected_arousal(label: str, cfg: RationaleConfig) -> str:
    """'high' | 'low' | 'normal': how aroused a voice with this label is expected to sound (NRC VAD arousal)."""
    name = DEFAULT_MAPPING.get(label, label)
    if name not in NRC_VAD:
        return "normal"
    a = NRC_VAD[name][1]
    return "high" if a >= cfg.high_arousal else "low" if a <= cfg.low_arousal else "normal"


def summary_text(label: str, desc: Mapping | None, found: dict[str, list[str]], has_words: bool,
                 cfg: RationaleConfig, rng: random.Random) -> str:
    """The <summary>: how the acoustic energy and the words bear on the gold label, ending on it."""
    level = (desc or {}).get("level") or {}
    heard = level.get("arousal")
    heard = None if heard is None else heard.replace("very ", "")
    parts = []
    if heard is not None:
        exp = expected_arousal(label, cfg)
        energy = {"high": "high energy", "low": "low energy", "normal": "moderate energy"}[heard]
        fits = heard == exp or (exp == "low" and heard == "normal" and label in ("neutral", "calm"))
        parts.append(_pick(rng, [f"The {energy} in the voice suggests {label}.",
                                 f"With {energy} in the voice, the acoustics suggest {label}."]) if fits else
                     _pick(rng, [f"The cues are mixed, with {energy} in the voice, but overall they suggest {label}.",
                                 f"The acoustics are mixed: {energy} in the voice is unusual for {label}."]))
    if not has_words:
        parts.append(_pick(rng, ["With no transcript, the acoustics are the only cue.",
                                 "The voice is the only cue."]))
    elif not found:
        parts.append(_pick(rng, ["The words are neutral, and the voice is the cue.",
                                 "The content is neutral; the acoustics are the cue."]))
    elif label in found:
        parts.append(_pick(rng, [f"The salient words suggest {label} as well.",
                                 f"The content also indicates {label}."]))
    else:
        others = ", ".join(found)
        parts.append(f"The words suggest {others}, but the voice is the stronger cue.")
    parts.append(_pick(rng, [f"Overall, the speaker is {label}.", f"Combined, the views suggest {label}.",
                             f"Together, the emotion is {label}."]))
    return " ".join(parts)


def rationale_for(utt: Utterance, desc: dict | None, cfg: RationaleConfig) -> Rationale:
    """The template rationale of one utterance (deterministic per (seed, utt_id))."""
    rng = _rng(cfg, utt.utt_id)
    content, found = content_text(utt, cfg, rng)
    return Rationale(content=content, acoustics=acoustics_text(desc, rng),
                     summary=summary_text(utt.label, desc, found, bool((utt.transcript or "").strip()), cfg, rng))


# --- teacher rationales ---------------------------------------------------------------------------------------
_TAG = re.compile(r"</?(?:" + "|".join(TAGS) + r")>")


def load_teacher_rationales(path: str | Path) -> dict[str, Rationale]:
    """utt_id -> Rationale from a jsonl with keys utt_id, content, acoustics, summary (all non-empty strings,
    no structural tags). A malformed row is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no teacher rationales (rationale.teacher_jsonl)")
    out: dict[str, Rationale] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object with utt_id, content, acoustics, summary")
            missing = [k for k in ("utt_id", "content", "acoustics", "summary")
                       if not isinstance(row.get(k), str) or not row[k].strip()]
            if missing:
                raise ValueError(f"{where}: needs non-empty string(s) {missing}")
            bad = [k for k in ("content", "acoustics", "summary") if _TAG.search(row[k])]
            if bad:
                raise ValueError(f"{where}: {bad} contain a structural tag such as <answer>")
            if row["utt_id"] in out:
                raise ValueError(f"{where}: utt_id {row['utt_id']!r} appears twice")
            out[row["utt_id"]] = Rationale(row["content"].strip(), row["acoustics"].strip(), row["summary"].strip())
    return out


def _teacher_path(p: str) -> Path:
    from ..infra.paths import repo_root

    q = Path(p).expanduser()
    return q if q.is_absolute() else repo_root() / q


@dataclass
class RationaleReport:
    total: int = 0
    teacher: int = 0
    template: int = 0                  # includes teacher fall-backs
    teacher_fallback: list[str] = field(default_factory=list)   # utterances the teacher file lacks
    teacher_unused: int = 0            # teacher rows for utterances not asked for
    no_descriptors: list[str] = field(default_factory=list)     # template rationales without acoustics

    def summary(self) -> str:
        s = f"rationales: {self.total} ({self.teacher} teacher, {self.template} template)"
        if self.teacher_fallback:
            s += f"; {len(self.teacher_fallback)} not in the teacher file, written by the template"
        if self.teacher_unused:
            s += f"; {self.teacher_unused} teacher rows unused"
        if self.no_descriptors:
            s += f"; {len(self.no_descriptors)} without descriptors (acoustics unknown)"
        return s


def build_rationales(utts: Sequence[Utterance], descriptors: Mapping[str, dict], cfg: RationaleConfig
                     ) -> tuple[dict[str, Rationale], RationaleReport]:
    """utt_id -> Rationale: the teacher's where it has one, else the template; with counts."""
    rows = getattr(descriptors, "rows", descriptors)
    teacher = load_teacher_rationales(_teacher_path(cfg.teacher_jsonl)) if cfg.teacher_jsonl else {}
    rep = RationaleReport(total=len(utts))
    out: dict[str, Rationale] = {}
    for u in utts:
        if u.utt_id in teacher:
            out[u.utt_id] = teacher[u.utt_id]
            rep.teacher += 1
            continue
        if teacher:
            rep.teacher_fallback.append(u.utt_id)
        desc = rows.get(u.utt_id)
        if not (desc or {}).get("level"):  # no row, or one written without levels
            rep.no_descriptors.append(u.utt_id)
        out[u.utt_id] = rationale_for(u, desc, cfg)
        rep.template += 1
    rep.teacher_unused = len(set(teacher) - {u.utt_id for u in utts})
    return out, rep


def build_targets(utts: Sequence[Utterance], descriptors: Mapping[str, dict], condition: str,
                  cfg: RationaleConfig | None = None) -> dict[str, str]:
    """utt_id -> the full assistant target for `condition` (IR, EUR, ESR), answering the gold label."""
    cfg = cfg or RationaleConfig()
    cond = canonical_condition(condition)
    if cond == "IR":
        return {u.utt_id: format_target(cond, u.label) for u in utts}
    rationales, rep = build_rationales(utts, descriptors, cfg)
    if rep.teacher_fallback or rep.no_descriptors or rep.teacher_unused:
        log.warning("%s", rep.summary())
    return {u.utt_id: format_target(cond, u.label, rationales[u.utt_id]) for u in utts}


def sft_targets(manifest: Path, condition: str, descriptors: DescriptorConfig, rationale: RationaleConfig,
                utts: Sequence[Utterance] | None = None, progress: bool = True) -> dict[str, str]:
    """SFT targets for a prepared corpus: the acoustic descriptors of its manifest (cached beside it) put into words
    by the `rationale` settings. `utts`: a subset of the manifest (default: all of it). IR's target is the label
    alone: it reads no descriptor, so none is computed for it (every clip's pitch track, seconds a corpus)."""
    from ..data.manifest import read_manifest

    utts = read_manifest(manifest) if utts is None else utts
    if canonical_condition(condition) == "IR":
        return build_targets(utts, {}, condition, rationale)
    desc = describe_manifest(manifest, descriptors, progress=progress)
    return build_targets(utts, desc, condition, rationale)
