"""The sealed split: made once from the seed, recorded with the study, verified on every reuse.

The record stores which part each row belongs to (compressed), the data fingerprint and a digest
of both, so a resumed run or another worker uses exactly the same rows, a changed data file is
refused, and an edited record is detected. A K-fold study also records each repeat's fold of
every search row (the digest covers them), so every worker and every resume rotates through the
same folds; records made before folds and holdout parts existed read and verify as before.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold, train_test_split

from tuner.core.errors import DataError, SplitMismatchError

TRAIN, VALID, TEST, HOLDOUT = 0, 1, 2, 3
PART_NAMES = {TRAIN: "train", VALID: "val", TEST: "test", HOLDOUT: "holdout"}
OUTSIDE_FOLDS = -1  # a test or holdout row: in no fold


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.astype(np.int8).tobytes(), 9)).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.int8).copy()


@dataclass(frozen=True)
class SealedSplit:
    fingerprint: str
    seed: int
    parts: np.ndarray  # int8, one entry per row: TRAIN, VALID, TEST or HOLDOUT
    folds: np.ndarray | None = None  # int8, repeats x rows: the row's validation fold, OUTSIDE_FOLDS for sealed rows

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.parts == part)

    @property
    def n_folds(self) -> int:
        """Folds per repeat; 0 for a train / validation split."""
        return 0 if self.folds is None else int(self.folds.max()) + 1

    def fold_rows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(training rows, validation rows) of every fold of every repeat, in order; [] without folds."""
        if self.folds is None:
            return []
        return [(np.flatnonzero((assigned != fold) & (assigned != OUTSIDE_FOLDS)), np.flatnonzero(assigned == fold))
                for assigned in self.folds for fold in range(self.n_folds)]

    def search_rows(self) -> np.ndarray:
        """Every row the search may see: train and validation, never test or holdout."""
        return np.flatnonzero((self.parts == TRAIN) | (self.parts == VALID))

    @property
    def digest(self) -> str:
        payload = self.fingerprint.encode() + str(self.seed).encode() + self.parts.tobytes()
        if self.folds is not None:
            payload += f"folds{self.folds.shape}".encode() + self.folds.tobytes()
        return hashlib.sha256(payload).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        counts = {name: int((self.parts == part).sum()) for part, name in PART_NAMES.items()}
        if not counts["holdout"]:
            del counts["holdout"]  # records of studies without one keep their old shape
        return counts

    def to_record(self) -> dict:
        record = {
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "n_rows": int(len(self.parts)),
            "parts": _pack(self.parts),
            "digest": self.digest,
            **{f"n_{k}": v for k, v in self.counts().items()},
        }
        if self.folds is not None:
            record.update(folds=_pack(self.folds), n_folds=self.n_folds, n_repeats=int(len(self.folds)))
        return record

    @classmethod
    def from_record(cls, record: dict) -> SealedSplit:
        try:
            parts = _unpack(record["parts"])
            folds = None
            if "folds" in record:
                folds = _unpack(record["folds"]).reshape(int(record["n_repeats"]), len(parts))
            split = cls(fingerprint=record["fingerprint"], seed=int(record["seed"]), parts=parts, folds=folds)
        except (KeyError, ValueError, TypeError, zlib.error) as exc:
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


def make_split(y: np.ndarray, task: str, test_fraction: float, validation_fraction: float | None,
               seed: int, fingerprint: str, folds: int | None = None, repeats: int = 1,
               holdout_fraction: float | None = None) -> SealedSplit:
    """Stratified (for classification) assignment of rows to parts, deterministic in seed.

    First the test part, then (if asked) the holdout part; the rest is either split into train and
    validation or, with `folds`, kept whole as TRAIN and assigned to K folds per repeat.
    """
    rows = np.arange(len(y))
    classification = task != "regression"
    if classification:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < 3:
            raise DataError(
                f"a class has only {counts.min()} row(s); a sealed train/validation/test split needs at "
                "least 3 per class: add rows or merge rare classes"
            )

    def carve(pool: np.ndarray, share: float, offset: int) -> tuple[np.ndarray, np.ndarray]:
        return train_test_split(pool, test_size=share, random_state=seed + offset,
                                stratify=y[pool] if classification else None)

    rest, test = carve(rows, test_fraction, 0)
    parts = np.full(len(y), TRAIN, dtype=np.int8)
    parts[test] = TEST
    remaining = 1.0 - test_fraction
    if holdout_fraction:
        rest, holdout = carve(rest, holdout_fraction / remaining, 2)
        parts[holdout] = HOLDOUT
        remaining -= holdout_fraction
    if folds is None:
        _, val = carve(rest, validation_fraction / remaining, 1)
        parts[val] = VALID
        return SealedSplit(fingerprint=fingerprint, seed=seed, parts=parts)
    return SealedSplit(fingerprint=fingerprint, seed=seed, parts=parts,
                       folds=_assign_folds(y, np.sort(rest), classification, folds, repeats, seed))


def _assign_folds(y: np.ndarray, rest: np.ndarray, classification: bool, folds: int, repeats: int,
                  seed: int) -> np.ndarray:
    """Each repeat's validation fold of every search row (scikit-learn's repeated (stratified) K-fold)."""
    if classification:
        _, counts = np.unique(y[rest], return_counts=True)
        if counts.min() < folds:
            raise DataError(f"a class has only {counts.min()} search row(s), fewer than split.folds={folds}: "
                            "lower folds or add rows")
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        if len(rest) < 2 * folds:
            raise DataError(f"{len(rest)} search rows cannot make {folds} folds; lower split.folds")
        splitter = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    assigned = np.full((repeats, len(y)), OUTSIDE_FOLDS, dtype=np.int8)
    for index, (_, val) in enumerate(splitter.split(rest, y[rest] if classification else None)):
        assigned[index // folds, rest[val]] = index % folds
    return assigned
