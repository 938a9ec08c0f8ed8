"""The benchmark's model: a LogisticRegression on 10 float features, the same everywhere.

Imports only numpy and scikit-learn, so the Ray Serve venv can import it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_FEATURES = 10


def train_model(seed: int = 0) -> Any:
    """A fitted ``sklearn.linear_model.LogisticRegression`` (deterministic for a seed)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, NUM_FEATURES))
    w = rng.normal(size=NUM_FEATURES)
    y = (x @ w + 0.1 * rng.normal(size=2000) > 0).astype(np.int64)
    return LogisticRegression().fit(x, y)
