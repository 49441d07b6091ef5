"""The load test's endpoints: what each is sent, how many requests a level makes, and what a right answer looks
like (each check returns None, or what is wrong with the answer), so "answered" in the table means answered right."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

MASKED = "Paris is the [MASK] of France."
PROMPT = "The history of the transformer begins with"
SENTENCE = "The cat sat on the mat because it was tired."
LABELS = ["a cat", "a dog", "a rocket"]
IMAGE_SIDE = 64  # text to image: the smallest size the hub accepts, one step


def check_label(answer: Any, count: int | None = None) -> str | None:
    """A gr.Label answer: a top label and its confidences, each a probability, best first."""
    if not isinstance(answer, dict) or not isinstance(answer.get("confidences"), list) or not answer["confidences"]:
        return f"not a label answer: {str(answer)[:80]}"
    confidences = [c.get("confidence") for c in answer["confidences"]]
    if not all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in confidences):
        return f"confidences outside [0, 1]: {confidences}"
    if sum(confidences) > 1.0 + 1e-4:
        return f"confidences add up to {sum(confidences):.4f} > 1"
    if answer.get("label") != answer["confidences"][0].get("label") or confidences != sorted(confidences)[::-1]:
        return "the top label is not the most likely one"
    if count is not None and len(confidences) != count:
        return f"{len(confidences)} labels, expected {count}"
    return None


def check_zero_shot(answer: Any) -> str | None:
    """CLIP's softmax over exactly the labels sent: they add up to 1."""
    wrong = check_label(answer, len(LABELS))
    if wrong:
        return wrong
    if {c["label"] for c in answer["confidences"]} != set(LABELS):
        return f"labels {[c['label'] for c in answer['confidences']]} are not the ones sent"
    total = sum(c["confidence"] for c in answer["confidences"])
    return None if abs(total - 1.0) < 1e-3 else f"probabilities add up to {total:.4f}, not 1"


def check_stream(updates: list[Any]) -> str | None:
    """A generation stream: text that only grows, update after update."""
    if not updates or not all(isinstance(text, str) for text in updates):
        return f"not a stream of texts: {str(updates)[:80]}"
    if not all(later.startswith(earlier) for earlier, later in zip(updates, updates[1:])):
        return "a streamed update is not a continuation of the one before"
    return None


def check_attention(answer: Any) -> str | None:
    """One head's attention: a square matrix over the tokens, each row a probability distribution."""
    if not isinstance(answer, dict) or not answer.get("tokens") or not isinstance(answer.get("weights"), list):
        return f"not an attention answer: {str(answer)[:80]}"
    n, rows = len(answer["tokens"]), answer["weights"]
    if len(rows) != n or any(len(row) != n for row in rows):
        return f"weights are not {n} x {n}"
    if any(abs(sum(row) - 1.0) > 1e-3 or min(row) < 0.0 for row in rows):
        return "a row of attention weights is not a probability distribution"
    return None


def check_image(answer: Any) -> str | None:
    """A PNG of the size asked for, with a picture in it (not one flat colour)."""
    try:
        with Image.open(answer) as image:
            size, extrema = image.size, image.convert("L").getextrema()
    except Exception as error:  # whatever came back is not an image
        return f"not an image: {error}"
    if size != (IMAGE_SIDE, IMAGE_SIDE):
        return f"image is {size}, expected {IMAGE_SIDE} x {IMAGE_SIDE}"
    return None if extrema[0] != extrema[1] else "the image is one flat colour"


PHOTO = "<the photo>"  # stands for the photo in an endpoint's arguments: each request uploads it, as a visitor does


@dataclass
class Endpoint:
    api_name: str
    arguments: tuple  # the first arguments; the endpoint's own defaults fill in the rest
    check: Callable[[Any], str | None]  # None for a right answer
    requests: int  # requests per level, shared among its visitors: the bound on each level's work
    streaming: bool = False  # the check then reads every streamed update, the last one being the answer


ENDPOINTS = {
    "fill_mask": Endpoint("/fill_mask", (MASKED, 5), lambda a: check_label(a, 5), 64),
    "classify_image": Endpoint("/classify_image", (PHOTO, 5), lambda a: check_label(a, 5), 32),
    "zero_shot": Endpoint("/zero_shot", (PHOTO, ", ".join(LABELS)), check_zero_shot, 32),
    "generate": Endpoint("/generate", (PROMPT,), check_stream, 16, streaming=True),
    "attention": Endpoint("/attention", (SENTENCE, "encoder", 1, 1), check_attention, 32),
    "text_to_image": Endpoint(
        "/text_to_image",
        ("A watercolor lighthouse", "", 1, 0.0, IMAGE_SIDE, IMAGE_SIDE, 0, 1, False),
        check_image,
        8,
    ),
}
BATCHED = ["fill_mask", "classify_image", "zero_shot"]  # the endpoints measured unless --only says otherwise
LEVELS = (1, 4, 16)  # visitors at once; the first level is the baseline of the "x one visitor" column
