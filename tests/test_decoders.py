"""edge.runtime.decoders: the presets' commands (built, never run), probe output, fallbacks."""

from __future__ import annotations

import json
import logging

import pytest

from edge.runtime import decoders
from edge.runtime.decoders import (
    PRESETS,
    DecoderError,
    StreamInfo,
    StreamInput,
    choose_preset,
    ffmpeg_command,
    ffprobe_command,
    find_tools,
    fit_within,
    parse_probe,
    rtsp_timeout_option,
)

RTSP = StreamInput("rtsp://cam/live", transport="tcp", timeout_s=5.0)
OUTPUT = ["-pix_fmt", "bgr24", "-f", "rawvideo", "pipe:1"]


def split(command: list[str]) -> tuple[list[str], list[str], str]:
    """Return the input options (between the common head and ``-i``), the rest, and ``-vf``."""
    at = command.index("-i")
    return command[7:at], command[at:], command[command.index("-vf") + 1]


def test_software_command_in_full() -> None:
    assert ffmpeg_command(RTSP, PRESETS["software"], "h264", (640, 360)) == [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-filter_threads", "1",
        "-rtsp_transport", "tcp", "-timeout", "5000000", "-threads", "1",
        "-i", "rtsp://cam/live", "-map", "0:v:0", "-vf", "scale=w=640:h=360",
        "-vsync", "passthrough", *OUTPUT,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "codec", "inputs", "chain"),
    [
        (
            "rkmpp",
            "hevc",
            ["-hwaccel", "rkmpp", "-hwaccel_output_format", "drm_prime", "-afbc", "rga"]
            + ["-c:v", "hevc_rkmpp"],
            "scale_rkrga=w=640:h=360:format=nv12,hwdownload,format=nv12",
        ),
        ("nvmpi", "h264", ["-c:v", "h264_nvmpi"], "scale=w=640:h=360"),
        ("nvmpi", "hevc", ["-c:v", "hevc_nvmpi"], "scale=w=640:h=360"),
        (
            "vaapi",
            "h264",
            ["-hwaccel", "vaapi", "-hwaccel_output_format", "vaapi"],
            "scale_vaapi=w=640:h=360:format=nv12,hwdownload,format=nv12",
        ),
        (
            "qsv",
            "h264",
            ["-hwaccel", "qsv", "-hwaccel_output_format", "qsv", "-c:v", "h264_qsv"],
            "scale_qsv=w=640:h=360:format=nv12,hwdownload,format=nv12",
        ),
    ],
)
def test_each_preset_decodes_and_scales_where_its_hardware_is(
    preset: str, codec: str, inputs: list[str], chain: str
) -> None:
    command = ffmpeg_command(RTSP, PRESETS[preset], codec, (640, 360))
    before, after, video_filter = split(command)
    assert before == ["-rtsp_transport", "tcp", "-timeout", "5000000", "-threads", "1", *inputs]
    assert video_filter == chain
    assert after[-len(OUTPUT) :] == OUTPUT


def test_operator_input_args_come_last_before_the_input() -> None:
    mine = ("-hwaccel_device", "/dev/dri/renderD129")
    before, _, _ = split(ffmpeg_command(RTSP, PRESETS["vaapi"], "h264", (640, 360), mine))
    assert before[-4:] == ["-hwaccel_output_format", "vaapi", "-hwaccel_device", "/dev/dri/renderD129"]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (StreamInput("rtsp://cam/live", "udp", 2.5), ["-rtsp_transport", "udp", "-timeout", "2500000"]),
        # FFmpeg 4: -timeout would make ffmpeg wait for the camera to connect to *it*.
        (
            StreamInput("RTSPS://cam/live", "tcp", 1.0, "-stimeout"),
            ["-rtsp_transport", "tcp", "-stimeout", "1000000"],
        ),
        (StreamInput("https://cam/video.mjpg", "tcp", 3.0), ["-rw_timeout", "3000000"]),
    ],
)
def test_network_options_per_scheme(stream: StreamInput, expected: list[str]) -> None:
    assert stream.args() == expected


def test_ffprobe_command_asks_for_the_first_video_stream() -> None:
    command = ffprobe_command(RTSP, "/opt/ffmpeg/bin/ffprobe")
    assert command[0] == "/opt/ffmpeg/bin/ffprobe" and command[-1] == RTSP.url
    assert command[command.index("-select_streams") + 1] == "v:0"
    assert "-timeout" in command and "json" in command


