"""FFmpeg decoding presets, and the ``ffprobe``/``ffmpeg`` commands that use them.

A live source opened with ``SourceOptions(decoder="ffmpeg")`` (see `edge.runtime.sources`)
probes the stream with `probe`, then runs the command `ffmpeg_command` builds: ``ffmpeg``
decodes the stream, scales it to the output size (in hardware where the preset can) and
writes raw BGR frames to its standard output, so full-size frames never reach Python.

Presets
-------
software
    FFmpeg's own decoders and ``scale`` filter, on the CPU.
rkmpp
    Rockchip MPP decoders and the RGA scaler (``scale_rkrga``) of ffmpeg-rockchip
    (RK3588 and kin), frames kept in DRM PRIME buffers until downloaded as NV12.
nvmpi
    Jetson's hardware decoders through jetson-ffmpeg (``h264_nvmpi``, ``hevc_nvmpi``);
    they deliver frames in system memory, scaled on the CPU.
vaapi
    VA-API (Intel and AMD GPUs): decoded and scaled (``scale_vaapi``) on the GPU.
qsv
    Intel Quick Sync: ``h264_qsv``/``hevc_qsv`` decoders and ``scale_qsv``.

A preset whose hwaccel, decoder, filter or device this machine lacks is replaced by
``software`` (`choose_preset`); the reason is logged once per process. Anything else
FFmpeg can do goes in ``SourceOptions.input_args``, added before ``-i``. What ffmpeg must
list for a preset (`Preset.requirements`) is also what the Ansible role checks on a device
before it deploys (deploy/ansible/README.md, "Decoder").
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Size = tuple[int, int]
"""``(width, height)`` in pixels."""
FALLBACK_FPS = 25.0
# Above this, a reported frame rate is a container time base (e.g. RTP's 90 kHz), not fps.
MAX_PLAUSIBLE_FPS = 1000.0
SOFTWARE = "software"
# The most of a tool's standard error kept for messages: its last lines say why it failed.
STDERR_LINES = 3
# Listing ffmpeg's abilities and opening a device take well under this; more is a hang.
CHECK_TIMEOUT_S = 10.0
CODECS = ("h264", "hevc")
"""The codecs cameras send, as ffprobe names them: what a device's ffmpeg is checked for."""


class DecoderError(Exception):
    """ffmpeg or ffprobe is missing, or could not read the stream."""


@dataclass(frozen=True)
class Preset:
    """How one kind of hardware decodes and scales, as ffmpeg arguments.

    Attributes
    ----------
    hwaccel : str or None
        ``-hwaccel`` method; ``ffmpeg -hwaccels`` must list it and its device must open.
    input_args : tuple of str
        More input options, after ``-hwaccel``.
    decoder : str or None
        Decoder given with ``-c:v``, ``{codec}`` replaced by the stream's codec as
        ffprobe names it (``h264``, ``hevc``); ``ffmpeg -decoders`` must list it. None
        lets ffmpeg choose its own decoder.
    scaler : str
        The scale filter, which ``ffmpeg -filters`` must list.
    hw_format : str or None
        Pixel format the scaler outputs in hardware memory, downloaded with
        ``hwdownload``; None where frames are already in system memory.
    """

    hwaccel: str | None = None
    input_args: tuple[str, ...] = ()
    decoder: str | None = None
    scaler: str = "scale"
    hw_format: str | None = None

    def decoder_for(self, codec: str) -> str | None:
        """Return the decoder to force for ``codec``, or None to let ffmpeg choose."""
        return self.decoder.format(codec=codec) if self.decoder else None

    def requirements(self, codecs: tuple[str, ...] = CODECS) -> dict[str, list[str]]:
        """Return what ffmpeg must list for this preset to decode ``codecs``.

        Parameters
        ----------
        codecs : tuple of str
            Codecs as ffprobe names them.

        Returns
        -------
        dict
            Per listing of ffmpeg (``hwaccels``, ``decoders``, ``filters``: what
            ``ffmpeg -hide_banner -decoders`` and the others print), the names it must
            hold, in that order; e.g. ``{"hwaccels": ["rkmpp"], "decoders": ["h264_rkmpp",
            "hevc_rkmpp"], "filters": ["scale_rkrga"]}``.
        """
        decoders = [self.decoder_for(codec) for codec in codecs]
        return {
            "hwaccels": [self.hwaccel] if self.hwaccel else [],
            "decoders": [decoder for decoder in decoders if decoder],
            "filters": [self.scaler],
        }


