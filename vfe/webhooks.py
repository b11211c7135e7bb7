"""Webhooks: a signed ``POST`` of a job to its ``webhook_url`` (or WEBHOOK_URL) when it ends.

    check_job(settings, spec)   at submit: a webhook needs WEBHOOK_SECRET and an address
                                the guard of URL sources permits (ALLOW_PRIVATE_URLS)
    Deliverer                   makes the attempts the store's outbox holds

The store keeps each ended job's webhook in its outbox, written with the final status
(``store/outbox.py``). A ``Deliverer`` runs in every process that runs jobs (``vfe
serve``, ``vfe worker``): it claims a due attempt (exactly one process gets each), POSTs
the job as ``GET /job-status/{job_id}`` showed it when it ended, signed as the Standard
Webhooks specification says (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``:
HMAC-SHA256 under WEBHOOK_SECRET, made by the ``standardwebhooks`` package, so receivers
verify with an off-the-shelf library), and writes the outcome. A 2xx answer within
``TIMEOUT`` delivers; ``410 Gone`` stops for good; anything else is tried again after
``backoff`` until WEBHOOK_MAX_ATTEMPTS. Every attempt resolves and checks the address
again (DNS may have changed) and connects only to a permitted one; redirects are not
followed. The ``webhook-id`` is the same on every attempt, and so is the body, so a
receiver can drop repeats (a process that dies mid-attempt makes delivery at least once).

One deliberate oddity: the body's own ``webhook`` field is null; the delivery's state is
in ``GET /job-status/{job_id}``, and the body stays byte-identical across attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpcore
import httpx
from standardwebhooks import Webhook

from . import __version__, fetch
from .cache import job_key
from .errors import BadRequest, StoreError, ValidationFailed
from .events import TERMINAL_EVENTS, EventBus
from .metrics import Metrics
from .models import Delivery, DeliveryStatus, JobSpec
from .networks import AddressPolicy
from .settings import Settings
from .store import Store
from .views import JobView

log = logging.getLogger("vfe.webhooks")

TIMEOUT = 10.0  # seconds: a 2xx answer within this long delivers
LEASE = TIMEOUT + 20.0  # a claimed attempt whose process died is tried again after this
GROWTH = 6.0  # each wait between attempts is this many times the one before
LONGEST_WAIT = 10 * 3600.0  # seconds, before jitter
JITTER = 0.2  # each wait is spread by this share either way, so retries do not bunch up
LOOK_EVERY = 5.0  # at most this long between looks at the outbox (other processes' rows)
STORE_AWAY = 2.0  # seconds between claims while the database does not answer
IN_FLIGHT = 8  # attempts one process makes at once


def backoff(attempt: int, first: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1 is the first): ``first``, then
    ``GROWTH`` times the wait before, at most ``LONGEST_WAIT``, each spread by ``JITTER``.
    With the default 5 s: 5 s, 30 s, 3 min, 18 min, 1.8 h, 10 h, 10 h."""
    wait = min(first * GROWTH ** (attempt - 1), LONGEST_WAIT)
    return wait * (1 + JITTER * (2 * rand() - 1))


def message_id(job_id: str) -> str:
    """The ``webhook-id`` of a job's webhook: the same on every attempt."""
    return f"msg_{job_id}"


