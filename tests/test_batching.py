"""Visitors served together: the micro-batcher itself, then each batched model against the same inputs one at a time
(a visitor's answer must not change because of its neighbours), then concurrent requests over HTTP."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import demos.language.fill_mask
from demos.clip.zero_shot import image_features
from demos.language.fill_mask import fill_mask, fill_mask_request, fill_masks
from demos.vision.image_classification import class_probabilities, classify_image, model_input
from hub import model_thread
from hub.batching import MicroBatcher
from tests.image_samples import photo

# --- the batcher --------------------------------------------------------------------------------------------


def while_the_model_thread_is_busy(batcher: MicroBatcher, calls: list) -> list:
    """Start the calls from threads of their own while the model thread is busy with other work, so that they queue
    as concurrent visitors' requests do; then free it. Each call's result, or the exception it raised."""
    busy, free = threading.Event(), threading.Event()
    model_thread.submit(lambda: (busy.set(), free.wait(10)))
    busy.wait(10)

    def run(call):
        try:
            return call()
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        results = [pool.submit(run, call) for call in calls]
        deadline = time.monotonic() + 10
        while batcher.waiting < len(calls) and time.monotonic() < deadline:
            time.sleep(0.001)
        free.set()
        return [result.result() for result in results]


def test_requests_that_come_while_the_model_is_busy_run_as_one_batch_each_with_its_own_result():
    seen = []

    def square_all(items):
        seen.append(list(items))
        return [x * x for x in items]

    batcher = MicroBatcher(square_all, max_size=16)
    results = while_the_model_thread_is_busy(batcher, [lambda n=n: batcher(n) for n in range(12)])
    assert results == [n * n for n in range(12)]
    assert len(seen) == 1 and sorted(seen[0]) == list(range(12))  # one batch, each item once


def test_a_batch_is_never_larger_than_its_bound():
    batcher = MicroBatcher(lambda items: [x + 1 for x in items], max_size=4)
    results = while_the_model_thread_is_busy(batcher, [lambda n=n: batcher(n) for n in range(10)])
    assert results == list(range(1, 11))
    assert dict(batcher.batch_sizes) == {4: 2, 2: 1}


def test_an_item_that_fails_fails_only_its_own_caller():
    def invert_all(items):
        return [1 / x for x in items]  # one zero makes the whole batch raise

    batcher = MicroBatcher(invert_all)
    results = while_the_model_thread_is_busy(batcher, [lambda x=x: batcher(x) for x in (1, 2, 0, 4)])
    assert results[0] == 1 and results[1] == 0.5 and results[3] == 0.25
    assert isinstance(results[2], ZeroDivisionError)
    assert batcher(8) == 0.125  # and the batcher goes on serving


def test_a_lone_request_runs_at_once_without_waiting_for_company():
    batcher = MicroBatcher(lambda items: items)
    batcher("warm")  # the model thread starts with the first call
    took = []
    for _ in range(20):
        start = time.perf_counter()
        batcher("x")
        took.append(time.perf_counter() - start)
    assert dict(batcher.batch_sizes) == {1: 21}
    assert sorted(took)[10] < 0.004  # the median: a hand-over to the model thread and back, no wait


# --- each model batched equals one at a time ----------------------------------------------------------------

TEXTS = [
    "Paris is the [MASK] of France.",
    "[MASK]!",
    "I went to the ___ to buy some bread and ___, then walked home along the river in the rain.",
    "The doctor told me to take two [MASK] every day.",
]


def test_fill_mask_batched_with_padding_equals_each_text_alone(store):
    fill = store.get("fill-mask")
    requests = [fill_mask_request(fill.tokenizer, text, 5) for text in TEXTS]
    assert len({len(r.ids) for r in requests}) == len(TEXTS)  # different lengths: the shorter ones are padded
    alone = [fill_mask(fill, text, 5) for text in TEXTS]
    for order in (requests, requests[::-1]):  # and batch order does not matter
        batched = fill_masks(fill, order)
        by_text = {result.text: result for result in batched}
        for single in alone:
            together_ = by_text[single.text]
            assert [list(m) for m in together_.predictions] == [list(m) for m in single.predictions]
            for got, expected in zip(together_.predictions, single.predictions):
                assert list(got.values()) == pytest.approx(list(expected.values()), abs=1e-5)
            assert together_.filled == single.filled and together_.tokens == single.tokens


def pictures() -> list[Image.Image]:
    return [
        photo(),
        photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        photo().rotate(90, expand=True).resize((50, 90)),
    ]


def test_image_classification_batched_equals_each_image_alone(store):
    classifier = store.get("image-classification")
    inputs = [model_input(classifier, picture) for picture in pictures()]
    batched = class_probabilities(classifier, inputs)
    reversed_ = class_probabilities(classifier, inputs[::-1])[::-1]
    batcher = MicroBatcher(lambda pixels: class_probabilities(classifier, pixels))
    for n, picture in enumerate(pictures()):
        alone = class_probabilities(classifier, [inputs[n]])[0]
        assert torch.allclose(batched[n], alone, atol=1e-5, rtol=0)
        assert torch.allclose(reversed_[n], alone, atol=1e-5, rtol=0)
        # and the tab's path through a batcher gives the core's answer
        via_batcher = classify_image(classifier, picture, 5, run=batcher)
        assert via_batcher.probabilities == pytest.approx(
            classify_image(classifier, picture, 5).probabilities, abs=1e-5
        )


def test_clip_image_features_batched_equal_each_image_alone(store):
    clip = store.get("zero-shot")
    inputs = [clip.preprocess(picture) for picture in pictures()]
    batched = image_features(clip, inputs)
    for n in range(len(inputs)):
        alone = image_features(clip, [inputs[n]])[0]
        assert torch.allclose(batched[n], alone, atol=1e-5, rtol=0)


# --- over HTTP: many visitors at once -----------------------------------------------------------------------


def visitors(hub_url: str, count: int) -> list:
    """One gradio_client per visitor: a visitor may have only a few jobs queued at once (hub/fair_share.py)."""
    from gradio_client import Client

    return [Client(hub_url, verbose=False) for _ in range(count)]


def test_concurrent_visitors_share_forward_passes_and_a_bad_one_fails_alone(hub_url, store, monkeypatch):
    batch_sizes = []
    real = demos.language.fill_mask.fill_masks

    def counted(fill, requests):
        batch_sizes.append(len(requests))
        time.sleep(0.05)  # as long as a real BERT's forward pass: the visitors who come meanwhile queue for the next
        return real(fill, requests)

    monkeypatch.setattr(demos.language.fill_mask, "fill_masks", counted)  # the tab's batcher looks it up at each batch
    texts = TEXTS * 3 + ["no mask here", "[MASK] " * 9]
    clients = visitors(hub_url, len(texts))
    jobs = [client.submit(text, 5, api_name="/fill_mask") for client, text in zip(clients, texts)]
    answers = []
    for job in jobs:
        try:
            answers.append(job.result(timeout=120))
        except AppError as error:
            answers.append(error)
    served = list(batch_sizes)
    assert "No mask found" in str(answers[-2]) and "Too many masks" in str(answers[-1])
    fill = store.get("fill-mask")
    for text, answer in zip(texts[:-2], answers):
        expected = fill_mask(fill, text, 5).predictions[0]
        assert {c["label"]: c["confidence"] for c in answer["confidences"]} == pytest.approx(expected, abs=1e-5)
    assert sum(served) == len(texts) - 2  # the refused texts never reached the model
    assert max(served) > 1  # some visitors were served together


def test_concurrent_images_with_a_broken_file_among_them(hub_url, store, tmp_path):
    good = tmp_path / "cat.png"
    photo().save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    files = [good] * 5 + [broken]
    clients = visitors(hub_url, len(files))
    jobs = [client.submit(handle_file(str(f)), 3, api_name="/classify_image") for client, f in zip(clients, files)]
    expected = classify_image(store.get("image-classification"), str(good), 3).probabilities
    for job in jobs[:-1]:
        answer = job.result(timeout=120)
        assert {c["label"]: c["confidence"] for c in answer["confidences"]} == pytest.approx(expected, abs=1e-5)
    with pytest.raises(AppError, match="not an image"):
        jobs[-1].result(timeout=120)
