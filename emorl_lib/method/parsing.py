"""Reading a model's answer: the label in <answer>...</answer>, and whether the output has the exact layout.

Never raises on model output: anything unreadable comes back as `Parsed(label=None, reason=...)` so that rewards
and metrics can count why. The synonym table below is the one place that says which words mean which label.

What an answer means: a label word under a negation in the same clause (`not angry`, `never sad`, `isn't happy`)
is not that label. Tags are spelled one way for the parser and the format check alike (`TAG_SPELLING`: any case,
spaces inside the brackets). A label read from text without an `<answer>` tag (allowed only when the caller asks,
e.g. zero-shot evaluation) carries the reason "fallback", so that every such read can be counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..data.labels import UNIFIED
from .prompts import TAGS, tag_pattern, tag_sequence

# word (lower case) -> unified label. The one synonym table of the kit.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy", "joy": "happy", "happiness": "happy", "excited": "happy",
    "angry": "angry", "anger": "angry", "mad": "angry",
    "sad": "sad", "sadness": "sad",
    "fear": "fear", "fearful": "fear", "scared": "fear",
    "surprise": "surprise", "surprised": "surprise",
    "disgust": "disgust", "disgusted": "disgust",
    "calm": "calm",
}

# Words that negate a label word following them in the same clause (within NEGATION_REACH words).
NEGATIONS: frozenset[str] = frozenset({
    "not", "no", "never", "neither", "nor", "without", "hardly", "barely", "isn't", "isnt", "aren't", "arent",
    "wasn't", "wasnt", "weren't", "werent", "doesn't", "doesnt", "don't", "dont", "didn't", "didnt", "won't",
    "cannot", "can't", "cant", "nothing", "lacks", "lacking",
})
NEGATION_REACH = 3   # "not angry", "not very angry", "doesn't sound angry", "not at all angry"

# Reasons a parse gives; only LABELLED reasons carry a label.
REASONS = ("ok", "unclosed_tag", "fallback", "no_answer_tag", "several_answers", "empty", "unknown_label",
           "negated", "not_a_candidate", "several_labels", "not_text")
LABELLED = ("ok", "unclosed_tag", "fallback")

_ANSWER_TAG = tag_pattern(["answer"])
_STRUCT_TAG = tag_pattern(TAGS)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_CLAUSE = re.compile(r"[.,;:!?\n()]|\bbut\b|\bhowever\b|\bthough\b|\bwhile\b")


@dataclass(frozen=True)
class Parsed:
    label: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.label is not None


def completion_text(completion: Any) -> str | None:
    """Text of a completion as TRL passes it: a string, or a conversation [{'role', 'content'}, ...]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = []
        for msg in completion:
            if not isinstance(msg, dict) or msg.get("role", "assistant") != "assistant":
                continue
            content = msg.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, (list, tuple)):
                parts.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
        return "".join(parts)
    return None


def label_mentions(text: str, synonyms: dict[str, str] = SYNONYMS) -> list[tuple[str, bool]]:
    """(label, negated) for every label word in `text`, in order."""
    out: list[tuple[str, bool]] = []
    for clause in _CLAUSE.split(text.casefold().replace("’", "'")):
        since_negation = None
        for w in _WORD.findall(clause):
            if w in NEGATIONS or w.endswith("n't"):
                since_negation = 0
                continue
            if since_negation is not None:
                since_negation += 1
            lab = synonyms.get(w)
            if lab is not None:
                out.append((lab, since_negation is not None and since_negation <= NEGATION_REACH))
    return out


def labels_in(text: str, synonyms: dict[str, str] = SYNONYMS) -> list[str]:
    """Distinct labels named (not negated) in `text`, in order of first mention."""
    found: list[str] = []
    for lab, negated in label_mentions(text, synonyms):
        if not negated and lab not in found:
            found.append(lab)
    return found


def _label_of(content: str, candidates: Sequence[str] | None, synonyms: dict[str, str], ok_reason: str) -> Parsed:
    if not content.strip():
        return Parsed(None, "empty")
    found = labels_in(content, synonyms)
    if not found:
        negated = any(neg for _, neg in label_mentions(content, synonyms))
        return Parsed(None, "negated" if negated else "unknown_label")
    if len(found) > 1:
        return Parsed(None, "several_labels")
    allowed = UNIFIED if candidates is None else candidates
    if found[0] not in allowed:
        return Parsed(None, "not_a_candidate")
    return Parsed(found[0], ok_reason)


def parse_answer(text: Any, candidates: Sequence[str] | None = None, require_tag: bool = True,
                 synonyms: dict[str, str] = SYNONYMS) -> Parsed:
    """The label in the completion's <answer> tag (tags spelled as TAG_SPELLING, synonyms mapped, negations
    respected).

    An opened but unclosed <answer> reads to the end of the text (reason "unclosed_tag": rewards give it no
    credit, a truncated completion is wrong). Without a tag, `require_tag=False` reads the whole text (reason
    "fallback", for zero-shot evaluation of models that ignore the format).
    """
    if not isinstance(text, str):
        text = completion_text(text)
        if text is None:
            return Parsed(None, "not_text")
    tags = list(_ANSWER_TAG.finditer(text))
    opens = [m for m in tags if not m.group(1)]
    if not opens:
        if require_tag:
            return Parsed(None, "no_answer_tag")
        return _label_of(text, candidates, synonyms, "fallback")
    if len(opens) > 1:
        return Parsed(None, "several_answers")
    start = opens[0].end()
    close = next((m for m in tags if m.group(1) and m.start() >= start), None)
    if close is None:
        return _label_of(text[start:], candidates, synonyms, "unclosed_tag")
    return _label_of(text[start:close.start()], candidates, synonyms, "ok")


def structure_ok(text: Any, condition: str, allow_whitespace: bool = True, require_nonempty: bool = True) -> bool:
    """True only when the text is exactly the condition's layout (prompts.LAYOUTS): the same tags (spelled as the
    parser accepts them, TAG_SPELLING) in the same order, nothing outside them, no tag text nested in free text;
    whitespace between tags if allowed."""
    if not isinstance(text, str):
        text = completion_text(text)
        if text is None:
            return False
    expected = tag_sequence(condition)
    pieces: list[str] = []   # alternating: text between tags, tag, text, tag, ...
    pos = 0
    for m in _STRUCT_TAG.finditer(text):
        pieces.append(text[pos:m.start()])
        pieces.append(f"<{m.group(1)}{m.group(2).lower()}>")  # one spelling: what the parser accepts
        pos = m.end()
        if len(pieces) > 2 * len(expected):
            return False
    pieces.append(text[pos:])
    tags = pieces[1::2]
    if tags != [t for t in expected if t != "TEXT"]:
        return False
    # Gaps: the text before each tag. A gap is free text where the layout says TEXT, else must be blank.
    gaps = pieces[0::2]
    k = 0
    for i, item in enumerate(expected):
        if item == "TEXT":
            continue
        before = gaps[k]
        free = i > 0 and expected[i - 1] == "TEXT"
        if free:
            if require_nonempty and not before.strip():
                return False
        elif before and (not allow_whitespace or before.strip()):
            return False
        k += 1
    tail = gaps[-1]
    return not tail or (allow_whitespace and not tail.strip())
