"""Layer by layer: the logit lens against transformers run by hand on the same weights, the diagram's numbers
against the model's own parameters, the Code accordion run as shown, then /layer_predictions and the tab."""

import ast
import contextlib
import io

import pytest
import torch
from gradio_client.exceptions import AppError
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from demos.inside.data_flow import cached_diagram, model_parts, parts_table, total_parameters
from demos.inside.layers import layer_predictions, lens_code, lens_figure, lens_table
from hub.errors import HubError
from hub.inside import forward, load_transformer, tokenize

DECODER_TEXT = "the cat sat on the mat and"
ENCODER_TEXT = "the cat sat on the [MASK] ."


def assert_rows_match(result: dict, reference: list[torch.Tensor], tokenizer) -> None:
    """Each cell is the reference's top token and probability. The tiny random models give nearly flat
    distributions, so a near-tie may pick either token: then the chosen one must be (almost) as likely."""
    assert len(result["layers"]) == len(reference)
    for row, probs in zip(result["layers"], reference):
        assert len(row) == probs.shape[0] == len(result["tokens"])
        for cell, position in zip(row, probs):
            top = float(position.max())
            assert cell["prob"] == pytest.approx(top, abs=1e-5)
            assert float(position[tokenizer.convert_tokens_to_ids(cell["token"])]) == pytest.approx(top, abs=1e-5)


