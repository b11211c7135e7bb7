"""The job queue: the ``JobQueue`` interface the submit and worker sides are wired through.

    JobQueue (Protocol)
    ├── MemoryQueue         memory.py         embedded: a bounded asyncio.Queue and tasks
    └── ProcrastinateQueue  procrastinate.py  scaled out: procrastinate on PostgreSQL

``make_queue`` picks the one that goes with the store: procrastinate on PostgreSQL (on the
store's own pool, its tables made by the store's migration), else the in-process queue.

A queue entry carries a job id and nothing else; the ``jobs`` table is the only record of
a job's status, progress and frames. The queue runs each job by handing its id to the
``Runner`` it was started with (the worker side), at most ``MAX_CONCURRENT_JOBS`` at once.
``cancel`` stops a job's run wherever it runs and returns once it has stopped (or after a
bounded wait); the caller writes the job's new status first, so the stopped run's own
writes are refused by the store's fence.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import Store

Runner = Callable[[str], Coroutine[Any, Any, None]]  # runs one job, by id, to its end


class Stop(StrEnum):
    """What ``JobQueue.cancel`` found."""

    NO_RUN = "no run"  # nothing runs the job (it waits, or has ended)
    STOPPED = "stopped"  # its run has ended
    STILL_RUNNING = "still running"  # asked to stop, it has not yet within the wait


class RunAgain(Exception):
    """Raised by a run that stopped because the database could not be reached: the queue
    runs the job again once the database answers (its next claim fences this run off)."""


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker: its name and when it last said it was alive (epoch seconds)."""

    name: str
    heartbeat: float
    running: int


class JobQueue(Protocol):
    """Where accepted jobs wait, and what runs them."""

    backend: str  # "memory" or "procrastinate", for /health and /metrics

    async def start(self, runner: Runner | None) -> None:
        """Open the queue; with a ``runner``, also run jobs (without one: enqueue only)."""
        ...

    async def enqueue(self, job_id: str, connection: Any = None) -> None:
        """Queue a job being recorded, inside the store's transaction (``connection``: the
        store's, as ``Store.create_job`` hands it over); ``Unavailable`` (503) when the
        queue is full, which undoes the job too."""
        ...

    async def cancel(self, job_id: str) -> Stop:
        """Stop the job's run, if it has one, and wait (bounded) until it has ended."""
        ...

    def running(self) -> list[str]:
        """Ids of the jobs this process runs now."""
        ...

    async def depth(self) -> int:
        """Jobs waiting to run."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (this process's pool, or every ``vfe worker``)."""
        ...

    def begin_shutdown(self) -> None:
        """Start no more jobs; running ones may finish within ``SHUTDOWN_GRACE_SECONDS``."""
        ...

    async def stop(self) -> None:
        """Stop every run (they go back to the queue) and close the queue."""
        ...


def make_queue(settings: Settings, store: Store, name: str = "worker") -> JobQueue:
    """The queue for ``store`` (call before the store opens: PostgreSQL's migration then
    also installs the queue's tables)."""
    if store.backend == "postgresql":  # checked by name: SQLite users never import psycopg
        from ..store.postgres import PostgresStore
        from .procrastinate import ProcrastinateQueue, install_schema

        assert isinstance(store, PostgresStore)
        store.extra_schema = install_schema
        return ProcrastinateQueue(
            store,
            settings.max_queue_size,
            settings.max_concurrent_jobs,
            settings.shutdown_grace_seconds,
            settings.stalled_after_seconds,
            name,
        )
    from .memory import MemoryQueue

    return MemoryQueue(
        settings.max_queue_size, settings.max_concurrent_jobs, settings.shutdown_grace_seconds
    )
