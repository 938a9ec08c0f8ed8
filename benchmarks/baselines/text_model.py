"""The two-stage benchmark's models: a hashing featuriser (text -> doubles) and a
LogisticRegression trained on its features, both deterministic.

Imports only the standard library, numpy and scikit-learn, so every contender (a Schooner
replica, the minimal two-stage pipeline) runs exactly these two functions.

- ``make_featuriser()``: a function from a batch of strings to a batch of ``NUM_TEXT_FEATURES``
  doubles each: a signed hashing bag of words (crc32 of each lower-cased word picks a
  column and a sign), L2-normalised. Self-contained (a closure over nothing but the
  standard library and numpy), so cloudpickle ships it by value to a replica that cannot
  import ``benchmarks``.
- ``train_text_model()``: a ``LogisticRegression`` fitted on the featurised ``corpus()``
  (two topics, labelled by which topic's words dominate).
- ``corpus(n, seed)``: deterministic synthetic sentences, the training set and the load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

NUM_TEXT_FEATURES = 64
# Words of each topic and words of neither.
_TOPIC_A = (  # noqa: SIM905
    "market price stock trade share bond fund bank rate yield profit loss budget "
    "invest asset credit debt equity index dividend revenue"
).split()
_TOPIC_B = (  # noqa: SIM905
    "match goal team player score coach league season final cup striker keeper "
    "referee stadium penalty pitch tackle transfer derby trophy"
).split()
_FILLER = (  # noqa: SIM905
    "the a of and to in on for with at by from this that it was is will new said "
    "after before over under about more most"
).split()


def make_featuriser(dim: int = NUM_TEXT_FEATURES) -> Callable[[Sequence[str]], list[list[float]]]:
    """A function from a batch of texts to their hashed bag-of-words rows (``dim`` each)."""

    def featurise(texts: Sequence[str]) -> list[list[float]]:
        import zlib

        import numpy as np

        rows = np.zeros((len(texts), dim), dtype=np.float64)
        for i, text in enumerate(texts):
            for word in str(text).lower().split():
                h = zlib.crc32(word.encode("utf-8"))
                rows[i, h % dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.sqrt((rows * rows).sum(axis=1, keepdims=True))
        norms[norms == 0.0] = 1.0
        return list((rows / norms).tolist())

    return featurise


def sentence(rng: random.Random) -> tuple[str, int]:
    """One synthetic sentence of 8-20 words and its label (1: topic B's words dominate)."""
    words = []
    counts = [0, 0]
    for _ in range(rng.randint(8, 20)):
        r = rng.random()
        if r < 0.4:
            words.append(rng.choice(_FILLER))
        else:
            topic = rng.random() < 0.5
            counts[topic] += 1
            words.append(rng.choice(_TOPIC_B if topic else _TOPIC_A))
    return " ".join(words), int(counts[1] > counts[0])


def corpus(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` synthetic sentences with labels, the same for the same ``seed``."""
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(n)]


def train_text_model(seed: int = 0, n: int = 2000) -> Any:
    """A fitted ``sklearn.linear_model.LogisticRegression`` on the featurised corpus."""
    from sklearn.linear_model import LogisticRegression

    data = corpus(n, seed)
    x = make_featuriser()([text for text, _ in data])
    y = [label for _, label in data]
    return LogisticRegression(max_iter=1000).fit(x, y)
