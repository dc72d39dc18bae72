"""The HTTP API: the original system's job request, health, status, metrics, control, a page.

Routes (those marked * need ``Authorization: Bearer <token>`` when a token is set):

==========================================  ===============================================
``POST /api/inference/<id>`` *              start a job: ``{"cameraUrls": [{"video": ...}],
                                            "endTime": <unix time>}``
``GET /api/inference/<id>`` *               the job: state, per-stream figures
``GET /api/inference/<id>/results`` *       its detections, paged (``after``, ``limit``) or
                                            from a ``stream``/``from_frame``/``from_time`` on
``DELETE /api/inference/<id>`` *            stop it
``GET /api/inference`` *                    every job known
``GET /health``                             liveness: 200 while the process serves
``GET /ready``                              200 once the bundle is loaded, the attribute
                                            process runs and the self-test passed; else 503
``GET /api/openapi.json``                   the OpenAPI 3.1 document of these routes
``GET /status`` *                           per stream and per device figures, the bundle
``GET /metrics`` *                          the same in Prometheus' format
``GET /api/cameras`` *                      the standing cameras (the configuration's ``cameras:``)
``GET /api/cameras/<name>`` *               one: its state, stream and results file
``POST /api/cameras/<name>/start`` *        start it (or ``/stop``); jobs go on beside it
``GET /api/cameras/<name>/results`` *       its detections, paged as a job's
``GET, PATCH /api/config`` *                the live thresholds (``conf_th``, ``iou_th``,
                                            ``score_th_capture``, ``min_live_seconds``)
``POST /api/models/reload`` *               reload and self-test the bundle, jobs going on
``GET /api/streams/<id>/snapshot.jpg`` *    the stream's latest annotated frame
``GET /api/streams/<id>/recent.webm`` *     its last minute of annotated video (WebM)
``GET /``                                   the dashboard page (it asks for the token)
==========================================  ===============================================

Every error is JSON, ``{"error": "<what is wrong>"}``, with a 4xx status for anything a
client can get wrong; a 5xx would be a bug (and is logged as one), except 503 while the
service is not ready to start jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from edge.runtime.sources import SourceError
from edge.service import metrics, openapi, validation
from edge.service import responses as r
from edge.service.cameras import CameraNotFound
from edge.service.capacity import CapacityExceeded, Occupied
from edge.service.jobs import JobConflict, JobNotFound
from edge.service.state import Service
from edge.service.streams import StreamRunner
from edge.service.validation import RequestError

logger = logging.getLogger(__name__)

PUBLIC = frozenset({"health", "ready", "dashboard", "openapi"})
"""Endpoints that need no token."""

_ERRORS: dict[type[Exception], int] = {
    JobNotFound: 404,
    CameraNotFound: 404,
    JobConflict: 409,
    Occupied: 409,
    CapacityExceeded: 429,
    SourceError: 400,
}


def answer(model: BaseModel, status: int = 200) -> Response:
    """Return a response model as the JSON answer: its fields in their order, by their API names."""
    response = jsonify(model.model_dump(mode="json", by_alias=True))
    response.status_code = status
    return response


def _error(message: str, status: int) -> Response:
    return answer(r.Error(error=message), status)


def create_app(service: Service) -> Flask:
    """Return the Flask app serving ``service``."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = validation.MAX_BODY_BYTES
    app.json.sort_keys = False  # keep the documented field order
    _install_guards(app, service.config.token)
    _install_routes(app, service)
    spec: list[r.OpenApiDocument] = []  # made once every route is added, this one too
    app.add_url_rule("/api/openapi.json", "openapi", lambda: answer(spec[0]), methods=["GET"])
    spec.append(openapi.document(app, secured=bool(service.config.token)))
    return app


def _digest(authorization: str) -> bytes:
    return hashlib.sha256(authorization.encode("utf-8", "replace")).digest()


