"""What a visitor sees before pressing anything: tables that name their columns, figures that leave room for their
buttons, plots that keep their axis titles (the page's own stylesheet)."""

import pytest

from hub.app import build_app
from hub.presenter import PRESENTER_CSS


@pytest.fixture(scope="module")
def page_config(tiny_settings) -> dict:
    return build_app(tiny_settings).config  # what the browser receives; nothing is loaded


def test_every_empty_table_names_its_columns_before_a_run(page_config):
    tables = [c["props"] for c in page_config["components"] if c["type"] == "dataframe"]
    assert len(tables) >= 8
    for table in tables:
        headers = [str(h) for h in table["value"]["headers"]]
        # Gradio numbers the columns "1", "2", "3" of a table given neither headers nor a value
        assert headers and not any(h.isdigit() for h in headers), (table.get("label"), headers)


FIGURES = ("attention-encoder-head", "attention-decoder-overview", "layers-lens", "vit-position-similarity")


def test_every_figure_keeps_its_buttons_off_the_picture(page_config):
    classes = {c["props"].get("elem_id"): c["props"].get("elem_classes") or [] for c in page_config["components"]}
    assert all("hub-figure" in classes[figure] for figure in FIGURES)
    assert ".hub-figure .image-container" in PRESENTER_CSS  # the strip above the picture for label and buttons


def test_layer_and_head_sliders_offer_the_tiny_models_two_layers_before_a_run(page_config):
    """Read from the models' configs (the tiny preset's recipe: 2 layers of 2 heads), not GPT-2's 12."""
    props = {c["props"].get("elem_id"): c["props"] for c in page_config["components"]}
    for slider in ("attention-layer", "attention-head", "fine-tune-attention-layer", "fine-tune-attention-head"):
        assert props[slider]["maximum"] == 2, slider
