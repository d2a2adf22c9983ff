"""`lstmserve train --data` refuses bad data with a message naming what is wrong, before any training."""

import csv
from pathlib import Path

import pytest

from lstmserve.trainer.data import DataError
from lstmserve.trainer.pipeline import Options, run

pytestmark = pytest.mark.unit


def write(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as stream:
        csv.writer(stream).writerows([header, *rows])
    return path


def monthly(path: Path, values: list) -> Path:
    return write(path, ["Month", "Sales"], [[f"{1990 + i // 12}-{i % 12 + 1:02d}", v]
                                            for i, v in enumerate(values)])


def refused(tmp_path: Path, data: Path, **options) -> str:
    with pytest.raises(DataError) as caught:
        run(Options(data=data, output=tmp_path / "never.h5", verbose=0, **options))
    assert not (tmp_path / "never.h5").exists()
    return str(caught.value)


def test_missing_target_column(tmp_path):
    message = refused(tmp_path, monthly(tmp_path / "s.csv", range(40)), target="Revenue")
    assert message == "s.csv has no target column 'Revenue'; its columns are ['Month', 'Sales']"


def test_missing_feature_column(tmp_path):
    message = refused(tmp_path, monthly(tmp_path / "s.csv", range(40)), features=["Sales", "Price"])
    assert "s.csv has no feature column 'Price'" in message


def test_non_numeric_value_names_row_and_column(tmp_path):
    values = list(range(40))
    values[6] = "n/a"
    message = refused(tmp_path, monthly(tmp_path / "s.csv", values))
    assert message == "s.csv row 7 (line 8), column 'Sales' holds 'n/a'; expected a number"


@pytest.mark.parametrize("gap", ["", "NaN"])
def test_gap_in_the_series_says_where(tmp_path, gap):
    values = list(range(40))
    values[19] = gap
    message = refused(tmp_path, monthly(tmp_path / "s.csv", values))
    assert message.startswith("s.csv row 20 (line 21), column 'Sales' is ")
    assert "a gap in the series" in message and "expected a" in message


def test_too_few_rows_for_the_window(tmp_path):
    message = refused(tmp_path, monthly(tmp_path / "s.csv", range(20)), timesteps=6)
    assert message == ("s.csv: 20 training rows are too few for the window: 6 timesteps + differencing "
                       "lag 12 + horizon 1 = 19 rows per window, and training needs at least 5 windows, "
                       "so at least 23 rows")


def test_too_few_rows_after_the_holdout(tmp_path):
    message = refused(tmp_path, monthly(tmp_path / "s.csv", range(28)), validate=True, holdout=10)
    assert message.startswith("s.csv: 18 training rows are too few for the window")


def test_single_class(tmp_path):
    data = write(tmp_path / "c.csv", ["id", "x", "label"],
                 [[f"s{i // 5}", i, "ok"] for i in range(20)])
    message = refused(tmp_path, data, label="label", group="id")
    assert message == ("c.csv column 'label' holds a single class ['ok']; "
                       "a classifier needs at least 2 classes")


def test_missing_label_column(tmp_path):
    data = write(tmp_path / "c.csv", ["id", "x", "label"], [["s0", 1, "a"], ["s1", 2, "b"]])
    assert refused(tmp_path, data, label="state", group="id") == (
        "c.csv has no label column 'state'; its columns are ['id', 'x', 'label']")


def test_sequences_of_different_lengths(tmp_path):
    data = write(tmp_path / "c.csv", ["id", "x", "label"],
                 [["a", 1, "up"], ["a", 2, "up"], ["b", 3, "down"]])
    message = refused(tmp_path, data, label="label", group="id")
    assert message == ("c.csv: every 'id' group must have the same number of rows; "
                       "group 'a' has 2, group 'b' has 1")


def test_plot_needs_validation(tmp_path):
    message = refused(tmp_path, monthly(tmp_path / "s.csv", range(40)), plot=tmp_path / "p.png")
    assert message == "--plot draws validation forecasts; add --validate"
