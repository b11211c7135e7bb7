"""The running service's resources, as one object routes reach via ``app.state``.

``app.py``'s lifespan builds it (and closes it in reverse order); ``api.py`` and ``sse.py``
only read it. Keeping it here avoids an import cycle between the app and its routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .cache import FallbackCache
from .events import EventBus
from .frames import FrameStore
from .jobs import JobManager
from .settings import Settings
from .store import Store


@dataclass
class Services:
    """Everything a request handler may use."""

    settings: Settings
    store: Store
    cache: FallbackCache
    bus: EventBus
    frames: FrameStore
    jobs: JobManager
    ffmpeg_version: str | None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
