"""The benchmarks' browser-like client (bench.common.BrowserClient) gets the answers the hub's core gives: it is what
the README's performance numbers are measured with, so it must call the endpoints as a page does and read them right."""

import pytest

from bench.common import BrowserClient
from demos.language.fill_mask import fill_mask
from demos.vision.image_classification import classify_image
from tests.image_samples import photo

MASKED = "The capital of France is [MASK]."


@pytest.fixture
def visitor(hub_url: str):
    client = BrowserClient(hub_url)
    yield client
    client.close()


def test_a_text_request_answers_what_the_core_answers(visitor, store):
    (answer,) = visitor.call("fill_mask", MASKED, 3)
    expected = fill_mask(store.get("fill-mask"), MASKED, 3).predictions[0]
    assert {c["label"]: c["confidence"] for c in answer["confidences"]} == pytest.approx(expected, rel=1e-5)


def test_an_uploaded_image_is_classified_as_the_core_classifies_it(visitor, store, tmp_path):
    path = tmp_path / "cat.png"
    photo().save(path)
    (answer,) = visitor.call("classify_image", visitor.upload(path), 3)
    expected = classify_image(store.get("image-classification"), str(path), top_k=3).probabilities
    assert {c["label"]: c["confidence"] for c in answer["confidences"]} == pytest.approx(expected, rel=1e-4)


def test_a_refused_request_raises_with_the_hubs_message(visitor):
    with pytest.raises(RuntimeError, match="No mask found"):
        visitor.call("fill_mask", "No hidden word here.", 3)


def test_every_request_of_one_visitor_is_in_one_session(visitor, monkeypatch):
    sent = []
    post = visitor.http.post
    monkeypatch.setattr(visitor.http, "post", lambda url, **kwargs: sent.append(kwargs["json"]) or post(url, **kwargs))
    visitor.call("fill_mask", MASKED, 1)
    visitor.call("fill_mask", MASKED, 2)
    assert [body["session_hash"] for body in sent] == [visitor.session_hash] * 2  # as a page's requests are
