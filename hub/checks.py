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


# Whole numbers beyond this cannot all be told apart as floats; a JSON caller may send 400 digits.
LARGEST_EXACT = 2**53


def number_text(value: float | int) -> str:
    """A number as people write it: 2147483647, 0.0002, 1e-08; never 2.14748e+09."""
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
        if abs(value) <= LARGEST_EXACT:
            return str(int(value))
    if isinstance(value, int):
        return f"a {len(str(abs(value)))}-digit number"
    return repr(value) if math.isfinite(value) else str(value)


def range_text(low: float, high: float) -> str:
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"at least {number_text(low)}"
    if math.isinf(low):
        return f"at most {number_text(high)}"
    return f"between {number_text(low)} and {number_text(high)}"


def too_large_integer(value: Any, name: str) -> str | None:
    """The message for a whole number too large to be read as a float (None when it is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_EXACT:
        digits = len(str(abs(value))) if abs(value) < 10**4000 else "thousands of"
        return f"{name} is far too large: a number of {digits} digits."
    return None


def check_number(value: Any, name: str, low: float, high: float) -> float:
    """A finite number in [low, high]; NaN, infinities, booleans, strings and integers too large for a float are
    refused, with a message naming the input."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HubError(f"{name} must be a number, got {value!r}.")
    if (why := too_large_integer(value, name)) is not None:
        raise HubError(f"{why} It must be {range_text(low, high)}.")
    if not math.isfinite(value) or not low <= value <= high:
        raise HubError(f"{name} must be {range_text(low, high)}, got {number_text(value)}.")
    return float(value)


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] (2.0 counts as 2, 2.5 does not)."""
    number = check_number(value, name, low, high)
    if number != int(number):
        raise HubError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


def read_whole_number(text: str, name: str) -> int:
    """A whole number typed as text ("12", " 3 "): only the ASCII digits 0-9, at most 9 of them. Python's int()
    would also read other scripts' digits (and refuses superscripts that str.isdigit accepts)."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise HubError(f"{name} must be written with the digits 0-9, got {stripped[:20]!r}.")
    if len(stripped) > 9:
        raise HubError(f"{name} is far too large: a number of {len(stripped)} digits.")
    return int(stripped)


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
