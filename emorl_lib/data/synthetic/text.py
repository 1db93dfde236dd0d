"""Transcripts for the synthetic corpora, from neutral word lists.

They must carry no label information: words are drawn by a generator seeded from the utterance id only (never
the label), from lists of emotionally neutral function words, objects and verbs. Some carry the non-ASCII
characters real transcripts have (curly apostrophes, accented words) so that encodings are exercised.
"""

from __future__ import annotations

import numpy as np

SUBJECTS = ("the man", "the woman", "a neighbour", "the driver", "my friend", "the clerk", "we", "they", "you",
            "the teacher", "the students", "the office", "somebody")
VERBS = ("moved", "carried", "opened", "brought", "checked", "found", "left", "put", "read", "counted",
         "painted", "parked", "turned", "listed", "sorted")
OBJECTS = ("the chair", "a box", "the window", "the papers", "a table", "the keys", "the door", "a map",
           "the car", "some cups", "the lamp", "a letter", "the coat", "two pencils", "the file")
PLACES = ("by the door", "near the window", "at the station", "in the kitchen", "on the second floor",
          "after lunch", "on Tuesday", "at noon", "behind the desk", "next to the shelf", "at the café")
CONTRACTED = ("it’s", "that’s", "there’s", "we’re", "they’ve", "I’d")  # curly apostrophes, as in MELD


def sentence(rng: np.random.Generator) -> str:
    """One neutral sentence."""
    parts = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))],
             OBJECTS[rng.integers(len(OBJECTS))]]
    if rng.random() < 0.6:
        parts.append(PLACES[rng.integers(len(PLACES))])
    s = " ".join(parts)
    if rng.random() < 0.25:
        s = f"{CONTRACTED[rng.integers(len(CONTRACTED))]} true, {s}"
    s = s[0].upper() + s[1:]
    return s + ("?" if rng.random() < 0.15 else ".")


def utterance(rng: np.random.Generator) -> str:
    """One or two neutral sentences (the second one makes commas and quoting necessary in CSV)."""
    s = sentence(rng)
    if rng.random() < 0.3:
        t = sentence(rng)
        s = s[:-1] + ", and " + t[0].lower() + t[1:]
    return s
