"""Generation requests, one at a time: a queue with one worker thread, cancellation and abandoned-tab cleanup.

The generator is one model on one device; two requests drawn at once would only share the cores and double the
memory, so they wait in line (`position`) and the worker draws them in order. A full queue refuses a new request
with a one-line "busy" (HTTP 503) instead of growing without bound.

A request stops early when its page asks (`cancel`: the Cancel button, or the beacon a closing tab sends) or when
no page has asked about it for `abandon_s` seconds (the tab was closed or the machine slept without a beacon):
the worker checks after every sampler step (the generator's progress callback) and between samples, so a
long video stops within one step. Finished requests keep their files in a folder of the server's temporary
directory until `keep` newer ones have finished.
"""
from __future__ import annotations

import secrets
import shutil
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sg2video.errors import UserError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class JobCancelled(Exception):
    """Raised inside the generator's progress callback to stop a request that nobody waits for any more."""


class QueueFull(UserError):
    pass


@dataclass
class Job:
    id: str
    request: Any
    folder: Path
    state: str = QUEUED
    progress: tuple[int, int] = (0, 0)
    stage: str = ""
    error: str = ""
    result: dict | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    seen: float = field(default_factory=time.monotonic)
    started: float = 0.0
    seconds: float = 0.0


class JobQueue:
    def __init__(self, run: Callable[["Job", "JobQueue"], dict], root: Path, max_queue: int, keep: int,
                 abandon_s: float) -> None:
        self.run, self.root = run, Path(root)
        self.max_queue, self.keep, self.abandon_s = max_queue, keep, abandon_s
        self.jobs: OrderedDict[str, Job] = OrderedDict()  # every known job, oldest first
        self.waiting: list[Job] = []
        self.lock = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="sg2video-generate", daemon=True)
        self.worker.start()

    # -- what the HTTP handlers call ---------------------------------------------------------------------

    def submit(self, request: Any) -> Job:
        with self.lock:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the server is busy: {len(self.waiting)} requests are waiting (at most "
                                f"max_queue={self.max_queue}); try again when one is done")
            job_id = secrets.token_hex(8)  # unguessable: only the page that asked can follow or cancel it
            job = Job(job_id, request, self.root / job_id)
            self.jobs[job_id] = job
            self.waiting.append(job)
            self.lock.notify_all()
            return job

    def get(self, job_id: str, touch: bool = True) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None and touch:
                job.seen = time.monotonic()
            return job

    def position(self, job: Job) -> int:
        """Requests ahead of this one (the one being drawn included); 0 once it runs."""
        with self.lock:
            if job.state != QUEUED:
                return 0
            running = any(j.state == RUNNING for j in self.jobs.values())
            return self.waiting.index(job) + int(running) if job in self.waiting else 0

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            job.cancel.set()
            if job in self.waiting:  # never started: it ends now
                self.waiting.remove(job)
                job.state, job.error = CANCELLED, "cancelled before it started"
                self._forget_old()
            return job

    def check(self, job: Job) -> None:
        """Stop `job` here if it was cancelled or abandoned (the worker calls this between steps)."""
        if job.cancel.is_set():
            raise JobCancelled("cancelled")
        if time.monotonic() - job.seen > self.abandon_s:
            raise JobCancelled(f"abandoned: no page asked about it for {self.abandon_s:g} s (its tab was closed)")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for job in self.jobs.values():
                job.cancel.set()
            self.lock.notify_all()
        self.worker.join(timeout=30)

    # -- the worker -------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                job = self.waiting.pop(0)
                job.state, job.started = RUNNING, time.monotonic()
            state, result, error = DONE, None, ""
            try:
                self.check(job)
                job.folder.mkdir(parents=True, exist_ok=True)
                result = self.run(job, self)
            except JobCancelled as err:
                state, error = CANCELLED, str(err)
            except UserError as err:  # what the checks before the queue cannot know (a model that refuses)
                state, error = FAILED, " ".join(str(err).split())
            except Exception as err:  # a bug: the page gets one line, the server's terminal the traceback
                traceback.print_exc(file=sys.stderr)
                state, error = FAILED, f"internal error: {type(err).__name__}: {' '.join(str(err).split())}"[:300]
            with self.lock:
                job.state, job.result, job.error = state, result, error
                job.seconds = time.monotonic() - job.started
                if state != DONE:
                    shutil.rmtree(job.folder, ignore_errors=True)
                self._forget_old()

    def _forget_old(self) -> None:
        """Keep the newest `keep` finished jobs (and their files); the caller holds the lock."""
        finished = [j for j in self.jobs.values() if j.state in FINISHED]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)