def decoder_reference(folder, text: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The logit lens written out with a freshly loaded GPT-2: ln_f then lm_head, except on the last entry."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        last = len(out.hidden_states) - 1
        rows = [
            model.lm_head(h if i == last else model.transformer.ln_f(h))[0].softmax(-1)
            for i, h in enumerate(out.hidden_states)
        ]
    return rows, out.logits[0].softmax(-1)


def encoder_reference(folder, text: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        rows = [model.cls(h)[0].softmax(-1) for h in out.hidden_states]
    return rows, out.logits[0].softmax(-1)


# --- the logit lens -------------------------------------------------------------------------------------------


def test_decoder_lens_equals_transformers_by_hand(decoder, tiny_model_dir):
    folder = tiny_model_dir("text-generation")
    result = layer_predictions(decoder, DECODER_TEXT)
    rows, own = decoder_reference(folder, DECODER_TEXT)
    assert result["tokens"] == AutoTokenizer.from_pretrained(folder).tokenize(DECODER_TEXT)
    assert len(result["layers"]) == decoder.layers + 1 == 3  # the embeddings, then the tiny model's 2 blocks
    assert_rows_match(result, rows, decoder.tokenizer)
    assert_rows_match({**result, "layers": result["layers"][-1:]}, [own], decoder.tokenizer)


def test_last_row_is_the_models_own_prediction(decoder, encoder):
    for t, text in ((decoder, DECODER_TEXT), (encoder, ENCODER_TEXT)):
        result = layer_predictions(t, text)
        logits = forward(t, tokenize(t, text).ids, attentions=False).logits[0].float()
        probs, ids = logits.softmax(-1).max(-1)
        assert [c["token"] for c in result["layers"][-1]] == t.tokenizer.convert_ids_to_tokens(ids.tolist())
        assert [c["prob"] for c in result["layers"][-1]] == pytest.approx(probs.tolist(), abs=1e-6)


def test_encoder_lens_equals_transformers_by_hand(encoder, tiny_model_dir):
    folder = tiny_model_dir("fill-mask")
    result = layer_predictions(encoder, ENCODER_TEXT)
    rows, own = encoder_reference(folder, ENCODER_TEXT)
    assert result["tokens"][0] == "[CLS]" and result["tokens"][-1] == "[SEP]"  # special tokens included, in order
    assert result["masks"] == [result["tokens"].index("[MASK]")]
    assert_rows_match(result, rows, encoder.tokenizer)
    assert_rows_match({**result, "layers": result["layers"][-1:]}, [own], encoder.tokenizer)


def test_the_encoder_reads_common_mask_spellings(encoder):
    assert layer_predictions(encoder, "the cat sat on the ___ .")["tokens"] == tokenize(encoder, ENCODER_TEXT).tokens


def test_minilm_has_no_word_head_and_says_so(store):
    with pytest.raises(HubError, match="no masked-word head.*pick the decoder"):
        layer_predictions(load_transformer(store, "minilm"), "the cat sat")


@pytest.mark.parametrize(
    "text, message",
    [(None, "empty"), ("   ", "empty"), (123, "must be text"), ("word " * 100, "at most 64"), ("\ud800", "Unicode")],
)
def test_bad_text_is_refused_with_a_message(decoder, text, message):
    with pytest.raises(HubError, match=message):
        layer_predictions(decoder, text)


@pytest.mark.parametrize("model", [5, None, "gpt-2", ["decoder"]])
def test_an_unknown_model_is_refused_with_a_message(store, model):
    with pytest.raises(HubError, match="Model must be one of"):
        load_transformer(store, model)


def test_figure_and_table_show_every_layer_and_position(decoder):
    result = layer_predictions(decoder, DECODER_TEXT)
    table = lens_table(decoder, result)
    assert list(table["layer"]) == ["embeddings", "layer 1", "layer 2"]
    assert table.shape[1] == 1 + len(result["tokens"])
    first = result["layers"][0][0]
    assert table.iloc[0, 1].endswith(f"{100 * first['prob']:.1f}%")
    image = lens_figure(decoder, result)
    assert image.width > 400 and image.height > 200
    long = layer_predictions(decoder, "the cat " * 15)  # past 32 columns: colours only, still drawn
    assert len(long["tokens"]) > 40
    assert lens_figure(decoder, long).width > 400


# --- the diagram ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["decoder", "encoder", "minilm"])
def test_parameter_counts_add_up_to_the_models_own(store, which):
    t = load_transformer(store, which)
    parts = model_parts(t)
    assert sum(p.parameters for p in parts) == total_parameters(t.model)
    assert total_parameters(t.model) == sum({id(p): p.numel() for p in t.model.parameters()}.values())
    assert [p.name.split()[-1] for p in parts[:2]] == ["embeddings", "blocks"]
    table = parts_table(t)
    assert table["parameters"].iloc[-1] == total_parameters(t.model)
    assert cached_diagram(t) is cached_diagram(t)  # drawn once per loaded model


def test_the_tiny_decoder_is_described_with_its_real_sizes(decoder):
    embeddings, blocks, final, head = model_parts(decoder)
    assert embeddings.parameters == 400 * 32 + 256 * 32  # token and position tables of the tiny GPT-2
    assert blocks.name == "2 blocks" and "2 heads × 16 (= 32)" in blocks.sizes and "32 → 128 → 32" in blocks.sizes
    assert final.parameters == 2 * 32  # ln_f: a scale and a shift
    assert head.parameters == 0 and "tied" in head.note  # GPT-2's head is its token embedding table


def test_bert_has_no_final_norm_and_a_head_with_its_own_layers(encoder):
    _, blocks, final, head = model_parts(encoder)
    assert final.parameters == 0 and "no norm" in final.note
    assert "32 → 64 → 32" in blocks.sizes  # intermediate_size of the tiny BERT
    assert head.parameters == (32 * 32 + 32) + 2 * 32 + 400  # dense, LayerNorm, the decoder's bias


# --- the Code accordion, run as shown --------------------------------------------------------------------------


@pytest.mark.parametrize("which, text", [("decoder", DECODER_TEXT), ("encoder", "Paris is the ___ of France.")])
def test_the_code_prints_the_same_numbers(store, which, text):
    t = load_transformer(store, which)
    code = lens_code(t, tokenize(t, text).text, store.dtype)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    lines = printed.getvalue().splitlines()
    result = layer_predictions(t, text)
    assert len(lines) == len(result["layers"])
    for line, row in zip(lines, result["layers"]):
        _, _, cells = line.partition(" [")
        pairs = [(word, percent / 100) for word, percent in ast.literal_eval("[" + cells)]  # printed in percent
        assert [p for _, p in pairs] == pytest.approx([c["prob"] for c in row], abs=1e-4)
        ties = [abs(p - c["prob"]) < 2e-5 or w == c["token"] for (w, p), c in zip(pairs, row)]
        assert all(ties)


# --- through the HTTP API ---------------------------------------------------------------------------------------


def test_api_layer_predictions_equal_the_core(client, store):
    got = client.predict(DECODER_TEXT, api_name="/layer_predictions")  # the model defaults to the decoder
    expected = layer_predictions(load_transformer(store, "decoder"), DECODER_TEXT)
    assert got["tokens"] == expected["tokens"]
    assert [[c["token"] for c in row] for row in got["layers"]] == [[c["token"] for c in r] for r in expected["layers"]]
    for row, expected_row in zip(got["layers"], expected["layers"]):
        assert [c["prob"] for c in row] == pytest.approx([c["prob"] for c in expected_row], abs=1e-6)
    encoder = client.predict(ENCODER_TEXT, "encoder", api_name="/layer_predictions")
    assert encoder["tokens"][0] == "[CLS]" and len(encoder["layers"]) == 3 and encoder["masks"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("",), "empty"),
        ((None,), "empty"),
        ((123,), "must be text"),
        (("word " * 100,), "at most 64"),
        (("the cat", 5), "Model must be one of"),
        (("the cat", "gpt-5"), "Model must be one of"),
        (("the cat", "minilm"), "no masked-word head"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/layer_predictions")
    assert client.predict("the cat", "decoder", api_name="/layer_predictions")["layers"]


# --- in a real browser ------------------------------------------------------------------------------------------


def test_browser_draws_the_lens_and_the_diagram(page, hub_url):
    page.goto(f"{hub_url}?tab=layers")
    page.locator("#layers-run").click()
    page.locator("#layers-lens img").wait_for()
    page.locator("#layers-diagram img").wait_for()


def downloaded_png(page, figure_id: str) -> Image.Image:
    """The figure's Download button is on screen, and what it gives is a PNG."""
    link = page.locator(f"#{figure_id} a[data-testid=download-link]")
    assert link.locator("button[aria-label=Download]").is_visible()
    assert link.get_attribute("download").endswith(".png")
    return Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))


def test_browser_a_link_fills_in_the_text_and_the_model(page, hub_url):
    page.goto(f"{hub_url}?tab=layers&text=Paris%20is%20the%20[MASK]%20of%20France.&model=encoder")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("Text", exact=True).input_value() == "Paris is the [MASK] of France."
    assert page.get_by_label("Encoder (BERT)").is_checked()
    page.locator("#layers-copy-link").wait_for()  # and the tab has its Copy link button


def test_browser_a_link_with_a_bad_model_says_so_and_keeps_the_default(page, hub_url):
    page.goto(f"{hub_url}?tab=layers&model=gpt-5")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert "model must be one of" in page.locator(".toast-body").first.inner_text()
    assert page.get_by_label("Decoder (GPT-2)").is_checked()


def test_browser_clicking_an_example_runs_it_and_the_lens_downloads_as_a_slide_png(page, hub_url):
    page.goto(f"{hub_url}?tab=layers&present=1")  # presenter mode keeps the Download buttons
    example = page.get_by_text("One, two, three, four, five,", exact=True)
    example.scroll_into_view_if_needed()
    example.click()
    page.locator("#layers-lens img").wait_for()
    assert page.get_by_label("Text", exact=True).input_value() == "One, two, three, four, five,"
    # the table's probabilities, in percent
    page.wait_for_function("() => document.querySelector('#layers-numbers')?.innerText.includes('%')")
    lens = downloaded_png(page, "layers-lens")
    assert lens.format == "PNG" and lens.width >= 800  # drawn at SLIDE_DPI
    assert downloaded_png(page, "layers-diagram").width >= 800