def _install_guards(app: Flask, token: str) -> None:
    # Digests of equal length compared in constant time: neither the token's characters
    # nor its length can be found by timing the answers.
    expected = _digest(f"Bearer {token}")

    @app.before_request
    def require_token() -> Any:
        if not token or request.endpoint in PUBLIC:
            return None
        if hmac.compare_digest(_digest(request.headers.get("Authorization", "")), expected):
            return None
        response = _error("a bearer token is required (Authorization: Bearer <token>)", 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="edge"'
        return response

    @app.errorhandler(RequestError)
    def refused(e: RequestError) -> Any:
        return _error(str(e), e.status)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:
        return _error(e.description or e.name, e.code or 400)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Any:
        for kind, status in _ERRORS.items():
            if isinstance(e, kind):
                return _error(str(e), status)
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return _error("internal error (logged)", 500)


def _install_routes(app: Flask, service: Service) -> None:
    @app.get("/health")
    def health() -> Any:
        return answer(r.Health(status="ok", uptime_s=round(time.time() - service.device.started, 1)))

    @app.get("/ready")
    def ready() -> Any:
        ok, reasons = service.readiness()
        return answer(r.Ready(ready=ok, reasons=reasons), 200 if ok else 503)

    @app.get("/status")
    def status() -> Any:
        return answer(service.status())

    @app.get("/metrics")
    def prometheus() -> Any:
        return Response(metrics.render(service.status()), content_type=metrics.CONTENT_TYPE)

    @app.get("/")
    def dashboard() -> Any:
        page = files("edge.service").joinpath("static/dashboard.html").read_text()
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/api/inference")
    def list_jobs() -> Any:
        return answer(r.JobList(jobs=[j.describe() for j in service.jobs.all()]))

    @app.post("/api/inference/<job_id>")
    def start_job(job_id: str) -> Any:
        validation.job_id(job_id)
        body = validation.parse_json(request.get_data(cache=False))
        return answer(service.start_job(job_id, body).describe())

    @app.get("/api/inference/<job_id>")
    def get_job(job_id: str) -> Any:
        return answer(service.jobs.get(validation.job_id(job_id)).describe())

    @app.delete("/api/inference/<job_id>")
    def stop_job(job_id: str) -> Any:
        return answer(service.jobs.stop(validation.job_id(job_id)).describe())

    @app.get("/api/inference/<job_id>/results")
    def results(job_id: str) -> Any:
        query = validation.results_query(request.args)
        job = service.jobs.get(validation.job_id(job_id))
        return answer(r.ResultsPage(id=job.id, state=job.state, **dict(job.log.page(**dict(query)))))

    @app.get("/api/cameras")
    def list_cameras() -> Any:
        return answer(r.CameraList(cameras=service.cameras.describe_all()))

    @app.get("/api/cameras/<name>")
    def get_camera(name: str) -> Any:
        return answer(service.cameras.describe(validation.job_id(name, "camera")))

    @app.post("/api/cameras/<name>/start")
    def start_camera(name: str) -> Any:
        validation.no_body(request.get_data(cache=False))
        return answer(service.start_camera(name))

    @app.post("/api/cameras/<name>/stop")
    def stop_camera(name: str) -> Any:
        validation.no_body(request.get_data(cache=False))
        return answer(service.stop_camera(name))

    @app.get("/api/cameras/<name>/results")
    def camera_results(name: str) -> Any:
        query = validation.results_query(request.args)
        camera = service.cameras.describe(validation.job_id(name, "camera"))
        page = service.cameras.log(name).page(**dict(query))
        return answer(r.CameraResultsPage(id=name, state=camera.state, **dict(page)))

    @app.get("/api/config")
    def get_config() -> Any:
        return answer(service.settings.values())

    @app.patch("/api/config")
    def change_config() -> Any:
        return answer(service.change_settings(validation.parse_json(request.get_data(cache=False))))

    @app.post("/api/models/reload")
    def reload() -> Any:
        validation.no_body(request.get_data(cache=False))
        return answer(service.reload())

    def stream_media(stream_id: str, media: Callable[[StreamRunner], bytes | None], content_type: str) -> Any:
        """Answer what ``media`` makes of a stream, or 404 for no stream or no frame yet."""
        stream = service.stream(validation.stream_id(stream_id))
        data = media(stream) if stream is not None else None
        if data is None:
            what = "no such stream" if stream is None else "no frame processed yet"
            return _error(f"stream {stream_id}: {what}", 404)
        return Response(data, content_type=content_type, headers={"Cache-Control": "no-store"})

    @app.get("/api/streams/<stream_id>/recent.webm")
    def recent(stream_id: str) -> Any:
        return stream_media(stream_id, lambda stream: stream.recent.webm(), "video/webm")

    @app.get("/api/streams/<stream_id>/snapshot.jpg")
    def snapshot(stream_id: str) -> Any:
        return stream_media(stream_id, StreamRunner.snapshot, "image/jpeg")
