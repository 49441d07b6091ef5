"""Attention: the tab's numbers against transformers' own eager attention on the same saved weights, then the
endpoints /attention and /ablate, the offline encoder, and the tab in a real browser."""

import ast
import contextlib
import io
import math

import numpy as np
import pytest
import requests
import torch
from gradio.utils import get_function_description
from gradio_client.exceptions import AppError
from PIL import Image
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from demos.attention import maps as attention_demo
from demos.attention.head_ablation import ablate, ablation_code
from demos.attention.maps import attention, attention_code, attention_maps, overview_figure, step_by_step, tile_at
from demos.fine_tune import packaged_minilm
from hub.app import build_app
from hub.errors import HubError
from hub.inside import Transformer, configured_layers_and_heads, load_transformer, parse_heads, tokenize
from hub.models import ModelStore, build_tiny_model
from hub.settings import Settings

from .rest import rest_call

SENTENCE = "The cat sat on the mat because it was tired."
MASKED = "Paris is the [MASK] of France."


def library_attentions(folder: str, model_class, text: str):
    """What transformers itself returns, from a fresh copy of the weights with eager attention."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = model_class.from_pretrained(folder, attn_implementation="eager").eval()
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, output_attentions=True).attentions


@pytest.mark.parametrize(
    "which, demo_id, model_class",
    [("decoder", "text-generation", AutoModelForCausalLM), ("encoder", "fill-mask", AutoModelForMaskedLM)],
)
def test_every_head_equals_the_librarys_eager_attention(store, which, demo_id, model_class):
    t = load_transformer(store, which)
    maps = attention_maps(t, SENTENCE)
    reference = library_attentions(store.source(demo_id), model_class, SENTENCE)
    for layer in range(t.layers):
        assert maps.weights[layer] == pytest.approx(reference[layer][0].numpy(), abs=1e-6)
    assert maps.weights.sum(axis=-1) == pytest.approx(1.0, abs=1e-5)  # every row is a distribution


def test_the_decoder_sees_nothing_after_itself(decoder):
    weights = torch.tensor(attention(decoder, SENTENCE, layer=2, head=1)["weights"])
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert torch.all(weights.diagonal() > 0)


def test_the_encoder_sees_both_ways(encoder):
    weights = torch.tensor(attention(encoder, SENTENCE, layer=1, head=2)["weights"])
    above_the_diagonal = torch.ones_like(weights, dtype=torch.bool).triu(diagonal=1)
    assert torch.all(weights[above_the_diagonal] > 0)


def test_head_zero_is_the_mean_over_heads(decoder):
    heads = [torch.tensor(attention(decoder, SENTENCE, 1, h)["weights"]) for h in (1, 2)]
    mean = torch.tensor(attention(decoder, SENTENCE, 1, 0)["weights"])
    assert mean == pytest.approx((heads[0] + heads[1]) / 2, abs=1e-6)


def test_the_answer_names_the_models_own_tokens(encoder):
    answer = attention(encoder, MASKED)
    assert answer["tokens"][0] == "[CLS]" and answer["tokens"][-1] == "[SEP]" and "[MASK]" in answer["tokens"]
    assert (answer["layer"], answer["head"]) == (1, 1)
    assert len(answer["weights"]) == len(answer["tokens"])


@pytest.mark.parametrize("which", ["decoder", "encoder"])
@pytest.mark.parametrize("layer, head, query", [(1, 1, 1), (2, 2, 5), (2, 1, 9)])
def test_step_by_step_softmax_equals_the_returned_row(store, which, layer, head, query):
    t = load_transformer(store, which)
    step = step_by_step(t, SENTENCE, layer, head, query)
    assert step.largest_difference < 1e-6
    assert step.scale == pytest.approx(1 / math.sqrt(t.head_size))
    expected = attention(t, SENTENCE, layer, head)["weights"][query - 1]
    assert step.library_row == pytest.approx(expected, abs=1e-7)
    if which == "decoder":  # keys after the query are masked out
        assert all(value.startswith("−∞") for value in step.table["after the mask"][query:])


def zero_head_reference(folder: str, model_class, text: str, heads: list[tuple[int, int]]) -> torch.Tensor:
    """Switch heads off on a fresh copy, as ECOSYSTEM.md says: zero their slice before the output projection."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = model_class.from_pretrained(folder).eval()
    size = model.config.hidden_size // model.config.num_attention_heads
    for layer, head in heads:
        block = (
            model.transformer.h[layer - 1].attn.c_proj
            if hasattr(model, "transformer")
            else (model.bert.encoder.layer[layer - 1].attention.output.dense)
        )

        def hook(module, args, head=head):
            mixed = args[0].clone()
            mixed[..., (head - 1) * size : head * size] = 0
            return (mixed,)

        block.register_forward_pre_hook(hook)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    if hasattr(model, "transformer"):
        return logits[-1].softmax(-1)
    mask = int((inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0])
    return logits[mask].softmax(-1)


