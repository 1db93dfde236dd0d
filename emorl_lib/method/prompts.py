"""Prompt conditions IR, EUR, ESR (docs/paper.md): the layout of the answer, the chat messages, the assistant target.

The layout of each condition (which tags, in which order) is defined once, in `LAYOUTS`. The format shown to the
model, the SFT target (`format_target`) and the format reward's check (`parsing.structure_ok`) are all derived
from it. The paper's exact wording is not verified, so every sentence the model reads is a `PromptConfig` field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..infra.config import setting

CONDITIONS: tuple[str, ...] = ("IR", "EUR", "ESR")

# (tag, children): children None = free text inside the tag.
Layout = tuple[tuple[str, "Layout | None"], ...]
LAYOUTS: dict[str, Layout] = {
    "IR": (("answer", None),),
    "EUR": (("think", None), ("answer", None)),
    "ESR": (("think", (("content", None), ("acoustics", None), ("summary", None))), ("answer", None)),
}
TAGS: tuple[str, ...] = ("think", "content", "acoustics", "summary", "answer")
# How a tag may be spelled wherever the kit reads one (answer parser, format check, SFT target check): any case,
# spaces inside the brackets. The kit itself always writes `<tag>` and `</tag>`.
TAG_SPELLING = r"<\s*(/?)\s*({names})\s*>"


def tag_pattern(names: Sequence[str]) -> re.Pattern:
    """A regex matching opening and closing tags of `names` (group 1: '/' or '', group 2: the name)."""
    return re.compile(TAG_SPELLING.format(names="|".join(map(re.escape, names))), re.IGNORECASE)


def canonical_condition(condition: str) -> str:
    c = str(condition).strip().upper()
    if c not in LAYOUTS:
        raise ValueError(f"prompt condition '{condition}' unknown; expected one of {CONDITIONS}")
    return c


def tag_sequence(condition: str) -> list[str]:
    """The condition's layout flattened: tags like '<think>' and the placeholder 'TEXT' for free text."""
    out: list[str] = []

    def walk(layout: Layout) -> None:
        for tag, children in layout:
            out.append(f"<{tag}>")
            if children is None:
                out.append("TEXT")
            else:
                walk(children)
            out.append(f"</{tag}>")

    walk(LAYOUTS[canonical_condition(condition)])
    return out


def render_layout(condition: str, fill: dict[str, str]) -> str:
    """The layout with each free-text tag's text taken from `fill` (missing tags get '...')."""
    parts: list[str] = []

    def walk(layout: Layout) -> None:
        for tag, children in layout:
            parts.append(f"<{tag}>")
            if children is None:
                parts.append(fill.get(tag, "..."))
            else:
                walk(children)
            parts.append(f"</{tag}>")

    walk(LAYOUTS[canonical_condition(condition)])
    return "".join(parts)


UNVERIFIED = "the paper's prompt wording is not verified"


@dataclass
class PromptConfig:
    """The `prompt` section: every sentence the model is shown (the paper's are unverified). Which condition a run
    uses (IR / EUR / ESR) is the run's, set by the experiment matrix."""

    transcript: bool = setting(False, "inferred", "audio only in the prompt; the transcript is an explicit option")
    system_prompt: str = setting("You are an expert in recognising emotions from the human voice.", "kit", UNVERIFIED)
    task_instruction: str = setting("Listen to the speech and identify the emotion of the speaker. "
                                    "Choose exactly one label from: {labels}.", "kit", UNVERIFIED)
    transcript_instruction: str = setting('The transcript of the speech is: "{transcript}".', "kit", UNVERIFIED)
    format_instructions: dict[str, str] = setting({
        "IR": "Give only the label, in this format: {format}",
        "EUR": "First think about the emotion, then give the label, in this format: {format}",
        "ESR": ("First analyse what is said and how it sounds, then combine both views, then give the label, "
                "in this format: {format}"),
    }, "kit", UNVERIFIED)
    # Text shown inside each tag of the format line.
    section_hints: dict[str, str] = setting({
        "think": " your reasoning ",
        "content": " what is said and the emotionally salient words ",
        "acoustics": " pitch, rhythm, speed, volume and voice quality ",
        "summary": " the views combined ",
        "answer": " one label ",
    }, "kit", UNVERIFIED)
    label_separator: str = setting(", ", "kit", UNVERIFIED)

    def __post_init__(self) -> None:
        missing = [c for c in CONDITIONS if c not in self.format_instructions]
        if missing:
            raise ValueError(f"prompt.format_instructions lacks condition(s) {missing}")


def user_text(cfg: PromptConfig, candidates: Sequence[str], condition: str, transcript: str | None = None) -> str:
    """The text part of the user turn: task with the candidate labels, optional transcript, required format."""
    cond = canonical_condition(condition)
    if not candidates:
        raise ValueError("user_text: no candidate labels given")
    lines = [cfg.task_instruction.format(labels=cfg.label_separator.join(candidates))]
    if cfg.transcript:
        if not transcript:
            raise ValueError("prompt.transcript is on but this utterance has no transcript")
        lines.append(cfg.transcript_instruction.format(transcript=transcript))
    lines.append(cfg.format_instructions[cond].format(format=render_layout(cond, cfg.section_hints)))
    return "\n".join(lines)


def build_messages(cfg: PromptConfig, wav: str, candidates: Sequence[str], condition: str,
                   transcript: str | None = None) -> list[dict]:
    """Chat messages for the processor's chat template (audio as a block whose type is 'audio')."""
    return [
        {"role": "system", "content": [{"type": "text", "text": cfg.system_prompt}]},
        {"role": "user", "content": [
            {"type": "audio", "path": str(wav)},
            {"type": "text", "text": user_text(cfg, candidates, condition, transcript)},
        ]},
    ]


@dataclass
class Rationale:
    """The three views of ESR's reasoning; the seam for generated rationales (acoustic descriptors, templates)."""

    content: str = ""
    acoustics: str = ""
    summary: str = ""

    def as_free_text(self) -> str:
        return " ".join(s.strip() for s in (self.content, self.acoustics, self.summary) if s.strip())


def format_target(condition: str, answer: str, rationale: Rationale | None = None, think: str | None = None) -> str:
    """The assistant's target text for `condition` (SFT warm-up): the layout filled with the parts.

    EUR's free-text <think> is `think` if given, else the rationale's three views joined.
    """
    cond = canonical_condition(condition)
    answer = str(answer).strip()
    if not answer:
        raise ValueError("format_target: empty answer")
    r = rationale or Rationale()
    fill = {"answer": answer, "content": r.content.strip(), "acoustics": r.acoustics.strip(),
            "summary": r.summary.strip(), "think": (think if think is not None else r.as_free_text()).strip()}
    needed = {"EUR": ["think"], "ESR": ["content", "acoustics", "summary"]}.get(cond, [])
    empty = [k for k in needed if not fill[k]]
    if empty:
        raise ValueError(f"format_target: condition {cond} needs non-empty {empty}")
    for k, v in fill.items():
        if tag_pattern(TAGS).search(v):
            raise ValueError(f"format_target: the {k} text contains a structural tag: {v[:80]!r}")
    return render_layout(cond, fill)