PRESETS: dict[str, Preset] = {
    SOFTWARE: Preset(),
    # ffmpeg-rockchip's README: AFBC frames are compressed; only RGA reads them, and RGA
    # must turn them into NV12 before they can be downloaded.
    "rkmpp": Preset(
        hwaccel="rkmpp",
        input_args=("-hwaccel_output_format", "drm_prime", "-afbc", "rga"),
        decoder="{codec}_rkmpp",
        scaler="scale_rkrga",
        hw_format="nv12",
    ),
    "nvmpi": Preset(decoder="{codec}_nvmpi"),
    "vaapi": Preset(
        hwaccel="vaapi",
        input_args=("-hwaccel_output_format", "vaapi"),
        scaler="scale_vaapi",
        hw_format="nv12",
    ),
    "qsv": Preset(
        hwaccel="qsv",
        input_args=("-hwaccel_output_format", "qsv"),
        decoder="{codec}_qsv",
        scaler="scale_qsv",
        hw_format="nv12",
    ),
}


def target_preset(target: str | None) -> str:
    """Return the preset that fits a bundle's target: the decoder of the board it is for.

    Rockchip SoCs decode with their MPP (``rkmpp``), a Jetson with its NVDEC through
    ``nvmpi``, an Intel device with its GPU through VA-API; anything else, and a target
    unknown, in software. A preset whose hardware is missing falls back to software.
    """
    if target is None:
        return SOFTWARE
    if target.startswith("rk"):
        return "rkmpp"
    return {"jetson-orin": "nvmpi", "openvino": "vaapi"}.get(target, SOFTWARE)


@dataclass(frozen=True)
class StreamInput:
    """Where a stream is and how to reach it, as ffmpeg and ffprobe input options.

    Attributes
    ----------
    url : str
        ``rtsp://``, ``rtsps://``, ``http://`` or ``https://``.
    transport : str
        RTSP lower transport, ``"tcp"`` or ``"udp"``.
    timeout_s : float
        Longest wait on the network (connect, or a read) before ffmpeg gives up.
    timeout_option : str
        RTSP's socket timeout option: ``-timeout`` since FFmpeg 5, ``-stimeout`` before
        (where ``-timeout`` made ffmpeg *listen* for a connection); see `rtsp_timeout_option`.
    """

    url: str
    transport: str = "tcp"
    timeout_s: float = 5.0
    timeout_option: str = "-timeout"

    def args(self) -> list[str]:
        """Return the options that go before ``-i url``."""
        microseconds = str(round(self.timeout_s * 1e6))
        if self.url.split(":", 1)[0].lower() in ("rtsp", "rtsps"):
            return ["-rtsp_transport", self.transport, self.timeout_option, microseconds]
        return ["-rw_timeout", microseconds]


@dataclass(frozen=True)
class StreamInfo:
    """What `probe` found of a stream's video.

    Attributes
    ----------
    codec : str
        ffprobe's codec name (``h264``, ``hevc``...).
    size : Size
        Native ``(width, height)``.
    fps : float
        Frame rate, 25.0 where the stream does not say.
    """

    codec: str
    size: Size
    fps: float


def fit_within(size: Size, box: Size) -> Size:
    """Return ``size`` scaled down (never up) to fit in ``box`` at its own aspect.

    Both sides are rounded to even numbers, which hardware scalers and YUV 4:2:0 want:
    a 1920x1080 camera fits a 640x640 detector input at 640x360.
    """
    scale = min(box[0] / size[0], box[1] / size[1], 1.0)
    return (max(2, round(size[0] * scale / 2) * 2), max(2, round(size[1] * scale / 2) * 2))


