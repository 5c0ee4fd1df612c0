"""The sealed split: made once from the seed, recorded with the study, verified on every reuse.

The record stores which part each row belongs to (compressed), the data fingerprint and a digest
of both, so a resumed run or another worker uses exactly the same rows, a changed data file is
refused, and an edited record is detected.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from tuner.errors import DataError, SplitMismatchError

TRAIN, VALID, TEST = 0, 1, 2
PART_NAMES = {TRAIN: "train", VALID: "val", TEST: "test"}


@dataclass(frozen=True)
class SealedSplit:
    fingerprint: str
    seed: int
    parts: np.ndarray  # int8, one entry per row: TRAIN, VALID or TEST

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.parts == part)

    @property
    def digest(self) -> str:
        payload = self.fingerprint.encode() + str(self.seed).encode() + self.parts.tobytes()
        return hashlib.sha256(payload).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        return {name: int((self.parts == part).sum()) for part, name in PART_NAMES.items()}

    def to_record(self) -> dict:
        packed = base64.b64encode(zlib.compress(self.parts.astype(np.int8).tobytes(), 9)).decode()
        return {
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "n_rows": int(len(self.parts)),
            "parts": packed,
            "digest": self.digest,
            **{f"n_{k}": v for k, v in self.counts().items()},
        }

    @classmethod
    def from_record(cls, record: dict) -> SealedSplit:
        try:
            parts = np.frombuffer(zlib.decompress(base64.b64decode(record["parts"])), dtype=np.int8)
            split = cls(fingerprint=record["fingerprint"], seed=int(record["seed"]), parts=parts.copy())
        except (KeyError, ValueError, zlib.error) as exc:
            raise SplitMismatchError(f"the study's split record is unreadable ({exc}); the study cannot be trusted, start a new one") from None
        if split.digest != record.get("digest") or len(parts) != record.get("n_rows"):
            raise SplitMismatchError("the study's split record was altered (digest mismatch); start a new study")
        return split

    def verify(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise SplitMismatchError(
                f"the data changed since this study sealed its split (fingerprint {fingerprint} != "
                f"{self.fingerprint}); restore the original data or give the study a new name"
            )


def make_split(y: np.ndarray, task: str, test_fraction: float, validation_fraction: float,
               seed: int, fingerprint: str) -> SealedSplit:
    """Stratified (for classification) train / validation / test assignment, deterministic in seed."""
    rows = np.arange(len(y))
    stratify = y if task != "regression" else None
    if stratify is not None:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < 3:
            raise DataError(
                f"a class has only {counts.min()} row(s); a sealed train/validation/test split needs at "
                "least 3 per class: add rows or merge rare classes"
            )
    rest, test = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=stratify)
    val_share = validation_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, random_state=seed + 1,
        stratify=None if stratify is None else y[rest],
    )
    parts = np.full(len(y), TRAIN, dtype=np.int8)
    parts[val] = VALID
    parts[test] = TEST
    return SealedSplit(fingerprint=fingerprint, seed=seed, parts=parts)
