"""The OpenAPI 3.1 document of the HTTP API, generated from the models and the routes.

Request bodies are the models requests are validated with (:class:`~edge.service.
validation.JobRequest`, :data:`~edge.service.validation.ConfigChange`), and so are the
results routes' query parameters (:class:`~edge.service.validation.ResultsQuery`);
responses are the models of :mod:`edge.service.responses`, those the routes answer with;
their JSON schemas come from pydantic (``models_json_schema``) as the document's
components. The paths are the Flask app's own rules: each route's method must have an
entry in :data:`OPERATIONS`, or building the document fails, so no route goes
undocumented. ``GET /api/openapi.json`` serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from edge.service import responses as r
from edge.service import validation as v
from edge.service.jobs import JOB_ID
from edge.service.metrics import CONTENT_TYPE as METRICS_TYPE

COMPONENTS = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """What one method of one route takes and answers.

    Attributes
    ----------
    summary : str
    answers : dict
        Status code -> a response model (JSON) or a media type (anything else).
    body : model, optional
        The JSON request body's model.
    query : model, optional
        The model of the query parameters: one parameter per field.
    public : bool
        Needs no token.
    """

    summary: str
    answers: dict[int, Any]
    body: Any = None
    query: type[BaseModel] | None = None
    public: bool = False


_JOB = {404: r.Error}
_BODY = {400: r.Error, 413: r.Error}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("health", "GET"): Operation("Liveness: 200 while the process serves", {200: r.Health}, public=True),
    ("ready", "GET"): Operation("Readiness: bundle loaded, attribute process running, self-test passed",
                                {200: r.Ready, 503: r.Ready}, public=True),
    ("openapi", "GET"): Operation("This document", {200: r.OpenApiDocument}, public=True),
    ("dashboard", "GET"): Operation("The dashboard page", {200: "text/html"}, public=True),
    ("status", "GET"): Operation("Per stream and per device figures, the bundle", {200: r.Status}),
    ("prometheus", "GET"): Operation("The figures of /status in Prometheus' text format",
                                     {200: METRICS_TYPE}),
    ("list_jobs", "GET"): Operation("Every job known", {200: r.JobList}),
    ("start_job", "POST"): Operation(
        "Start a job: its cameras until endTime",
        {200: r.Job, 403: r.Error, 409: r.Error, 429: r.Error, 503: r.Error, **_BODY}, body=v.JobRequest),
    ("get_job", "GET"): Operation("A job: its state, streams and results file", {200: r.Job, **_JOB}),
    ("stop_job", "DELETE"): Operation("Stop a job (a finished one is left as it is)", {200: r.Job, **_JOB}),
    ("results", "GET"): Operation("A job's results kept in memory, paged", {200: r.ResultsPage, **_JOB},
                                  query=v.ResultsQuery),
    ("list_cameras", "GET"): Operation("The standing cameras", {200: r.CameraList}),
    ("get_camera", "GET"): Operation("A standing camera: its state, stream and results file",
                                     {200: r.StandingCamera, **_JOB}),
    ("start_camera", "POST"): Operation(
        "Start a standing camera (one running is left as it is)",
        {200: r.StandingCamera, 429: r.Error, 503: r.Error, **_JOB, **_BODY}),
    ("stop_camera", "POST"): Operation("Stop a standing camera", {200: r.StandingCamera, **_JOB, **_BODY}),
    ("camera_results", "GET"): Operation(
        "A standing camera's results kept in memory, paged (since the service started)",
        {200: r.CameraResultsPage, **_JOB}, query=v.ResultsQuery),
    ("get_config", "GET"): Operation("The live settings", {200: r.LiveValues}),
    ("change_config", "PATCH"): Operation("Change live settings, from the next frame on",
                                          {200: r.LiveValues, **_BODY}, body=v.ConfigChange),
    ("reload", "POST"): Operation("Load and self-test the bundle again and swap it in, jobs going on",
                                  {200: r.Reloaded, 409: r.Error, 422: r.Error, **_BODY}),
    ("snapshot", "GET"): Operation("The stream's latest annotated frame", {200: "image/jpeg", 404: r.Error}),
    ("recent", "GET"): Operation("The stream's last minute of annotated video, a few frames a second",
                                 {200: "video/webm", 404: r.Error}),
}
"""Every route's methods, by Flask endpoint name and method."""