def video_filter(preset: Preset, size: Size) -> str:
    """Return the ``-vf`` chain that scales to ``size`` and leaves frames in system memory."""
    width, height = size
    scale = f"{preset.scaler}=w={width}:h={height}"
    if preset.hw_format is None:
        return scale
    return f"{scale}:format={preset.hw_format},hwdownload,format={preset.hw_format}"


def ffmpeg_command(
    stream: StreamInput,
    preset: Preset,
    codec: str,
    size: Size,
    input_args: tuple[str, ...] = (),
    ffmpeg: str = "ffmpeg",
) -> list[str]:
    """Return the ffmpeg command that writes ``stream``'s frames as raw BGR to stdout.

    Parameters
    ----------
    stream : StreamInput
        The URL and network options.
    preset : Preset
        How to decode and scale.
    codec : str
        The stream's codec (`StreamInfo.codec`), for presets with per-codec decoders.
    size : Size
        Output ``(width, height)``; each frame is ``width * height * 3`` bytes.
    input_args : tuple of str
        The operator's own input options, after the preset's.
    ffmpeg : str
        The ffmpeg executable.

    Returns
    -------
    list of str
        The argument vector.
    """
    decoder = preset.decoder_for(codec)
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        # One thread to decode and one to scale, as OpenCV decodes a camera: cameras
        # decode side by side on a board's cores, and a 1080p H.264 camera's ffmpeg holds
        # 62 MB instead of 78 (USS, scaled to 640x360 in software) with 3 threads instead
        # of 10. The operator's input options come later and may ask for more threads.
        "-filter_threads", "1",
        *stream.args(),
        "-threads", "1",
        *(["-hwaccel", preset.hwaccel] if preset.hwaccel else []),
        *preset.input_args,
        *(["-c:v", decoder] if decoder else []),
        *input_args,
        "-i", stream.url,
        "-map", "0:v:0",
        "-vf", video_filter(preset, size),
        # rawvideo is a constant-rate muxer: without this, ffmpeg would duplicate frames
        # to fill gaps in a live stream.
        "-vsync", "passthrough",
        "-pix_fmt", "bgr24", "-f", "rawvideo", "pipe:1",
    ]  # fmt: skip


def ffprobe_command(stream: StreamInput, ffprobe: str = "ffprobe") -> list[str]:
    """Return the ffprobe command that prints the first video stream's codec, size and rate as JSON."""
    return [
        ffprobe, "-hide_banner", "-loglevel", "error",
        *stream.args(),
        "-select_streams", "v:0",
        "-show_entries", "stream=codec_name,width,height,avg_frame_rate,r_frame_rate",
        "-of", "json",
        stream.url,
    ]  # fmt: skip


def parse_probe(output: str) -> StreamInfo:
    """Read ffprobe's JSON (from `ffprobe_command`); DecoderError if it holds no video."""
    streams = json.loads(output or "{}").get("streams") or [{}]
    video = streams[0]
    if not video.get("codec_name") or not video.get("width") or not video.get("height"):
        raise DecoderError("no video stream found")
    rates = (_rate(video.get(key, "")) for key in ("avg_frame_rate", "r_frame_rate"))
    fps = next((rate for rate in rates if is_plausible_fps(rate)), FALLBACK_FPS)
    return StreamInfo(video["codec_name"], (int(video["width"]), int(video["height"])), fps)


def probe(stream: StreamInput, ffprobe: str, timeout_s: float) -> StreamInfo:
    """Run ffprobe on ``stream``; DecoderError with ffprobe's last words if it fails."""
    try:
        done = _run(ffprobe_command(stream, ffprobe), timeout_s)
    except subprocess.TimeoutExpired:
        raise DecoderError(f"ffprobe found no stream in {timeout_s:g} s") from None
    if done.returncode != 0:
        raise DecoderError(f"ffprobe: {stderr_tail(done.stderr) or f'exit code {done.returncode}'}")
    return parse_probe(done.stdout)