def signed_headers(secret: str, msg_id: str, body: bytes, now: float) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` sent at ``now`` (epoch seconds)."""
    moment = datetime.fromtimestamp(int(now), UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body.decode()),
    }


class Forgets(Protocol):
    """The cache, as far as webhooks use it: a job's status is dropped after each attempt."""

    async def delete(self, *keys: str) -> None: ...


class AttemptFailed(Exception):
    """An attempt got no HTTP answer; the message says why (for ``last_error``)."""


async def guard(url: str, policy: AddressPolicy) -> None:
    """``BadRequest`` unless every address the URL's host resolves to is permitted."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    backend = fetch.GuardedBackend(policy)
    try:
        addresses = await backend.resolve(parsed.host, port, TIMEOUT)
        for address in addresses:
            if not policy.permits(address):
                raise fetch.Blocked(parsed.host, address)
    except fetch.Blocked as exc:
        raise BadRequest(fetch.blocked_message(exc, redirected=False)) from None
    except fetch.Unresolved:
        raise BadRequest(f"the host {parsed.host} could not be found (DNS lookup failed)") from None


async def check_job(settings: Settings, spec: JobSpec) -> None:
    """At submit: refuse (422) a job's own ``webhook_url`` when this server cannot sign
    webhooks, or when its host is an address URL sources may not reach."""
    if spec.webhook_url is None:
        return
    loc = ["body", "webhook_url"]
    if not settings.webhook_secret.get_secret_value():
        raise ValidationFailed.one(
            loc,
            "this server has no WEBHOOK_SECRET to sign webhooks with; leave webhook_url out, "
            "or have the server's operator set WEBHOOK_SECRET",
        )
    try:
        await guard(fetch.check_url(spec.webhook_url), settings.allow_private_urls)
    except BadRequest as exc:
        raise ValidationFailed.one(loc, str(exc.detail)) from None


async def post(url: str, body: bytes, headers: dict[str, str], policy: AddressPolicy) -> int:
    """POST ``body`` to ``url`` through the address guard, redirects not followed; the
    answer's status. Waits at most ``TIMEOUT`` in all; ``AttemptFailed`` without an answer."""
    parsed = httpx.URL(url)
    target = httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )
    sent = [
        (b"Content-Type", b"application/json"),
        (b"User-Agent", f"vfe/{__version__}".encode()),
        *((name.encode(), value.encode()) for name, value in headers.items()),
    ]
    extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), TIMEOUT)}
    pool = httpcore.AsyncConnectionPool(
        ssl_context=fetch.ssl_context(), network_backend=fetch.GuardedBackend(policy), retries=0
    )
    host = parsed.host
    try:
        async with asyncio.timeout(TIMEOUT), pool:
            # The answer's body is never read: only its status counts.
            async with pool.stream(
                "POST", target, headers=sent, content=body, extensions=extensions
            ) as response:
                return response.status
    except fetch.Blocked as exc:
        raise AttemptFailed(fetch.blocked_message(exc, redirected=False)) from None
    except fetch.Unresolved:
        raise AttemptFailed(f"the host {host} could not be found (DNS lookup failed)") from None
    except fetch._Unreachable as exc:
        raise AttemptFailed(f"could not connect to {exc}") from None
    except (TimeoutError, httpcore.TimeoutException):
        raise AttemptFailed(f"no answer within {TIMEOUT:g} s") from None
    except httpcore.ConnectError as exc:
        raise AttemptFailed(fetch._connect_failed(host, exc)) from None
    except (httpcore.NetworkError, httpcore.ProtocolError):
        raise AttemptFailed(f"the connection to {host} failed") from None


class Deliverer:
    """Makes the attempts of the store's webhook outbox, at most ``IN_FLIGHT`` at once.

    It claims due attempts until none is left, then waits for a job to end in this
    process (an event on the bus), for the next attempt to fall due, or ``LOOK_EVERY``
    (rows other processes wrote), whichever comes first. ``stop`` cancels the attempts
    under way; each one's lease is ended, so the next start tries it again at once.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: EventBus,
        cache: Forgets,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.cache = cache
        self.metrics = metrics
        self._secret = settings.webhook_secret.get_secret_value()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attempts: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._tasks.add(asyncio.create_task(self._claims(), name="vfe-webhooks"))
        self._tasks.add(asyncio.create_task(self._watch(), name="vfe-webhooks-watch"))

    async def stop(self) -> None:
        """Stop claiming, then cancel the attempts under way and wait for them (each
        ends its lease first, shielded)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._attempts:
            task.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)

    def wake(self) -> None:
        """Look at the outbox now (a job ended, or an attempt was settled)."""
        self._wake.set()

    async def _watch(self) -> None:
        """Wake the claims whenever a job of this process ends."""
        subscription = self.bus.subscribe()
        try:
            async for event in subscription:
                if event.type in TERMINAL_EVENTS:
                    self.wake()
        finally:
            subscription.close()

    async def _nap(self, seconds: float) -> None:
        """Wait ``seconds``, or less when woken."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _claims(self) -> None:
        """Claim due attempts while a slot is free, each run in a task of its own; then
        wait (``_nap``) for a wake, the next due time or ``LOOK_EVERY``. Runs until
        cancelled."""
        away = False  # the database did not answer the last claim: said once an outage
        while True:
            await self._slots.acquire()
            self._wake.clear()  # before the claim: a wake during it is not lost
            try:
                delivery = await self.store.claim_delivery(time.time(), LEASE)
            except Exception as exc:  # the loop must outlive anything a claim raises
                self._slots.release()
                if not away or not isinstance(exc, StoreError):
                    log.warning("could not read the webhook outbox", exc_info=True)
                away = True
                await self._nap(STORE_AWAY)
                continue
            away = False
            if delivery is not None:
                task = asyncio.create_task(self._attempt(delivery))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
                continue
            self._slots.release()
            wait = LOOK_EVERY
            try:
                due = await self.store.next_delivery()
            except StoreError:
                due = None
            except Exception:
                log.exception("could not read the webhook outbox")
                due = None
            if due is not None:  # never a spin when a due row is claimed elsewhere
                wait = min(wait, max(0.05, due - time.time()))
            await self._nap(wait)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            await self._try(delivery)
        except Exception:
            log.exception("webhook attempt crashed", extra={"job_id": delivery.job_id})
        finally:
            self._slots.release()
            self.wake()

    async def _try(self, delivery: Delivery) -> None:
        """One attempt of ``delivery`` and its outcome."""
        job_id, attempt = delivery.job_id, delivery.attempts
        most = self.settings.webhook_max_attempts
        error: str | None = None
        status: int | None = None
        if not self._secret:  # the secret was removed after the job was taken
            error = "the server has no WEBHOOK_SECRET to sign webhooks with"
        elif attempt <= most:
            body = JobView.of(delivery.job, delivery.created_at).model_dump_json().encode()
            headers = signed_headers(self._secret, message_id(job_id), body, time.time())
            try:
                status = await post(delivery.url, body, headers, self.settings.allow_private_urls)
            except AttemptFailed as exc:
                error = str(exc)
            except asyncio.CancelledError:  # a stop: the next start makes it again, at once
                with contextlib.suppress(StoreError):
                    await asyncio.shield(self.store.release_delivery(job_id, attempt))
                raise
            else:
                if not 200 <= status < 300:
                    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
                    error = f"the receiver answered {status}{redirect}"
        else:  # its last attempt's process died after claiming it
            error = delivery.last_error or "its last attempt was interrupted"
        now = time.time()
        if error is None:
            outcome, due, delivered = DeliveryStatus.DELIVERED, now, now
        elif status == 410:
            outcome, due, delivered = DeliveryStatus.GONE, now, None
        elif attempt >= most:
            outcome, due, delivered = DeliveryStatus.FAILED, now, None
        else:
            outcome = DeliveryStatus.PENDING
            due, delivered = now + backoff(attempt, self.settings.webhook_retry_seconds), None
        settled = await self.store.settle_delivery(
            job_id, attempt, outcome, due_at=due, last_error=error or delivery.last_error,
            delivered_at=delivered,
        )  # fmt: skip
        if not settled:
            return  # taken for dead and claimed again meanwhile: that attempt reports
        self.metrics.webhook_attempt(error is None)  # counted as soon as it is written
        if outcome is not DeliveryStatus.PENDING:
            self.metrics.webhook_finished(outcome.value)
        await self.cache.delete(job_key(job_id))  # its status shows the delivery
        extra = {"job_id": job_id, "attempt": attempt, "error": error}
        if outcome is DeliveryStatus.DELIVERED:
            log.info("webhook delivered", extra=extra)
        else:
            pending = outcome is DeliveryStatus.PENDING
            log.warning(
                "webhook %s", "not delivered yet" if pending else outcome.value, extra=extra
            )
