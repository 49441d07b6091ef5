"""hub.checks.check_text: a text reaches the model exactly as typed; only blank, too long or broken text is refused."""

import pytest

from hub.checks import check_text
from hub.errors import HubError


@pytest.mark.parametrize("text", ["Paris is the capital of ", "Dear diary,\n", "\tindented\n\n", "plain"])
def test_a_text_comes_back_exactly_as_typed(text):
    assert check_text(text, "Prompt") == text


@pytest.mark.parametrize("blank", ["", "   ", "\n\t \n", None])
def test_a_blank_text_is_refused_and_an_optional_one_is_no_text(blank):
    with pytest.raises(HubError, match="Prompt is empty"):
        check_text(blank, "Prompt")
    assert check_text(blank, "Negative prompt", allow_empty=True) == ""


def test_the_length_counts_every_character_typed():
    assert check_text("abc  ", "Text", max_chars=5) == "abc  "
    with pytest.raises(HubError, match="too long: 6 characters, at most 5"):
        check_text("abc   ", "Text", max_chars=5)


@pytest.mark.parametrize("value, message", [(3, "must be text"), (["a"], "must be text"), ("a\ud800", "not valid")])
def test_what_is_not_text_is_refused(value, message):
    with pytest.raises(HubError, match=message):
        check_text(value, "Text")
