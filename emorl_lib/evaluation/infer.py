"""Label a folder of audio files with a trained adapter (or the base model): emotion and reasoning per file.

Files are decoded by the kit's audio module (wav, flac, ogg, mp3, mp4/m4a, ...); a file that cannot be read is
listed in the output with its error and counted, never a crash. Writes CSV and JSONL side by side.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..data.audio import AudioError, load_16k
from ..data.labels import CORPUS_LABELS
from ..infra.io import atomic_write_text
from ..infra.paths import Paths
from ..method.parsing import parse_answer
from ..method.prompts import PromptConfig, build_messages, canonical_condition
from ..training.backbones import Backbone, BackboneConfig, load_backbone
from .generate import generate_batch

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4", ".m4a", ".aac", ".webm", ".opus")
DEFAULT_LABELS: tuple[str, ...] = CORPUS_LABELS["meld"]  # the seven basic emotions (neutral + six)
COLUMNS = ("file", "emotion", "parse", "reasoning", "content", "acoustics", "summary", "raw", "tokens", "seconds",
           "error")


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
    error: str = ""


@dataclass
class InferResult:
    results: list[FileResult]
    csv_path: Path
    jsonl_path: Path
    unreadable: list[FileResult] = field(default_factory=list)

    def summary(self) -> str:
        ok = [r for r in self.results if not r.error]
        labelled = [r for r in ok if r.emotion]
        s = (f"{len(self.results)} file(s): {len(labelled)} labelled, {len(ok) - len(labelled)} without a parseable "
             f"emotion, {len(self.unreadable)} unreadable")
        s += "".join(f"\n  unreadable: {r.file}: {r.error}" for r in self.unreadable)
        return s + f"\nwritten: {self.csv_path} and {self.jsonl_path}"


def find_audio(folder: Path, suffixes: Sequence[str] = AUDIO_SUFFIXES) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"infer: {folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def tag_text(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|$)", text, re.DOTALL)
    return m.group(1).strip() if m else ""


def _row(r: FileResult) -> dict:
    return asdict(r)


def write_outputs(results: list[FileResult], out_csv: Path) -> tuple[Path, Path]:
    out_csv = Path(out_csv)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in results:
        w.writerow(_row(r))
    atomic_write_text(out_csv, buf.getvalue())
    jsonl = out_csv.with_suffix(".jsonl")
    atomic_write_text(jsonl, "".join(json.dumps(_row(r), ensure_ascii=False) + "\n" for r in results))
    return out_csv, jsonl


def infer_files(backbone: Backbone, files: Sequence[Path], prompt_cfg: PromptConfig, condition: str,
                labels: Sequence[str] = DEFAULT_LABELS, batch_size: int = 8, max_new_tokens: int = 256,
                require_answer_tag: bool = False, progress: bool = True, root: Path | None = None
                ) -> list[FileResult]:
    from tqdm.auto import tqdm

    cond = canonical_condition(condition)
    cfg = prompt_cfg if not prompt_cfg.transcript else PromptConfig(**{**vars(prompt_cfg), "transcript": False})
    name = (lambda p: str(Path(p).relative_to(root))) if root else str
    out: dict[Path, FileResult] = {}
    bar = tqdm(total=len(files), desc="infer", unit="file", disable=not progress)
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        ok, audios = [], []
        for p in chunk:
            try:
                audios.append(load_16k(p))
                ok.append(p)
            except AudioError as e:
                out[p] = FileResult(name(p), error=str(e))
            except OSError as e:
                out[p] = FileResult(name(p), error=f"unreadable: {e}")
        if ok:
            msgs = [build_messages(cfg, str(p), labels, cond) for p in ok]
            t0 = time.perf_counter()
            gens = generate_batch(backbone, msgs, audios, max_new_tokens)
            per = (time.perf_counter() - t0) / len(ok)
            for p, g in zip(ok, gens):
                parsed = parse_answer(g.text, labels, require_tag=require_answer_tag)
                out[p] = FileResult(name(p), parsed.label or "", parsed.reason, tag_text(g.text, "think"),
                                    tag_text(g.text, "content"), tag_text(g.text, "acoustics"),
                                    tag_text(g.text, "summary"), g.text, g.n_tokens, round(per, 4))
        bar.update(len(chunk))
    bar.close()
    return [out[p] for p in files]


def infer_folder(input_dir: str | Path, out_csv: str | Path, adapter: str | Path | None = None,
                 condition: str = "ESR", labels: Sequence[str] | None = None,
                 backbone_cfg: BackboneConfig | None = None, prompt_cfg: PromptConfig | None = None,
                 paths: Paths | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                 max_new_tokens_by_condition: dict[str, int] | None = None, require_answer_tag: bool = False,
                 progress: bool = True, backbone: Backbone | None = None) -> InferResult:
    """Every audio file under `input_dir` -> emotion, reasoning parts and raw output, in CSV + JSONL."""
    input_dir = Path(input_dir)
    files = find_audio(input_dir)
    if not files:
        raise FileNotFoundError(f"infer: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {input_dir}")
    prompt_cfg = prompt_cfg or PromptConfig()
    cond = canonical_condition(condition)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"infer: {adapter} holds no adapter_config.json (expected a saved LoRA adapter, "
                                "e.g. runs/<profile>/checkpoints/<run>/final)")
    if max_new_tokens is None:
        max_new_tokens = (max_new_tokens_by_condition or {}).get(cond, 256)
    bb = backbone or load_backbone(backbone_cfg or BackboneConfig(), paths or Paths.for_profile("default"),
                                   adapter=adapter, trainable=False)
    results = infer_files(bb, files, prompt_cfg, cond, tuple(labels or DEFAULT_LABELS), batch_size, max_new_tokens,
                          require_answer_tag, progress, root=input_dir)
    csv_path, jsonl_path = write_outputs(results, Path(out_csv))
    return InferResult(results, csv_path, jsonl_path, [r for r in results if r.error])
