"""What reaches a handler: every event's raw inputs are checked before Gradio's own preprocessing, so a caller of
the HTTP API who sends a wrong JSON type, a non-finite number or too few values gets a message naming the input,
not Gradio's generic error. The handlers' own checks (hub.checks) then see only values of the right type.

Gradio validates inputs against each component (a Slider wants a number, an Image wants file data) inside
`Blocks.preprocess_data`, and reports a failure as an internal error, which a public server must hide. `HubBlocks`
runs the same checks first and reports them as `gr.Error`, with the visitor's values shown as text.
"""

import html
import logging
import math
from typing import Any

import gradio as gr
from gradio.exceptions import Error

log = logging.getLogger(__name__)

NUMBER_SLOTS = (gr.Slider, gr.Number)
FILE_SLOTS = (gr.Image, gr.File, gr.Audio, gr.Video, gr.Gallery)
TEXT_SLOTS = (gr.Textbox, gr.Code)
CHOICE_SLOTS = (gr.Radio, gr.Dropdown)


def as_text(value: Any, limit: int = 60) -> str:
    """A visitor's value quoted in a message: short, and never read as markup."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def slot_name(block: gr.components.Component) -> str:
    return block.label or block.get_block_name()


def refusal(block: gr.components.Component, value: Any) -> str | None:
    """Why this raw JSON value cannot go into this component, or None when it can."""
    name = slot_name(block)
    if isinstance(block, NUMBER_SLOTS):
        if value is None and isinstance(block, gr.Number):
            return None  # an empty Number box; the handler decides whether it needs one
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {as_text(value)}."
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}."
    elif isinstance(block, TEXT_SLOTS):
        if value is not None and not isinstance(value, str):
            return f"{name} must be text, got {type(value).__name__} {as_text(value)}."
    elif isinstance(block, gr.Checkbox):
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {as_text(value)}."
    elif isinstance(block, CHOICE_SLOTS):
        # The choices may change per visitor (columns read from a CSV), so only their type is checked here;
        # Gradio then checks the value against the visitor's own choices.
        kinds = {type(choice) for _, choice in block.choices or []} or {str, int, float}  # none yet: any scalar
        values = value if getattr(block, "multiselect", False) and isinstance(value, list) else [value]
        if any(v is not None and type(v) not in kinds for v in values):
            return f"{name} must be one of its choices, got {as_text(value)}."
    elif isinstance(block, FILE_SLOTS):
        files = value if isinstance(value, list) else [value]
        if not all(f is None or isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
            return (
                f'{name} must be a file: over the API send {{"path": ...}} for an uploaded file '
                f"(gradio_client's handle_file does it), got {as_text(value)}."
            )
    return None


def refuse(message: str) -> gr.Error:
    """An expected refusal: shown to the person as plain text, logged as one line without a traceback."""
    log.info("refused: %s", message)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


class HubBlocks(gr.Blocks):
    """gr.Blocks whose events answer every wrongly typed input with a message naming it."""

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        wanted = [b for b in block_fn.inputs if not getattr(b, "stateful", False)]
        if len(inputs) < len(block_fn.inputs):
            names = ", ".join(slot_name(b) for b in wanted)
            raise refuse(f"This endpoint takes {len(wanted)} input(s) ({names}); got {len(inputs)}.")

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
        self.validate_inputs(block_fn, inputs)
        props = getattr(block_fn, "component_prop_inputs", ())  # a component's properties, not its value
        for i, (block, value) in enumerate(zip(block_fn.inputs, inputs)):
            if i in props or getattr(block, "stateful", False) or not isinstance(block, gr.components.Component):
                continue
            if why := refusal(block, value):
                raise refuse(why)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except Error as error:  # Gradio's own messages may quote the value (a choice that does not exist)
            raise refuse(str(error.message)) from None
        except Exception as error:  # a shape no check above knows: still a message, with the detail in the log
            log.info("an input could not be read: %s", error)
            raise refuse(
                "An input has a value this endpoint cannot read; see /gradio_api/info for its inputs."
            ) from None