@pytest.mark.parametrize(
    "which, model_class, demo_id, text",
    [
        ("decoder", AutoModelForCausalLM, "text-generation", SENTENCE),
        ("encoder", AutoModelForMaskedLM, "fill-mask", MASKED),
    ],
)
def test_switching_heads_off_equals_zeroing_their_slice(store, which, model_class, demo_id, text):
    t = load_transformer(store, which)
    result = ablate(t, text, "1.2, 2.1", top_k=5)
    probabilities = zero_head_reference(store.source(demo_id), model_class, text, [(1, 2), (2, 1)])
    assert list(result["after"].values()) == pytest.approx(probabilities.topk(5).values.tolist(), rel=1e-4)
    assert result["before"] != result["after"]
    # the shared model is untouched: the prediction before is the same on a second call
    assert ablate(t, text, "1.1", top_k=5)["before"] == pytest.approx(result["before"])


def test_the_shared_model_keeps_its_fast_attention_and_shares_weights(store, decoder):
    loaded = store.get("text-generation").model
    assert loaded.config._attn_implementation == "sdpa"
    assert decoder.model.config._attn_implementation == "eager"
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(loaded.parameters(), decoder.model.parameters()))


def test_the_attention_tab_alone_loads_the_task_tabs_models(tiny_settings):
    store = ModelStore(tiny_settings, [attention_demo.DEMO])
    t = load_transformer(store, "decoder")
    assert (
        t.model.transformer.wte.weight.data_ptr()
        == store.get("text-generation").model.transformer.wte.weight.data_ptr()
    )


@pytest.mark.parametrize(
    "heads, message",
    [
        ("13.1", "does not exist"),
        ("x", "not layer.head"),
        ("1.3", "does not exist"),
        (" , ", "at least one"),
        (5, "text"),
    ],
)
def test_bad_heads_are_refused_with_a_message(decoder, heads, message):
    with pytest.raises(HubError, match=message):
        ablate(decoder, SENTENCE, heads)


def test_heads_are_read_as_layer_dot_head(decoder):
    assert parse_heads(decoder, " 1.2 ; 2.1, 1.2") == [(1, 2), (2, 1)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": ""}, "empty"),
        ({"text": "word " * 80}, "at most 64"),
        ({"text": "bad \ud800 surrogate"}, "not valid Unicode"),
        ({"text": SENTENCE, "layer": 3}, "Layer"),
        ({"text": SENTENCE, "layer": float("nan")}, "Layer"),
        ({"text": SENTENCE, "head": -1}, "Head"),
        ({"text": SENTENCE, "head": "2"}, "Head"),
    ],
)
def test_bad_input_is_refused_with_a_message(decoder, kwargs, message):
    with pytest.raises(HubError, match=message):
        attention(decoder, **kwargs)


def test_the_encoder_needs_a_mask_to_compare(encoder):
    with pytest.raises(HubError, match="No mask"):
        ablate(encoder, SENTENCE, "1.1")


