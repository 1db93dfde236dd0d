"""Label a folder of audio files with a trained adapter (or the base model): emotion and reasoning per file.

Files are decoded by the kit's audio module (wav, flac, ogg, mp3, mp4/m4a, ...); a file that cannot be read is
listed in the output with its error and counted, never a crash. Writes CSV and JSONL side by side.

An adapter is asked as it was trained: its labels, prompt condition and prompt wording are read from the
`emorl_run.json` written beside it (explicit arguments override them), and its answer is read from `<answer>`
only; the base model (zero-shot) may fall back to its whole text, recorded as parse reason "fallback".

Audio longer than the model's window (the feature extractor's chunk: 30 s for Qwen2-Audio) would be cut silently
by the extractor. Each such file gets a warning and `long_audio` decides: "first" labels the first window only;
"windows" labels every consecutive window and combines them (majority of the windows' labels; a tie goes to the
label heard for longer, then to the earlier one), listing each window's label in the `windows` column.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.audio import SAMPLE_RATE, AudioError, load_16k
from ..data.labels import CORPUS_LABELS, UNIFIED
from ..data.labels import candidates as corpus_candidates
from ..infra import progress as where
from ..infra.io import atomic_write_text
from ..infra.log import get_logger
from ..infra.paths import Paths
from ..method.parsing import SYNONYMS, parse_answer
from ..method.prompts import PromptConfig, build_messages, canonical_condition
from ..model.backbones import (
    Backbone,
    BackboneConfig,
    load_backbone,
    processor_window_seconds,
)
from ..model.generate import generate_batch

log = get_logger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4", ".m4a", ".aac", ".webm", ".opus")
DEFAULT_LABELS: tuple[str, ...] = CORPUS_LABELS["meld"]  # the base model's: the seven basic emotions
DEFAULT_CONDITION = "ESR"  # the base model's: the paper's method
LONG_AUDIO = ("first", "windows")
RUN_META = "emorl_run.json"  # written beside every final adapter by training.runs.train_and_save


@dataclass
class FileResult:
    file: str
    emotion: str = ""
    parse: str = ""
    reasoning: str = ""
    content: str = ""
    acoustics: str = ""
    summary: str = ""
    raw: str = ""
    tokens: int = 0
    seconds: float = 0.0
    duration: float = 0.0
    windows: str = ""          # long audio, "windows" mode: "0-30 s: happy; 30-41.2 s: sad"
    error: str = ""


COLUMNS = tuple(f.name for f in fields(FileResult))


@dataclass
class InferResult:
    results: list[FileResult]
    csv_path: Path
    jsonl_path: Path
    unreadable: list[FileResult] = field(default_factory=list)
    long_files: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # labels, condition and where they came from

    def summary(self) -> str:
        ok = [r for r in self.results if not r.error]
        labelled = [r for r in ok if r.emotion]
        s = (f"{len(self.results)} file(s): {len(labelled)} labelled, {len(ok) - len(labelled)} without a parseable "
             f"emotion, {len(self.unreadable)} unreadable, {len(self.long_files)} longer than the audio window")
        if self.settings:
            s += "\n" + ", ".join(f"{k}: {v}" for k, v in self.settings.items())
        s += "".join(f"\n  unreadable: {r.file}: {r.error}" for r in self.unreadable)
        return s + f"\nwritten: {self.csv_path} and {self.jsonl_path}"


def find_audio(folder: Path, suffixes: Sequence[str] = AUDIO_SUFFIXES) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def tag_text(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|$)", text, re.DOTALL)
    return m.group(1).strip() if m else ""


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Candidate labels as given by a user: each one a label the kit knows (neutral, happy, ...), none empty, none
    twice; anything else is an error saying what is accepted."""
    out: list[str] = []
    for raw in labels:
        lab = str(raw).strip().lower()
        if not lab:
            raise ValueError(f"--labels has an empty entry ({','.join(map(str, labels))!r}); give labels separated "
                             "by single commas")
        if lab not in UNIFIED:
            hint = f" ({lab!r} is read as {SYNONYMS[lab]!r}: use that)" if lab in SYNONYMS else ""
            raise ValueError(f"--labels: unknown label {raw!r}{hint}; known labels: {', '.join(UNIFIED)}")
        if lab in out:
            raise ValueError(f"--labels: {lab!r} given twice")
        out.append(lab)
    if not out:
        raise ValueError("--labels: no labels given")
    return tuple(out)


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(CSV, JSONL) for a user's --out: `x.csv` or `x.jsonl` names one of the pair, the other goes beside it."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        return out, out.with_suffix(".jsonl")
    if suffix == ".jsonl":
        return out.with_suffix(".csv"), out
    raise ValueError(f"--out {out}: expected a file name ending in .csv or .jsonl (both are written)")


