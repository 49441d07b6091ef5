"""What training changed in the attention: the before and after maps against transformers' own eager attention,
the change table against a direct computation, then /fine_tune_attention per visitor, the Code accordion and the
section in a real browser. All on the tiny backbone of the `store` fixture."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from transformers import AutoModel, AutoModelForSequenceClassification

from demos.fine_tune import BUILTIN, FineTuned, LabelledTexts, TrainingSettings, builtin_dataset, train_stream
from demos.fine_tune.attention import attention_change, change_code, fine_tuned_encoder, most_changed
from hub.errors import HubError
from tests.rest import rest_call

TEXT = "The food came cold and the waiter ignored us."
MAX_LENGTH = 32


def train(backbone, **settings) -> FineTuned:
    """A short real training run on the tiny backbone, as the tab stores it for a visitor."""
    data = builtin_dataset()
    train_texts, train_labels, test_texts, test_labels = (
        data.train_texts[:48],
        data.train_labels[:48],
        data.test_texts[:8],
        data.test_labels[:8],
    )
    data = LabelledTexts("small", data.label_names, train_texts, train_labels, test_texts, test_labels)
    *_, run = train_stream(backbone, data, TrainingSettings(epochs=1, batch_size=16, max_length=MAX_LENGTH, **settings))
    return FineTuned(run.model, backbone.tokenizer, data.label_names, MAX_LENGTH)


@pytest.fixture(scope="module")
def backbone(store):
    return store.get("fine-tune")


@pytest.fixture(scope="module")
def trained(backbone) -> FineTuned:
    return train(backbone)


def library_attentions(model, tokenizer, text: str, max_length: int = MAX_LENGTH) -> torch.Tensor:
    """transformers' own eager attention for one text, shape (layers, heads, n, n)."""
    inputs = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return torch.stack(model.eval()(**inputs, output_attentions=True).attentions)[:, 0]


# --- the numbers against the library ---------------------------------------------------------------------------


def test_a_model_compared_with_itself_changed_nowhere(backbone):
    untrained = AutoModelForSequenceClassification.from_pretrained(backbone.folder, num_labels=2)
    result = attention_change(backbone.folder, FineTuned(untrained, backbone.tokenizer, ["a", "b"], 32), TEXT)
    assert np.array_equal(result.before, result.after)
    assert result.change.shape == (untrained.config.num_hidden_layers, untrained.config.num_attention_heads)
    assert not result.change.any()


def test_training_only_the_head_leaves_every_heads_attention_as_it_was(backbone):
    result = attention_change(backbone.folder, train(backbone, freeze_backbone=True), TEXT)
    assert not result.change.any()


def test_before_is_the_pretrained_backbones_own_eager_attention(backbone, trained):
    result = attention_change(backbone.folder, trained, TEXT)
    pretrained = AutoModel.from_pretrained(backbone.folder, attn_implementation="eager")
    expected = library_attentions(pretrained, backbone.tokenizer, TEXT)
    np.testing.assert_allclose(result.before, expected.numpy(), atol=1e-6)
    assert result.tokens == backbone.tokenizer.tokenize(TEXT, add_special_tokens=True)


def test_after_is_the_fine_tuned_models_own_attention(backbone, trained, tmp_path):
    trained.model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager")
    expected = library_attentions(reloaded, backbone.tokenizer, TEXT)
    np.testing.assert_allclose(attention_change(backbone.folder, trained, TEXT).after, expected.numpy(), atol=1e-6)
    # Seen through a view that shares its weights: the visitor's model keeps its fast attention for predictions.
    view = fine_tuned_encoder(trained.model)
    assert trained.model.config._attn_implementation != "eager" and view.config._attn_implementation == "eager"
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(trained.model.bert.parameters(), view.parameters()))


