"""The task the three models race on: "what was token number i?". A sequence of random symbols ends with a
question naming a position in its first half; the answer is the symbol that stood there. The question comes last,
so a model cannot know in advance which symbol it will need: the answer is always at least half the sequence back,
and a model that reads left to right must keep every early symbol until the end.

    tokens, answers = make_batch(torch.Generator().manual_seed(0), length=64, size=32)
"""

import torch

SYMBOLS = 8  # the symbols 0..7 the answer is one of: chance is 1/8
MAX_LENGTH = 128  # the longest sequence any model reads: its position table has this many rows
QUESTIONS = MAX_LENGTH // 2  # token SYMBOLS + i asks "what was token number i?" (i counted from 0)
VOCABULARY = SYMBOLS + QUESTIONS
CHANCE = 1 / SYMBOLS


def make_batch(generator: torch.Generator, length: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` sequences of `length` tokens (symbols, then the question as the last token) and their answers."""
    tokens = torch.randint(0, SYMBOLS, (size, length), generator=generator)
    asked = torch.randint(0, max(1, length // 2), (size,), generator=generator)  # a position in the first half
    answers = tokens[torch.arange(size), asked].clone()
    tokens[:, -1] = SYMBOLS + asked
    return tokens, answers


def race_lengths(length_max: int, points: int = 8) -> list[int]:
    """The lengths the race is run at: `points` evenly spaced up to length_max (8, 16, ..., 64 for 64)."""
    return sorted({max(4, round(length_max * k / points)) for k in range(1, points + 1)})


def training_data_seed(seed: int) -> int:
    return seed


def held_out_data_seed(seed: int) -> int:
    """Another stream than the training batches', so the held-out sequences are new ones."""
    return seed + 2**32
