"""Published reference numbers (shared/reference/protocols.md), the one place the report takes them from.

All in percent. EmoBox: Ma et al., INTERSPEECH 2024 (arXiv 2406.07162), linear probes on frozen SSL features.
Qwen2-Audio zero-shot: third-party measurements whose protocols differ from EmoBox's (stated beside them).
"""

from __future__ import annotations

EMOBOX = "EmoBox (Ma et al., INTERSPEECH 2024)"

# corpus -> model -> (UA, WA, macro-F1)
INTRA: dict[str, dict[str, tuple[float, float, float]]] = {
    "iemocap": {"Whisper-large-v3": (73.54, 72.86, 73.11), "WavLM-large": (69.47, 69.07, 69.29)},
    "meld": {"Whisper-large-v3": (31.54, 51.89, 32.95), "WavLM-large": (28.18, 49.31, 29.11)},
    "ravdess": {"Whisper-large-v3": (75.32, 75.87, 75.19), "WavLM-large": (72.00, 72.22, 71.42)},
    "savee": {"Whisper-large-v3": (74.07, 77.24, 75.31), "WavLM-large": (66.74, 70.80, 66.37)},
}

# EmoBox track 2, Whisper-large-v3, accuracy: (train corpus, test corpus) -> WA
CROSS_WHISPER: dict[tuple[str, str], float] = {
    ("iemocap", "meld"): 51.42, ("iemocap", "ravdess"): 48.12, ("iemocap", "savee"): 49.30,
    ("meld", "iemocap"): 46.14, ("meld", "ravdess"): 40.68, ("meld", "savee"): 42.18,
    ("ravdess", "iemocap"): 38.24, ("ravdess", "meld"): 47.00, ("ravdess", "savee"): 49.63,
    ("savee", "iemocap"): 46.12, ("savee", "meld"): 36.44, ("savee", "ravdess"): 66.91,
}

# Qwen2-Audio-7B-Instruct zero-shot, third party: corpus -> {metric: value}, with how it was measured.
QWEN_ZEROSHOT: dict[str, tuple[dict[str, float], str]] = {
    "iemocap": ({"wa": 54.0}, "accuracy, third-party protocol"),
    "meld": ({"ua": 48.84, "wa": 57.39, "f1": 44.59}, "MELD test with the transcript in the prompt"),
}

CHANCE_XC = 25.0  # balanced 4-class track-2 sets
