"""A public Space and a classroom can rely on the hub: a link cannot put markup on the page, no caller holds the
hub, memory stays bounded, every visitor's fine-tuned model is theirs, and every endpoint and MCP tool answers a
good call (and a bad one with a message naming the input).

Different client addresses are played through X-Forwarded-For from loopback, a proxy the hub trusts."""

import asyncio
import base64
import http.client
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from PIL import Image

from hub.app import build_app, launch
from hub.errors import HubError
from hub.visitors import VisitorStore

from .conftest import free_port
from .rest import error_message, upload

SENTENCE = "Paris is the [MASK] of France."
MARKUP = (
    '<img id="pwn-img" src="http://127.0.0.1:9/pixel.png"><a id="pwn-a" href="http://127.0.0.1:9/login">Session '
    'expired</a><form id="pwn-form" action="http://127.0.0.1:9/"><input id="pwn-input" name="password"></form>'
)


@pytest.fixture(scope="module")
def public(tiny_settings, store):
    """The hub with its MCP server and small limits, so that each limit is reached with a few calls."""
    settings = replace(
        tiny_settings,
        port=free_port(),
        mcp=True,
        jobs_per_visitor=2,
        jobs_per_address=4,
        unread_job_s=8,
        max_sessions=8,
        max_body_mb=1,
    )
    app = build_app(settings, store)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    yield app, url
    app.close()


def post(url: str, path: str, payload: dict, address: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"X-Forwarded-For": address} if address else {})
    request = urllib.request.Request(f"{url}{path}", json.dumps(payload).encode(), headers)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def call(url: str, api_name: str, data: list, address: str | None = None, page: bool = False, **body) -> str:
    """A REST call and its whole event stream, from `address`; `page`: read as a browser page reads it."""
    status, answer = post(url, f"gradio_api/call/{api_name}", {"data": data, **body}, address)
    assert status == 200, answer
    headers = ({"X-Forwarded-For": address} if address else {}) | ({"Sec-Fetch-Mode": "cors"} if page else {})
    request = urllib.request.Request(f"{url}gradio_api/call/{api_name}/{answer['event_id']}", headers=headers)
    return urllib.request.urlopen(request).read().decode()


def run(coroutine):
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def photo_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 40)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------------------------------------------------
# 1. Markup from a link is text on the page; callers get plain text


def test_a_links_markup_is_shown_as_text_and_loads_nothing(page, hub_url):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    quoted = urllib.request.quote(MARKUP)
    page.goto(f"{hub_url}?tab=fill-mask&{quoted}=1&top_k={quoted}")
    page.get_by_text("is not an input of this tab", exact=False).first.wait_for()
    page.goto(f"{hub_url}?tab={quoted}")
    page.get_by_text("There is no tab", exact=False).first.wait_for()
    page.get_by_text('<a id="pwn-a"', exact=False).first.wait_for()  # shown, as text
    assert page.locator("#pwn-img, #pwn-a, #pwn-form, #pwn-input").count() == 0
    assert not [url for url in requests if "127.0.0.1:9/" in url]


def test_api_callers_get_plain_text_and_a_page_gets_it_escaped(public):
    _, url = public
    answer = call(url, "ablate", [SENTENCE, "encoder", MARKUP, 5])
    assert '<img id="pwn-img"' in error_message(answer) and "&lt;" not in error_message(answer)
    answer = call(url, "ablate", [SENTENCE, "encoder", MARKUP, 5], page=True)
    assert "&lt;img id=" in error_message(answer) and "<img" not in error_message(answer)
    message = error_message(call(url, "fill_mask", ["No mask here.", 5]))
    assert "&lt;" not in message and "&gt;" not in message


def test_nobody_reaches_another_visitors_model_whatever_session_id_they_send(public):
    from gradio_client import Client

    _, url = public
    ada = Client(url, verbose=False, headers={"X-Forwarded-For": "192.0.2.10"})
    ada.predict("Built-in: sentiment of short reviews", None, "text", "label", 1, 2e-4, 8, 32, 0.1, 0.01,
                False, 0, "ok", api_name="/fine_tune")  # fmt: skip
    assert ada.predict("great", api_name="/fine_tune_predict")["label"]
    bob = Client(url, verbose=False, headers={"X-Forwarded-For": "192.0.2.11"})
    with pytest.raises(Exception, match="no fine-tuned model"):
        bob.predict("great", api_name="/fine_tune_predict")
    # Ada's session id, from Bob's address: still nothing of hers
    answer = call(url, "fine_tune_predict", ["great"], "192.0.2.11", session_hash=ada.session_hash)
    assert "no fine-tuned model" in error_message(answer)


