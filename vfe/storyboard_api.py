"""Storyboard endpoints: a job's WebVTT track, its JSON manifest and its sprite sheets.

Declared as ``api.py`` declares its routes (so they show in ``/openapi.json``); what a
storyboard is lives in ``storyboard.py``. The track and the manifest are derived, per
request, from the storyboard the job's plan records and the job's frames; sheet URLs are
relative, as frame URLs are. A job that was not asked for a storyboard, or whose
storyboard is not made yet (it is made when the frames are), answers 404 saying which.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from . import storyboard
from .api import JOB_ID, stored_job
from .downloads import answers, stored_file
from .endpoints import Answer, Header, PathParam, endpoint, error, ok
from .errors import NotFound
from .models import Frame, Job
from .services import Services, services
from .storage import frame_key
from .storyboard import Manifest, Storyboard

ALL_FRAMES = 10**9  # every frame: a job has at most MAX_FRAMES_PER_JOB
SHEET_NUMBER = r"^[0-9]{1,6}$"
SHEET = PathParam(
    "n",
    {"type": "string", "pattern": SHEET_NUMBER},
    "The sheet's number, as the track and the manifest name it (0 first).",
    lambda name: re.fullmatch(SHEET_NUMBER, name) is not None,
    "Storyboard sheet not found",
)
NO_BOARD = error(404, "No such job, the job has no storyboard (it was not asked for one), "
                 "or its storyboard is not made yet (the job has not completed).")  # fmt: skip


def sheet_url(job_id: str) -> storyboard.SheetUrl:
    """Sheet n's URL, relative as frame URLs are."""
    return lambda n: f"/job/{job_id}/storyboard/{n}.jpg"


async def _board(svc: Services, job_id: str) -> tuple[Job, Storyboard]:
    """The job and its storyboard; 404 saying why there is none."""
    job = await stored_job(svc, job_id)
    if not job.options.get("storyboard"):
        raise NotFound(f"Job {job_id} has no storyboard: submit a job with storyboard: true")
    board = Storyboard.from_plan(job.plan)
    if board is None:
        if job.status.finished:
            raise NotFound(f"Job {job_id} ended {job.status.value} without a storyboard")
        raise NotFound(f"The storyboard of job {job_id} is made when the job completes "
                       f"(it is {job.status.value})")  # fmt: skip
    return job, board


async def _tiles(svc: Services, job_id: str) -> tuple[Storyboard, list[Frame]]:
    _, board = await _board(svc, job_id)
    return board, await svc.store.list_frames(job_id, 0, ALL_FRAMES)  # in time order


@endpoint(
    "GET",
    "/job/{job_id}/storyboard.vtt",
    "getStoryboardTrack",
    "The storyboard as a WebVTT track",
    Answer(200, "A cue a tile, `HH:MM:SS.mmm --> HH:MM:SS.mmm` then "
           "`<sheet URL>#xywh=x,y,w,h`; cue i runs from frame i's timestamp to frame i+1's "
           "(the last to the end of the window).", media=("text/vtt",)),
    NO_BOARD,
    params=(JOB_ID,),
)  # fmt: skip
async def storyboard_track(request: Request) -> Response:
    """GET /job/{job_id}/storyboard.vtt: the track a player's thumbnails read."""
    job_id = str(request.path_params["job_id"])
    board, frames = await _tiles(services(request), job_id)
    text = storyboard.vtt(board, frames, sheet_url(job_id))
    return Response(text, media_type="text/vtt; charset=utf-8")


@endpoint(
    "GET",
    "/job/{job_id}/storyboard.json",
    "getStoryboardManifest",
    "The storyboard as JSON",
    ok(Manifest, "Its tiles (frame, times, sheet URL and box on the sheet) and sheets."),
    NO_BOARD,
    params=(JOB_ID,),
)
async def storyboard_manifest(request: Request) -> Manifest:
    """GET /job/{job_id}/storyboard.json: the tiles with their times and geometry."""
    job_id = str(request.path_params["job_id"])
    board, frames = await _tiles(services(request), job_id)
    return storyboard.manifest(board, frames, sheet_url(job_id), f"/job/{job_id}/storyboard.vtt")


@endpoint(
    "GET",
    "/job/{job_id}/storyboard/{n}.jpg",
    "getStoryboardSheet",
    "One storyboard sheet (JPEG)",
    *answers(("image/jpeg",), "The sheet"),
    error(404, "No such job, storyboard or sheet."),
    params=(JOB_ID, SHEET),
    headers=(Header("If-None-Match", "304 if it is the sheet's ETag."),),
)  # fmt: skip
async def storyboard_sheet(request: Request) -> Response:
    """GET /job/{job_id}/storyboard/{n}.jpg: a sprite sheet, with its SHA-256 as ETag."""
    svc = services(request)
    _, board = await _board(svc, str(request.path_params["job_id"]))
    n = int(str(request.path_params["n"]))
    if n >= len(board.sheets):
        raise NotFound(f"Storyboard sheet not found: the storyboard has {len(board.sheets)} "
                       f"sheets, 0.jpg to {len(board.sheets) - 1}.jpg")  # fmt: skip
    checksum = board.sheets[n]
    return await stored_file(
        request, svc.frames.storages.route(frame_key(checksum, "jpg")), checksum, "image/jpeg",
        "Storyboard sheet not found", presigned=svc.settings.frame_urls == "presigned",
    )  # fmt: skip


ENDPOINTS = (storyboard_track, storyboard_manifest, storyboard_sheet)
