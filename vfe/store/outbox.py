"""The webhook outbox of both stores: what ``SqliteStore`` and ``PostgresStore`` add to
keep the webhooks of ended jobs until they are delivered (``vfe.webhooks`` delivers them).

A job that reaches ``completed``, ``failed`` or ``cancelled`` with a webhook URL (its own
``webhook_url``, else the store's ``webhook_url``, the WEBHOOK_URL setting) gets a row in
``webhooks`` in the same transaction as that status (``_outbox``, called by each
back-end's job writes), so an ended job is announced even when the process dies right
after. An attempt is claimed with a lease: the row's attempt count goes up and its
``leased_until`` is set, in one statement that only one process can win (PostgreSQL:
``FOR UPDATE SKIP LOCKED``; SQLite: one owning process, under the write lock). The
attempt's outcome is written only under that attempt number (``settle_delivery``), and
an attempt whose process died is claimed again once its lease is over. SQLite has one
owner per file, so a lease left by an earlier process ends when the store opens. A
settled webhook goes with its job when the job is deleted; a pending one (the
``cancelled`` of a job deleted while it ran) stays until it settles, and goes then.

The mixins name what they use of their back-end (``db``, ``_cursor``...); the store
classes define those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ..models import Delivery, DeliveryStatus, Job
from . import JOB_FIELDS, db_value, job_from_row
from .schema import WEBHOOKS

if TYPE_CHECKING:
    import aiosqlite
    import psycopg

PENDING = DeliveryStatus.PENDING.value
NEW = "webhooks (job_id, url, job, status, due_at, created_at)"  # a new row's columns
# What ``delete_job`` removes with the job: its webhook once settled; and what a final
# outcome removes once its job is gone, since nothing shows it any more. ``{p}``: the
# back-end's parameter mark; the job id fills each.
FORGET_SETTLED = "DELETE FROM webhooks WHERE job_id = {p} AND status <> 'pending'"
FORGET_ORPHAN = FORGET_SETTLED + " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {p})"
# A failed or gone webhook, pending again from attempt one (due at; job id)
RESEND = (
    "UPDATE webhooks SET status = 'pending', attempts = 0, due_at = {p}, leased_until = NULL, "
    "delivered_at = NULL WHERE job_id = {p} AND status IN ('failed', 'gone')"
)


def target(job: Job, default: str | None) -> str | None:
    """Where the webhook of ``job`` goes: its own URL, else the default; None: nowhere."""
    own = job.options.get("webhook_url")
    return str(own) if own else default or None


def snapshot(job: Job) -> str:
    """The job's columns as JSON, as the outbox keeps them."""
    return json.dumps({name: db_value(getattr(job, name)) for name in JOB_FIELDS})


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A ``Delivery`` from a row of ``WEBHOOKS``."""
    job_id, url, job, status, attempts, due, created, error, delivered = row
    columns = json.loads(job)  # a column added later is missing from older rows: None
    return Delivery(
        job_id=job_id,
        url=url,
        job=job_from_row([columns.get(name) for name in JOB_FIELDS]),
        status=DeliveryStatus(status),
        attempts=attempts,
        due_at=due,
        created_at=created,
        last_error=error,
        delivered_at=delivered,
    )


def _new_row(job: Job, url: str) -> tuple[Any, ...]:
    now = time.time()
    return (job.id, url, snapshot(job), PENDING, now, now)


class SqliteOutbox:
    """The outbox half of ``SqliteStore``."""

    webhook_url: str | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        raise NotImplementedError

    def _guard(self, what: str) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _transaction(self, what: str) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def _write(self, sql: str, params: Any = (), *, many: bool = False) -> int:
        raise NotImplementedError

    async def _outbox(self, job: Job) -> None:
        """Inside the caller's transaction: keep the webhook of ``job`` if it has ended and
        has a URL (once per job)."""
        url = target(job, self.webhook_url)
        if url is not None and job.status.finished:
            sql = f"INSERT OR IGNORE INTO {NEW} VALUES (?, ?, ?, ?, ?, ?)"
            await self._write(sql, _new_row(job, url))

    async def _end_leases(self) -> None:
        """At open: this process owns the file, so no earlier claim is still being tried."""
        async with self._transaction("opening the webhook outbox"):
            await self._write("UPDATE webhooks SET leased_until = NULL")

    async def claim_delivery(self, now: float, lease: float) -> Delivery | None:
        async with self._transaction("claiming a webhook attempt"):
            async with self.db.execute(
                "SELECT job_id FROM webhooks WHERE status = ? AND due_at <= ? AND "
                "(leased_until IS NULL OR leased_until <= ?) ORDER BY due_at LIMIT 1",
                (PENDING, now, now),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            await self._write(
                "UPDATE webhooks SET attempts = attempts + 1, leased_until = ? WHERE job_id = ?",
                (now + lease, row[0]),
            )
            return await self._delivery(str(row[0]))

    async def _delivery(self, job_id: str) -> Delivery | None:
        async with self.db.execute(
            f"SELECT {WEBHOOKS} FROM webhooks WHERE job_id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        return delivery_from_row(row) if row else None

    async def get_delivery(self, job_id: str) -> Delivery | None:
        async with self._guard("reading a webhook"):
            return await self._delivery(job_id)

    async def get_deliveries(self, job_ids: Sequence[str]) -> dict[str, Delivery]:
        if not job_ids:
            return {}
        sql = f"SELECT {WEBHOOKS} FROM webhooks WHERE job_id IN ({', '.join('?' * len(job_ids))})"
        async with self._guard("reading webhooks"), self.db.execute(sql, list(job_ids)) as cur:
            rows = await cur.fetchall()
        return {str(row[0]): delivery_from_row(row) for row in rows}

    async def resend_delivery(self, job_id: str, now: float) -> Delivery | None:
        async with self._transaction("sending a webhook again"):
            changed = await self._write(RESEND.format(p="?"), (now, job_id))
            return await self._delivery(job_id) if changed else None

    async def settle_delivery(
        self,
        job_id: str,
        attempt: int,
        status: DeliveryStatus,
        *,
        due_at: float,
        last_error: str | None = None,
        delivered_at: float | None = None,
    ) -> bool:
        async with self._transaction("recording a webhook attempt"):
            changed = await self._write(
                "UPDATE webhooks SET status = ?, due_at = ?, last_error = ?, delivered_at = ?, "
                "leased_until = NULL WHERE job_id = ? AND attempts = ? AND status = ?",
                (status.value, due_at, last_error, delivered_at, job_id, attempt, PENDING),
            )
            if changed and status is not DeliveryStatus.PENDING:
                await self._write(FORGET_ORPHAN.format(p="?"), (job_id, job_id))
        return changed > 0

    async def release_delivery(self, job_id: str, attempt: int) -> bool:
        async with self._transaction("giving back a webhook attempt"):
            changed = await self._write(
                "UPDATE webhooks SET attempts = attempts - 1, leased_until = NULL "
                "WHERE job_id = ? AND attempts = ? AND status = ?",
                (job_id, attempt, PENDING),
            )
        return changed > 0

    async def next_delivery(self) -> float | None:
        async with self._guard("reading the webhook outbox"):
            async with self.db.execute(
                "SELECT MIN(MAX(due_at, COALESCE(leased_until, due_at))) FROM webhooks "
                "WHERE status = ?",
                (PENDING,),
            ) as cur:
                row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])


class PostgresOutbox:
    """The outbox half of ``PostgresStore``."""

    webhook_url: str | None = None

    def _cursor(
        self, what: str, *, transaction: bool = False
    ) -> AbstractAsyncContextManager[psycopg.AsyncCursor[Any]]:
        raise NotImplementedError

    async def _outbox(self, cur: psycopg.AsyncCursor[Any], job: Job) -> None:
        """Inside the caller's transaction: keep the webhook of ``job`` if it has ended and
        has a URL (once per job)."""
        url = target(job, self.webhook_url)
        if url is not None and job.status.finished:
            await cur.execute(
                f"INSERT INTO {NEW} VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (job_id) DO NOTHING",
                _new_row(job, url),
            )

    async def claim_delivery(self, now: float, lease: float) -> Delivery | None:
        # One statement: the row is locked by the claim that picks it, and skipped by
        # every other claim until that one commits (and then no longer due).
        async with self._cursor("claiming a webhook attempt") as cur:
            await cur.execute(
                "UPDATE webhooks SET attempts = attempts + 1, leased_until = %s "
                "WHERE job_id = (SELECT job_id FROM webhooks WHERE status = %s AND "
                "due_at <= %s AND (leased_until IS NULL OR leased_until <= %s) "
                "ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"AND status = %s RETURNING {WEBHOOKS}",
                (now + lease, PENDING, now, now, PENDING),
            )
            row = await cur.fetchone()
        return delivery_from_row(row) if row else None

    async def get_delivery(self, job_id: str) -> Delivery | None:
        async with self._cursor("reading a webhook") as cur:
            await cur.execute(f"SELECT {WEBHOOKS} FROM webhooks WHERE job_id = %s", (job_id,))
            row = await cur.fetchone()
        return delivery_from_row(row) if row else None

    async def get_deliveries(self, job_ids: Sequence[str]) -> dict[str, Delivery]:
        if not job_ids:
            return {}
        async with self._cursor("reading webhooks") as cur:
            sql = f"SELECT {WEBHOOKS} FROM webhooks WHERE job_id = ANY(%s)"
            await cur.execute(sql, (list(job_ids),))
            rows = await cur.fetchall()
        return {str(row[0]): delivery_from_row(row) for row in rows}

    async def resend_delivery(self, job_id: str, now: float) -> Delivery | None:
        async with self._cursor("sending a webhook again") as cur:
            await cur.execute(RESEND.format(p="%s") + f" RETURNING {WEBHOOKS}", (now, job_id))
            row = await cur.fetchone()
        return delivery_from_row(row) if row else None

    async def settle_delivery(
        self,
        job_id: str,
        attempt: int,
        status: DeliveryStatus,
        *,
        due_at: float,
        last_error: str | None = None,
        delivered_at: float | None = None,
    ) -> bool:
        async with self._cursor("recording a webhook attempt", transaction=True) as cur:
            await cur.execute(
                "UPDATE webhooks SET status = %s, due_at = %s, last_error = %s, "
                "delivered_at = %s, leased_until = NULL "
                "WHERE job_id = %s AND attempts = %s AND status = %s",
                (status.value, due_at, last_error, delivered_at, job_id, attempt, PENDING),
            )
            changed = cur.rowcount > 0
            if changed and status is not DeliveryStatus.PENDING:
                await cur.execute(FORGET_ORPHAN.format(p="%s"), (job_id, job_id))
            return changed

    async def release_delivery(self, job_id: str, attempt: int) -> bool:
        async with self._cursor("giving back a webhook attempt") as cur:
            await cur.execute(
                "UPDATE webhooks SET attempts = attempts - 1, leased_until = NULL "
                "WHERE job_id = %s AND attempts = %s AND status = %s",
                (job_id, attempt, PENDING),
            )
            return cur.rowcount > 0

    async def next_delivery(self) -> float | None:
        async with self._cursor("reading the webhook outbox") as cur:
            await cur.execute(
                "SELECT MIN(GREATEST(due_at, COALESCE(leased_until, due_at))) FROM webhooks "
                "WHERE status = %s",
                (PENDING,),
            )
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])
