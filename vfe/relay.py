"""Job events across processes: PostgreSQL NOTIFY out, LISTEN in, the local bus between.

In the scaled-out layout a job runs on one worker while its SSE clients are on any API
replica. Every event a process publishes on its ``EventBus`` is also sent, in order, as
a small NOTIFY on ``CHANNEL``: the job id, the kind, the frame's file name for ``frame``
events and the sending process, well under PostgreSQL's 8,000-byte limit. Each process
listens on one connection of its own; for each event of another process it drops the
job's cached state and loads the state the event speaks of from the store, and delivers
that to its local subscribers, so readers always see the stored truth. Progress events
are already throttled to about one a second per job by the worker side.

Events are hints, not records: while PostgreSQL is away they are dropped (a client that
reconnects is sent the stored state first), and both loops start again when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from .events import TERMINAL_EVENTS, Event, EventBus
from .store.postgres import PostgresStore
from .views import Deleted, FrameView, JobView

log = logging.getLogger("vfe.events")

CHANNEL = "vfe_events"
OUTBOX = 10_000  # events waiting to be sent; beyond it the oldest progress is lost
BATCH = 200  # NOTIFYs sent in one round trip at most
RECONNECT = (0.2, 5.0)  # first and longest pause before listening again


class PgRelay:
    """Sends this process's job events to the others, and delivers theirs here."""

    def __init__(
        self,
        store: PostgresStore,
        bus: EventBus,
        invalidate: Callable[[str], Awaitable[None]],
    ) -> None:
        self.store = store
        self.bus = bus
        self.invalidate = invalidate
        self.origin = uuid.uuid4().hex[:12]
        self.outbox: asyncio.Queue[Event] = asyncio.Queue(OUTBOX)
        self.listening = asyncio.Event()  # set while LISTEN is in place
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, listen: bool = True) -> None:
        self.bus.relay = self.send
        self._tasks.append(asyncio.create_task(self._send_loop(), name="vfe-relay-out"))
        if listen:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="vfe-relay-in"))

    async def stop(self) -> None:
        self.bus.relay = None
        with contextlib.suppress(TimeoutError):  # what is queued goes out, for a moment
            async with asyncio.timeout(1.0):
                await self.outbox.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def send(self, event: Event) -> None:
        """Queue ``event`` to be sent (called by the bus on every publish)."""
        if self.outbox.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.outbox.get_nowait()
                self.outbox.task_done()
        self.outbox.put_nowait(event)

    def _payload(self, event: Event) -> str:
        note: dict[str, Any] = {"o": self.origin, "k": event.type, "j": event.job_id}
        if event.type == "frame":
            note["f"] = event.data.get("filename")
        return json.dumps(note, separators=(",", ":"))

    async def _send_loop(self) -> None:
        while True:
            batch = [await self.outbox.get()]
            while len(batch) < BATCH and not self.outbox.empty():
                batch.append(self.outbox.get_nowait())
            try:
                async with self.store.pool.connection() as conn:
                    for event in batch:
                        note = self._payload(event)
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, note))
            except Exception as exc:  # the database is away: these hints are lost
                log.debug("could not send %d events: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self.outbox.task_done()

    async def _listen_loop(self) -> None:
        pause = RECONNECT[0]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.store.url, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    pause = RECONNECT[0]
                    async for note in conn.notifies():
                        await self._receive(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("listening for events stopped (%s); trying again", exc)
            self.listening.clear()
            await asyncio.sleep(pause)
            pause = min(RECONNECT[1], pause * 2)

    async def _receive(self, payload: str) -> None:
        try:
            note = json.loads(payload)
            origin, kind, job_id = note["o"], note["k"], note["j"]
        except (ValueError, KeyError, TypeError):
            return  # not ours
        if origin == self.origin:
            return  # delivered here when it was published
        try:
            await self.invalidate(job_id)
            event = await self._load(kind, job_id, note.get("f"))
        except Exception as exc:  # the store is away: this hint is lost
            log.debug("could not load the state of a %s event: %s", kind, exc)
            return
        if event is not None:
            self.bus.deliver(event)

    async def _load(self, kind: str, job_id: str, filename: str | None) -> Event | None:
        """The event as its publisher made it, from the stored state; None when that
        state is gone (a later delete)."""
        if kind == "deleted":
            return Event(kind, job_id, Deleted(job_id=job_id).model_dump())
        if kind == "frame":
            frame = await self.store.get_frame(job_id, filename or "")
            if frame is None:
                return None
            return Event(kind, job_id, FrameView.of(frame).model_dump(mode="json"))
        job = await self.store.get_job(job_id)
        if job is None:  # deleted since: a job's last event must still end its streams
            status = {"done": "completed"}.get(kind, kind)
            gone = {"job_id": job_id, "status": status}
            return Event(kind, job_id, gone) if kind in TERMINAL_EVENTS else None
        return Event(kind, job_id, JobView.of(job, time.time()).model_dump(mode="json"))
