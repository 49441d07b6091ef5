"""Server-side input checks shared by every demo: API callers bypass every limit the UI shows."""

import math
import re
from typing import Any

from hub.errors import HubError


def check_text(text: Any, name: str = "Text", max_chars: int = 5000, allow_empty: bool = False) -> str:
    """The text exactly as given (a trailing space or newline changes what a model reads next), once it is known
    not to be blank and not longer than max_chars. Code that parses the text (labels, column names) trims there."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise HubError(f"{name} must be text.")
    check_unicode(text, name)
    if not text.strip():
        if not allow_empty:
            raise HubError(f"{name} is empty: type something first.")
        return ""  # an optional text left blank (a negative prompt of spaces) is no text
    if len(text) > max_chars:
        raise HubError(f"{name} is too long: {len(text):,} characters, at most {max_chars:,}.")
    return text


def check_unicode(text: str, name: str = "Text") -> str:
    """Refuse code points a tokenizer cannot read (an unpaired surrogate arrives through the API as JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise HubError(f"{name} holds a character that is not valid Unicode at position {error.start}.") from None
    return text


def check_number(value: Any, name: str, low: float, high: float) -> float:
    """A finite number in [low, high]; NaN, infinities, booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HubError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or not low <= value <= high:
        raise HubError(f"{name} must be between {low:g} and {high:g}, got {value!r}.")
    return float(value)


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] (2.0 counts as 2, 2.5 does not)."""
    number = check_number(value, name, low, high)
    if number != int(number):
        raise HubError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


def check_choice(value: Any, name: str, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        raise HubError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}.")
    return value


# Common ways people write a mask; each is mapped to the loaded model's own token ([MASK] for BERT, <mask> for RoBERTa).
MASK_SPELLINGS = re.compile(r"\[mask\]|<mask>|_{3,}", re.IGNORECASE)


def use_model_mask(text: str, mask_token: str) -> str:
    """Write every common mask spelling as the model's own mask token (one pass: a replacement is never re-read,
    so nothing else in the text, a NUL character included, can turn into a mask)."""
    return MASK_SPELLINGS.sub(lambda _: mask_token, text)
