"""Fine-tune's data: the built-in dataset or a visitor's CSV (checked by hub.tables), split into texts to train on
and texts held out to measure accuracy; and the probe texts classified before and after training."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from hub import tables
from hub.checks import check_choice, check_text
from hub.errors import HubError

BUILTIN_DATASET = Path(__file__).resolve().parents[2] / "assets" / "sentiment_reviews.csv"
BUILTIN, UPLOAD = "Built-in: sentiment of short reviews", "My CSV file"
TEXT_COLUMN, LABEL_COLUMN = "text", "label"  # the columns looked for first in a CSV, and the built-in dataset's
MAX_ROWS = 5_000
MAX_CLASSES = 20
MIN_ROWS_PER_CLASS = 10  # enough to hold a few of each class out for the held-out accuracy
HELD_OUT_FRACTION = 0.2  # of an uploaded CSV; the built-in dataset has its own split column
MAX_PROBES = 10

DEFAULT_PROBES = [
    "I loved every minute of it.",
    "Not worth the money at all.",
    "The food came cold and the waiter ignored us.",
    "It crashes less than the old version, and it is fast now.",
    "I did not expect much, but it surprised me.",
    "Honestly a waste of time.",
]


@dataclass
class LabelledTexts:
    name: str
    label_names: list[str]  # class i is label_names[i]
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]  # held out: never trained on, used to measure accuracy
    test_labels: list[int]


def _labelled_texts(name: str, train: pd.DataFrame, test: pd.DataFrame, text: str, label: str) -> LabelledTexts:
    label_names = sorted(set(train[label]) | set(test[label]))
    index = {name: i for i, name in enumerate(label_names)}
    return LabelledTexts(
        name,
        label_names,
        train[text].tolist(),
        [index[value] for value in train[label]],
        test[text].tolist(),
        [index[value] for value in test[label]],
    )


def builtin_dataset() -> LabelledTexts:
    """Short reviews of films, products, restaurants and apps, written for this project, with a fixed split."""
    frame = pd.read_csv(BUILTIN_DATASET, dtype=str, keep_default_na=False)
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    return _labelled_texts("built-in sentiment reviews", train, test, TEXT_COLUMN, LABEL_COLUMN)


def guess_columns(path: str | Path) -> tuple[list[str], str, str]:
    """The file's columns and a first guess at its text and label columns: columns named "text" and "label" if
    there are any; otherwise the text is the column with the longest entries, and the label the column with the
    fewest different values (at least two)."""
    frame = tables.read_csv(path)
    columns = list(frame.columns)
    if not columns:
        raise HubError("The CSV file has no columns.")
    lengths = {column: frame[column].str.len().mean() for column in columns}
    text = TEXT_COLUMN if TEXT_COLUMN in columns else max(columns, key=lambda column: lengths[column] or 0)
    others = [column for column in columns if column != text] or columns
    distinct = {column: frame[column].nunique() for column in others}
    label = (
        LABEL_COLUMN
        if LABEL_COLUMN in columns
        else min(others, key=lambda column: (distinct[column] < 2, distinct[column]))
    )
    return columns, text, label


def read_csv_dataset(
    path: str | Path, text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN
) -> LabelledTexts:
    """A visitor's CSV, checked, with a stratified held-out split (the same split every time)."""
    frame = tables.pick_columns(tables.read_csv(path), {"text": text_column, "label": label_column}, MAX_ROWS)
    tables.check_classes(frame[label_column], label_column, MAX_CLASSES, MIN_ROWS_PER_CLASS)
    train, test = train_test_split(
        frame, test_size=HELD_OUT_FRACTION, stratify=frame[label_column], random_state=0, shuffle=True
    )
    return _labelled_texts(Path(path).name, train, test, text_column, label_column)


def choose_dataset(dataset: str, csv_file: str | None, text_column: str, label_column: str) -> LabelledTexts:
    """The CSV file whenever one is given, whatever the dataset choice says: an API caller who sends a file means
    that file (and the tab clears the file when the visitor picks the built-in set); else the built-in set."""
    check_choice(dataset, "Dataset", (BUILTIN, UPLOAD))
    if not csv_file:
        if dataset == UPLOAD:
            raise HubError("Upload a CSV file first (or choose the built-in dataset).")
        return builtin_dataset()
    text_column = check_text(text_column, "Text column", 200).strip()  # a column name, typed: trimmed to match
    label_column = check_text(label_column, "Label column", 200).strip()
    return read_csv_dataset(csv_file, text_column, label_column)


def check_probes(probe_texts: str | None) -> list[str]:
    """One probe text per line: classified before and after training, to see what changed."""
    text = check_text(probe_texts, "Probe texts", MAX_PROBES * 500, allow_empty=True)
    probes = [line.strip() for line in text.splitlines() if line.strip()]
    if len(probes) > MAX_PROBES:
        raise HubError(f"Too many probe texts: {len(probes)}, at most {MAX_PROBES}.")
    return probes
