"""The load test's own machinery, small: a few visitors at once on the served hub, every answer checked against
the core, and the answer checks themselves refuse wrong answers (so "answered" means answered right)."""

import pytest

from bench.bench_load import measure_levels, percentile, run_load
from bench.load_endpoints import ENDPOINTS, MASKED, check_attention, check_label, check_stream
from demos.language.fill_mask import fill_mask


def test_three_visitors_at_once_all_get_the_core_answer(hub_url, store, tmp_path):
    result = run_load(
        hub_url, ENDPOINTS["fill_mask"], visitors=3, requests=2, deadline_s=60, download_dir=str(tmp_path)
    )
    assert [outcome.kind for outcome in result.outcomes] == ["answer"] * 6, result.messages()
    expected = fill_mask(store.get("fill-mask"), MASKED, 5).predictions[0]
    for outcome in result.outcomes:
        got = {c["label"]: c["confidence"] for c in outcome.answer["confidences"]}
        assert got == pytest.approx(expected, rel=1e-5)  # no answer changes because of its neighbours
    assert 0 < result.latencies[0] <= percentile(result.latencies, 0.95) <= result.seconds
    assert result.requests_per_s == pytest.approx(6 / result.seconds)
    assert 100 < result.rss_mb[0] < 100_000  # MiB of a process that holds torch and the tiny models


def test_each_level_of_visitors_is_compared_with_one_visitor_alone(hub_url, tmp_path):
    measured = measure_levels(
        hub_url, ENDPOINTS["fill_mask"], [1, 3], requests=6, deadline_s=60, download_dir=str(tmp_path)
    )
    (alone, alone_row), (three, three_row) = measured
    assert (alone.visitors, alone.requests, three.visitors, three.requests) == (1, 6, 3, 2)  # 6 requests each level
    assert alone_row["answers"] == three_row["answers"] == 6 and alone_row["x one visitor"] == "1.00"
    assert float(three_row["x one visitor"]) == pytest.approx(three.requests_per_s / alone.requests_per_s, abs=0.01)
    assert float(three_row["p50 s"]) == pytest.approx(percentile(three.latencies, 0.5), abs=0.01)


def test_the_checks_refuse_wrong_answers():
    right = {"label": "a", "confidences": [{"label": "a", "confidence": 0.6}, {"label": "b", "confidence": 0.3}]}
    assert check_label(right, 2) is None
    assert "outside [0, 1]" in check_label({**right, "confidences": [{"label": "a", "confidence": 1.5}]})
    assert "2 labels, expected 5" in check_label(right, 5)
    assert "not the most likely" in check_label({**right, "label": "b"})
    assert check_stream(["The", "The cat", "The cat sat"]) is None
    assert "not a continuation" in check_stream(["The cat", "A dog"])
    assert check_attention({"tokens": ["a", "b"], "weights": [[1.0, 0.0], [0.5, 0.5]]}) is None
    assert "probability distribution" in check_attention({"tokens": ["a", "b"], "weights": [[1.0, 0.0], [0.7, 0.7]]})


def test_only_loopback_is_ever_a_target():
    with pytest.raises(ValueError, match="only calls 127.0.0.1"):
        run_load("http://10.0.0.1:7860/", ENDPOINTS["fill_mask"], visitors=1, requests=1, deadline_s=1)
