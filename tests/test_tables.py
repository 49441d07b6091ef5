"""hub.tables: an uploaded CSV becomes a table of strings with the columns asked for, or a HubError that says what
to fix. Fine-tune's tests check the same messages end to end, through its dataset and its HTTP API."""

import pytest

from hub.errors import HubError
from hub.tables import check_classes, pick_columns, read_csv


def write(path, content: str | bytes):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_cells_are_text_and_a_bom_and_spaces_in_names_are_dropped(tmp_path):
    frame = read_csv(write(tmp_path / "excel.csv", "\ufeff id , note\n007,\n8,fine\n"))
    assert list(frame.columns) == ["id", "note"]
    assert frame["id"].tolist() == ["007", "8"] and frame["note"].tolist() == ["", "fine"]


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    with pytest.raises(HubError, match="The CSV file is too large"):
        read_csv(write(tmp_path / "big.csv", "a,b\n" + "1,2\n" * 10), max_bytes=10)


def test_a_missing_upload_gets_a_message(tmp_path):
    with pytest.raises(HubError, match="upload it again"):
        read_csv(tmp_path / "gone.csv")


def test_columns_are_picked_by_role_and_stripped(tmp_path):
    frame = read_csv(write(tmp_path / "pets.csv", "sound,animal,id\n meow ,cat,1\nwoof, dog ,2\n"))
    picked = pick_columns(frame, {"text": "sound", "label": "animal"}, max_rows=10)
    assert picked.to_dict("list") == {"sound": ["meow", "woof"], "animal": ["cat", "dog"]}


@pytest.mark.parametrize(
    "roles, max_rows, message",
    [
        ({"text": "sound", "label": "sound"}, 10, "The text column and the label column must be different"),
        ({"text": "sound", "label": "animal"}, 2, "Too many rows: 3, at most 2"),
        ({"text": "sound", "label": "animal"}, 10, "1 row\\(s\\) have an empty label \\(row 4\\)"),
    ],
)
def test_columns_that_cannot_be_used_are_refused(tmp_path, roles, max_rows, message):
    frame = read_csv(write(tmp_path / "pets.csv", "sound,animal\nmeow,cat\nwoof,dog\nbaa, \n"))
    with pytest.raises(HubError, match=message):
        pick_columns(frame, roles, max_rows)


def test_classes_are_counted_and_bounded(tmp_path):
    frame = read_csv(write(tmp_path / "labels.csv", "label\n" + "a\n" * 3 + "b\n" * 3 + "c\n"))
    assert check_classes(frame["label"][:6], "label", max_classes=2, min_rows_per_class=3).to_dict() == {"a": 3, "b": 3}
    with pytest.raises(HubError, match="Too many classes: 3 different labels, at most 2"):
        check_classes(frame["label"], "label", max_classes=2, min_rows_per_class=1)
    with pytest.raises(HubError, match="Too few rows per class \\('c' has 1\\)"):
        check_classes(frame["label"], "label", max_classes=5, min_rows_per_class=3)
