"""Work that takes seconds, off the page's event loop: the one helper behind probe fits and sky fetches.

A ``JobRunner`` runs one job at a time for its owner (a newer submission cancels the one before: the user changed
their mind). The work gets ``progress(fraction, message)`` and a ``cancel`` event and may raise ``Cancelled``. What
the page must hear of it (progress, the result, the error) is handed back on the session's event loop, as a Bokeh
next-tick callback of the document that was current when the job was submitted, so those callbacks may change
widgets; outside a server (tests, notebooks without a session) they are called on the worker thread.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

Progress = Callable[[float, str], None]
PROGRESS_EVERY_S = 0.2   # at most five progress updates a second reach the page


class Cancelled(Exception):
    """Raised inside a job's loop when the job was cancelled."""


@dataclass
class Job:
    """A submitted job: its ``progress``/``message`` so far, ``cancel()`` it, or wait on ``future``."""

    future: Future
    cancel_event: threading.Event
    progress: float = 0.0
    message: str = "queued"

    def cancel(self) -> None:
        self.cancel_event.set()
        self.future.cancel()

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled() or (self.future.done() and isinstance(self.future.exception(), Cancelled))


def on_session_loop(doc, callback: Callable[[], None]) -> None:
    """Run ``callback`` on ``doc``'s event loop when it belongs to a live session, else now."""
    if doc is not None and getattr(doc, "session_context", None) is not None:
        doc.add_next_tick_callback(callback)
    else:
        callback()


def current_document():
    import panel as pn

    return pn.state.curdoc


class JobRunner:
    """Runs its owner's jobs one at a time on ``pool`` (default: a thread of its own named ``name``).

    ``submit(fn, *args, on_done=, on_error=, on_progress=, **kwargs)`` calls ``fn(*args, progress=..., cancel=...,
    **kwargs)`` on the pool; ``on_done(result)``, ``on_error(message)`` and ``on_progress(fraction, message)`` run on
    the session's event loop. A cancelled job calls none of them. ``torch_threads`` (off by default) calls
    ``torch.set_num_threads``, which is process-wide: for scripts, not for a server shared by sessions."""

    def __init__(self, name: str = "job", pool: ThreadPoolExecutor | None = None, torch_threads: int | None = None):
        self._own_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._torch_threads = torch_threads
        self.current: Job | None = None

    def submit(self, fn: Callable, *args, on_done: Callable | None = None, on_error: Callable[[str], None] | None = None,
               on_progress: Progress | None = None, **kwargs) -> Job:
        if self.current is not None and not self.current.done:
            self.current.cancel()
        job = Job(Future(), threading.Event())
        doc = current_document()
        last = [0.0]

        def report(fraction: float, message: str) -> None:
            job.progress, job.message = float(fraction), message
            now = time.monotonic()
            if on_progress is not None and (now - last[0] >= PROGRESS_EVERY_S or fraction >= 1):
                last[0] = now
                on_session_loop(doc, lambda: on_progress(float(fraction), message))

        def work():
            if self._torch_threads:
                import torch

                torch.set_num_threads(self._torch_threads)
            if job.cancel_event.is_set():
                raise Cancelled()
            return fn(*args, progress=report, cancel=job.cancel_event, **kwargs)

        def finished(future: Future) -> None:
            if job.cancelled:
                return
            error = future.exception()
            if error is None and on_done is not None:
                on_session_loop(doc, lambda: on_done(future.result()))
            elif error is not None and on_error is not None:
                on_session_loop(doc, lambda: on_error(str(error) or type(error).__name__))

        job.future = self._pool.submit(work)
        job.future.add_done_callback(finished)
        self.current = job
        return job

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.cancel()
        if self._own_pool:
            self._pool.shutdown(wait=True)