# ---------------------------------------------------------------------------------------------------------
# 2. A fair share per caller; jobs nobody reads stop


def test_a_flooding_address_is_refused_while_others_are_served_and_its_unread_jobs_stop(public):
    app, url = public
    fine_tune = [
        "Built-in: sentiment of short reviews",
        None,
        "text",
        "label",
        3,
        2e-4,
        8,
        64,
        0.1,
        0.01,
        False,
        0,
        "ok",
    ]
    answers = [post(url, "gradio_api/call/fine_tune", {"data": fine_tune}, "203.0.113.5") for _ in range(8)]
    assert [status for status, _ in answers] == [200] * 4 + [429] * 4
    assert "address" in answers[-1][1]["detail"] and "turn" in answers[-1][1]["detail"]
    # another caller is served as usual, while the flood waits
    assert "event: complete" in call(url, "fill_mask", [SENTENCE, 3], "198.51.100.7")
    # nobody reads the flood's results: its jobs are cancelled, queued and running alike
    deadline = time.monotonic() + 120
    share = app.fair_share
    while any(e.request.client.host == "203.0.113.5" for e in share.pending_events(app._queue)):
        assert time.monotonic() < deadline, "unread jobs still queued or running"
        time.sleep(0.5)


def test_one_visitor_has_at_most_a_few_jobs_at_once(public):
    _, url = public
    body = {"data": ["Hello", 200, "sampling", 0.8, 50, 0.95, 1.0, 0], "session_hash": "one-visitor-session"}
    statuses = [post(url, "gradio_api/call/generate", body, "198.51.100.20")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    other = {**body, "session_hash": "another-visitor-session"}  # same address, another visitor
    assert post(url, "gradio_api/call/generate", other, "198.51.100.20")[0] == 200


def test_x_forwarded_for_is_read_only_from_the_proxies_the_operator_trusts():
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from hub.settings import Settings

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    guard = ProxyHeadersMiddleware(app, trusted_hosts=Settings().forwarded_allow_ips)
    for client in ("8.8.8.8", "10.1.2.3"):
        scope = {"type": "http", "client": (client, 1), "headers": [(b"x-forwarded-for", b"192.0.2.1, 203.0.113.9")]}
        run(guard(scope, None, None))
    assert seen == ["8.8.8.8", "203.0.113.9"]  # a client's own header names nobody; a private proxy's is read


# ---------------------------------------------------------------------------------------------------------
# 3. Memory: bodies, sessions, pixels in flight, tables


def test_a_body_over_the_limit_is_refused_before_it_is_read(public):
    _, url = public
    # Announce 1.5 MB and send none of it: the answer comes from the declared length alone. (Sending the body races
    # with the server, which answers and closes the connection without reading it: a broken pipe on this side.)
    server = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(server.hostname, server.port, timeout=30)
    connection.putrequest("POST", "/gradio_api/call/fill_mask")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", "1500000")
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and "too large" in json.load(answer)["detail"]
    connection.close()
    assert "event: complete" in call(url, "fill_mask", [SENTENCE, 3])


def test_sessions_are_bounded_and_keep_no_outputs(public):
    app, url = public
    for _ in range(10):
        assert "event: complete" in call(url, "positional_encoding", ["sinusoidal", 256, 256])
    holder = app.state_holder
    assert len(holder.session_data) <= 8
    fn = next(fn for fn in app.fns.values() if fn.api_name == "positional_encoding")
    for session in holder.session_data.values():
        for block in fn.outputs:
            assert session.config_values.get(block._id, {}).get("props", {}).get("value") is None


def test_pixels_in_flight_are_bounded_across_requests(tmp_path, monkeypatch):
    from hub import images

    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)  # 6 megapixels
    monkeypatch.setattr(images, "WAIT_FOR_PIXELS_S", 0.2)
    images.set_pixels_in_flight(10_000_000)
    try:
        first = images.load_image(str(path))
        assert images.pixels_in_flight() >= 6_000_000
        with pytest.raises(HubError, match="many large images"):
            images.load_image(str(path))  # 12 Mpx would be in flight
        del first  # the first request is done with its picture
        second = images.load_image(str(path))
        assert second.size == (3000, 2000)
    finally:
        images.set_pixels_in_flight(200_000_000)


