"""EventBus and Subscription: fan-out, bounded buffers, and closing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from vfe.events import TERMINAL_EVENTS, Event, EventBus, Subscription


async def drain(sub: Subscription) -> list[Event]:
    """Every event left in a closed subscription (the iterator ends by itself)."""
    return [event async for event in sub]


def progress(job_id: str, n: int) -> Event:
    return Event("progress", job_id, {"n": n})


async def test_per_job_subscription_gets_only_its_job() -> None:
    bus = EventBus()
    sub_a = bus.subscribe("a")
    sub_b = bus.subscribe("b")
    bus.publish(progress("a", 1))
    bus.publish(progress("b", 2))
    bus.publish(progress("a", 3))
    bus.close()
    assert [e.data["n"] for e in await drain(sub_a)] == [1, 3]
    assert [(e.job_id, e.data["n"]) for e in await drain(sub_b)] == [("b", 2)]


async def test_global_subscription_gets_every_job_in_order() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    assert everything.job_id is None
    events = [progress("a", 1), Event("done", "b"), progress("c", 2)]
    for event in events:
        bus.publish(event)
    everything.close()
    assert await drain(everything) == events


async def test_publish_without_subscribers_is_harmless() -> None:
    bus = EventBus()
    bus.publish(progress("a", 1))
    sub = bus.subscribe("a")  # subscribing late does not replay old events
    sub.close()
    assert await drain(sub) == []


async def test_waiting_subscriber_wakes_on_publish() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)  # the waiter is now blocked on an empty buffer
    assert not waiter.done()
    bus.publish(progress("b", 0))  # another job: no wake-up for this subscriber
    await asyncio.sleep(0)
    assert not waiter.done()
    bus.publish(progress("a", 7))
    event = await asyncio.wait_for(waiter, 5)
    assert event is not None and event.data == {"n": 7}
    sub.close()


async def test_async_iteration_receives_while_publishing() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    received: list[int] = []

    async def consume() -> None:
        async for event in sub:
            received.append(event.data["n"])

    consumer = asyncio.create_task(consume())
    for n in range(5):
        bus.publish(progress("a", n))
        await asyncio.sleep(0)
    bus.close()
    await asyncio.wait_for(consumer, 5)
    assert received == [0, 1, 2, 3, 4]


async def test_bounded_buffer_drops_oldest_and_counts_them() -> None:
    bus = EventBus(maxlen=3)
    slow = bus.subscribe("a")
    for n in range(5):
        bus.publish(progress("a", n))
    bus.publish(Event("done", "a", {"final": True}))
    assert slow.dropped == 3
    slow.close()
    received = await drain(slow)
    # The newest survive, the final event included.
    assert [e.type for e in received] == ["progress", "progress", "done"]
    assert [e.data.get("n") for e in received[:2]] == [3, 4]
    assert received[-1].type in TERMINAL_EVENTS


async def test_dropped_counts_per_subscription() -> None:
    bus = EventBus(maxlen=2)
    slow, fast = bus.subscribe("a"), bus.subscribe("a")
    bus.publish(progress("a", 0))
    assert await fast.get() == progress("a", 0)
    bus.publish(progress("a", 1))
    bus.publish(progress("a", 2))
    assert (slow.dropped, fast.dropped) == (1, 0)
    bus.close()
    assert [e.data["n"] for e in await drain(slow)] == [1, 2]
    assert [e.data["n"] for e in await drain(fast)] == [1, 2]


async def test_close_ends_iteration_after_draining_backlog() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    bus.publish(progress("a", 1))
    bus.publish(progress("a", 2))
    sub.close()
    bus.publish(progress("a", 3))  # after close: not delivered
    assert sub.closed
    assert bus.subscriber_count == 0
    assert [e.data["n"] for e in await drain(sub)] == [1, 2]
    assert await sub.get() is None  # stays ended


async def test_close_wakes_a_blocked_subscriber() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.close()
    assert await asyncio.wait_for(waiter, 5) is None


async def test_bus_close_ends_every_open_stream() -> None:
    bus = EventBus()
    subs = [bus.subscribe("a"), bus.subscribe("b"), bus.subscribe()]
    assert bus.subscriber_count == 3
    bus.publish(progress("a", 1))
    waiters = [asyncio.create_task(drain(s)) for s in subs]
    await asyncio.sleep(0)
    bus.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert [len(r) for r in results] == [1, 0, 1]
    assert bus.closed and bus.subscriber_count == 0


async def test_subscribe_after_bus_close_is_closed_at_once() -> None:
    bus = EventBus()
    bus.close()
    sub = bus.subscribe("a")
    assert sub.closed
    assert bus.subscriber_count == 0
    bus.publish(progress("a", 1))
    assert await asyncio.wait_for(sub.get(), 5) is None
    assert await drain(sub) == []


async def test_push_to_a_closed_subscription_is_ignored() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    sub.close()
    sub.push(progress("a", 1))
    assert sub.dropped == 0
    assert await sub.get() is None


async def test_subscription_close_is_idempotent() -> None:
    bus = EventBus()
    sub = bus.subscribe("a")
    other = bus.subscribe("a")
    sub.close()
    sub.close()
    assert bus.subscriber_count == 1
    bus.publish(progress("a", 1))
    assert await other.get() == progress("a", 1)
    other.close()


def test_event_is_immutable_with_its_own_data() -> None:
    first, second = Event("progress", "a"), Event("progress", "b")
    assert first.data == {} and first.data is not second.data
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.type = "done"  # type: ignore[misc]
    assert TERMINAL_EVENTS == ("done", "failed", "cancelled")
