"""Tables: reading CSV / TSV, one-sentence errors naming file, line and column, imputation, splits, fingerprints."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from transferlab.data.tabular import TableSplit, load_table, looks_tabular, read_table
from transferlab.errors import UserError

GOOD = """x1,x2,label
1.0,2.0,b
3,4,a
5.5,-6e-1,b
 7 , 8 ,a
"""


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def blobs(tmp_path: Path, n_per_class: int = 20, name: str = "blobs.csv", split: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["x1,x2,x3,label" + (",split" if split else "")]
    for c, label in enumerate(["cat", "dog", "eel"]):
        for i in range(n_per_class):
            x = rng.normal(loc=3 * c, size=3)
            part = ("," + ("test" if i % 4 == 0 else "train")) if split else ""
            lines.append(f"{x[0]},{x[1]},{x[2]},{label}{part}")
    return write(tmp_path, "\n".join(lines) + "\n", name)


def test_reads_a_good_table(tmp_path: Path) -> None:
    name, given, classes, columns = read_table(write(tmp_path, GOOD))
    assert name.endswith("data.csv")
    assert classes == ["a", "b"] and columns == ["x1", "x2"]
    assert list(given) == [None]
    split = given[None]
    assert split.features.dtype == np.float32 and split.features.shape == (4, 2)
    assert split.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(split.features[:, 1], [2.0, 4.0, -0.6, 8.0], rtol=1e-6)
    row = split.load(3)
    assert row.dtype == np.float32 and row.shape == (2,) and row.tolist() == [7.0, 8.0]


def test_tsv_and_custom_label_column_anywhere(tmp_path: Path) -> None:
    path = write(tmp_path, "species\tlen\twidth\nsetosa\t1\t2\nvirginica\t3\t4\n", "iris.tsv")
    _, given, classes, columns = read_table(path, label_column="species")
    assert classes == ["setosa", "virginica"] and columns == ["len", "width"]
    assert given[None].features.tolist() == [[1, 2], [3, 4]]


def test_load_table_splits_stratified_and_seeded(tmp_path: Path) -> None:
    path = blobs(tmp_path)
    data = load_table(str(path), seed=3)
    assert data.classes == ["cat", "dog", "eel"]
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 60 and sizes[1] == sizes[2] == 9
    assert Counter(data.test.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    again = load_table(str(path), seed=3)
    assert again.fingerprint() == data.fingerprint()
    assert load_table(str(path), seed=4).fingerprint() != data.fingerprint()


def test_split_column_is_respected_case_insensitively(tmp_path: Path) -> None:
    path = blobs(tmp_path, split=True)
    path.write_text(path.read_text().replace(",test\n", ",TEST\n", 1))
    _, given, _, columns = read_table(path)
    assert set(given) == {"train", "test"} and columns == ["x1", "x2", "x3"]
    assert len(given["test"]) == 15 and len(given["train"]) == 45
    data = load_table(str(path), val_fraction=0.2)
    assert len(data.test) == 15  # as given, not carved
    assert len(data.val) == 9 and len(data.train) == 36  # val carved out of the given train rows


def test_per_class_and_eval_caps_reuse_the_shared_rules(tmp_path: Path) -> None:
    path = blobs(tmp_path)
    data = load_table(str(path), per_class=4, eval_per_class=2)
    assert Counter(data.train.labels.tolist()) == {0: 4, 1: 4, 2: 4}
    assert data.train_counts == [14, 14, 14]
    assert len(data.val) == len(data.test) == 6
    small = load_table(str(path), per_class=2)
    assert set(map(tuple, small.train.features.tolist())) <= set(map(tuple, data.train.features.tolist()))
    with pytest.raises(UserError, match=r"--per-class 99 is more than the 14 training rows of class"):
        load_table(str(path), per_class=99)


ERRORS = [
    ("x1,x2,label\n1,2,a\n3,abc,b\n", r"data\.csv line 3, column 'x2': 'abc' is not a number"),
    ("x1,x2,label\n1,2,a\n3,inf,b\n", r"data\.csv line 3, column 'x2': 'inf' is not a finite 32-bit number"),
    ("x1,x2,label\n1,2,a\n1e39,4,b\n", r"data\.csv line 3, column 'x1': '1e\+39' is not a finite 32-bit number"),
    ("x1,x2,lable\n1,2,a\n", r"data\.csv has no column 'label' \(did you mean 'lable'\?\).*--label-column"),
    ("label,split\na,train\n", r"data\.csv has no feature columns"),
    ("x1,x2,label\n1,2,a\n3,4\n", r"data\.csv line 3: expected 3 fields \(x1, x2, label\), found 2"),
    ("x1,x2,label\n1,2,a\n3,4, \n", r"data\.csv line 3, column 'label': the label is empty"),
    ("x1,x2,label\n1,2,a\n3,4,a\n", r"data\.csv has only one class \('a'\)"),
    ("x1,x2,label\n1,2,a\n\n3,,b\n", r"data\.csv line 4, column 'x2': the cell is missing.*--impute mean"),
    ("x1,x2,label\n1,NaN,a\n", r"data\.csv line 2, column 'x2': the cell is missing"),
    ("x1,label,split\n1,a,train\n2,b,trian\n", r"data\.csv line 3: split 'trian' is not one of .*did you mean 'train'"),
    ("x1,label,split\n1,a,train\n2,b,\n", r"data\.csv line 3: the row has no split but line 2 names one"),
    ("x1,label,split\n1,a,\n2,b,val\n", r"data\.csv line 3: the row names split 'val' but line 2 has none"),
    ("x1,x1,label\n1,2,a\n", r"data\.csv line 1: column 'x1' appears twice"),
    ("x1,,label\n1,2,a\n", r"data\.csv line 1: column 2 has no name"),
    ("", r"data\.csv is empty"),
    ("x1,x2,label\n", r"data\.csv has a header but no rows"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_each_problem_is_one_sentence_naming_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        read_table(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"x1,label\n1,a\n2,\xff\n")
    with pytest.raises(UserError, match=r"bad\.csv line 3 is not valid UTF-8 \(byte 0xff\)"):
        read_table(bad)
    with pytest.raises(UserError, match=r"does not exist"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(UserError, match=r"is a \.json file; give a \.csv .* or \.tsv"):
        read_table(write(tmp_path, "{}", "data.json"))
    with pytest.raises(UserError, match=r"--impute must be one of none, mean, not 'median'"):
        read_table(write(tmp_path, GOOD), impute="median")


def test_impute_mean_uses_the_training_split_only(tmp_path: Path) -> None:
    text = "x1,x2,label,split\n1,10,a,train\n3,nan,b,train\n,30,a,train\n100,,b,test\n,0,a,val\n5,0,b,val\n"
    path = write(tmp_path, text)
    _, given, _, _ = read_table(path, impute="mean")
    assert np.isnan(given["train"].features).sum() == 2  # kept as NaN until the training split is known
    data = load_table(str(path), impute="mean")
    assert data.train.features.tolist() == [[1, 10], [3, 20], [2, 30]]
    assert data.test.features.tolist() == [[100, 20]]  # the test row's own 100 does not move the mean
    assert data.val.features.tolist() == [[2, 0], [5, 0]]
    assert not any(np.isnan(s.features).any() for s in data.splits().values())


def test_impute_mean_refuses_a_column_empty_in_training(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,label,split\n1,,a,train\n2,,b,train\n3,4,a,test\n")
    with pytest.raises(UserError, match=r"data\.csv: column 'x2' has no values in the training split"):
        load_table(str(path), impute="mean")


def test_split_subset_and_fingerprint(tmp_path: Path) -> None:
    split = TableSplit(np.arange(12, dtype=np.float64).reshape(4, 3), np.array([0, 1, 0, 1]))
    assert split.features.dtype == np.float32 and split.labels.dtype == np.int64
    by_mask = split.subset(np.array([True, False, True, False]))
    by_index = split.subset(np.array([0, 2]))
    assert by_mask.fingerprint() == by_index.fingerprint()
    assert by_index.features.tolist() == [[0, 1, 2], [6, 7, 8]] and by_index.labels.tolist() == [0, 0]
    base = split.fingerprint()
    assert TableSplit(split.features.copy(), split.labels.copy()).fingerprint() == base
    changed = split.features.copy()
    changed[3, 2] += 0.5
    assert TableSplit(changed, split.labels).fingerprint() != base
    assert TableSplit(split.features, np.array([0, 1, 1, 1])).fingerprint() != base
    assert TableSplit(split.features.reshape(6, 2), np.zeros(6)).fingerprint() != base  # same bytes, other shape
    with pytest.raises(ValueError, match="4 rows but labels"):
        TableSplit(split.features, np.zeros(3))


def test_looks_tabular_tells_tables_from_image_and_text_csvs(tmp_path: Path) -> None:
    assert looks_tabular(write(tmp_path, GOOD, "table.csv"))
    assert looks_tabular(write(tmp_path, "x1,label,split\n,a,train\n", "gap.csv"))  # a missing cell still counts
    assert looks_tabular(write(tmp_path, "y\ta\tb\ncat\t1\t2\n", "t.tsv"), label_column="y")
    assert not looks_tabular(write(tmp_path, "path,label\nimg/a.png,cat\n", "images.csv"))
    assert not looks_tabular(write(tmp_path, "text,label\nhello there,greeting\n", "texts.csv"))
    assert not looks_tabular(write(tmp_path, "label,split\na,train\n", "nofeatures.csv"))
    assert not looks_tabular(write(tmp_path, GOOD, "table.json"))
    assert not looks_tabular(tmp_path / "absent.csv")
    (tmp_path / "latin1.csv").write_bytes(b"x\xe9,label\n1,a\n")
    assert not looks_tabular(tmp_path / "latin1.csv")


def test_make_blobs_script_writes_the_tutorial_problems(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_blobs.py"
    spec = importlib.util.spec_from_file_location("make_blobs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path / "a")])
    module.main([str(tmp_path / "b")])
    for name in ("problem1.csv", "problem2.csv", "problem2-same-centres.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()  # deterministic
        _, given, classes, columns = read_table(tmp_path / "a" / name)
        assert classes == ["0", "1", "2"] and columns == ["x1", "x2"] and len(given[None]) == 1000
        assert looks_tabular(tmp_path / "a" / name)
    one, two = (read_table(tmp_path / "a" / f"problem{i}.csv")[1][None] for i in (1, 2))
    means = [[split.features[split.labels == c].mean(0) for c in range(3)] for split in (one, two)]
    assert np.abs(np.array(means[0]) - np.array(means[1])).max() > 1  # seeds 1 and 2 put the blobs elsewhere
    same = read_table(tmp_path / "a" / "problem2-same-centres.csv")[1][None]
    near = np.array([same.features[same.labels == c].mean(0) for c in range(3)])
    assert np.abs(np.array(means[0]) - near).max() < 0.5  # problem 1's centres, other samples
    assert not np.array_equal(same.features, one.features)
