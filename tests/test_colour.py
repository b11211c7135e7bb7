"""Colour: frames show the colours a player shows. A video's YUV is read with the matrix it
is tagged with; untagged HD as BT.709 and untagged SD as BT.601, as players do. JPEG and
WebP files are read as BT.601 YUV by every decoder, so the source's matrix is converted.

Each clip is one known RGB colour encoded losslessly with a given matrix, tagged or not;
the frame vfe writes, decoded by FFmpeg to RGB, must give that colour back."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import run_ffmpeg
from vfe import planner, probe
from vfe.extractor import Extractor
from vfe.frames import FolderFrames
from vfe.models import Frame, ImageFormat
from vfe.output import Output
from vfe.planner import Sampling

COLOUR = (192, 32, 32)  # a saturated red: BT.601 and BT.709 read its YUV far apart
TOLERANCE = 4  # levels per channel: rounding and chroma subsampling at a flat colour

CASES = {  # clip name: (size, the matrix it is encoded with, tagged)
    "hd-709-tagged": ("1280x720", "bt709", True),
    "hd-709-untagged": ("1280x720", "bt709", False),
    "sd-601-untagged": ("640x480", "bt601", False),
    "sd-709-tagged": ("640x480", "bt709", True),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("colour")
    made = {}
    hex_colour = "0x" + "".join(f"{c:02X}" for c in COLOUR)
    for name, (size, matrix, tagged) in CASES.items():
        made[name] = folder / f"{name}.mp4"
        tags = ["-colorspace", "bt709" if matrix == "bt709" else "smpte170m"] if tagged else []
        run_ffmpeg(
            "-f", "lavfi", "-i", f"color=c={hex_colour}:s={size}:d=1:r=25,format=rgb24",
            "-vf", f"scale=out_color_matrix={matrix}:out_range=tv,format=yuv420p",
            *tags, "-c:v", "libx264", "-qp", "0", str(made[name]),
        )  # fmt: skip
    return made


def centre_rgb(image: Path) -> tuple[int, int, int]:
    """The RGB of a pixel at the image's centre, as FFmpeg decodes the file."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(image), "-vf",
         "crop=8:8:(iw-8)/2:(ih-8)/2,format=rgb24", "-frames:v", "1", "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout[0], done.stdout[1], done.stdout[2]


async def extract_one(clip: Path, out: Path, output: Output) -> Path:
    info, index = await probe.inspect(clip)
    plan = await asyncio.to_thread(planner.plan, Sampling(interval=1.0), info, index)
    await asyncio.to_thread(out.mkdir)
    got: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        got.extend(batch)

    await Extractor(FolderFrames(out)).run(str(uuid.uuid4()), clip, info, plan, on_frames, output)
    return out / got[0].filename


async def test_untagged_video_gets_the_matrix_players_assume(clips: dict[str, Path]) -> None:
    assumed = {name: (await probe.probe(clip)).assumed_matrix for name, clip in clips.items()}
    assert assumed == {
        "hd-709-tagged": None,  # tagged: read as tagged
        "hd-709-untagged": "bt709",
        "sd-601-untagged": "smpte170m",
        "sd-709-tagged": None,
    }


@pytest.mark.parametrize("image_format", list(ImageFormat))
async def test_frames_keep_the_source_colour(
    clips: dict[str, Path], tmp_path: Path, image_format: ImageFormat
) -> None:
    for name, clip in clips.items():
        image = await extract_one(clip, tmp_path / name, Output(format=image_format))
        rgb = centre_rgb(image)
        assert all(abs(a - b) <= TOLERANCE for a, b in zip(rgb, COLOUR, strict=True)), (
            name, image_format.value, rgb,
        )  # fmt: skip


def test_the_matrix_is_chosen_by_the_coded_size_not_the_rotated_one() -> None:
    """A portrait SD phone clip (coded 640x480, shown 480x640) is SD: BT.601."""
    upright = probe.VideoInfo(1.0, 30.0, 480, 640, 90, "h264", "yuv420p", 0.0)
    assert upright.assumed_matrix == "smpte170m"
    hd = probe.VideoInfo(1.0, 30.0, 720, 1280, 270, "h264", "yuv420p", 0.0)
    assert hd.assumed_matrix == "bt709"
    tagged = probe.VideoInfo(1.0, 30.0, 640, 480, 0, "h264", "yuv420p", 0.0, color_space="bt709")
    assert tagged.assumed_matrix is None
