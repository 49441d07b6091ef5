"""The model thread: the one thread of the process that runs torch. Handlers hand it work and wait for the result;
long jobs hand it one step at a time, so a short request waits at most one step of someone's training or diffusion.

    logits = model_thread.run(model, input_ids)        # blocks, returns the result or raises the error
    for run in model_thread.steps(train(...)):         # each step of a generator runs on the model thread
        show(run)

Why one thread: PyPI's torch parallelises with libgomp, which stops spinning at its barriers once more threads
than cores have run parallel torch work; every parallel region then pays a futex wake-up. On 2 cores GPT-2 generates
~40% slower from a second thread (and the first is slow too while the second lives). Torch run from request threads,
a thread per job or a batcher's thread pays that on every forward pass; one thread that runs it all does not.

Work runs in the order it was handed in. A long blocking library call (a diffusion pipeline) calls `serve_waiting()`
between its steps, which runs the work handed in meanwhile. Calls from the model thread itself run at once.

At exit (Ctrl+C) the thread is closed first: work not yet started is refused and a long call stops at its next step,
so the server does not wait for a visitor's job to end, and torch is not inside a call when Python tears down (libgomp
then aborts the process: "terminate called without an active exception").
"""

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

Result = TypeVar("Result")
Item = TypeVar("Item")

NAME = "model-thread"

_Task = tuple[contextvars.Context, Callable[..., Any], tuple, dict, Future]
_tasks: "queue.SimpleQueue[_Task | None]" = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()
_closing = threading.Event()
_closing_lock = threading.Lock()  # nothing is handed in after _STOP
_STOP = None  # handed in by `close`: the thread ends when it reaches it


class ModelThreadClosed(RuntimeError):
    """Raised to work handed in after `close`, and inside a long call that serves the waiting work."""

    def __init__(self) -> None:
        super().__init__("The server is shutting down.")


def is_model_thread() -> bool:
    """True in the model thread (where `run` calls its function at once)."""
    return _thread is not None and threading.current_thread() is _thread


def submit(fn: Callable[..., Result], *args: Any, **kwargs: Any) -> "Future[Result]":
    """Hand `fn(*args, **kwargs)` to the model thread without waiting; it runs with the caller's context variables
    (Gradio's request context: gr.Warning and gr.Progress work there)."""
    done: Future = Future()
    with _closing_lock:
        if _closing.is_set():
            done.set_exception(ModelThreadClosed())
            return done
        _tasks.put((contextvars.copy_context(), fn, args, kwargs, done))
    _start()
    return done


def run(fn: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """`fn(*args, **kwargs)` run on the model thread: blocks until it has run, returns its result, raises its error."""
    if is_model_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()


def steps(iterable: Iterable[Item]) -> Iterator[Item]:
    """The items of `iterable`, each computed on the model thread: a job's steps (a training step, a token) with
    other visitors' work in between. Closing this iterator closes `iterable` on the model thread, without waiting
    (Gradio closes a cancelled handler on its event loop, which must not wait for someone's step)."""
    iterator = run(iter, iterable)
    try:
        while True:
            try:
                item = run(next, iterator)
            except StopIteration:
                return
            yield item
    finally:
        if hasattr(iterator, "close"):
            submit(iterator.close) if not is_model_thread() else iterator.close()


def serve_waiting() -> None:
    """Run the work handed in so far, from inside a long call on the model thread (a diffusion step's callback),
    so that others wait for one step of it, not for all of it. Work handed in while this runs waits for the next."""
    if not is_model_thread():
        return
    if _closing.is_set():
        raise ModelThreadClosed()
    # The long call may run without gradients (a pipeline's no_grad, inference_mode): the work served here runs as
    # it would on its own (a training step needs them).
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(_tasks.qsize()):
            try:
                task = _tasks.get_nowait()
            except queue.Empty:
                return
            if task is _STOP:
                _tasks.put(_STOP)  # for the loop in _serve, once the long call has stopped
                raise ModelThreadClosed()
            _execute(task)


def _execute(task: _Task) -> None:
    context, fn, args, kwargs, done = task
    if not done.set_running_or_notify_cancel():
        return
    if _closing.is_set():
        done.set_exception(ModelThreadClosed())
        return
    try:
        result = context.run(fn, *args, **kwargs)
    except BaseException as error:  # handed to the caller, which raises it in its own thread
        done.set_exception(error)
    else:
        done.set_result(result)


def _serve() -> None:
    while (task := _tasks.get()) is not _STOP:
        _execute(task)


def close(timeout_s: float = 10.0) -> None:
    """Refuse the work not yet started, stop a long call at its next `serve_waiting`, and wait (at most `timeout_s`)
    for the step that is running to end and the thread with it. Runs at exit."""
    with _closing_lock:
        _closing.set()
        _tasks.put(_STOP)
    if _thread is not None and not is_model_thread():
        _thread.join(timeout_s)


def _start() -> None:
    global _thread
    if _thread is not None:
        return
    with _start_lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name=NAME, daemon=True)  # set first: is_model_thread reads it
            _thread.start()
            # Before Python waits for the other threads (Gradio's workers, which may be waiting for a step here), as
            # concurrent.futures closes its pools: a plain atexit handler would run after that wait.
            threading._register_atexit(close)


OFF = "off_model_thread"  # the attribute hub.ui.show_errors reads


def off_model_thread(handler: Callable[..., Result]) -> Callable[..., Result]:
    """Mark a handler that runs in Gradio's worker thread, not on the model thread (hub.ui.show_errors reads the
    mark): one that hands its torch work to the model thread itself and waits for it (a micro-batcher, a job's
    reader), which on the model thread would wait for itself, or a Stop button, which must not wait behind
    someone's step. Every other handler runs on the model thread."""
    setattr(handler, OFF, True)
    return handler