def test_the_overview_has_a_tile_per_head_and_clicks_open_it(store):
    t = load_transformer(store, "minilm")  # 6 layers x 12 heads: real weights, shipped in a package
    maps = attention_maps(t, SENTENCE)
    image = overview_figure(maps, (2, 3))
    assert image.width >= 960  # 12 heads side by side, wide enough for a slide
    assert tile_at(maps, image.width - 3, image.height - 3) == (6, 12)
    assert tile_at(maps, 40, 40) == (1, 1)
    assert tile_at(maps, 2, 2) is None


def test_minilm_shows_real_attention_offline(store):
    t = load_transformer(store, "minilm")
    assert (t.layers, t.heads) == (6, 12)
    maps = attention_maps(t, SENTENCE)
    reference = library_attentions(str(packaged_minilm()), AutoModel, SENTENCE)
    assert maps.weights[5] == pytest.approx(reference[5][0].numpy(), abs=1e-6)
    with pytest.raises(HubError, match="no word-prediction head"):
        ablate(t, MASKED, "1.1")


def test_without_bert_the_encoder_is_minilm_and_says_so(tmp_path):
    offline = Settings(cache_dir=tmp_path, offline=True, dtype="float32")  # BERT is not in this empty cache
    t = load_transformer(ModelStore(offline, [attention_demo.DEMO]), "encoder")
    assert t.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert "could not be loaded" in t.notice and "MiniLM" in t.notice


@pytest.mark.parametrize("which, demo_id", [("decoder", "text-generation"), ("encoder", "fill-mask")])
def test_the_code_accordion_reproduces_the_numbers(store, which, demo_id):
    t = load_transformer(store, which)
    code = attention_code(t, SENTENCE, 2, 0).replace(repr(t.name), repr(store.source(demo_id)))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, scope)
    np.testing.assert_allclose(scope["weights"].numpy(), attention(t, SENTENCE, 2, 0)["weights"], atol=1e-6)


def test_the_ablation_code_prints_the_same_prediction(store, decoder):
    code = ablation_code(decoder, SENTENCE, [(1, 2)], 3)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    before, after = printed.getvalue().splitlines()
    expected = ablate(decoder, SENTENCE, "1.2", top_k=3)
    for line, key in ((before, "before"), (after, "after")):
        assert line.startswith(key)
        printed_percent = ast.literal_eval(line.removeprefix(key).strip())
        assert list(printed_percent) == list(expected[key])  # the same words, most probable first
        assert list(printed_percent.values()) == pytest.approx([100 * p for p in expected[key].values()], abs=0.006)


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_attention_defaults_and_numbers(client, encoder, decoder):
    answer = client.predict(MASKED, api_name="/attention")
    np.testing.assert_allclose(answer["weights"], attention(encoder, MASKED)["weights"], atol=1e-6)
    answer = client.predict(SENTENCE, "decoder", 2, 0, api_name="/attention")
    assert answer["tokens"] == tokenize(decoder, SENTENCE).tokens
    np.testing.assert_allclose(answer["weights"], attention(decoder, SENTENCE, 2, 0)["weights"], atol=1e-6)


def test_api_ablate(client, encoder):
    answer = client.predict(MASKED, "encoder", "1.1, 2.2", 3, api_name="/ablate")
    assert answer["after"] == pytest.approx(ablate(encoder, MASKED, "1.1, 2.2", 3)["after"])


