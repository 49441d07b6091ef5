"""A public Space answers every bad input with a message: each slot of every endpoint, sent each wrong JSON type,
NaN, the infinities and broken Unicode through Gradio's REST route, gets a clear message, never the generic error;
and a visitor's values quoted in a message are shown as text, never as markup."""

import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from .rest import error_message, rest_call, upload

GENERIC = "Something went wrong on the server"
NAN, INF = float("nan"), float("inf")
SENTENCE = "Paris is the [MASK] of France."

WRONG_NUMBERS = ["five", [], {"a": 1}, True, NAN, INF, -INF]
WRONG_TEXTS = [5, ["a"], {"a": 1}, True, "a lone surrogate \ud800 here"]
WRONG_BOOLS = ["yes", 1, None, [True]]
WRONG_CHOICES = [["x"], {"a": 1}, 3.5]
WRONG_FILES = ["abc", 5, {"path": 5}, [1, 2]]


def api_info(hub_url: str) -> dict:
    return json.load(urllib.request.urlopen(f"{hub_url}gradio_api/info"))["named_endpoints"]


def wrong_values(parameter: dict) -> list:
    component, python_type = parameter["component"], parameter["python_type"]["type"]
    if component in ("Slider", "Number") or python_type in ("int", "float"):
        return WRONG_NUMBERS
    if component in ("Image", "File"):
        return WRONG_FILES
    if component == "Checkbox":
        return WRONG_BOOLS
    if component in ("Radio", "Dropdown"):
        return WRONG_CHOICES
    return WRONG_TEXTS


@pytest.fixture(scope="module")
def valid_arguments(hub_url, tmp_path_factory):
    """A working argument list per endpoint: the parameters' defaults, an uploaded photo, a sentence with a mask."""
    photo = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(photo)
    photo_data = upload(hub_url, photo)
    arguments = {}
    for name, endpoint in api_info(hub_url).items():
        values = []
        for parameter in endpoint["parameters"]:
            if parameter["component"] == "Image":
                values.append(photo_data)
            elif parameter["component"] == "File" and "list" in parameter["python_type"]["type"]:
                values.append([photo_data])
            elif parameter["parameter_has_default"]:
                values.append(parameter["parameter_default"])
            else:
                values.append(SENTENCE)
        arguments[name.lstrip("/")] = values
    return arguments


def assert_clear(message: str | None, context: str) -> None:
    assert isinstance(message, str) and message.strip(), f"{context}: the generic error (no message)"
    assert GENERIC not in message, f"{context}: {message}"
    assert "Traceback" not in message and len(message) < 1_000, f"{context}: {message[:300]}"


def test_every_slot_of_every_endpoint_refuses_wrong_types_nan_and_broken_unicode(hub_url, valid_arguments):
    cases = []
    for name, parameters in api_info(hub_url).items():
        for slot, parameter in enumerate(parameters["parameters"]):
            for wrong in wrong_values(parameter):
                data = list(valid_arguments[name.lstrip("/")])
                data[slot] = wrong
                cases.append((name.lstrip("/"), data, f"{name} slot {slot} ({parameter['label']}) = {wrong!r}"))
    assert len(cases) > 150  # every endpoint, every slot

    def run_as_one_visitor(visitors_cases):
        session = uuid.uuid4().hex  # a kept session, as a page's: a new one per call would cost most of the time
        return [(context, rest_call(hub_url, name, data, session)) for name, data, context in visitors_cases]

    with ThreadPoolExecutor(4) as pool:  # four visitors at once, each within its fair share of jobs
        for answers in pool.map(run_as_one_visitor, [cases[i::4] for i in range(4)]):
            for context, answer in answers:
                assert "event: error" in answer, f"{context} was accepted: {answer[-200:]}"
                assert_clear(error_message(answer), context)


def test_too_few_arguments_get_a_message_naming_what_the_endpoint_takes(hub_url):
    message = error_message(rest_call(hub_url, "fill_mask", [SENTENCE]))
    assert "takes 2 input(s)" in message and "Predictions per mask" in message
    for name, endpoint in api_info(hub_url).items():
        if all(p["parameter_has_default"] for p in endpoint["parameters"]):
            continue  # nothing is missing
        assert_clear(error_message(rest_call(hub_url, name.lstrip("/"), [])), f"{name} with no arguments")


def test_a_visitors_markup_reaches_api_callers_as_plain_text_and_a_page_as_escaped_text(hub_url):
    markup = '<img src="http://127.0.0.1:9/tracker.png"> 1.1'
    message = error_message(rest_call(hub_url, "ablate", [SENTENCE, "encoder", markup, 5]))
    assert "<img" in message and "&lt;" not in message  # an API caller reads the message as it is
    # Gradio's own messages quote values too (a choice that does not exist): plain for callers as well
    message = error_message(rest_call(hub_url, "generate", ["Hi", 5, "<b>bold</b>", 0.8, 50, 0.95, 1.0, 0]))
    assert "<b>bold</b>" in message and "&lt;" not in message


def test_the_browser_shows_a_quoted_value_as_text_and_loads_nothing_from_it(page, hub_url):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{hub_url}?tab=attention")
    heads = page.get_by_label("Heads to switch off", exact=False)
    heads.scroll_into_view_if_needed()
    heads.fill('<img src="http://127.0.0.1:9/tracker.png" id="injected"> 1.1')
    compare = page.get_by_role("button", name="Compare", exact=True)
    compare.scroll_into_view_if_needed()
    compare.click()
    page.get_by_text('<img src="http://127.0.0.1:9/tracker.png"', exact=False).first.wait_for()
    assert page.locator("#injected").count() == 0
    assert not [url for url in requests if "tracker.png" in url]