def test_the_change_is_the_mean_absolute_difference_in_percentage_points(backbone, trained):
    result = attention_change(backbone.folder, trained, TEXT)
    before, after = torch.from_numpy(result.before), torch.from_numpy(result.after)
    expected = 100 * (after - before).abs().mean(dim=(-2, -1))
    np.testing.assert_allclose(result.change, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert (result.change > 0).all(), "a real training of the whole backbone moves every head"


def test_the_heads_that_changed_most_come_first_counted_from_one():
    change = np.array([[1.0, 5.0, 0.5], [3.0, 2.0, 4.0]])
    assert most_changed(change, 3) == [(1, 2, 5.0), (2, 3, 4.0), (2, 1, 3.0)]


def test_a_text_longer_than_the_model_reads_is_cut_to_its_max_length(backbone, trained):
    short = FineTuned(trained.model, backbone.tokenizer, trained.label_names, 8)
    result = attention_change(backbone.folder, short, TEXT)
    assert result.cut and len(result.tokens) == 8 and result.before.shape[-1] == 8
    assert not attention_change(backbone.folder, trained, TEXT).cut


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        (None, "empty"),
        (42, "must be text"),
        (float("nan"), "must be text"),
        ("bad \ud800 surrogate", "not valid Unicode"),
        ("x" * 2_001, "too long"),
        ("word " * 70, "at most 64"),
    ],
)
def test_bad_text_is_refused_with_a_message(backbone, trained, text, message):
    reads_128 = FineTuned(trained.model, backbone.tokenizer, trained.label_names, 128)
    with pytest.raises(HubError, match=message):
        attention_change(backbone.folder, reads_128, text)


def test_the_code_accordion_reproduces_the_change_table(store, backbone, trained, tmp_path):
    folder = tmp_path / "fine-tuned-model"  # what the tab's download unzips to
    trained.model.save_pretrained(folder)
    trained.tokenizer.save_pretrained(folder)
    code = change_code(store.source("fine-tune"), TEXT, MAX_LENGTH).replace('"fine-tuned-model"', repr(str(folder)))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, scope)
    expected = attention_change(backbone.folder, trained, TEXT).change
    np.testing.assert_allclose(scope["change"].numpy(), expected, rtol=1e-4, atol=1e-6)


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_gives_this_visitors_change_after_training_and_a_message_before(hub_url, store, backbone):
    visitor = Client(hub_url, verbose=False)
    with pytest.raises(AppError, match="no fine-tuned model yet"):
        visitor.predict(TEXT, api_name="/fine_tune_attention")
    visitor.predict(BUILTIN, None, "text", "label", 1, api_name="/fine_tune")
    answer = visitor.predict(TEXT, api_name="/fine_tune_attention")

    # The same training in this process (same seed and settings) gives the same model.
    *_, run = train_stream(backbone, builtin_dataset(), TrainingSettings(epochs=1))
    expected = attention_change(backbone.folder, FineTuned(run.model, backbone.tokenizer, [], 64), TEXT)
    assert answer["tokens"] == expected.tokens
    np.testing.assert_allclose(answer["before"], expected.before, atol=1e-6)
    np.testing.assert_allclose(answer["after"], expected.after, atol=1e-4)
    np.testing.assert_allclose(answer["change"], expected.change, rtol=1e-2, atol=1e-5)
    assert np.asarray(answer["change"]).shape == expected.change.shape and np.min(answer["change"]) > 0

    with pytest.raises(AppError, match="no fine-tuned model yet"):  # another visitor does not see this model
        Client(hub_url, verbose=False).predict(TEXT, api_name="/fine_tune_attention")


@pytest.mark.parametrize(
    "data, message",
    [
        ([math.nan], "Text must be text"),
        ([["a"]], "Text must be text"),
        ([{"text": "hi"}], "Text must be text"),
        ([None], "Text is empty"),
        ([TEXT], "no fine-tuned model yet"),
    ],
)
def test_rest_non_finite_and_wrong_types_get_a_message(hub_url, data, message):
    answer = rest_call(hub_url, "fine_tune_attention", data)
    assert "event: error" in answer and message in answer


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_trains_then_shows_what_changed(page, hub_url):
    page.goto(f"{hub_url}?tab=fine-tune")
    epochs = page.get_by_label("number input for Epochs")
    epochs.fill("1")
    epochs.press("Enter")
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    page.locator("#fine-tune-status").get_by_text("Done").wait_for(timeout=120_000)
    section = page.get_by_text("What training changed in the attention")
    section.scroll_into_view_if_needed()
    section.click()
    compare = page.get_by_role("button", name="Compare before and after training")
    compare.scroll_into_view_if_needed()
    compare.click()
    summary = page.locator("#fine-tune-attention-summary")
    summary.get_by_text("Changed most").wait_for()
    assert "layers x" in summary.inner_text() and "percentage points" in summary.inner_text()
    for figure in ("change", "before", "after", "difference"):
        image = page.locator(f"#fine-tune-{'attention-' if figure == 'change' else ''}{figure} img")
        image.scroll_into_view_if_needed()
        image.wait_for()
        assert image.evaluate("img => img.complete && img.naturalWidth > 200")