def test_a_csv_with_a_huge_header_is_refused_before_parsing_with_a_short_message(tmp_path):
    from hub.tables import read_csv

    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n")
    with pytest.raises(HubError) as refused:
        read_csv(path)
    assert "100,000 columns" in str(refused.value) and len(str(refused.value)) < 200


# ---------------------------------------------------------------------------------------------------------
# 4. Fine-tuned models: fair places, each visitor's own


def places(capacity: int) -> VisitorStore:
    return VisitorStore(capacity, 3600, missing="none yet", dropped="time is up", full="full {minutes}", crowded="room")


def test_a_class_behind_one_address_keeps_every_model_and_a_flood_cannot_take_them():
    store = places(64)
    for student in range(30):
        store.check_room(f"student {student}", "school")
        store.put(f"student {student}", student, "school")
    for session in range(100):  # one address trying many sessions: it takes the free places, then its own
        try:
            store.check_room(f"bot {session}", "bot")
            store.put(f"bot {session}", session, "bot")
        except HubError:
            pass
    assert [store.get(f"student {s}") for s in range(30)] == list(range(30))
    store.put("alone", "mine", "home")  # a newcomer with one model takes a place from the address holding most
    assert store.get("alone") == "mine" and len(store) == 64
    for session in range(10):  # nobody with many takes the place of a visitor with one
        with pytest.raises(HubError, match="full"):
            store.check_room(f"bot again {session}", "bot")
    assert store.get("alone") == "mine"


def test_a_model_lasts_its_hour_from_training_however_often_it_is_used(monkeypatch):
    from hub import visitors

    now = [1000.0]
    monkeypatch.setattr(visitors.time, "monotonic", lambda: now[0])
    store = places(2)
    store.put("ada", "model", "10.0.0.1")
    for _ in range(10):
        now[0] += 600
        if now[0] - 1000 <= 3600:
            assert store.get("ada") == "model"  # using it does not extend it
    with pytest.raises(HubError, match="time is up"):
        store.get("ada")


# ---------------------------------------------------------------------------------------------------------
# 5. Every endpoint and MCP tool answers a good call; bad ones get messages naming the input


def test_numbers_and_files_get_messages_naming_the_input(public, tmp_path):
    _, url = public
    generate = ["Hi", 5, "sampling", 0.8, 50, 0.95, 1.0, 0]
    huge = json.loads("1" + "0" * 400)
    message = error_message(call(url, "generate", [generate[0], huge, *generate[2:]]))
    assert message.startswith("Max new tokens is far too large: a number of 401 digits")
    message = error_message(call(url, "generate", [generate[0], 0, *generate[2:]]))
    assert message.startswith("Max new tokens must be between 1 and") and "got 0" in message
    message = error_message(call(url, "generate", [*generate[:-1], 10**10]))
    assert "Seed" in message and "2147483647" in message and "e+" not in message
    for heads in ("\u00b9.\u00b9", "\u0661.\u0662", "1." + "9" * 5000):
        message = error_message(call(url, "ablate", [SENTENCE, "encoder", heads, 5]))
        assert message.startswith("Heads"), message
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(photo)
    uploaded = upload(url, photo)
    for wrong in (str(photo), "http://127.0.0.1:9/photo.png", [uploaded, uploaded], {"path": str(photo)}):
        message = error_message(call(url, "classify_image", [wrong, 5]))
        assert message.startswith("Photo") and "/gradio_api/upload" in message, message


