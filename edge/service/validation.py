"""What requests carry, checked: every problem is a 4xx with a message that says what is wrong.

Nothing a client sends reaches the runtime unchecked: JSON bodies (strict: no ``NaN``),
query parameters and ids in paths. The bodies are pydantic models, the same ones the
service works with: :class:`JobRequest` (the original system's ``cameraUrls``/``endTime``,
each camera a :class:`~edge.service.runs.StreamRequest`) and :data:`ConfigChange` (the live
keys of :class:`~edge.settings.RuntimeSettings`); the results routes' query is
:class:`ResultsQuery`. Their errors are said in sentences (:func:`edge.errors.describe`).
Local video files must resolve (symbolic links followed) to a path under the media folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from annotated_types import Ge
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from edge.errors import REFUSED, describe, plain
from edge.runtime.sources import LIVE_SCHEMES, scheme_of
from edge.service.jobs import check_job_id
from edge.service.runs import StreamRequest
from edge.settings import LIVE_KEYS, RuntimeSettings

MAX_BODY_BYTES = 64 * 1024
MAX_URL_CHARS = 2048
MAX_PAGE = 1000
STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[0-9]{1,4}$")
_INT = re.compile(r"^-?[0-9]{1,15}$")
_NUMBER = re.compile(r"^-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?$")
_INT_MAX = 10**15 - 1
"""The greatest integer of 15 digits, as ``_INT`` reads them."""
MAX_END_TIME = 253402300799.0
"""The last second of the year 9999 (UTC): a later ``endTime`` is no date at all."""
_BODY = ConfigDict(extra="forbid", allow_inf_nan=False)
Number = Annotated[float, Strict()]
"""A JSON number (an integer or not), never a string or a boolean."""
Integer = Annotated[int, Strict()]
"""A JSON integer, never a boolean."""


class RequestError(Exception):
    """A request the service refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _cameras(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(REFUSED, 'must be a non-empty list of {"video": ...} objects')
    return value


def _by_year_9999(value: float) -> float:
    # Checked here rather than by Field(le=...), whose error could not say what the bound means.
    if value > MAX_END_TIME:
        raise PydanticCustomError(REFUSED, "must be at most {most} (the end of the year 9999), got {got}",
                                  {"most": plain(MAX_END_TIME), "got": plain(value)})
    return value


class JobRequest(BaseModel):
    """A ``POST /api/inference/<id>`` body: the cameras, and when the analysis ends."""

    model_config = _BODY

    cameraUrls: Annotated[list[StreamRequest], BeforeValidator(_cameras)] = Field(  # noqa: N815 - the API's name
        min_length=1, description="the streams: an RTSP URL or a video file each")
    endTime: Annotated[Number, AfterValidator(_by_year_9999)] = Field(  # noqa: N815 - the API's name
        title="endTime (a Unix timestamp)", json_schema_extra={"maximum": MAX_END_TIME},
        description="Unix time at which the analysis ends (in the future, at most the end of year 9999)")


def _some_of(schema: dict[str, Any]) -> None:
    """Say that a body gives one or more of its fields, none by default."""
    for field in schema["properties"].values():
        field.pop("default", None)
    schema["minProperties"] = 1


ConfigChange = create_model(
    "ConfigChange", __doc__="Some of the live settings, to change.",
    __config__=ConfigDict(**_BODY, json_schema_extra=_some_of),
    **{key: (Integer if RuntimeSettings.model_fields[key].annotation is int else Number, None)
       for key in LIVE_KEYS},
)
"""A ``PATCH /api/config`` body: some of the live keys; ranges are the settings' own."""


class ResultsQuery(BaseModel):
    """The query of the results routes: which records kept in memory make the page.

    Values come as text: integers as digits only, as the OpenAPI document (generated
    from this model) has them; ``ge``/``le`` are there for that document, the bounds
    being checked with the text.
    """

    model_config = ConfigDict(frozen=True)

    after: int = Field(-1, ge=-1, le=_INT_MAX, description="only records with a greater seq "
                       "(the previous page's `next`)")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="the most records returned (100 by default)")
    stream: int | None = Field(None, ge=0, le=_INT_MAX,
                               description="only this stream's records (its index in cameraUrls)")
    from_frame: int | None = Field(None, ge=0, le=_INT_MAX, description="only frames from this number on")
    from_time: float | None = Field(None, ge=-MAX_END_TIME, le=MAX_END_TIME,
                                    description="only records processed from this Unix time on")

    @field_validator("after", "limit", "stream", "from_frame", mode="before")
    @classmethod
    def _integer(cls, text: str, info: ValidationInfo) -> int:
        least = next(m.ge for m in cls.model_fields[info.field_name or ""].metadata if isinstance(m, Ge))
        if not _INT.match(text) or int(text) < least:
            raise PydanticCustomError(REFUSED, "must be an integer >= {least}, got {got}",
                                      {"least": least, "got": repr(text[:40])})
        return int(text)

    @field_validator("from_time", mode="before")
    @classmethod
    def _unix_time(cls, text: str) -> float:
        if not _NUMBER.match(text) or not abs(float(text)) <= MAX_END_TIME:
            raise PydanticCustomError(REFUSED, "must be a Unix time, e.g. 1672531199.5, got {got}",
                                      {"got": repr(text[:40])})
        return float(text)