def find_tools(ffmpeg: str) -> tuple[str, str]:
    """Return the paths of ``ffmpeg`` and of the ffprobe beside it (or on PATH).

    Raises
    ------
    DecoderError
        Either is missing.
    """
    found = shutil.which(ffmpeg)
    if found is None:
        raise DecoderError(f"{ffmpeg!r} not found: install FFmpeg or set ffmpeg_path")
    ffprobe = shutil.which(str(Path(found).with_name("ffprobe"))) or shutil.which("ffprobe")
    if ffprobe is None:
        raise DecoderError(f"no ffprobe beside {found} nor on PATH")
    return found, ffprobe


@functools.cache
def rtsp_timeout_option(ffmpeg: str) -> str:
    """Return ``-stimeout`` where this ffmpeg (before 5.0) has it, else ``-timeout``."""
    done = _run([ffmpeg, "-hide_banner", "-h", "demuxer=rtsp"], CHECK_TIMEOUT_S)
    return "-stimeout" if "-stimeout " in done.stdout else "-timeout"


@functools.cache
def choose_preset(ffmpeg: str, name: str, codec: str) -> tuple[Preset, str]:
    """Return the preset to decode ``codec`` with, and a label for status pages.

    The preset ``name`` if this ffmpeg and machine can run it, else ``software``, with a
    warning logged (once per process: the answer is cached) and the reason in the label,
    e.g. ``"software (rkmpp unavailable: ffmpeg has no hwaccel rkmpp)"``.
    """
    reason = _unavailable_reason(ffmpeg, PRESETS[name], codec)
    if reason is None:
        return PRESETS[name], name
    log.warning("FFmpeg preset %s is unavailable for %s (%s): decoding in software", name, codec, reason)
    return PRESETS[SOFTWARE], f"{SOFTWARE} ({name} unavailable: {reason})"


def is_plausible_fps(rate: float) -> bool:
    """Tell a frame rate from "unknown" (0, NaN) and from a container's time base."""
    return math.isfinite(rate) and 0 < rate <= MAX_PLAUSIBLE_FPS


def stderr_tail(text: str) -> str:
    """Return the last lines of a tool's standard error, joined by `` | ``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-STDERR_LINES:])


def _unavailable_reason(ffmpeg: str, preset: Preset, codec: str) -> str | None:
    """Say what this ffmpeg or machine lacks to run ``preset`` on ``codec``; None if nothing."""
    for listing, names in preset.requirements((codec,)).items():
        for name in names:
            if not _lists(ffmpeg, f"-{listing}", name):
                return f"ffmpeg has no {listing.removesuffix('s')} {name}"
    return _device_error(ffmpeg, preset.hwaccel) if preset.hwaccel else None


@functools.cache
def _listing(ffmpeg: str, flag: str) -> list[list[str]]:
    """Return the first two words of each line ``ffmpeg -hwaccels`` (or ``-decoders``...) prints."""
    done = _run([ffmpeg, "-hide_banner", flag], CHECK_TIMEOUT_S)
    return [line.split()[:2] for line in done.stdout.splitlines()]


def _lists(ffmpeg: str, flag: str, name: str) -> bool:
    # Lines are "vaapi" (hwaccels) or "V....D h264 description" (decoders, filters).
    return any(name in words for words in _listing(ffmpeg, flag))


def _device_error(ffmpeg: str, hwaccel: str) -> str | None:
    """Open the hwaccel's device once; return ffmpeg's complaint if it cannot."""
    # ffmpeg opens a device only on its way to running something: a one-frame null job.
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-init_hw_device", hwaccel]
    command += ["-f", "lavfi", "-i", "nullsrc=s=64x64", "-frames:v", "1", "-f", "null", "-"]
    try:
        done = _run(command, CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"opening the {hwaccel} device took over {CHECK_TIMEOUT_S:g} s"
    if done.returncode == 0:
        return None
    return stderr_tail(done.stderr) or f"no {hwaccel} device"


def _run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout_s
    )


def _rate(text: str) -> float:
    """Read ffprobe's ``"30000/1001"``; 0.0 for ``"0/0"`` or nonsense."""
    numerator, _, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
