import numpy as np
import pandas as pd
import pytest

from tuner.data import BUILTINS, TEST, TRAIN, VALID, infer_task, load_dataset, make_split, prepare_parts
from tuner.data.sources import fingerprint
from tuner.core.errors import DataError, SplitMismatchError


@pytest.mark.parametrize("name, task", [("breast_cancer", "binary"), ("wine", "multiclass"), ("iris", "multiclass"),
                                        ("digits", "multiclass"), ("diabetes", "regression")])
def test_builtins_load_and_infer_their_task(name, task):
    dataset = load_dataset(f"builtin:{name}")
    assert name in BUILTINS
    assert infer_task(dataset.y) == task
    assert dataset.n_rows == len(dataset.X)


def test_digits_are_images():
    dataset = load_dataset("builtin:digits")
    assert dataset.X.shape[1:] == (8, 8, 1) and not dataset.is_table


def mixed_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "city": rng.choice(["paris", "tokyo", "lima"], n),
        "income": rng.normal(3000, 500, n),
        "label": rng.choice(["yes", "no"], n),
    })
    frame.loc[3, "age"] = np.nan
    frame.loc[5, "city"] = None
    return frame


def test_csv_with_categoricals_and_missing_values(tmp_path):
    mixed_table().to_csv(tmp_path / "rows.csv", index=False)
    dataset = load_dataset("rows.csv", "label", tmp_path)
    assert list(dataset.X.columns) == ["age", "city", "income"]
    split = make_split(dataset.y, "binary", 0.2, 0.2, 0, dataset.fingerprint)
    train, parts, preprocessor, encoder = prepare_parts(dataset, "binary", split.rows(TRAIN), {"val": split.rows(VALID)})
    X = train.X("tabular")
    assert X.dtype == np.float32 and np.isfinite(X).all()
    assert X.shape[1] == 2 + 3  # two scaled numbers + one-hot of three cities
    assert set(encoder.classes_) == {"no", "yes"}
    assert np.isfinite(parts["val"].X("tabular")).all()


def test_parquet_and_npz(tmp_path):
    mixed_table().to_parquet(tmp_path / "rows.parquet")
    assert load_dataset(str(tmp_path / "rows.parquet"), "label").n_rows == 60
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "arrays.npz", X=rng.normal(size=(30, 4, 4, 1)), y=rng.integers(0, 2, 30))
    dataset = load_dataset("arrays.npz", base_dir=tmp_path)
    assert dataset.X.shape == (30, 4, 4, 1)


def test_preprocessing_statistics_come_from_training_rows_only():
    dataset = load_dataset("builtin:diabetes")
    split = make_split(dataset.y, "regression", 0.2, 0.2, 0, dataset.fingerprint)
    train_rows = split.rows(TRAIN)
    _, _, preprocessor, _ = prepare_parts(dataset, "regression", train_rows, {"val": split.rows(VALID)})
    scaler = preprocessor.table_.named_transformers_["numeric"][-1]
    np.testing.assert_allclose(scaler.mean_, dataset.X.iloc[train_rows].mean().to_numpy(), rtol=1e-6)
    assert not np.allclose(scaler.mean_, dataset.X.mean().to_numpy(), rtol=1e-6)


def write(tmp_path, frame, name="rows.csv"):
    frame.to_csv(tmp_path / name, index=False)
    return name


@pytest.mark.parametrize("make, target, expected", [
    (lambda: mixed_table(), "lable", "target column 'lable' not found (did you mean 'label'?)"),
    (lambda: mixed_table().assign(label=["yes"] * 59 + [None]), "label", "target has 1 missing values"),
    (lambda: mixed_table().assign(label="yes"), "label", "single value"),
    (lambda: mixed_table().assign(empty=np.nan), "label", "column 'empty' is empty"),
    (lambda: mixed_table().assign(age=[np.inf] + [1.0] * 59), "label", "column 'age' holds infinite values"),
    (lambda: mixed_table().assign(income=["abc"] + ["12"] * 59), "label", "column 'income' mixes numbers and text"),
])
def test_bad_tables_are_refused_in_one_line(tmp_path, make, target, expected):
    name = write(tmp_path, make())
    with pytest.raises(DataError) as error:
        load_dataset(name, target, tmp_path)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_dataset("empty.csv", "y", tmp_path)
    (tmp_path / "garbage.parquet").write_bytes(b"\x00\x01not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_dataset("garbage.parquet", "y", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset("absent.csv", "y", tmp_path)
    with pytest.raises(DataError, match="set `data.target`"):
        load_dataset(write(tmp_path, mixed_table()), None, tmp_path)


def test_bad_npz_archives(tmp_path):
    np.savez(tmp_path / "no_y.npz", X=np.zeros((5, 2)))
    with pytest.raises(DataError, match="missing y"):
        load_dataset("no_y.npz", base_dir=tmp_path)
    np.savez(tmp_path / "short.npz", X=np.zeros((5, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="X has 5 rows but y has 3"):
        load_dataset("short.npz", base_dir=tmp_path)
    np.savez(tmp_path / "nan.npz", X=np.full((6, 2), np.nan), y=np.array([0, 1] * 3))
    with pytest.raises(DataError, match="NaN or infinite"):
        load_dataset("nan.npz", base_dir=tmp_path)


def test_unknown_builtin():
    with pytest.raises(DataError, match="unknown built-in dataset 'mnist'"):
        load_dataset("builtin:mnist")


class TestSealedSplit:
    def test_deterministic_disjoint_and_complete(self):
        y = load_dataset("builtin:wine").y
        first = make_split(y, "multiclass", 0.2, 0.2, 5, "f")
        again = make_split(y, "multiclass", 0.2, 0.2, 5, "f")
        other = make_split(y, "multiclass", 0.2, 0.2, 6, "f")
        np.testing.assert_array_equal(first.parts, again.parts)
        assert not np.array_equal(first.parts, other.parts)
        rows = [set(first.rows(p)) for p in (TRAIN, VALID, TEST)]
        assert sum(map(len, rows)) == len(y) and not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])

    def test_stratified(self):
        y = load_dataset("builtin:breast_cancer").y
        split = make_split(y, "binary", 0.2, 0.2, 0, "f")
        shares = [y[split.rows(p)].mean() for p in (TRAIN, VALID, TEST)]
        assert max(shares) - min(shares) < 0.03

    def test_record_round_trip_and_tamper_detection(self):
        y = load_dataset("builtin:iris").y
        split = make_split(y, "multiclass", 0.2, 0.2, 0, "abc")
        record = split.to_record()
        assert record["n_test"] == len(split.rows(TEST))
        np.testing.assert_array_equal(type(split).from_record(record).parts, split.parts)
        tampered = dict(record, seed=1)
        with pytest.raises(SplitMismatchError, match="altered"):
            type(split).from_record(tampered)

    def test_fingerprint_changes_when_a_test_row_changes(self):
        dataset = load_dataset("builtin:breast_cancer")
        split = make_split(dataset.y, "binary", 0.2, 0.2, 0, dataset.fingerprint)
        changed = dataset.X.copy()
        changed.iloc[split.rows(TEST)[0], 0] += 1e-9
        assert fingerprint(changed, dataset.y) != dataset.fingerprint
        with pytest.raises(SplitMismatchError, match="data changed since this study sealed"):
            split.verify(fingerprint(changed, dataset.y))

    def test_rare_class_refused(self):
        with pytest.raises(DataError, match="a class has only 2 row"):
            make_split(np.array([0] * 20 + [1] * 2), "binary", 0.2, 0.2, 0, "f")