def no_body(raw: bytes) -> None:
    """Refuse a body sent to an endpoint that takes none.

    Raises
    ------
    RequestError
    """
    if raw.strip():
        raise RequestError("this endpoint takes no body; send the request without one")


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


def job_id(value: str, what: str = "job id") -> str:
    """Check a job id (or a camera's name: ``what``) from a path."""
    try:
        return check_job_id(value, what)
    except ValueError as e:
        raise RequestError(str(e)) from None


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
    request = parse_body(JobRequest, body)
    if len(request.cameraUrls) > max_streams:
        raise RequestError(
            f"cameraUrls has {len(request.cameraUrls)} entries; this device runs {max_streams} at most")
    if request.endTime <= now:
        raise RequestError(f"endTime {plain(body['endTime'])} is in the past (now is {now:.0f})")
    cameras = [
        dataclasses.replace(c, video=check_video(c.video, media_root, f"cameraUrls[{i}].video"))
        for i, c in enumerate(request.cameraUrls)
    ]
    return request.model_copy(update={"cameraUrls": cameras})


def parse_body(model: Any, body: Any) -> Any:
    """Validate a parsed JSON body against a request model.

    Raises
    ------
    RequestError
        Saying, in sentences, every problem found (:func:`edge.errors.describe`).
    """
    try:
        return TypeAdapter(model).validate_python(body)
    except ValidationError as e:
        raise RequestError(describe(e, model, whole="the body")) from None


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
    scheme = scheme_of(video)
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


def config_change(body: Any) -> dict[str, float]:
    """Check a ``PATCH /api/config`` body: some of :data:`~edge.settings.LIVE_KEYS`.

    Ranges are checked by :meth:`edge.service.live.LiveSettings.update`.
    """
    change = parse_body(ConfigChange, body).model_dump(exclude_unset=True)
    if not change:
        raise RequestError(f"nothing to change: give one or more of {', '.join(LIVE_KEYS)}")
    return change


def results_query(args: Mapping[str, str]) -> ResultsQuery:
    """Check the query of the results routes (``GET /api/inference/<id>/results``...).

    Raises
    ------
    RequestError
        For a parameter :class:`ResultsQuery` does not have, or a bad value.
    """
    known = list(ResultsQuery.model_fields)
    unknown = sorted(set(args) - set(known))
    if unknown:
        names = ", ".join(u[:40] for u in unknown)
        raise RequestError(f"unknown query parameter(s) {names}; known: {', '.join(known)}")
    return parse_body(ResultsQuery, {name: args[name] for name in args})
