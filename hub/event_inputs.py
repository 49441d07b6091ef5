"""What reaches a handler: every event's raw inputs are checked before Gradio's own preprocessing, so a caller of
the HTTP API who sends a wrong JSON type, a non-finite number or too few values gets a message naming the input,
not Gradio's generic error. The handlers' own checks (hub.checks) then see only values of the right type.

Gradio validates inputs against each component (a Slider wants a number, an Image wants file data) inside
`Blocks.preprocess_data`, and reports a failure as an internal error, which a public server must hide. `HubBlocks`
runs the same checks first and reports them as `gr.Error`. Messages are plain text: API, gradio_client and MCP
callers read them as they are, and hub.http_guard escapes them for a browser page, whose toasts render HTML.
"""

import logging
import math
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.exceptions import Error
from gradio.utils import get_upload_folder

from hub.checks import number_text, range_text, too_large_integer

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
        low = block.minimum if block.minimum is not None else -math.inf
        high = block.maximum if block.maximum is not None else math.inf
        if (why := too_large_integer(value, name)) is not None:
            return f"{why} It must be {range_text(low, high)}."
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}."
        if not low <= value <= high:
            return f"{name} must be {range_text(low, high)}, got {number_text(value)}."
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
        return file_refusal(block, name, value)
    return None


UPLOAD_FIRST = (
    "upload the file first (POST /gradio_api/upload with the file, or gradio_client's handle_file), then pass "
    '{"path": <the path that upload returned>}'
)


def file_refusal(block: gr.components.Component, name: str, value: Any) -> str | None:
    """Why this value is not a file (or files) uploaded to this server: a path or URL typed by the caller, a list
    where one file goes, a path outside the upload folder."""
    many = isinstance(block, gr.Gallery) or getattr(block, "file_count", "single") in ("multiple", "directory")
    if isinstance(value, list) and not many:
        return f"{name} takes one file, got a list of {len(value)}: {UPLOAD_FIRST}."
    for file in value if isinstance(value, list) else [value]:
        if file is None:
            continue
        if isinstance(file, str):
            what = "a URL" if "://" in file else "a path"
            return f"{name} must be an uploaded file, got {what} ({as_text(file, 40)}): {UPLOAD_FIRST}."
        if not isinstance(file, dict) or not isinstance(file.get("path"), str):
            return f"{name} must be an uploaded file, got {as_text(file, 40)}: {UPLOAD_FIRST}."
        if not is_uploaded(file["path"]):
            return f"{name}: {as_text(file['path'], 40)} is not a file uploaded to this server: {UPLOAD_FIRST}."
    return None


def is_uploaded(path: str) -> bool:
    """Whether a path lies in Gradio's upload folder (where uploads and the files it hands out are kept)."""
    if "://" in path:
        return False
    try:
        return Path(path).resolve().is_relative_to(Path(get_upload_folder()).resolve())
    except (OSError, ValueError):
        return False


def refuse(message: str) -> gr.Error:
    """An expected refusal, as plain text (the page escapes it: hub.http_guard), logged as one line."""
    log.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


class HubBlocks(gr.Blocks):
    """gr.Blocks whose events answer every wrongly typed input with a message naming it, and whose sessions do
    not keep the outputs they were sent."""

    async def postprocess_data(self, block_fn: Any, predictions: Any, state: Any) -> Any:
        outputs = await super().postprocess_data(block_fn, predictions, state)
        # Gradio keeps a copy of every output's value in the session (for deep links, which the hub does not use):
        # a sessionless API call would keep megabytes of arrays for as long as the session lives.
        if state is not None:
            for block in block_fn.outputs:
                props = state.config_values.get(block._id, {}).get("props")
                if isinstance(props, dict) and "value" in props:
                    props["value"] = None
        return outputs

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
