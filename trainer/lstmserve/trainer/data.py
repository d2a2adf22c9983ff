"""CSV in, checked numpy out: every problem with the data is a DataError raised before any training."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A first column whose values look like these is an index, not a feature.
DATE_PATTERNS = {
    12: re.compile(r"^\d{4}-\d{1,2}$"),            # 1949-01: monthly
    4: re.compile(r"^\d{4}-?Q[1-4]$", re.I),        # 1949Q1: quarterly
}
ANY_DATE = re.compile(r"^\d{4}[-/]\d{1,2}([-/]\d{1,2})?([ T].*)?$|^\d{4}-?Q[1-4]$", re.I)


class DataError(ValueError):
    """The data cannot be trained on; the message says what was wrong, what was expected, what was found."""


@dataclass(frozen=True)
class Table:
    """A CSV file's header and cells, as text."""

    name: str
    columns: list[str]
    rows: list[list[str]]

    def column(self, name: str, role: str) -> list[str]:
        if name not in self.columns:
            raise DataError(f"{self.name} has no {role} column '{name}'; its columns are {self.columns}")
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def numeric(self, names: Sequence[str], role: str = "feature") -> np.ndarray:
        """The named columns as float64 [rows, columns]; gaps and text are errors that name the row."""
        return np.stack([self._numbers(name, role) for name in names], axis=1)

    def _numbers(self, name: str, role: str) -> np.ndarray:
        values = []
        for number, cell in enumerate(self.column(name, role), start=1):
            values.append(self._number(cell, name, number))
        return np.array(values, dtype=np.float64)

    def _number(self, cell: str, name: str, row: int) -> float:
        where = f"{self.name} row {row} (line {row + 1}), column '{name}'"
        if cell.strip() == "":
            raise DataError(f"{where} is empty: a gap in the series; expected a number in every row "
                            "(fill or drop the gap before training)")
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{where} holds {cell!r}; expected a number") from None
        if math.isnan(value) or math.isinf(value):
            raise DataError(f"{where} is {cell!r}: a gap in the series; expected a finite number "
                            "(fill or drop the gap before training)")
        return value


def read_csv(path: str | Path) -> Table:
    """Read a CSV with a header row; ragged rows are errors that name the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as stream:
        lines = [row for row in csv.reader(stream) if row]
    if len(lines) < 2:
        raise DataError(f"{path.name} has {len(lines)} lines; expected a header row and data rows")
    header = [name.strip() for name in lines[0]]
    for line, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path.name} line {line} has {len(row)} cells; the header has {len(header)}")
    return Table(path.name, header, [[cell.strip() for cell in row] for row in lines[1:]])


def date_column(table: Table) -> str | None:
    """The first column when it holds dates (or any text index): ignored as a feature."""
    first = table.columns[0]
    sample = table.rows[0][0]
    try:
        float(sample)
    except ValueError:
        return first
    return first if ANY_DATE.match(sample) else None


def season_of(table: Table, date: str | None) -> int | None:
    """12 for monthly dates, 4 for quarterly; None when the index says nothing about seasons."""
    if date is None:
        return None
    values = table.column(date, "date")
    for season, pattern in DATE_PATTERNS.items():
        if all(pattern.match(value) for value in values):
            return season
    return None


def encode_labels(values: Sequence[str], where: str) -> tuple[np.ndarray, list[str]]:
    """String labels -> indices into their sorted set; a single class is an error."""
    labels = sorted(set(values))
    if len(labels) < 2:
        raise DataError(f"{where} holds a single class {labels}; a classifier needs at least 2 classes")
    lookup = {label: index for index, label in enumerate(labels)}
    return np.array([lookup[value] for value in values], dtype=np.int64), labels
