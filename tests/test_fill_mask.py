"""Fill-mask: the core against transformers' fill-mask pipeline and a bare forward pass, then /fill_mask and the tab."""

import gradio as gr
import pytest
import torch
from gradio.utils import get_function_description
from gradio_client.exceptions import AppError
from playwright.sync_api import expect
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from demos.language.fill_mask import (
    DEMO,
    EXAMPLES,
    MAX_MASKS,
    fill_mask,
    load_fill_mask,
    predictions_table,
    token_view,
    use_model_mask,
)
from hub.errors import HubError


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return tiny_model_dir("fill-mask")


@pytest.fixture(scope="module")
def fill(bert_dir):
    return load_fill_mask(str(bert_dir))


def test_probabilities_equal_the_transformers_pipeline(fill, bert_dir):
    ours = fill_mask(fill, "Paris is the [MASK] of France.", top_k=5)
    reference = pipeline("fill-mask", model=str(bert_dir))("Paris is the [MASK] of France.", top_k=5)
    assert list(ours.predictions[0].values()) == pytest.approx([r["score"] for r in reference], rel=1e-5)
    assert list(ours.predictions[0]) == [r["token_str"] for r in reference]


def test_probabilities_equal_a_bare_forward_pass(fill, bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    model = AutoModelForMaskedLM.from_pretrained(bert_dir)
    inputs = tokenizer("the cat sat on the [MASK].", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    mask_index = int((inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])
    top = logits[mask_index].softmax(-1).topk(3)

    ours = fill_mask(fill, "the cat sat on the [MASK].", top_k=3)
    assert list(ours.predictions[0].values()) == pytest.approx(top.values.tolist(), rel=1e-5)
    assert list(ours.predictions[0]) == [tokenizer.decode([i]) for i in top.indices.tolist()]


@pytest.mark.parametrize("spelling", ["[MASK]", "[mask]", "<mask>", "___", "_____"])
def test_common_mask_spellings_map_to_the_models_mask(fill, spelling):
    assert use_model_mask(f"Paris is the {spelling} of France.", "[MASK]") == "Paris is the [MASK] of France."
    result = fill_mask(fill, f"Paris is the {spelling} of France.")
    assert result.text == "Paris is the [MASK] of France."
    assert "[MASK]" in result.tokens


def test_a_nul_character_is_not_a_mask(fill):
    assert use_model_mask("Paris\0is the [MASK].", "[MASK]") == "Paris\0is the [MASK]."
    assert len(fill_mask(fill, "Paris\0is the [MASK] of France.").predictions) == 1


def test_text_with_an_unpaired_surrogate_is_refused(fill):
    with pytest.raises(HubError, match="not valid Unicode"):
        fill_mask(fill, "Paris is the [MASK] \ud800 of France.")


def test_a_roberta_style_mask_token_is_used_as_is():
    assert use_model_mask("Paris is the [MASK] of <mask>.", "<mask>") == "Paris is the <mask> of <mask>."


def test_several_masks_get_predictions_each(fill):
    result = fill_mask(fill, "I went to the ___ to buy some ___ and [MASK].", top_k=4)
    assert len(result.predictions) == 3
    assert all(len(words) == 4 for words in result.predictions)
    assert "[MASK]" not in result.filled and "___" not in result.filled
    assert result.filled.startswith("i went to the ") or result.filled.startswith("I went to the ")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("No hidden word here.", "No mask"),
        (" ".join(["[MASK]"] * (MAX_MASKS + 1)), "Too many masks"),
        ("word " * 300 + "[MASK]", "too long"),
        ("x" * 1_000_000, "too long"),
    ],
)
def test_bad_text_is_refused_with_a_message(fill, text, message):
    with pytest.raises(HubError, match=message):
        fill_mask(fill, text)


def test_control_characters_and_emoji_work(fill):
    result = fill_mask(fill, "I \u0007love \U0001f600 the [MASK]\t!")
    assert len(result.predictions) == 1


def test_the_token_view_shows_each_token_apart():
    view = token_view(["[CLS]", "i", "we", "##nt", "[MASK]", "[SEP]"], "[MASK]")
    assert "".join(text for text, _ in view) == "[CLS] i we ##nt [MASK] [SEP]"  # not "[CLS]iwe##nt[MASK][SEP]"
    assert [kind for text, kind in view if text != " "] == ["token", "token", "token", "token", "mask", "token"]


def test_the_table_shows_percent(fill):
    table = predictions_table(fill_mask(fill, "Paris is the [MASK] of France.", top_k=3))
    first = fill_mask(fill, "Paris is the [MASK] of France.", top_k=3).predictions[0]
    assert list(table["probability (%)"]) == pytest.approx([round(100 * p, 2) for p in first.values()])


def test_the_endpoint_describes_its_inputs_and_output(store):
    with gr.Blocks() as app:
        DEMO.tab(store)
    endpoint = next(fn.fn for fn in app.fns.values() if fn.api_name == "fill_mask")
    description, parameters, returns = get_function_description(endpoint)
    parameters.pop("progress")  # Gradio's progress tracker, not an input
    assert description.startswith("Guess the hidden word")
    assert set(parameters) == {"text", "top_k"} and all(len(text) > 20 for text in parameters.values())
    assert "probability" in returns[0]


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_fill_mask_returns_label_probabilities(client, store):
    label = client.predict("Paris is the [MASK] of France.", api_name="/fill_mask")
    expected = fill_mask(store.get("fill-mask"), "Paris is the [MASK] of France.", 5).predictions[0]
    assert label["label"] == next(iter(expected))
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (("",), "empty"),
        (("no mask here",), "No mask"),
        (("[MASK] " * 9,), "Too many masks"),
        (("x" * 1_000_000,), "too long"),
        (("a [MASK]", 0), "minimum|Predictions per mask"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/fill_mask")
    assert client.predict("the [MASK] sat.", api_name="/fill_mask")["label"]


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_fills_the_mask_and_shows_each_token_apart(page, hub_url, store):
    page.goto(f"{hub_url}?tab=fill-mask")
    page.get_by_role("button", name="Fill in").click()
    page.locator("#fill-mask-first .output-class").wait_for()
    tokens = fill_mask(store.get("fill-mask"), EXAMPLES[0][0]).tokens
    # each token stands apart: "[CLS] paris is ..." where the text ran together as "[CLS]parisis..." before
    expect(page.locator("#fill-mask-tokens")).to_contain_text(" ".join(tokens), use_inner_text=True)
    assert page.locator("#fill-mask-tokens").get_by_text("[MASK]", exact=True).count() == 1


def test_browser_clicking_an_example_runs_it(page, hub_url, store):
    page.goto(f"{hub_url}?tab=fill-mask")
    example = page.get_by_text(EXAMPLES[1][0], exact=True)
    example.scroll_into_view_if_needed()
    example.click()
    expect(page.get_by_label("Text with a mask")).to_have_value(EXAMPLES[1][0])
    expected = next(iter(fill_mask(store.get("fill-mask"), EXAMPLES[1][0]).predictions[0]))
    expect(page.locator("#fill-mask-first .output-class")).to_have_text(expected, timeout=60_000)
    expect(page.locator("#fill-mask-tokens")).to_contain_text("[MASK]")
