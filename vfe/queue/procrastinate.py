"""The scaled-out ``JobQueue``: procrastinate on the same PostgreSQL as the store.

Each job is one procrastinate job of the task ``vfe.run`` on the queue ``vfe`` whose only
argument is the vfe job id; it is deferred on the store's connection, inside the
transaction that records the job. Workers are woken by procrastinate's NOTIFY (a poll
every few seconds is the fallback) and heartbeat every sixth of ``STALLED_AFTER_SECONDS``;
every sixth, each worker retries the jobs of workers silent for two thirds of it: a
SIGKILLed worker's job runs again elsewhere within ``STALLED_AFTER_SECONDS``, and the store's
fence refuses whatever the old run might still write. The same sweep queues again any
unfinished job whose queue entry has ended without it (a run stopped while the database
was away): the ``jobs`` table, not procrastinate, says whether a job is done.

``cancel`` asks procrastinate to abort the job (a NOTIFY to the worker running it, which
cancels the job's task and so stops FFmpeg) and waits until that run has ended, or its
worker is taken for dead. A shutdown that outlasts its grace aborts the running jobs; each
is deferred again, so it goes back to the queue. If PostgreSQL goes away, the worker stops
and is started again, with a growing pause, until it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import procrastinate
import procrastinate.exceptions
import psycopg
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker
from psycopg_pool import PoolTimeout

from ..errors import StoreError, StoreUnavailable, Unavailable
from ..store.postgres import PostgresStore
from . import RunAgain, Runner, Stop, WorkerInfo

log = logging.getLogger("vfe.jobs")

QUEUE = "vfe"
TASK = "vfe.run"
POLL_SECONDS = 5.0  # fallback poll for new jobs, should a NOTIFY be missed
CANCEL_POLL = 0.1  # seconds between looks at a job being cancelled
CANCEL_WAIT = 10.0  # longest wait for a cancelled run to end
RESTART_PAUSE = (0.5, 10.0)  # first and longest pause before restarting a failed worker
ORPHAN_LOCK = 0x76666501  # pg_try_advisory_xact_lock key of the orphan sweep


@contextlib.asynccontextmanager
async def _guard(what: str) -> AsyncIterator[None]:
    """Driver and procrastinate errors as ``StoreUnavailable`` (a 503), as the store does."""
    try:
        yield
    except (psycopg.Error, PoolTimeout, procrastinate.exceptions.ConnectorException) as exc:
        cause = (
            exc.__cause__ if isinstance(exc, procrastinate.exceptions.ConnectorException) else exc
        )
        if isinstance(cause, psycopg.OperationalError | PoolTimeout):
            raise StoreUnavailable(
                f"the job queue cannot be reached while {what}; try again shortly"
            ) from exc
        raise StoreError(f"job queue error while {what}") from exc


async def install_schema(conn: Any) -> None:
    """procrastinate's tables, once (called inside the store's migration lock)."""
    cur = await conn.execute("SELECT to_regclass('procrastinate_jobs')")
    row = await cur.fetchone()
    if row is None or row[0] is None:
        await conn.execute(SchemaManager.get_schema())
    # cancel and the orphan sweep find a job's live entries by its vfe id
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS vfe_procrastinate_job_id ON procrastinate_jobs "
        "((args->>'job_id')) WHERE status IN ('todo', 'doing')"
    )


class ProcrastinateQueue:
    """Jobs queued in PostgreSQL and run by any ``vfe worker`` (or ``vfe serve``)."""

    backend = "procrastinate"

    def __init__(
        self,
        store: PostgresStore,
        max_size: int,
        concurrency: int,
        grace: float,
        stalled_after: float,
        name: str = "worker",
    ) -> None:
        self.store = store
        self.max_size = max_size
        self.concurrency = concurrency
        self.grace = grace
        self.stalled_after = stalled_after
        # A worker beats every sixth of STALLED_AFTER_SECONDS and is dead once silent for
        # two thirds of it (four beats missed); the sweep, every sixth, then runs its job
        # again: within STALLED_AFTER_SECONDS of its death, however the beats fell.
        self.beat = max(0.5, stalled_after / 6)
        self.dead_after = stalled_after * 2 / 3
        self.name = name
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector())
        self.task = self.app.task(name=TASK, queue=QUEUE, pass_context=False)(self._run)
        self._runner: Runner | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # vfe job id -> its running task
        self._stopping = False
        self._stopped = asyncio.Event()  # set with _stopping, to end a restart pause
        self._worker: Worker | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None

    # --- life ----------------------------------------------------------------------------

    async def start(self, runner: Runner | None) -> None:
        await self.app.open_async(pool=self.store.pool)
        self._runner = runner
        if runner is not None:
            self._supervisor = asyncio.create_task(self._supervise(), name="vfe-worker")
            self._sweeper = asyncio.create_task(self._sweep_stalled(), name="vfe-stalled")

    async def _supervise(self) -> None:
        """Run procrastinate's worker; start it again when it fails (PostgreSQL gone)."""
        pause = RESTART_PAUSE[0]
        while not self._stopping:
            started = time.monotonic()
            self._worker = Worker(
                app=self.app,
                queues=[QUEUE],
                name=self.name,
                concurrency=self.concurrency,
                wait=True,
                install_signal_handlers=False,
                shutdown_graceful_timeout=self.grace,
                # a retried job is not announced by NOTIFY: poll often enough to meet the
                # STALLED_AFTER_SECONDS bound
                fetch_job_polling_interval=min(POLL_SECONDS, self.beat),
                update_heartbeat_interval=self.beat,
                stalled_worker_timeout=self.dead_after,
                listen_notify=True,
                delete_jobs="always",  # the jobs table is the record; entries only queue
            )
            try:
                await self._worker.run()  # type: ignore[no-untyped-call]  # untyped upstream
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the worker stopped (%s); starting it again", exc)
            if self._stopping:
                return
            if time.monotonic() - started > 60:
                pause = RESTART_PAUSE[0]
            with contextlib.suppress(TimeoutError):  # a shutdown ends the pause
                await asyncio.wait_for(self._stopped.wait(), pause)
            pause = min(RESTART_PAUSE[1], pause * 2)

    async def _sweep_stalled(self) -> None:
        """Now and then, queue again the jobs of workers taken for dead, and any unfinished
        job left with no queue entry (its run ended while the database was away)."""
        every = self.beat
        while True:
            await asyncio.sleep(every)
            try:
                stalled = await self.app.job_manager.get_stalled_jobs(
                    queue=QUEUE, seconds_since_heartbeat=self.dead_after
                )
                for job in stalled:
                    job_id = job.task_kwargs.get("job_id")
                    log.info("running again the job of a dead worker", extra={"job_id": job_id})
                    with contextlib.suppress(Exception):  # another worker may have done it
                        await self.app.job_manager.retry_job(job)
                await self._requeue_orphans()
            except Exception as exc:
                log.debug("stalled-job sweep failed: %s", exc)

    async def _requeue_orphans(self) -> None:
        """Queue again every unfinished job, quiet for ``stalled_after``, that has no
        waiting or running queue entry; one process at a time does it."""
        async with self.store.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (ORPHAN_LOCK,))
            row = await cur.fetchone()
            if not (row and row[0]):
                return
            cur = await conn.execute(
                "SELECT j.id FROM jobs j WHERE j.status IN ('pending', 'processing') "
                "AND j.updated_at < extract(epoch FROM now()) - %s AND NOT EXISTS ("
                "SELECT 1 FROM procrastinate_jobs p WHERE p.queue_name = %s "
                "AND p.args->>'job_id' = j.id AND p.status IN ('todo', 'doing'))",
                (self.stalled_after, QUEUE),
            )
            for (job_id,) in await cur.fetchall():
                log.info("queueing again a job its run left unfinished", extra={"job_id": job_id})
                await self.task.configure(connection=conn).defer_async(job_id=job_id)

    async def _run(self, job_id: str) -> None:
        """The task: run the job; when a shutdown stops it, queue it again."""
        assert self._runner is not None
        self._tasks[job_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            await self._runner(job_id)
        except RunAgain:  # the database went away: queue it again once it is back
            await self._defer_again(job_id)
        except asyncio.CancelledError:
            # A shutdown (ours, or procrastinate's when PostgreSQL went away) leaves the
            # job unfinished: back to the queue. A user's cancel finished it first.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._defer_if_unfinished(job_id))
            raise
        finally:
            self._tasks.pop(job_id, None)

    async def _defer_if_unfinished(self, job_id: str) -> None:
        job = await self.store.get_job(job_id)
        if job is not None and not job.status.finished:
            await self.task.defer_async(job_id=job_id)

    async def _defer_again(self, job_id: str) -> None:
        pause = RESTART_PAUSE[0]
        while True:
            try:
                await self.task.defer_async(job_id=job_id)
                return
            except Exception as exc:
                log.debug("cannot queue a job again yet: %s", exc)
            await asyncio.sleep(pause)
            pause = min(RESTART_PAUSE[1], pause * 2)

    def begin_shutdown(self) -> None:
        """Fetch no more jobs; running ones go on for the grace period, then are stopped
        and queued again. procrastinate stops heartbeating as its shutdown starts, which
        would get this worker taken for dead while its jobs still run: the heartbeat is
        kept going here until the worker has unregistered."""
        if self._stopping:
            return
        self._stopping = True
        self._stopped.set()
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]  # untyped upstream
            self._beating = asyncio.create_task(self._beat(self._worker), name="vfe-beat")

    async def _beat(self, worker: Worker) -> None:
        while worker.worker_id is not None:
            with contextlib.suppress(Exception):
                await self.app.job_manager.update_heartbeat(worker.worker_id)
            await asyncio.sleep(self.beat)

    async def stop(self) -> None:
        """Shut down as ``begin_shutdown`` does, wait for it (the grace and a little
        more, then cancel what is left), and close the queue."""
        self.begin_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = [t for t in (self._supervisor, self._sweeper) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace + 10)
        for task in [*tasks, *filter(None, [self._beating])]:
            task.cancel()
        await asyncio.gather(*tasks, *filter(None, [self._beating]), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.app.close_async()

    # --- the queue -----------------------------------------------------------------------

    async def enqueue(self, job_id: str, connection: Any = None) -> None:
        if await self.depth(connection) >= self.max_size:
            raise Unavailable(
                f"the job queue is full ({self.max_size} waiting); try again later",
                headers={"Retry-After": "10"},
            )
        async with _guard("queueing a job"):
            await self.task.configure(connection=connection).defer_async(job_id=job_id)

    async def _rows(
        self, what: str, sql: str, params: tuple[Any, ...], connection: Any = None
    ) -> list[tuple[Any, ...]]:
        """The rows of one query, on ``connection`` or a pooled one; errors translated."""
        async with _guard(what):
            if connection is not None:
                return list(await (await connection.execute(sql, params)).fetchall())
            async with self.store.pool.connection() as conn:
                return list(await (await conn.execute(sql, params)).fetchall())

    async def _entries(self, job_id: str) -> list[tuple[int, str, int | None]]:
        """(id, status, worker id) of the job's unfinished procrastinate jobs."""
        rows = await self._rows(
            "finding a job's run",
            "SELECT id, status::text, worker_id FROM procrastinate_jobs "
            "WHERE queue_name = %s AND args->>'job_id' = %s AND status IN ('todo', 'doing')",
            (QUEUE, job_id),
        )
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]

    async def cancel(self, job_id: str) -> Stop:
        entries = await self._entries(job_id)
        async with _guard("cancelling a job's run"):
            for entry_id, _status, _worker in entries:  # a waiting entry goes (no row left)
                await self.app.job_manager.cancel_job_by_id_async(
                    entry_id, abort=True, delete_job=True
                )
        if not any(status == "doing" for _, status, _ in entries):
            return Stop.NO_RUN
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            doing = [w for _, s, w in await self._entries(job_id) if s == "doing"]
            if not doing or not await self._alive(doing):
                return Stop.STOPPED  # ended, or its worker is dead (its lease has expired)
            await asyncio.sleep(CANCEL_POLL)
        log.warning("a cancelled run has not stopped yet", extra={"job_id": job_id})
        return Stop.STILL_RUNNING

    async def _alive(self, worker_ids: list[int | None]) -> bool:
        """Whether any of these workers has sent a heartbeat within STALLED_AFTER_SECONDS."""
        ids = [w for w in worker_ids if w is not None]
        if not ids:
            return False
        [(alive,)] = await self._rows(
            "looking at workers",
            "SELECT count(*) FROM procrastinate_workers WHERE id = ANY(%s) "
            "AND last_heartbeat >= now() - make_interval(secs => %s)",
            (ids, self.dead_after),
        )
        return bool(alive)

    def running(self) -> list[str]:
        return list(self._tasks)

    async def depth(self, connection: Any = None) -> int:
        """Jobs waiting; on ``connection`` when given (a submit's own transaction: a
        second pooled connection per submit could drain the pool under load)."""
        [(count,)] = await self._rows(
            "counting queued jobs",
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = 'todo'",
            (QUEUE,),
            connection,
        )
        return int(count)

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._rows(
            "looking at workers",
            "SELECT w.id, extract(epoch FROM w.last_heartbeat), "
            "(SELECT count(*) FROM procrastinate_jobs j WHERE j.worker_id = w.id "
            "AND j.status = 'doing') FROM procrastinate_workers w "
            "WHERE w.last_heartbeat >= now() - make_interval(secs => %s) ORDER BY w.id",
            (self.dead_after,),
        )
        return [WorkerInfo(f"worker-{r[0]}", float(r[1]), int(r[2])) for r in rows]