@pytest.mark.parametrize(
    "args, api_name, message",
    [
        ((SENTENCE, "decoder", 9), "/attention", "Layer"),
        ((SENTENCE, "gpt-5"), "/attention", "Model must be one of"),
        ((SENTENCE, "decoder", 1, "five"), "/attention", "Head"),
        (("",), "/attention", "empty"),
        ((SENTENCE, "encoder", "13.1"), "/ablate", "does not exist"),
        ((SENTENCE, "encoder", "1.1"), "/ablate", "No mask"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, args, api_name, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api_name)
    assert client.predict(SENTENCE, api_name="/attention")["tokens"]


@pytest.mark.parametrize(
    "data",
    [
        [SENTENCE, "encoder", float("nan"), 1],
        [SENTENCE, "encoder", 1, None],
        [None, "encoder", 1, 1],
        [["a"], "decoder", 1, 1],
    ],
)
def test_rest_non_finite_and_wrong_types_get_a_message(hub_url, data):
    answer = rest_call(hub_url, "attention", data)
    assert "event: error" in answer and ("Layer" in answer or "Head" in answer or "Text" in answer)


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_shows_both_models_and_a_click_opens_a_head(page, hub_url):
    page.goto(f"{hub_url}?tab=attention")
    page.get_by_role("button", name="Show attention").click()
    page.locator("#attention-encoder-head img").wait_for()
    page.locator("#attention-decoder-head img").wait_for()
    for figure in ("attention-encoder-overview", "attention-decoder-overview"):
        image = page.locator(f"#{figure} img")
        image.scroll_into_view_if_needed()  # loaded lazily, once in view; a click lands only inside the window
        page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle())
        served = page.request.get(image.get_attribute("src"))  # the address the page shows serves the PNG itself
        assert served.status == 200 and served.headers["content-type"] == "image/png", (figure, served.status)
        assert Image.open(io.BytesIO(served.body())).width == image.evaluate("image => image.naturalWidth")
    overview = page.locator("#attention-decoder-overview img")
    box = overview.bounding_box()
    page.mouse.click(box["x"] + box["width"] - 8, box["y"] + box["height"] - 8)  # the last layer's last head
    page.get_by_text("layer 2: where", exact=False).first.wait_for()


def test_browser_a_link_fills_in_the_tab_and_a_bad_value_is_said(page, hub_url):
    page.goto(f"{hub_url}?tab=attention&text=The%20keys%20are%20here.&model=minilm&layer=2&head=0")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("Sentence (at most 64 tokens)").input_value() == "The keys are here."
    assert page.get_by_label("MiniLM (a real encoder that works offline)").is_checked()
    assert page.get_by_label("number input for Layer").input_value() == "2"
    assert page.get_by_label("number input for Head (0 = the mean over heads)").input_value() == "0"
    page.goto(f"{hub_url}?tab=attention&head=-1")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert "head must be between 0 and 2" in page.locator(".toast-body").first.inner_text()
    assert page.get_by_label("number input for Head (0 = the mean over heads)").input_value() == "1"


def test_browser_clicking_an_example_runs_it_and_each_map_downloads_as_a_slide_png(page, hub_url):
    page.goto(f"{hub_url}?tab=attention&present=1")  # presenter mode keeps the Download buttons
    example = page.get_by_text("The keys to the cabinet are on the table.", exact=True)
    example.scroll_into_view_if_needed()
    example.click()
    page.locator("#attention-decoder-overview img").wait_for(state="attached")  # drawn last; lazy-loaded below
    sentence = page.get_by_label("Sentence (at most 64 tokens)").input_value()
    assert sentence == "The keys to the cabinet are on the table."
    for figure in ("attention-encoder-head", "attention-decoder-head", "attention-decoder-overview"):
        link = page.locator(f"#{figure} a[data-testid=download-link]")
        link.scroll_into_view_if_needed()
        assert link.locator("button[aria-label=Download]").is_visible()
        png = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
        assert png.format == "PNG" and png.width >= (700 if figure.endswith("head") else 300)


# --- described for API callers and MCP clients ------------------------------------------------------------------

INSIDE_ENDPOINTS = [
    "attention",
    "ablate",
    "layer_predictions",
    "positional_encoding",
    "word_order",
    "vit_attention",
    "vit_position_similarity",
    "clip_relevance",
]


@pytest.fixture(scope="module")
def endpoint_functions(tiny_settings, store) -> dict:
    """{api_name: the function Gradio calls} for the whole hub, as --mcp would serve it."""
    app = build_app(tiny_settings, store)
    return {fn.api_name: fn.fn for fn in app.fns.values() if fn.api_visibility == "public"}


@pytest.mark.parametrize("api_name", INSIDE_ENDPOINTS)
def test_every_inside_endpoint_describes_its_inputs_and_output(endpoint_functions, api_name):
    description, parameters, returns = get_function_description(endpoint_functions[api_name])
    assert len(description) > 40
    assert all(len(text) > 15 for text in parameters.values()), parameters  # each parameter, one line in Args:
    assert returns and returns[0].startswith("{")  # the JSON answer, key by key


def test_the_descriptions_reach_api_info(hub_url):
    info = requests.get(f"{hub_url}gradio_api/info", timeout=30).json()["named_endpoints"]
    assert info["/attention"]["description"].startswith("One attention head's weights for a text")
    assert info["/clip_relevance"]["description"].startswith("Which patches of an image make CLIP match one label")


def float64_scores(t, text: str, layer: int, head: int, query: int) -> np.ndarray:
    """q·k for one query of one head, in float64 from the model's weights and the input its block received."""
    ids = tokenize(t, text).ids
    with torch.no_grad():
        x = t.model(input_ids=ids, output_hidden_states=True).hidden_states[layer - 1][0].double()
        return q_dot_k(t, x, layer, head, query)


def q_dot_k(t, x: torch.Tensor, layer: int, head: int, query: int) -> np.ndarray:
    block, lo, hi = t.blocks[layer - 1], (head - 1) * t.head_size, head * t.head_size
    if t.is_gpt2:
        norm = block.ln_1
        x = torch.nn.functional.layer_norm(x, (t.width,), norm.weight.double(), norm.bias.double(), norm.eps)
        qkv = x @ block.attn.c_attn.weight.double() + block.attn.c_attn.bias.double()  # Conv1D: x @ W + b
        q, k = qkv[:, : t.width], qkv[:, t.width : 2 * t.width]
    else:
        own = block.attention.self
        q = x @ own.query.weight.double().T + own.query.bias.double()
        k = x @ own.key.weight.double().T + own.key.bias.double()
    return (k[:, lo:hi] @ q[query - 1, lo:hi]).numpy()


@pytest.mark.parametrize(
    "which, demo_id, model_class",
    [("decoder", "text-generation", AutoModelForCausalLM), ("encoder", "fill-mask", AutoModelForMaskedLM)],
)
def test_step_by_step_of_a_bfloat16_model_is_float32_arithmetic_on_its_weights(store, which, demo_id, model_class):
    store.get(demo_id)  # builds the tiny model on disk
    folder = store.source(demo_id)
    model = model_class.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").eval()
    t = Transformer(which, folder, model, AutoTokenizer.from_pretrained(folder))
    step = step_by_step(t, SENTENCE, layer=2, head=1, query=5)
    expected = float64_scores(t, SENTENCE, layer=2, head=1, query=5)
    assert step.scores == pytest.approx(expected, rel=1e-4, abs=1e-6)  # q and k in bf16 miss this by ~1e-2
    masked = expected * step.scale
    if which == "decoder":
        masked[5:] = -np.inf
    assert step.weights == pytest.approx(np.exp(masked - masked.max()) / np.exp(masked - masked.max()).sum(), abs=1e-6)
    assert step.model_dtype == "bfloat16"
    assert "bfloat16" in attention_demo.difference_note(step)


def test_the_sliders_ranges_come_from_the_configs_before_any_model_loads(tmp_path):
    """The tiny preset's models from their recipe before they are built, then from the saved config; MiniLM from its
    package; a model with no config here gets GPT-2's and BERT-base's 12 x 12. Nothing is loaded."""
    tiny = Settings(preset="tiny", cache_dir=tmp_path, offline=True, dtype="float32")
    store = ModelStore(tiny, [attention_demo.DEMO])
    assert configured_layers_and_heads(store, "fill-mask") == (2, 2)  # not built yet
    assert attention_demo.shown_shape(store, "encoder") == (2, 2)
    assert attention_demo.shown_shape(store, "minilm") == (6, 12)
    build_tiny_model(store.demos["text-generation"], tmp_path)
    assert configured_layers_and_heads(store, "text-generation") == (2, 2)  # read from the saved config.json
    assert store._models == {}
    elsewhere = ModelStore(Settings(cache_dir=tmp_path, offline=True, dtype="float32"), [attention_demo.DEMO])
    assert attention_demo.shown_shape(elsewhere, "encoder") == (12, 12)  # GPT-2 and BERT are not in this cache