def write_outputs(results: list[FileResult], out: str | Path) -> tuple[Path, Path]:
    csv_path, jsonl_path = output_paths(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in results:
        w.writerow(asdict(r))
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(jsonl_path, "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in results))
    return csv_path, jsonl_path


def adapter_settings(adapter: str | Path) -> dict:
    """What an adapter was trained with (its emorl_run.json): labels, condition, prompt. Adapters saved before the
    kit recorded labels get them from the run's corpus."""
    path = Path(adapter) / RUN_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the run record training writes") from None
    run = meta.get("run") or {}
    labels = meta.get("labels") or (list(corpus_candidates(run["corpus"])) if run.get("corpus") in CORPUS_LABELS
                                    else None)
    return {k: v for k, v in {"labels": labels, "condition": meta.get("condition") or run.get("condition"),
                              "prompt": meta.get("prompt"), "run": meta.get("name")}.items() if v}


def windows_of(audio: np.ndarray, window_s: float, mode: str) -> list[tuple[float, float, np.ndarray]]:
    """(start s, end s, samples) of what the model is given: the whole clip when it fits the window; else the
    first window ("first") or every consecutive window ("windows")."""
    n = int(round(window_s * SAMPLE_RATE))
    if len(audio) <= n:
        return [(0.0, len(audio) / SAMPLE_RATE, audio)]
    starts = [0] if mode == "first" else list(range(0, len(audio), n))
    return [(s / SAMPLE_RATE, min(s + n, len(audio)) / SAMPLE_RATE, audio[s:s + n]) for s in starts]


def combine(labels: Sequence[str | None], spans: Sequence[tuple[float, float]]) -> str | None:
    """One label for a file from its windows' labels: the most frequent; a tie goes to the label heard for longer,
    then to the one heard first. None when no window has a label."""
    votes = Counter(l for l in labels if l)
    if not votes:
        return None
    heard = Counter()
    for l, (a, b) in zip(labels, spans):
        if l:
            heard[l] += b - a
    first = {l: i for i, l in reversed(list(enumerate(labels))) if l}
    return max(votes, key=lambda l: (votes[l], heard[l], -first[l]))


def infer_files(backbone: Backbone, files: Sequence[Path], prompt_cfg: PromptConfig, condition: str,
                labels: Sequence[str] = DEFAULT_LABELS, batch_size: int = 8, max_new_tokens: int = 256,
                require_answer_tag: bool = True, progress: bool = True, root: Path | None = None,
                long_audio: str = "first", long_files: list[str] | None = None) -> list[FileResult]:
    if long_audio not in LONG_AUDIO:
        raise ValueError(f"long_audio {long_audio!r}: expected one of {LONG_AUDIO}")
    cond = canonical_condition(condition)
    cfg = prompt_cfg if not prompt_cfg.transcript else PromptConfig(**{**vars(prompt_cfg), "transcript": False})
    name = (lambda p: str(Path(p).relative_to(root))) if root else str
    window_s = processor_window_seconds(backbone.processor)
    out: dict[Path, FileResult] = {}
    bar = where.bar(len(files), "infer", "file", disable=not progress, leave=True, milestones=(0.25, 0.5, 0.75, 1.0))
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        where.at(f"after {start} of {len(files)} files", "run the same command again (it starts over: nothing "
                                                             "is written until every file is done)")
        pieces: list[tuple[Path, float, float, np.ndarray]] = []
        for p in chunk:
            try:
                audio = load_16k(p)
            except AudioError as e:
                out[p] = FileResult(name(p), error=str(e))
                continue
            except OSError as e:
                out[p] = FileResult(name(p), error=f"unreadable: {e}")
                continue
            duration = len(audio) / SAMPLE_RATE
            out[p] = FileResult(name(p), duration=round(duration, 3))
            if duration > window_s:
                if long_files is not None:
                    long_files.append(name(p))
                log.warning("%s: %.1f s, longer than the model's %g s audio window: %s", name(p), duration, window_s,
                            f"labelled from its first {window_s:g} s only (--long-audio windows labels every window)"
                            if long_audio == "first" else
                            f"labelled window by window ({int(np.ceil(duration / window_s))} windows), combined")
            pieces += [(p, a, b, x) for a, b, x in windows_of(audio, window_s, long_audio)]
        per_file: dict[Path, list] = {}
        for k in range(0, len(pieces), batch_size):
            part = pieces[k:k + batch_size]
            msgs = [build_messages(cfg, str(p), labels, cond) for p, _, _, _ in part]
            t0 = time.perf_counter()
            gens = generate_batch(backbone, msgs, [x for _, _, _, x in part], max_new_tokens)
            per = (time.perf_counter() - t0) / len(part)
            for (p, a, b, _), g in zip(part, gens):
                parsed = parse_answer(g.text, labels, require_tag=require_answer_tag)
                per_file.setdefault(p, []).append((a, b, g, parsed, per))
        for p, wins in per_file.items():
            labs = [w[3].label for w in wins]
            best = combine(labs, [(a, b) for a, b, *_ in wins]) if len(wins) > 1 else labs[0]
            a, b, g, parsed, _ = next((w for w in wins if w[3].label == best), wins[0]) if best else wins[0]
            r = out[p]
            r.emotion, r.parse, r.raw = best or "", parsed.reason, g.text
            r.reasoning, r.content = tag_text(g.text, "think"), tag_text(g.text, "content")
            r.acoustics, r.summary = tag_text(g.text, "acoustics"), tag_text(g.text, "summary")
            r.tokens, r.seconds = sum(w[2].n_tokens for w in wins), round(sum(w[4] for w in wins), 4)
            if len(wins) > 1:
                r.windows = "; ".join(f"{w[0]:g}-{w[1]:.1f} s: {w[3].label or w[3].reason}" for w in wins)
            elif r.duration > window_s:
                r.windows = f"0-{window_s:g} s of {r.duration:.1f} s: {labs[0] or parsed.reason}"
        bar.update(len(chunk))
    bar.close()
    return [out[p] for p in files]


def infer_folder(input_dir: str | Path, out: str | Path, adapter: str | Path | None = None,
                 condition: str | None = None, labels: Sequence[str] | None = None,
                 backbone_cfg: BackboneConfig | None = None, prompt_cfg: PromptConfig | None = None,
                 paths: Paths | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                 max_new_tokens_by_condition: dict[str, int] | None = None, require_answer_tag: bool = False,
                 progress: bool = True, backbone: Backbone | None = None, long_audio: str = "first"
                 ) -> InferResult:
    """Every audio file under `input_dir` -> emotion, reasoning parts and raw output, in CSV + JSONL.

    Labels, condition and prompt default to what `adapter` was trained with (its emorl_run.json), else to the
    seven basic emotions, ESR and the profile's prompt. `require_answer_tag` applies to the base model only (zero-shot);
    an adapter's answer is always read from <answer>."""
    input_dir = Path(input_dir)
    csv_path, _ = output_paths(out)  # a bad --out fails before any model is loaded
    if long_audio not in LONG_AUDIO:
        raise ValueError(f"--long-audio {long_audio!r}: expected one of {', '.join(LONG_AUDIO)}")
    files = find_audio(input_dir)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {input_dir}")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json (expected a saved LoRA adapter, "
                                "e.g. runs/<profile>/checkpoints/<run>/final)")
    trained = adapter_settings(adapter) if adapter is not None else {}
    prompt_cfg = prompt_cfg or PromptConfig()
    if trained.get("prompt"):
        known = {f.name for f in fields(PromptConfig)}
        prompt_cfg = PromptConfig(**{**asdict(prompt_cfg),
                                     **{k: v for k, v in trained["prompt"].items() if k in known}})
    settings = {"labels from": "--labels" if labels else ("the adapter" if trained.get("labels") else "default"),
                "condition from": "--condition" if condition else ("the adapter" if trained.get("condition")
                                                                   else "default")}
    labels = check_labels(labels) if labels else check_labels(trained.get("labels") or DEFAULT_LABELS)
    cond = canonical_condition(condition or trained.get("condition") or DEFAULT_CONDITION)
    settings = {"labels": ",".join(labels), "condition": cond, **settings}
    if max_new_tokens is None:
        max_new_tokens = (max_new_tokens_by_condition or {}).get(cond, 256)
    bb = backbone or load_backbone(backbone_cfg or BackboneConfig(), paths or Paths.for_profile("default"),
                                   adapter=adapter, trainable=False)
    long_files: list[str] = []
    results = infer_files(bb, files, prompt_cfg, cond, labels, batch_size, max_new_tokens,
                          True if adapter is not None else require_answer_tag, progress, root=input_dir,
                          long_audio=long_audio, long_files=long_files)
    csv_path, jsonl_path = write_outputs(results, out)
    return InferResult(results, csv_path, jsonl_path, [r for r in results if r.error], long_files, settings)
