"""Visitors generating at the same time share decode steps (hub.continuous_batching), and each gets the tokens that
transformers' own `generate` gives them alone: greedy equals plain `generate`, a seed equals `set_seed` + `generate`."""

import threading
import time

import pytest
import torch
from transformers import set_seed

from demos.language.text_generation import GenerationSettings, generate_stream, load_text_generator
from hub import model_thread
from hub.continuous_batching import batcher_for

# Prompts of different lengths: the shorter ones are padded in the shared steps.
PROMPTS = [
    "The cat sat on the mat while",
    "Once upon a time",
    "A",
    "Attention is all you need because the model reads every token at once and",
]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return load_text_generator(str(tiny_model_dir("text-generation")))


def alone(generator, prompt: str, settings: GenerationSettings) -> list[int]:
    """What transformers' generate gives for this prompt and these settings, with nobody else around."""
    ids = generator.tokenizer(prompt, return_tensors="pt").input_ids
    set_seed(settings.seed)
    with torch.inference_mode():
        output = generator.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            pad_token_id=generator.tokenizer.eos_token_id,
            **settings.generate_kwargs(),
        )
    return output[0, ids.shape[1] :].tolist()


def together(generator, prompts: list[str], settings: list[GenerationSettings]) -> list[list[int]]:
    """Each prompt streamed from its own thread, all started at once (as visitors' handlers are)."""
    start, results = threading.Barrier(len(prompts)), [None] * len(prompts)

    def visitor(n: int) -> None:
        start.wait()
        *_, last = generate_stream(generator, prompts[n], settings[n], update_every_s=0.01)
        results[n] = last.new_ids

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def shared_steps(generator) -> int:
    """Decode steps so far that ran more than one visitor's sequence."""
    return sum(count for rows, count in batcher_for(generator.model).step_sizes.items() if rows > 1)


def test_four_greedy_streams_at_once_each_equal_plain_generate(generator):
    settings = [GenerationSettings(max_new_tokens=24 + 4 * n, decoding="greedy") for n in range(4)]
    before = shared_steps(generator)
    streamed = together(generator, PROMPTS, settings)
    assert shared_steps(generator) > before  # they did share decode steps
    for prompt, setting, ids in zip(PROMPTS, settings, streamed):
        assert ids == alone(generator, prompt, setting)


def test_prompts_of_different_lengths_read_in_one_pass_each_equal_plain_generate(generator):
    """Visitors who arrive during someone's step join at the next one: their prompts, padded to the longest, are read
    in one forward pass, and each still gets what `generate` gives it alone."""
    settings = [GenerationSettings(max_new_tokens=20, decoding="greedy")] * 3 + [
        GenerationSettings(max_new_tokens=20, temperature=1.2, seed=7)
    ]
    reads = batcher_for(generator.model).prompt_reads
    before = reads.get(4, 0)
    hold = threading.Event()
    model_thread.submit(hold.wait, 30)  # the model thread is busy (someone's step) while the four arrive
    results = []
    visitors = threading.Thread(target=lambda: results.append(together(generator, PROMPTS, settings)))
    visitors.start()
    time.sleep(0.5)  # all four are waiting to join
    hold.set()
    visitors.join(timeout=120)
    assert reads.get(4, 0) == before + 1  # one forward pass read all four prompts
    assert results[0] == [alone(generator, prompt, setting) for prompt, setting in zip(PROMPTS, settings)]


def test_sampled_streams_at_once_each_equal_their_seeded_run_alone(generator):
    settings = [
        GenerationSettings(max_new_tokens=30, temperature=1.3, top_k=0, top_p=1.0, seed=1),
        GenerationSettings(max_new_tokens=30, temperature=0.7, top_k=20, top_p=0.9, seed=2),
        GenerationSettings(max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.5, seed=3),
        GenerationSettings(max_new_tokens=12, decoding="greedy", repetition_penalty=1.3),
    ]
    streamed = together(generator, PROMPTS, settings)
    expected = [alone(generator, prompt, setting) for prompt, setting in zip(PROMPTS, settings)]
    assert streamed == expected
    assert len({tuple(ids) for ids in streamed}) == 4  # different settings, different texts: the test can fail


def test_a_visitor_who_stops_leaves_the_others_unchanged(generator):
    stop, first = threading.Event(), {}
    longest = GenerationSettings(max_new_tokens=200, decoding="greedy")

    def first_visitor() -> None:
        *_, first["last"] = generate_stream(generator, PROMPTS[0], longest, stop, update_every_s=0.001)

    running = threading.Thread(target=first_visitor)
    running.start()
    short = GenerationSettings(max_new_tokens=30, decoding="greedy")
    others = together(generator, PROMPTS[1:3], [short, short])  # they join the first visitor's steps
    stop.set()
    running.join(timeout=60)
    stopped = first["last"]
    assert stopped.stopped == "stop" and 0 < len(stopped.new_ids) < 200
    assert stopped.new_ids == alone(generator, PROMPTS[0], longest)[: len(stopped.new_ids)]
    assert others == [alone(generator, prompt, short) for prompt in PROMPTS[1:3]]
