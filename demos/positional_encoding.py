"""Positional encoding: how a transformer knows word order."""

from demos.attention import USES
from hub.demo import Demo


def positional_encoding_tab(store) -> None:
    import gradio as gr

    gr.Markdown("Positional encoding: being built.")


DEMO = Demo(
    id="positional-encoding",
    title="Positional encoding",
    default_model="",
    load=None,
    build_tiny=None,
    tab=positional_encoding_tab,
    uses=USES,
)
