"""Per-job and global event fan-out.

Workers ``publish`` events; each SSE stream holds a ``Subscription`` to one job or to all
jobs. A subscription buffers up to ``maxlen`` events; a subscriber too slow to keep up
loses its oldest events, never the newest (the final event of a job always arrives).
The latest state is replayed by the SSE layer from the store, not from here, so a
subscriber that connects late still starts from the truth.

The bus serves one process. In the scaled-out layout ``relay.PgRelay`` sets ``relay``:
every published event is also handed to it (to go out as a PostgreSQL NOTIFY), and the
events of other processes come back in through ``deliver``, which reaches only this
process's subscribers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

TERMINAL_EVENTS = ("done", "failed", "cancelled")  # a job's last event, in this order


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job: ``type`` is the SSE event name."""

    type: str
    job_id: str
    data: dict[str, Any] = field(default_factory=dict)


class Subscription:
    """A bounded mailbox of events; iterate it to receive them until it is closed."""

    def __init__(self, bus: EventBus, job_id: str | None, maxlen: int) -> None:
        self.job_id = job_id
        self._bus = bus
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._wakeup = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """End the stream: the iterator stops once the buffered events are read."""
        self.closed = True
        self._wakeup.set()
        self._bus.discard(self)

    async def get(self) -> Event | None:
        """Wait for the next event; None once the subscription is closed and drained."""
        while not self._events:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._events.popleft()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event


class EventBus:
    """In-process fan-out of job events to subscriptions."""

    def __init__(self, maxlen: int = 1000) -> None:
        self.maxlen = maxlen
        self._subs: set[Subscription] = set()
        self.closed = False
        self.relay: Callable[[Event], None] | None = None  # other processes' share

    def subscribe(self, job_id: str | None = None) -> Subscription:
        """Subscribe to one job's events, or to every job's with ``job_id=None``."""
        sub = Subscription(self, job_id, self.maxlen)
        if self.closed:
            sub.closed = True
        else:
            self._subs.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` here and hand it to the relay, if any."""
        self.deliver(event)
        if self.relay is not None:
            self.relay(event)

    def deliver(self, event: Event) -> None:
        """Deliver ``event`` to this process's subscribers only."""
        for sub in list(self._subs):
            if sub.job_id is None or sub.job_id == event.job_id:
                sub.push(event)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """Close every subscription (shutdown): open streams end after their backlog."""
        self.closed = True
        for sub in list(self._subs):
            sub.close()
