"""What requests carry, checked: every problem is a 4xx with a message that says what is wrong.

Nothing a client sends reaches the runtime unchecked: JSON bodies (strict: no ``NaN``),
job requests (the original system's ``cameraUrls``/``endTime``), threshold changes,
query parameters and ids in paths. Local video files must resolve (symbolic links
followed) to a path under the media folder.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge.runtime.sources import LIVE_SCHEMES, TRANSPORTS
from edge.service.jobs import JOB_ID, Camera
from edge.settings import LIVE_KEYS

MAX_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = 2048
MAX_PAGE = 1000
STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[0-9]{1,4}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_INT = re.compile(r"^-?[0-9]{1,15}$")
_DECIMAL = re.compile(r"^-?[0-9]{1,15}(\.[0-9]{1,9})?$")
_CAMERA_KEYS = ("video", "transport", "realtime")


class RequestError(Exception):
    """A request the service refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobRequest:
    """A checked ``POST /api/inference/<id>`` body."""

    cameras: list[Camera]
    end_time: float


def parse_json(raw: bytes) -> Any:
    """Parse a request body as strict JSON.

    Raises
    ------
    RequestError
        For an empty body or anything that is not JSON (``NaN`` and ``Infinity``
        included).
    """
    if not raw.strip():
        raise RequestError("the request has no body: send a JSON object")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(f"malformed JSON: {e}") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number in JSON")


def job_id(value: str) -> str:
    """Check a job id from a path."""
    if not JOB_ID.match(value):
        raise RequestError(f"job id {value[:80]!r}: use 1 to 64 letters, digits, '_' or '-'")
    return value


def stream_id(value: str) -> str:
    """Check a stream id (``<job>.<index>``) from a path."""
    if not STREAM_ID.match(value):
        raise RequestError(f"stream id {value[:80]!r}: expected <job id>.<index>, e.g. 1.0")
    return value


def job_request(body: Any, *, now: float, max_streams: int, media_root: Path) -> JobRequest:
    """Check a job request: ``{"cameraUrls": [{"video": ...}], "endTime": ...}``.

    Each camera may also say ``transport`` (``tcp``/``udp``) and ``realtime`` (files).
    File paths are made absolute (a relative one is taken under ``media_root``).

    Raises
    ------
    RequestError
        Naming the field and what is wrong with it.
    """
    fields = _object(body, "the body", required=("cameraUrls", "endTime"), optional=())
    cameras = fields["cameraUrls"]
    if not isinstance(cameras, list) or not cameras:
        raise RequestError("cameraUrls must be a non-empty list of {\"video\": ...} objects")
    if len(cameras) > max_streams:
        raise RequestError(f"cameraUrls has {len(cameras)} entries; this device runs {max_streams} at most")
    return JobRequest(
        [_camera(c, f"cameraUrls[{i}]", media_root) for i, c in enumerate(cameras)],
        _end_time(fields["endTime"], now),
    )


