"""Layer by layer: how data flows from tokens to a prediction, and what the model would say after each layer."""

from demos.attention import USES
from hub.demo import Demo


def layers_tab(store) -> None:
    import gradio as gr

    gr.Markdown("Layer by layer: being built.")


DEMO = Demo(
    id="layers",
    title="Layer by layer",
    default_model="",
    load=None,
    build_tiny=None,
    tab=layers_tab,
    uses=USES,
)
