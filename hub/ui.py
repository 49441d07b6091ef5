"""UI pieces every tab shares: error reporting and the model thread for every handler, model loading messages, the
code accordion."""

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from hub import model_thread
from hub.errors import HubError
from hub.event_inputs import refuse
from hub.models import ModelStore

log = logging.getLogger(__name__)


def _as_gradio_error(error: Exception) -> gr.Error:
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, HubError):  # expected: shown as plain text (it may quote the visitor's values), one log line
        return refuse(str(error))
    log.exception("unexpected error in a demo")  # the detail stays in the server log
    return gr.Error("Something went wrong on the server; the operator's log has the details. Please try again.")


def show_errors(fn: Callable) -> Callable:
    """Turn HubError into a message for the person, and any other error into a short one (never a traceback).
    The handler runs on the model thread (a generator: each of its steps), where all torch work runs, unless it is
    marked with hub.model_thread.off_model_thread (it hands the model thread its work itself)."""
    on_model_thread = not getattr(fn, model_thread.OFF, False)
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapped_generator(*args, **kwargs):
            try:
                stream = fn(*args, **kwargs)
                yield from model_thread.steps(stream) if on_model_thread else stream
            except Exception as error:
                raise _as_gradio_error(error) from error

        return wrapped_generator

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return model_thread.run(fn, *args, **kwargs) if on_model_thread else fn(*args, **kwargs)
        except Exception as error:
            raise _as_gradio_error(error) from error

    return wrapped


def load_model(store: ModelStore, demo_id: str, progress: gr.Progress | None = None) -> Any:
    """The demo's model; a first use shows a loading message in the tab's progress bar."""

    def tell(message: str) -> None:
        if progress is not None:
            progress(0, desc=message)

    return store.get(demo_id, on_load=tell)


def code_accordion(code: str = "") -> gr.Code:
    """A closed "Code" accordion holding the library lines that reproduce the tab's last result."""
    with gr.Accordion("Code: reproduce this with the library", open=False):
        return gr.Code(value=code, language="python", interactive=False, show_label=False)


def figure_image(value=None, **kwargs) -> gr.Image:
    """A figure drawn on the server: shown as an image with a download button, saved as PNG (not Gradio's default
    WebP), so it goes straight into a slide. Its label and buttons sit in a strip above it (the class "hub-figure" in
    hub/presenter.css), never on the figure's own titles and colour-bar labels."""
    extra = kwargs.pop("elem_classes", None) or []
    classes = ["hub-figure", *([extra] if isinstance(extra, str) else extra)]
    return gr.Image(
        value,
        type="pil",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_classes=classes,
        **kwargs,
    )