GOOD_TOOL_CALLS = {
    "generate": ({"prompt": "Hello", "max_new_tokens": 3}, None),
    "fill_mask": ({"text": SENTENCE}, "confidences"),
    "classify_image": ({"image": "PHOTO"}, "confidences"),
    "vit_attention": ({"image": "PHOTO"}, "weights"),
    "vit_position_similarity": ({}, "similarity"),
    "zero_shot": ({"image": "PHOTO", "labels": "a cat, a dog"}, "a dog"),
    "zero_shot_matrix": ({"files": ["PHOTO", "PHOTO"], "labels": "a cat, a dog"}, "a cat"),
    "clip_relevance": ({"image": "PHOTO", "label": "a cat"}, None),
    "fine_tune": ({"epochs": 1}, "Done"),
    "fine_tune_predict": ({"text": "great"}, "confidences"),
    "fine_tune_attention": ({"text": "great"}, "tokens"),
    "text_to_image": ({"prompt": "a fox", "steps": 1, "width": 64, "height": 64}, None),
    "attention": ({"text": SENTENCE}, "tokens"),
    "ablate": ({"text": SENTENCE}, "before"),
    "layer_predictions": ({"text": SENTENCE}, "layers"),
    "positional_encoding": ({}, "matrix"),
    "word_order": ({}, "tokens_a"),
    "sequence_race": ({"length_max": 8, "steps": 10}, "cnn_receptive_field"),
    "scaling_law": ({}, "points"),
    "kv_cache": ({"text": "the cat sat on the mat", "new_tokens": 2}, "same_text"),
    "sparse_attention": (
        {"text": "the cat sat on the mat and", "pattern": "sliding_window", "window": 2},
        "perplexity",
    ),
    "quantize": ({"text": "the cat sat on the mat"}, "variants"),
    "attribution": ({"text": "the cat sat on the mat and", "steps": 4}, "scores"),
    "patching": ({"clean": "the cat sat on the mat and", "corrupted": "the dog sat on the mat and"}, "restored"),
    "induction": ({"length": 10}, "scores"),
    "branches": ({"prompt": "the cat sat", "temperatures": [0.0, 1.0], "max_new_tokens": 3}, "diverge_at"),
    # branch after "the cat" (the tiny tokenizer's tokens, as /branches lists them) with " the" instead of " sat"
    "continue_from": (
        {"prompt": "the cat sat", "prefix_tokens": ["t", "he", "Ġc", "at"], "alternative": "Ġthe", "max_new_tokens": 2},
        "tokens",
    ),
}


async def mcp_session(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def answer_text(result) -> str:
    return " ".join(getattr(item, "text", "") or item.type for item in result.content)


def test_every_mcp_tool_has_a_name_saying_what_it_does_and_answers_a_good_call(public):
    _, url = public
    photo = photo_data_uri()

    async def work(session):
        tools = (await session.list_tools()).tools
        missing = [tool.name for tool in tools if tool.name not in GOOD_TOOL_CALLS]
        assert not missing, f"add a good call for each new tool to GOOD_TOOL_CALLS: {missing}"
        answers = {}
        for tool in tools:
            arguments, expected = GOOD_TOOL_CALLS[tool.name]
            arguments = json.loads(json.dumps(arguments).replace('"PHOTO"', json.dumps(photo)))
            result = await session.call_tool(tool.name, arguments)
            answers[tool.name] = (result.isError, answer_text(result), expected)
        return answers

    answers = run(mcp_session(url, work))
    assert "text_to_image" in answers and not any(name.endswith(("_1", "_api", "_endpoint")) for name in answers)
    for name, (failed, text, expected) in answers.items():
        assert not failed, f"{name}: {text[:300]}"
        assert text.strip() and (expected is None or expected in text), f"{name}: {text[:300]}"


def test_each_mcp_session_is_its_own_visitor(public):
    _, url = public

    async def train(session):
        assert not (await session.call_tool("fine_tune", {"epochs": 1})).isError
        return answer_text(await session.call_tool("fine_tune_predict", {"text": "great"}))

    async def other(session):
        result = await session.call_tool("fine_tune_predict", {"text": "great"})
        return result.isError, answer_text(result)

    assert "confidences" in run(mcp_session(url, train))
    failed, text = run(mcp_session(url, other))
    assert failed and "no fine-tuned model" in text
