"""Positional encoding: the sinusoid against the paper's formula, the learned tables against the saved weights, the
order experiment against the model's own forward pass; then /positional_encoding, /word_order and the tab."""

import io
import math

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from demos.inside.positional_encoding import comparison_figure, encoding_code, encoding_figures, positional_encoding
from demos.inside.word_order import EXAMPLE_A, EXAMPLE_B, encoder_outputs, order_code, word_order
from hub.errors import HubError
from hub.inside import load_transformer
from hub.links import read_linked_value


@pytest.fixture(scope="module")
def bert(store):
    return load_transformer(store, "encoder")


@pytest.fixture(scope="module")
def minilm(store):
    return load_transformer(store, "minilm")


# --- the encodings ------------------------------------------------------------------------------------------


def test_the_sinusoid_is_the_papers_formula(store):
    positions, d = 50, 16
    expected = [[0.0] * d for _ in range(positions)]
    for pos in range(positions):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            expected[pos][2 * i] = math.sin(angle)
            expected[pos][2 * i + 1] = math.cos(angle)

    e = positional_encoding(store, "sinusoidal", positions, d)
    assert e.matrix.shape == (positions, d)
    np.testing.assert_allclose(e.matrix, expected, atol=1e-12)


def test_gpt2_encoding_is_its_learned_wpe_table(store, tiny_model_dir):
    wpe = AutoModelForCausalLM.from_pretrained(tiny_model_dir("text-generation")).transformer.wpe.weight
    e = positional_encoding(store, "gpt2", 16)
    assert e.kind == "gpt2" and e.model == store.source("text-generation")
    np.testing.assert_array_equal(e.matrix, wpe[:16].detach().numpy())


def test_bert_encoding_is_its_learned_position_embeddings(store, tiny_model_dir):
    bert = AutoModelForMaskedLM.from_pretrained(tiny_model_dir("fill-mask")).bert
    table = bert.embeddings.position_embeddings.weight
    e = positional_encoding(store, "bert", 20)
    np.testing.assert_array_equal(e.matrix, table[:20].detach().numpy())


@pytest.mark.parametrize("kind", ["sinusoidal", "gpt2", "bert"])
def test_similarity_is_the_cosine_between_positions(store, kind):
    e = positional_encoding(store, kind, 12, 8)
    np.testing.assert_allclose(np.diag(e.similarity), 1.0, atol=1e-12)
    np.testing.assert_allclose(e.similarity, e.similarity.T, atol=1e-12)
    rows = torch.tensor(e.matrix)
    assert e.similarity[3, 7] == pytest.approx(float(torch.cosine_similarity(rows[3], rows[7], dim=0)), abs=1e-12)


def test_asking_past_a_learned_table_shows_the_whole_table_and_says_so(store):
    e = positional_encoding(store, "gpt2", 1000)  # the tiny GPT-2 learned 256 positions
    assert e.matrix.shape[0] == e.similarity.shape[0] == 256
    assert "learned 256 positions" in e.notice


@pytest.mark.parametrize(
    "args, message",
    [
        (("x",), "Kind must be one of"),
        ((None,), "Kind must be one of"),
        (("sinusoidal", 0), "Positions must be between 1 and 1024"),
        (("sinusoidal", 10**6), "Positions must be between 1 and 1024"),
        (("gpt2", 5000), "Positions must be between 1 and 1024"),
        (("sinusoidal", "abc"), "Positions must be a number"),
        (("sinusoidal", float("nan")), "Positions must be between"),
        (("sinusoidal", float("inf")), "Positions must be between"),
        (("sinusoidal", 2.5), "whole number"),
        (("sinusoidal", True), "Positions must be a number"),
        (("sinusoidal", 64, 7), "must be even"),
        (("sinusoidal", 64, 4096), "Dimensions must be between 2 and 1024"),
    ],
)
def test_bad_requests_are_refused_with_a_message(store, args, message):
    with pytest.raises(HubError, match=message):
        positional_encoding(store, *args)