def probe_output(codec: str, width: int, height: int, avg_frame_rate: str, r_frame_rate: str) -> str:
    stream = {"codec_name": codec, "width": width, "height": height}
    stream |= {"avg_frame_rate": avg_frame_rate, "r_frame_rate": r_frame_rate}
    return json.dumps({"programs": [], "streams": [stream]})


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (probe_output("h264", 1920, 1080, "25/1", "50/1"), StreamInfo("h264", (1920, 1080), 25.0)),
        (
            probe_output("hevc", 2560, 1440, "0/0", "30000/1001"),
            StreamInfo("hevc", (2560, 1440), 30000 / 1001),
        ),
        # RTP's 90 kHz clock is no frame rate.
        (probe_output("h264", 640, 480, "0/0", "90000/1"), StreamInfo("h264", (640, 480), 25.0)),
    ],
)
def test_probe_output_is_read(output: str, expected: StreamInfo) -> None:
    assert parse_probe(output) == expected


@pytest.mark.parametrize(
    "output", ["", json.dumps({"streams": []}), json.dumps({"streams": [{"codec_name": "h264"}]})]
)
def test_probe_output_without_video_is_an_error(output: str) -> None:
    with pytest.raises(DecoderError, match="no video stream"):
        parse_probe(output)


def test_tools_are_found_or_named() -> None:
    ffmpeg, ffprobe = find_tools("ffmpeg")
    assert ffmpeg.endswith("/ffmpeg") and ffprobe.endswith("/ffprobe")
    with pytest.raises(DecoderError, match="'/nowhere/ffmpeg' not found"):
        find_tools("/nowhere/ffmpeg")


def test_this_ffmpeg_takes_timeout_for_rtsp() -> None:
    # Debian 12's FFmpeg 5.1; `-stimeout` is FFmpeg 4's.
    assert rtsp_timeout_option(find_tools("ffmpeg")[0]) == "-timeout"


def test_requirements_are_what_ffmpeg_must_list_for_the_codecs() -> None:
    assert PRESETS["rkmpp"].requirements() == {
        "hwaccels": ["rkmpp"], "decoders": ["h264_rkmpp", "hevc_rkmpp"], "filters": ["scale_rkrga"],
    }
    assert PRESETS["nvmpi"].requirements(("hevc",)) == {
        "hwaccels": [], "decoders": ["hevc_nvmpi"], "filters": ["scale"],
    }
    assert PRESETS["software"].requirements() == {"hwaccels": [], "decoders": [], "filters": ["scale"]}


def test_software_is_always_available() -> None:
    assert choose_preset("ffmpeg", "software", "h264") == (PRESETS["software"], "software")


def test_a_missing_preset_falls_back_to_software_saying_why_once(caplog: pytest.LogCaptureFixture) -> None:
    choose_preset.cache_clear()
    with caplog.at_level(logging.WARNING, logger=decoders.__name__):
        answers = {choose_preset("ffmpeg", "rkmpp", "h264") for _ in range(3)}
    assert answers == {(PRESETS["software"], "software (rkmpp unavailable: ffmpeg has no hwaccel rkmpp)")}
    assert [r.getMessage() for r in caplog.records] == [
        "FFmpeg preset rkmpp is unavailable for h264 (ffmpeg has no hwaccel rkmpp): decoding in software"
    ]


@pytest.mark.parametrize(("size", "box", "expected"), [
    ((1920, 1080), (640, 640), (640, 360)),   # a 1080p camera, a square detector
    ((1920, 1080), (640, 480), (640, 360)),   # the camera-shaped bundle
    ((768, 576), (640, 640), (640, 480)),
    ((1080, 1920), (640, 640), (360, 640)),   # a portrait camera
    ((2560, 1440), (640, 640), (640, 360)),
    ((1280, 1024), (640, 640), (640, 512)),
    ((320, 240), (640, 640), (320, 240)),     # never scaled up
    ((1000, 562), (640, 640), (640, 360)),    # even sides
])
def test_a_camera_fits_the_detectors_input_at_its_own_aspect(size, box, expected):
    assert fit_within(size, box) == expected
