"""HDR video: PQ and HLG sources are tone-mapped to SDR BT.709 (``tonemap: auto``), so
frames look like what an SDR player shows; ``tonemap: off`` keeps the raw signal.

The clips are made here with FFmpeg from one SDR clip (content at SDR's 100 nits): 10-bit
HEVC tagged BT.2020 with the PQ (``smpte2084``) or HLG (``arib-std-b67``) transfer. Each
frame's brightness is measured by FFmpeg's ``signalstats`` against the SDR clip's frame
at the same time."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AppClient, place, run_ffmpeg
from vfe import probe

TO_LINEAR = "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=linear:p=bt709:m=bt709:npl=100"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hdr")
    sdr = folder / "sdr.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=3",
               "-pix_fmt", "yuv420p", "-c:v", "libx264", str(sdr))  # fmt: skip
    made = {"sdr": sdr}
    for name, transfer in (("pq", "smpte2084"), ("hlg", "arib-std-b67")):
        made[name] = folder / f"{name}.mp4"
        run_ffmpeg(
            "-i", str(sdr),
            "-vf", f"{TO_LINEAR},format=gbrpf32le,"
                   f"zscale=p=bt2020:t={transfer}:m=bt2020nc:r=tv:npl=100,format=yuv420p10le",
            "-c:v", "libx265",
            "-x265-params",
            f"colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc:log-level=error",
            "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc",
            str(made[name]),
        )  # fmt: skip
    return made


def mean_luma(image: Path) -> float:
    """The image's mean luma, 0-255, as FFmpeg's signalstats measures it."""
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(image), "-vf",
         "format=gray,signalstats,metadata=print:key=lavfi.signalstats.YAVG", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.findall(r"YAVG=([\d.]+)", done.stderr)
    assert found, done.stderr[-500:]
    return float(found[-1])


async def test_the_probe_tells_hdr_from_its_tags(clips: dict[str, Path]) -> None:
    for name, hdr in (("sdr", False), ("pq", True), ("hlg", True)):
        info = await probe.probe(clips[name])
        assert info.hdr is hdr, (name, info.color_transfer)
    assert (await probe.probe(clips["pq"])).color_transfer == "smpte2084"


async def frames_of(client: AppClient, clip: Path, **fields: object) -> dict[float, Path]:
    """Each frame's time and file, of a job on ``clip`` (every 1 s)."""
    place(clip, client.settings.videos_base_path)
    res = await client.http.post(
        "/video-job", json={"video_source": clip.name, "interval": 1, **fields}
    )
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed", job
    listed = (await client.http.get(f"/frames/{job['job_id']}")).json()["frames"]
    frames = client.services.frames
    got = {}
    for frame in listed:
        record = await client.services.store.get_frame(job["job_id"], frame["filename"])
        path = frames.local_file(record)
        assert path is not None
        got[frame["timestamp"]] = path
    return got


async def test_pq_and_hlg_frames_are_as_bright_as_the_sdr_original(
    client: AppClient, clips: dict[str, Path]
) -> None:
    sdr = {t: mean_luma(p) for t, p in (await frames_of(client, clips["sdr"])).items()}
    assert sorted(sdr) == [0.0, 1.0, 2.0]
    for name in ("pq", "hlg"):
        mapped = await frames_of(client, clips[name])  # tonemap: auto, the default
        assert sorted(mapped) == sorted(sdr)
        for time, path in mapped.items():
            assert abs(mean_luma(path) - sdr[time]) <= 0.10 * sdr[time], (name, time)
        raw = await frames_of(client, clips[name], tonemap="off")
        for time, path in raw.items():  # as it was: the signal shown as SDR, dim and grey
            assert mean_luma(path) < 0.85 * sdr[time], (name, time)


async def test_tonemap_takes_auto_or_off_only(client: AppClient, clips: dict[str, Path]) -> None:
    res = await client.http.post(
        "/video-job", json={"video_source": "x.mp4", "interval": 1, "tonemap": "bright"}
    )
    assert res.status_code == 422
    assert any(e["loc"][-1] == "tonemap" for e in res.json()["detail"])