def test_figures_are_drawn_for_every_kind(store):
    encodings = [positional_encoding(store, kind, 40, 32) for kind in ("sinusoidal", "gpt2", "bert")]
    values, similarity = encoding_figures(encodings[1])
    assert values.width > 400 and similarity.width > 400
    assert comparison_figure(encodings).width > values.width


@pytest.mark.parametrize("kind", ["sinusoidal", "gpt2", "bert"])
def test_the_code_shown_reproduces_the_numbers(store, kind):
    e = positional_encoding(store, kind, 24, 16)
    namespace = {}
    exec(encoding_code(e, store.dtype), namespace)  # the tiny preset's source is a folder: it runs offline
    np.testing.assert_array_equal(namespace["matrix"], e.matrix)
    np.testing.assert_allclose(namespace["similarity"], e.similarity, atol=1e-12)


# --- why order matters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bert", "minilm"])
def test_hand_built_embeddings_and_encoder_equal_the_models_output(which, bert, minilm):
    t = bert if which == "bert" else minilm
    ids = t.tokenizer("the man bit the dog", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = t.body(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(encoder_outputs(t, ids, positions=True), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["bert", "minilm"])
def test_without_positions_the_two_orders_give_the_same_vectors_permuted(which, bert, minilm):
    r = word_order(bert if which == "bert" else minilm, EXAMPLE_A, EXAMPLE_B)
    assert r.without_positions.largest < 1e-5
    assert r.with_positions.largest > 0.01
    for matching in (r.without_positions, r.with_positions):
        assert sorted(matching.partner) == list(range(len(r.tokens_b)))  # each token of B used once
        assert [r.tokens_b[j] for j in matching.partner] == r.tokens_a  # always the same token


def test_the_same_order_gives_no_difference_and_says_so(bert):
    r = word_order(bert, "the dog bit the man", "the dog bit the man")
    assert r.with_positions.largest < 1e-5
    assert "same order" in r.notice


@pytest.mark.parametrize(
    "a, b, message",
    [
        ("the dog bit the man", "the cat bit the man", "same tokens in another order"),
        ("the dog bit the man", "the dog bit the man the", "same tokens in another order"),
        ("", "the dog", "empty"),
        ("word " * 100, "word " * 100, "at most 64"),
    ],
)
def test_texts_that_are_not_a_reordering_are_refused(bert, a, b, message):
    with pytest.raises(HubError, match=message):
        word_order(bert, a, b)


def test_the_decoder_is_not_part_of_the_order_experiment(store):
    with pytest.raises(HubError, match="causal mask"):
        word_order(load_transformer(store, "decoder"))


def test_the_order_code_shown_reproduces_the_numbers(store, bert, capsys):
    r = word_order(bert, "the cat sat on the mat", "the mat sat on the cat")
    namespace = {}
    exec(order_code(r, "the cat sat on the mat", "the mat sat on the cat", store.dtype), namespace)
    largest = namespace["largest"]
    assert largest["with positions"] == pytest.approx(r.with_positions.largest, abs=1e-6)
    assert largest["without positions"] < 1e-5
    assert "with positions" in capsys.readouterr().out


# --- through the HTTP API -------------------------------------------------------------------------------------


def test_api_positional_encoding_returns_what_the_core_returns(client, store):
    got = client.predict("gpt2", 16, api_name="/positional_encoding")
    expected = positional_encoding(store, "gpt2", 16)
    assert got["kind"] == "gpt2" and got["model"] == expected.model
    np.testing.assert_allclose(got["matrix"], expected.matrix, rtol=1e-12)
    np.testing.assert_allclose(got["similarity"], expected.similarity, rtol=1e-12)


def test_api_defaults_are_the_sinusoid_of_64_positions_and_128_dimensions(client):
    got = client.predict(api_name="/positional_encoding")
    assert got["kind"] == "sinusoidal"
    assert np.shape(got["matrix"]) == (64, 128) and np.shape(got["similarity"]) == (64, 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (("x",), "Kind must be one of"),
        (("sinusoidal", 5000), "between 1 and 1024"),
        (("bert", "abc"), "Positions must be a number"),
        (("sinusoidal", 64, 127), "must be even"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/positional_encoding")
    assert client.predict("bert", 4, api_name="/positional_encoding")["kind"] == "bert"


def test_api_word_order(client):
    got = client.predict(EXAMPLE_A, EXAMPLE_B, api_name="/word_order")
    assert got["without_positions"]["largest_difference"] < 1e-5
    assert got["with_positions"]["largest_difference"] > 0.01
    with pytest.raises(AppError, match="same tokens"):
        client.predict("the dog bit the man", "a dog bit a man", api_name="/word_order")


# --- in a real browser ----------------------------------------------------------------------------------------


def test_browser_shows_the_encodings_and_runs_the_order_experiment(page, hub_url):
    page.goto(f"{hub_url}?tab=positional-encoding")
    sinusoid = page.locator("#pe-values img")
    sinusoid.wait_for()
    first = sinusoid.get_attribute("src")
    page.locator("#pe-kind").get_by_text("GPT-2, learned").click()
    page.wait_for_function(
        "src => document.querySelector('#pe-values img')?.getAttribute('src') !== src", arg=first, timeout=60_000
    )
    page.locator("#pe-similarity img").wait_for()
    page.get_by_role("button", name="Run both orders through BERT").click()
    page.locator("#pe-order-headline").get_by_text("Without positions").wait_for()
    page.locator("#pe-order").get_by_text("partner in B, no positions").first.wait_for()


def open_link(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.hubLinkRead === true")  # the link has been read and the tab opened


def test_browser_a_link_sets_the_encoding_and_the_texts_and_redraws(page, hub_url):
    open_link(page, f"{hub_url}?tab=positional-encoding")
    opening_figure = page.locator("#pe-values img").get_attribute("src")
    open_link(page, f"{hub_url}?tab=positional-encoding&positions=5&text_a=a%20b%20c&text_b=c%20b%20a")
    assert page.get_by_label("number input for Positions").input_value() == "5"
    assert page.get_by_label("Text A", exact=True).input_value() == "a b c"
    assert page.get_by_label("Text B: the same words in another order").input_value() == "c b a"
    page.wait_for_function(  # the positions alone changed: the figures are drawn again for 5 positions
        "src => document.querySelector('#pe-values img')?.getAttribute('src') !== src", arg=opening_figure
    )
    open_link(page, f"{hub_url}?tab=positional-encoding&kind=bert&positions=1000")
    assert page.locator("#pe-kind").get_by_label("BERT, learned").is_checked()
    page.locator("#pe-notice").get_by_text("learned", exact=False).wait_for()  # the tiny BERT has fewer positions


def test_browser_a_link_with_a_bad_value_says_so_and_keeps_the_default(page, hub_url):
    open_link(page, f"{hub_url}?tab=positional-encoding&positions=5000&kind=rope")
    message = page.locator(".toast-body").first.inner_text()
    assert "positions must be between 1 and 1024" in message and "kind must be one of" in message
    assert page.get_by_label("number input for Positions").input_value() == "64"
    assert page.locator("#pe-kind").get_by_label("Sinusoid (Attention Is All You Need)").is_checked()


def test_browser_clicking_an_example_runs_it_and_figures_download_as_slide_pngs(page, hub_url):
    open_link(page, f"{hub_url}?tab=positional-encoding&present=1")  # presenter mode keeps the Download buttons
    example = page.get_by_text("the mat sat on the cat", exact=True)
    example.scroll_into_view_if_needed()
    example.click()
    page.locator("#pe-order-headline").get_by_text("Without positions").wait_for()
    assert page.get_by_label("Text A", exact=True).input_value() == "the cat sat on the mat"
    for figure in ("pe-values", "pe-similarity"):
        link = page.locator(f"#{figure} a[data-testid=download-link]")
        assert link.locator("button[aria-label=Download]").is_visible()
        png = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
        assert png.format == "PNG" and png.width >= 700  # drawn at SLIDE_DPI: over 5 inches wide


def test_a_link_offers_only_the_sliders_steps():
    dims = gr.Slider(2, 1024, value=128, step=2, label="Dimensions (sinusoid only)")
    assert read_linked_value(dims, "dims", "64") == 64
    with pytest.raises(HubError, match="dims must be 2 plus a multiple of 2"):
        read_linked_value(dims, "dims", "7")
