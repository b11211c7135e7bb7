"""An SSE client for the live tests: reads a real server's event stream in a thread,
so a test can act (cancel, kill, signal) while the stream is open."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

from tests.conftest import patience, wait_until


class SseReader:
    """Reads ``GET /job-status/{id}/events`` in a thread; ``events`` grows as they come.

    ``ended`` is set when the stream ends, for whatever reason: ``error`` then holds the
    exception if it did not end cleanly (the server closing the response is clean).
    """

    def __init__(self, url: str, read_timeout: float = 30.0) -> None:
        self.url = url
        self.read_timeout = read_timeout
        self.status_code: int | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.ended_at: float | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(patience(30)), "the SSE request got no answer"

    def _run(self) -> None:
        timeout = httpx.Timeout(30.0, read=self.read_timeout)
        try:
            with httpx.stream("GET", self.url, timeout=timeout) as res:
                self.status_code = res.status_code
                self.connected.set()
                if res.status_code != 200:
                    res.read()
                    return
                name, data = "message", []
                for line in res.iter_lines():
                    if line == "":
                        if data:
                            self.events.append((name, json.loads("\n".join(data))))
                        name, data = "message", []
                    elif line.startswith(":"):
                        continue  # heartbeat comment
                    else:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field == "event":
                            name = value
                        elif field == "data":
                            data.append(value)
        except Exception as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.connected.set()
            self.ended.set()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for n, data in self.events if n == name]

    def wait_for(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        wait_until(lambda: self.of(name) or self.ended.is_set(), f"SSE {name!r}", within=timeout)
        assert self.of(name), f"stream ended without {name!r}: {self.names} ({self.error!r})"
        return self.of(name)[-1]

    def wait_ended(self, timeout: float = 30.0) -> None:
        limit = patience(timeout)
        assert self.ended.wait(limit), f"SSE stream still open after {limit:g} s"