def _object(value: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object, got {_json_type(value)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise RequestError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise RequestError(f"{what} has unknown field(s) {shown}; known: {', '.join(required + optional)}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _camera(value: Any, where: str, media_root: Path) -> Camera:
    fields = _object(value, where, required=("video",), optional=_CAMERA_KEYS[1:])
    video = fields["video"]
    if not isinstance(video, str) or not video.strip():
        raise RequestError(f"{where}.video must be a non-empty string (an RTSP URL or a video file)")
    transport = fields.get("transport")
    if transport is not None and transport not in TRANSPORTS:
        raise RequestError(f"{where}.transport must be one of {', '.join(TRANSPORTS)}")
    realtime = fields.get("realtime")
    if realtime is not None and not isinstance(realtime, bool):
        raise RequestError(f"{where}.realtime must be true or false")
    return Camera(check_video(video, media_root, f"{where}.video"), transport, realtime)


def check_video(video: str, media_root: Path, where: str = "video") -> str:
    """Check a camera's URL or file and return what to open.

    Live URLs (``rtsp``, ``rtsps``, ``http``, ``https``) need a host. Anything else
    must be a local file (a path, or a ``file://`` URI without a host) that resolves
    under ``media_root``; its absolute, resolved path is returned.

    Raises
    ------
    RequestError
        For an overlong value, control characters, an unsupported scheme, or a file
        outside the media folder.
    """
    if len(video) > MAX_URL_CHARS:
        raise RequestError(f"{where} is longer than {MAX_URL_CHARS} characters")
    _printable(video, where)
    match = _SCHEME.match(video)
    scheme = match.group(1).lower() if match and video[match.end():].startswith("//") else None
    try:
        parts = urlsplit(video)
        host = parts.hostname
    except ValueError as e:  # e.g. an unclosed IPv6 bracket
        raise RequestError(f"{where}: not a valid URL: {e}") from None
    if scheme in LIVE_SCHEMES:
        if not host:
            raise RequestError(f"{where}: {scheme}:// URL without a host")
        return video
    if scheme not in (None, "file"):
        raise RequestError(
            f"{where}: unsupported URL scheme {scheme!r}; use "
            f"{', '.join(s + '://' for s in LIVE_SCHEMES)} or a file under the media folder"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise RequestError(f"{where}: a file:// URI must name a local file (no host)")
        video = unquote(parts.path)
        _printable(video, where)
    return str(_under(media_root, Path(video), where))


def _printable(text: str, where: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise RequestError(f"{where} contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} is not valid Unicode text") from None


def _under(root: Path, path: Path, where: str) -> Path:
    resolved_root = root.resolve()
    try:
        resolved = (resolved_root / path).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop
        raise RequestError(f"{where}: cannot resolve the path: {e}") from None
    if not resolved.is_relative_to(resolved_root):
        raise RequestError(f"{where}: {path} is outside the allowed media folder {resolved_root}", 403)
    return resolved


def _number(value: Any, where: str) -> float:
    """Return a JSON number as a finite float, or refuse it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where} must be a number, got {_json_type(value)}")
    try:
        number = float(value)  # an integer beyond float's range overflows
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f"{where} must be a finite number")
    return number


def _end_time(value: Any, now: float) -> float:
    end = _number(value, "endTime (a Unix timestamp)")
    if end <= now:
        raise RequestError(f"endTime {value} is in the past (now is {now:.0f})")
    return end


def config_change(body: Any) -> dict[str, float]:
    """Check a ``PATCH /api/config`` body: some of :data:`~edge.runtime.live.LIVE_KEYS`.

    Ranges are checked by :meth:`edge.service.live.LiveSettings.update`.
    """
    fields = _object(body, "the body", required=(), optional=LIVE_KEYS)
    if not fields:
        raise RequestError(f"nothing to change: give one or more of {', '.join(LIVE_KEYS)}")
    return {key: _number(value, key) for key, value in fields.items()}


def results_query(args: Mapping[str, str]) -> dict[str, Any]:
    """Check the query of ``GET /api/inference/<id>/results``.

    ``after`` (a ``seq``, default -1), ``limit`` (1 to 1000, default 100), ``stream``
    (an index), ``from_frame`` (a frame number), ``from_time`` (a Unix time).
    """
    known = ("after", "limit", "stream", "from_frame", "from_time")
    unknown = sorted(set(args) - set(known))
    if unknown:
        names = ", ".join(u[:40] for u in unknown)
        raise RequestError(f"unknown query parameter(s) {names}; known: {', '.join(known)}")
    query: dict[str, Any] = {
        "after": _int(args, "after", -1, -1),
        "limit": _int(args, "limit", 100, 1),
        "stream": _int(args, "stream", None, 0),
        "from_frame": _int(args, "from_frame", None, 0),
    }
    if query["limit"] > MAX_PAGE:
        raise RequestError(f"limit must be at most {MAX_PAGE}")
    if "from_time" in args:
        if not _DECIMAL.match(args["from_time"]):
            raise RequestError("from_time must be a Unix time, e.g. 1672531199.5")
        query["from_time"] = float(args["from_time"])
    return query


def _int(args: Mapping[str, str], name: str, default: int | None, least: int) -> int | None:
    if name not in args:
        return default
    text = args[name]
    if not _INT.match(text) or int(text) < least:
        raise RequestError(f"{name} must be an integer >= {least}, got {text[:40]!r}")
    return int(text)
