"""Tables from visitors: an uploaded CSV file read as text and checked, or a clear HubError that says what to fix.

    frame = read_csv(path)                                                    # size, encoding, CSV syntax
    frame = pick_columns(frame, {"text": "review", "label": "stars"}, 5_000)  # columns, rows, empty cells
    check_classes(frame["stars"], "stars", max_classes=20, min_rows_per_class=10)

Every cell is read as a string: an empty cell is "", never NaN, and "007" stays "007". Row numbers in messages are
the ones a spreadsheet shows (the header is row 1).
"""

import csv
import io
from pathlib import Path

import pandas as pd

from hub.errors import HubError

MAX_CSV_BYTES = 2_000_000  # thousands of short texts; pandas holds a few times this in memory while parsing
# Counted from the header and the lines before the rest is parsed: a header of 100,000 columns costs pandas tens of
# seconds. A table of texts and labels needs two columns; a spreadsheet export may carry a few dozen more.
MAX_COLUMNS = 100
MAX_CELLS = 500_000
MAX_NAMES_SHOWN = 12  # column names a message lists before "..."


def read_csv(path: str | Path, max_bytes: int = MAX_CSV_BYTES) -> pd.DataFrame:
    """The file as a table of strings with its column names stripped; UTF-8 with or without a BOM (Excel's
    "CSV UTF-8"); refused when it is larger than `max_bytes`, not UTF-8, or not CSV."""
    path = Path(path)
    if not path.is_file():
        raise HubError("The CSV file is missing: please upload it again.")
    size = path.stat().st_size
    if size > max_bytes:
        raise HubError(f"The CSV file is too large: {size / 1e6:.1f} MB, at most {max_bytes / 1e6:g} MB.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HubError(
            f"The CSV file is not UTF-8 text (byte {error.start} cannot be read): save it as 'CSV UTF-8'."
        ) from None
    check_shape(text)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise HubError(f"The file could not be read as CSV ({str(error).strip().splitlines()[0]}).") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def check_shape(text: str) -> None:
    """Refuse a table with too many columns (read from its header line alone) or cells, before parsing it."""
    first_line = next(iter(io.StringIO(text)), "")
    try:
        header = next(csv.reader([first_line]), [])
    except csv.Error:
        header = first_line.split(",")
    if len(header) > MAX_COLUMNS:
        raise HubError(f"The CSV file has {len(header):,} columns; at most {MAX_COLUMNS}. Keep the text and label.")
    lines = text.count("\n") + 1
    if lines * max(1, len(header)) > MAX_CELLS:
        raise HubError(
            f"The CSV file is too large: about {lines:,} rows x {len(header)} columns, at most {MAX_CELLS:,} cells."
        )


def column_list(columns) -> str:
    """A few column names for a message, quoted; the rest counted."""
    names = [repr(str(c)[:40]) for c in list(columns)[:MAX_NAMES_SHOWN]]
    more = len(columns) - len(names)
    return (", ".join(names) or "none") + (f" and {more} more" if more > 0 else "")


def spreadsheet_rows(mask: pd.Series) -> str:
    """The first few rows where `mask` is true, numbered as a spreadsheet shows them."""
    numbers = [str(i + 2) for i in mask[mask].index[:5]]
    return ", ".join(numbers) + (", ..." if mask.sum() > 5 else "")


def pick_columns(frame: pd.DataFrame, columns: dict[str, str], max_rows: int) -> pd.DataFrame:
    """The columns the visitor named for each role (e.g. {"text": "review", "label": "stars"}), every cell stripped
    of surrounding spaces; refused when a column is missing, two roles name the same column, the table has more than
    `max_rows` rows or a cell is empty."""
    for role, column in columns.items():
        if column not in frame.columns:
            raise HubError(
                f"No {role} column named {str(column)[:60]!r}: the file's columns are {column_list(frame.columns)}."
            )
    roles = list(columns)
    for i, role in enumerate(roles):
        for other in roles[i + 1 :]:
            if columns[role] == columns[other]:
                raise HubError(f"The {role} column and the {other} column must be different columns.")
    frame = frame[list(columns.values())].apply(lambda column: column.str.strip())
    if len(frame) > max_rows:
        raise HubError(f"Too many rows: {len(frame):,}, at most {max_rows:,}.")
    for role, column in columns.items():
        empty = frame[column] == ""
        if empty.any():
            raise HubError(
                f"{int(empty.sum())} row(s) have an empty {role} (row {spreadsheet_rows(empty)}): "
                "fill them in or remove them."
            )
    return frame


def check_classes(labels: pd.Series, column: str, max_classes: int, min_rows_per_class: int) -> pd.Series:
    """The rows per class of a column of labels a classifier will learn: at least two classes, at most
    `max_classes`, and at least `min_rows_per_class` rows of each (so some can be held out to test on)."""
    counts = labels.value_counts()
    if len(counts) < 2:
        found = f"only {counts.index[0]!r}" if len(counts) else "none"
        raise HubError(f"A classifier needs at least two classes in column {column!r}; found {found}.")
    if len(counts) > max_classes:
        raise HubError(f"Too many classes: {len(counts)} different labels, at most {max_classes}.")
    small = counts[counts < min_rows_per_class]
    if len(small):
        listed = ", ".join(f"{label!r} has {count}" for label, count in small.items())
        raise HubError(f"Too few rows per class ({listed}): each class needs at least {min_rows_per_class}.")
    return counts
