"""The model thread (hub.model_thread): all torch work of the hub runs on it. First the thread itself, then a session
that calls every endpoint of every tab while a global forward hook records which threads run the models."""

import contextvars
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from gradio_client import handle_file

from hub import model_thread
from tests.image_samples import photo


def where() -> str:
    return threading.current_thread().name


def test_run_hands_back_the_result_or_the_error_from_the_model_thread():
    assert model_thread.run(where) == model_thread.NAME != where()
    with pytest.raises(ZeroDivisionError):
        model_thread.run(lambda: 1 / 0)
    assert model_thread.run(lambda: model_thread.run(where)) == model_thread.NAME  # from itself: at once, no wait


def test_work_runs_with_the_callers_context_variables():
    visitor = contextvars.ContextVar("visitor", default=None)
    visitor.set("ada")  # Gradio keeps its request (for gr.Warning, gr.Progress) in context variables
    assert model_thread.run(visitor.get) == "ada"


def test_a_jobs_steps_run_on_the_model_thread_with_others_work_between_them():
    order = []

    def training():
        for step in range(3):
            order.append((f"step {step}", where()))
            if step == 0:  # someone's short request arrives during the first step
                model_thread.submit(lambda: order.append(("short request", where())))
            yield step

    assert list(model_thread.steps(training())) == [0, 1, 2]
    assert [what for what, _ in order] == ["step 0", "short request", "step 1", "step 2"]
    assert {thread for _, thread in order} == {model_thread.NAME}


def test_a_long_call_serves_the_waiting_work_between_its_steps_with_gradients_on():
    served = []

    def pipeline():  # a library call that runs all its steps at once, with a callback after each
        with torch.inference_mode():
            for step in range(3):
                if step == 0:
                    request = lambda: served.append(("request, gradients on:", torch.is_grad_enabled()))  # noqa: E731
                    threading.Thread(target=model_thread.run, args=(request,)).start()
                    time.sleep(0.2)  # the request is handed in during this step
                model_thread.serve_waiting()
                served.append(f"step {step}")

    model_thread.run(pipeline)
    assert served[:2] == [
        ("request, gradients on:", True),
        "step 0",
    ]  # it waited for one step, not three, and ran as it would alone


def test_closing_a_stream_of_steps_does_not_wait_for_the_model_thread():
    def steps():
        yield 1
        yield 2

    stream = model_thread.steps(steps())
    assert next(stream) == 1
    busy = model_thread.submit(time.sleep, 0.5)  # someone's long step is running
    started = time.monotonic()
    stream.close()  # what Gradio does on its event loop when a visitor cancels
    assert time.monotonic() - started < 0.3
    busy.result()


EXIT_DURING_A_JOB = """
import sys, threading, torch
from hub import model_thread

def endless_steps():  # a visitor's job that nobody stops
    a = torch.randn(300, 300)
    while True:
        a = torch.tanh(a @ a)
        yield float(a[0, 0])

def endless_long_call():  # a diffusion pipeline's call, serving the waiting work between its steps
    a = torch.randn(300, 300)
    while True:
        a = torch.tanh(a @ a)
        model_thread.serve_waiting()

def reader():  # a Gradio worker thread reading the job: not a daemon, so Python waits for it at exit
    try:
        for step in model_thread.steps(endless_steps()):
            pass
    except model_thread.ModelThreadClosed as error:
        print("reader:", error, flush=True)

if sys.argv[1] == "long call":
    model_thread.submit(endless_long_call)
threading.Thread(target=reader).start()
model_thread.run(torch.ones, 1)  # the model thread has started: the main thread ends, as after Ctrl+C
"""


@pytest.mark.parametrize("running", ["steps", "long call"])
def test_at_exit_the_model_thread_refuses_new_work_and_stops_a_long_call(tmp_path, running):
    script = tmp_path / "exit_during_a_job.py"
    script.write_text(EXIT_DURING_A_JOB)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    # Without `close` at exit Python waits for the reader forever (the timeout fails the test), or libgomp aborts.
    done = subprocess.run([sys.executable, str(script), running], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reader: The server is shutting down." in done.stdout
    assert "terminate called" not in done.stderr


# --- a session of every tab --------------------------------------------------------------------------------

TEXT = "The cat sat on the [MASK] because it was tired."
# Values for the inputs an endpoint has no default for, by name; and smaller settings where the defaults are slow.
REQUIRED = {
    "text": TEXT,
    "label": "a cat",
    "clean": "the cat sat on the mat and",
    "corrupted": "the dog sat on the mat and",  # as many tokens as the clean prompt, in the tiny tokenizer too
    "prompt": "the cat sat",
}
CHEAPER = {
    "/generate": {"max_new_tokens": 8},
    "/fine_tune": {"epochs": 1},
    "/text_to_image": {"width": 64, "height": 64},
    "/sequence_race": {"length_max": 8, "steps": 10},
    "/kv_cache": {"new_tokens": 2},
    "/attribution": {"steps": 4},
    "/induction": {"length": 10},
    "/branches": {"max_new_tokens": 3},
    # a branch after "the cat", in the tiny tokenizer's tokens as /branches lists them
    "/continue_from": {"prefix_tokens": ["t", "he", "Ġc", "at"], "alternative": "Ġthe", "max_new_tokens": 2},
}


@pytest.fixture
def threads_running_models():
    """The names of the threads that run any torch module's forward pass while the test runs, with a count."""
    seen: Counter[str] = Counter()
    hook = torch.nn.modules.module.register_module_forward_pre_hook(lambda *_: seen.update([where()]))
    yield seen
    hook.remove()


def test_every_tab_runs_its_models_on_the_model_thread_only(client, tmp_path, threads_running_models):
    torch.nn.Linear(2, 2)(torch.ones(2))  # the hook sees this thread's forward: the check below can fail
    assert threads_running_models == {where(): 1}
    threads_running_models.clear()

    picture = tmp_path / "cat.png"
    photo().save(picture)
    values = {**REQUIRED, "image": handle_file(str(picture)), "files": [handle_file(str(picture))]}
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert len(endpoints) > 10
    for name, endpoint in endpoints.items():
        arguments = dict(CHEAPER.get(name, {}))
        for parameter in endpoint["parameters"]:
            key = parameter["parameter_name"]
            if not parameter["parameter_has_default"] and key not in arguments:
                assert key in values, f"{name}: give a value for its input {key!r} in REQUIRED"
                arguments[key] = values[key]
        client.predict(**arguments, api_name=name)

    assert threads_running_models.total() > 50  # the models did run
    assert set(threads_running_models) == {model_thread.NAME}, threads_running_models


def test_models_load_on_the_model_thread(tiny_settings):
    import dataclasses

    from demos.language.fill_mask import DEMO
    from hub.models import ModelStore

    loaded_in = []

    def load(*args):
        loaded_in.append(where())
        return DEMO.load(*args)

    store = ModelStore(tiny_settings, [dataclasses.replace(DEMO, load=load)])  # a store of its own: a first load
    assert store.get(DEMO.id) is store.get(DEMO.id)
    assert loaded_in == [model_thread.NAME]


def test_a_micro_batch_runs_on_the_model_thread():
    from hub.batching import MicroBatcher

    batcher = MicroBatcher(lambda items: [where() for _ in items])
    assert batcher("a request") == model_thread.NAME
