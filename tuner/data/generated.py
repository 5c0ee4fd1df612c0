"""Deterministic toy sets for the families the scikit-learn sets cannot exercise: text, mixed tables, series.

Each is made from a fixed seed, so a study on it is reproducible and its fingerprint never changes.
Label-bearing words or signals are mixed with noise and a few flipped labels, so a perfect score
is not free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_POSITIVE = ["great", "wonderful", "delightful", "excellent", "moving", "charming", "superb", "brilliant", "fun", "memorable"]
_NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "weak", "messy", "forgettable", "painful"]
_NEUTRAL = ["the", "film", "movie", "plot", "actors", "story", "was", "and", "a", "scene", "music", "ending",
            "director", "felt", "quite", "really", "script", "camera", "length", "cast", "of", "it", "this", "with"]
_HAPPY_NOTES = ["thanks", "love", "helpful", "quick", "easy", "happy"]
_ANGRY_NOTES = ["cancel", "refund", "slow", "broken", "angry", "expensive"]
_NOTE_FILLER = ["the", "app", "support", "team", "my", "account", "invoice", "was", "is", "and", "please", "call",
                "today", "again", "service", "plan", "with", "it"]


def _sentence(rng: np.random.Generator, signal: list[str], other: list[str], filler: list[str],
              words: tuple[int, int], signal_words: tuple[int, int]) -> str:
    n_signal = int(rng.integers(*signal_words))
    picked = [signal[i] if rng.random() < 0.8 else other[i] for i in rng.integers(0, len(signal), n_signal)]
    body = list(rng.choice(filler, int(rng.integers(*words)))) + picked
    rng.shuffle(body)
    return " ".join(body)


def generated_text(rows: int = 800, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray]:
    """Binary sentiment: short reviews carrying one to three positive or negative words; 5% labels flipped."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    reviews = [
        _sentence(rng, _POSITIVE if y else _NEGATIVE, _NEGATIVE if y else _POSITIVE, _NEUTRAL, (6, 16), (1, 4))
        for y in label
    ]
    flipped = rng.random(rows) < 0.05
    target = np.where(label ^ flipped, "positive", "negative")
    return pd.DataFrame({"review": reviews}), target


def generated_mixed(rows: int = 1000, seed: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    """Binary churn from numbers, categoricals (with missing values) and a free-text support note."""
    rng = np.random.default_rng(seed)
    age = rng.normal(42, 12, rows).clip(18, 90).round()
    spend = rng.gamma(2.0, 30.0, rows).round(2)
    plan = rng.choice(["basic", "plus", "pro"], rows, p=[0.5, 0.3, 0.2]).astype(object)
    region = rng.choice(["north", "south", "east", "west", "centre"], rows).astype(object)
    unhappy = rng.random(rows) < 0.4
    notes = [
        _sentence(rng, _ANGRY_NOTES if bad else _HAPPY_NOTES, _HAPPY_NOTES if bad else _ANGRY_NOTES,
                  _NOTE_FILLER, (4, 12), (0, 3))
        for bad in unhappy
    ]
    logit = (-0.8 + 1.6 * unhappy + 0.02 * (age - 42) - 0.01 * (spend - 60)
             + np.select([plan == "basic", plan == "pro"], [0.8, -0.9], 0.0) + 0.4 * (region == "south"))
    churn = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    plan[rng.random(rows) < 0.08] = None
    spend[rng.random(rows) < 0.05] = np.nan
    frame = pd.DataFrame({"age": age, "monthly_spend": spend, "plan": plan, "region": region, "support_note": notes})
    return frame, np.where(churn, "yes", "no")


def generated_series(rows: int = 600, steps: int = 40, seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of noisy two-channel series (N x T x F): slow wave, fast wave, or a late step."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, rows)
    t = np.linspace(0, 1, steps)
    phase = rng.uniform(0, 2 * np.pi, (rows, 1))
    slow = np.sin(2 * np.pi * 2 * t + phase)
    fast = np.sin(2 * np.pi * 6 * t + phase)
    step = np.where(t > rng.uniform(0.4, 0.8, (rows, 1)), 1.0, -1.0)
    signal = np.select([label[:, None] == 0, label[:, None] == 1], [slow, fast], step)
    drift = np.cumsum(rng.normal(0, 0.1, (rows, steps)), axis=1)
    X = np.stack([signal + rng.normal(0, 0.6, (rows, steps)), drift + 0.3 * signal], axis=-1)
    return X.astype(np.float32), label


GENERATED = {
    "generated_text": (generated_text, "binary: 800 generated movie reviews (text column), 5% labels flipped"),
    "generated_mixed": (generated_mixed, "binary: 1,000 generated customers: numbers, categoricals with gaps, a text note"),
    "generated_series": (generated_series, "multiclass: 600 generated 40-step two-channel series (N x T x F)"),
}