_PATH_PARAMETERS = {
    "job_id": {"pattern": JOB_ID.pattern, "description": "1 to 64 letters, digits, '_' or '-'"},
    "stream_id": {"pattern": v.STREAM_ID.pattern, "description": "<job id>.<index>, e.g. 1.0"},
    "name": {"pattern": JOB_ID.pattern, "description": "a standing camera's name"},
}


def document(app: Flask, secured: bool) -> r.OpenApiDocument:
    """Return the OpenAPI document of ``app``'s routes.

    Parameters
    ----------
    app : Flask
        The service's app (:func:`edge.service.app.create_app`).
    secured : bool
        Whether a token is set: then every operation but the public ones needs it.

    Raises
    ------
    KeyError
        For a route's method that :data:`OPERATIONS` does not describe.
    """
    refs, components = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = OPERATIONS.get((rule.endpoint, method))
            if operation is None:
                raise KeyError(f"{method} {rule.rule} ({rule.endpoint}) is not described in OPERATIONS")
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, operation, sorted(rule.arguments), refs, secured)
    return r.OpenApiDocument(
        openapi="3.1.0",
        info={"title": "silhouette-edge device service", "version": _version(),
              "description": "Jobs of video streams on an edge device: person detection, tracking "
                             "and attributes; health, status, metrics and control."},
        servers=[{"url": "/"}],
        paths=paths,
        components={"schemas": components,
                    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    )


def _operation(endpoint: str, op: Operation, arguments: list[str], refs: dict[Any, str],
               secured: bool) -> dict[str, Any]:
    answers = {**op.answers, **({401: r.Error} if secured and not op.public else {}),
               **({400: r.Error} if arguments or op.query else {})}  # a malformed id or query
    result: dict[str, Any] = {
        "operationId": endpoint, "summary": op.summary,
        "responses": {str(code): _response(code, answer, refs) for code, answer in sorted(answers.items())},
    }
    parameters = [{"name": name, "in": "path", "required": True,
                   "description": _PATH_PARAMETERS[name]["description"],
                   "schema": {"type": "string", "pattern": _PATH_PARAMETERS[name]["pattern"]}}
                  for name in arguments]
    parameters += _query_parameters(op.query) if op.query is not None else []
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": {"$ref": refs[op.body]}}}}
    result["security"] = [{"bearer": []}] if secured and not op.public else []
    return result


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Return a query model's fields as OpenAPI query parameters, each with its field's schema."""
    schema = model.model_json_schema()
    parameters = []
    for name, field in schema["properties"].items():
        # A parameter is absent rather than null: its schema is the field's one that is not null.
        value = next(s for s in field.get("anyOf", [field]) if s.get("type") != "null")
        parameters.append({
            "name": name, "in": "query", "required": name in schema.get("required", []),
            "schema": {k: v for k, v in value.items() if k not in ("title", "default", "description")},
            "description": field["description"],
        })
    return parameters


def _response(status: int, answer: Any, refs: dict[Any, str]) -> dict[str, Any]:
    description = HTTPStatus(status).phrase
    if isinstance(answer, str):
        binary = answer.startswith(("image/", "video/"))
        schema = {"type": "string", **({"format": "binary"} if binary else {})}
        return {"description": description, "content": {answer: {"schema": schema}}}
    return {"description": description, "content": {"application/json": {"schema": {"$ref": refs[answer]}}}}


def _schemas() -> tuple[dict[Any, str], dict[str, Any]]:
    """Return each model's ``$ref`` and the components, from pydantic's JSON schemas."""
    bodies = {op.body for op in OPERATIONS.values() if op.body is not None}
    answers = {a for op in OPERATIONS.values() for a in op.answers.values() if not isinstance(a, str)}
    wanted: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in sorted(bodies, key=str)]
    wanted += [(m, "serialization") for m in sorted(answers, key=str)]
    keys, defs = models_json_schema(wanted, ref_template=COMPONENTS, by_alias=True)
    return {model: schema["$ref"] for (model, _), schema in keys.items()}, defs.get("$defs", {})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("silhouette-edge")
    except PackageNotFoundError:
        return "unknown"
