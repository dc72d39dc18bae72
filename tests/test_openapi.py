"""The API's contract: the OpenAPI document the service serves, checked by openapi-spec-validator,
every route's real answers checked against it, and schemathesis fuzzing every operation
from it.

One service for the module (with a token and the attribute process). The fuzzing runs a
bounded number of examples per operation, positive and negative, with every check of
the contract: no 5xx, documented status codes, content types and headers, bodies that
conform to their schemas, invalid data refused, the token enforced, undocumented
methods refused. Live camera URLs it generates are pointed at a closed loopback port
before they are sent, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import shutil
import time
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from rtsp import HOST, free_port
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from service import EdgeService
from waiting import wait_until

from edge.runtime.sources import LIVE_SCHEMES, scheme_of
from edge.settings import LIVE_KEYS, RuntimeSettings

TOKEN = "fuzz-token"
EXAMPLES = 100
"""Examples per operation and generation mode: the fuzzing takes a few minutes on 2 cores."""
CLOSED_PORT = free_port()
RELOAD = "POST /api/models/reload"
"""Takes no input and seconds each: two examples."""


@pytest.fixture(scope="module")
def service(bundle_dir, clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "media").mkdir()
    shutil.copy(clip, folder / "media" / "vtest.avi")
    running = EdgeService(
        folder, bundle=str(bundle_dir), token=TOKEN, media_root=str(folder / "media"),
        results_dir=str(folder / "results"), max_streams=2,
        source={"open_timeout_s": 2.0, "read_timeout_s": 2.0, "backoff_max_s": 1.0},
        cameras=[{"name": "lobby", "url": "vtest.avi", "enabled": False}],
    )
    running.start()
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def document(service) -> dict[str, Any]:
    response = service.request("GET", "/api/openapi.json", token="")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


def conforms(document: dict[str, Any], component: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def test_the_document_is_valid_openapi_and_documents_every_route(service, document):
    validate(document)
    assert document["openapi"].startswith("3.1")
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert {("/api/inference/{job_id}", "post"), ("/api/inference/{job_id}/results", "get"),
            ("/api/config", "patch"), ("/api/models/reload", "post"), ("/api/openapi.json", "get"),
            ("/status", "get"), ("/metrics", "get"), ("/", "get"), ("/api/cameras", "get"),
            ("/api/cameras/{name}/start", "post"), ("/api/cameras/{name}/results", "get")} <= operations
    assert len(operations) == 21
    job = document["components"]["schemas"]["JobRequest"]
    assert set(job["required"]) == {"cameraUrls", "endTime"} and job["additionalProperties"] is False
    for path in ("/api/inference/{job_id}", "/api/inference/{job_id}/results",
                 "/api/streams/{stream_id}/snapshot.jpg"):
        assert all("400" in op["responses"] for op in document["paths"][path].values()), "a malformed id: 400"
    public = {path for path, item in document["paths"].items() if item.get("get", {}).get("security") == []}
    assert public == {"/health", "/ready", "/", "/api/openapi.json"}


class Answers:
    """Real answers of the service, each checked against what the document says of its operation."""

    def __init__(self, service: EdgeService, document: dict[str, Any]) -> None:
        self._service, self._document = service, document
        self.operations: set[str] = set()

    def __call__(self, operation: str, path: str = "", status: int = 200, **kwargs: Any) -> requests.Response:
        """Send ``operation`` (``GET /api/inference/{job_id}``) to ``path`` (its own by default)."""
        method, template = operation.split(" ", 1)
        response = self._service.request(method, path or template, **kwargs)
        assert response.status_code == status, (operation, response.text)
        documented = self._document["paths"][template][method.lower()]["responses"]
        (media, content), = documented[str(status)]["content"].items()
        assert response.headers["Content-Type"].split(";")[0] == media.split(";")[0], operation
        if media == "application/json":
            schema = {**content["schema"], "components": self._document["components"]}
            jsonschema.Draft202012Validator(schema).validate(response.json())
        else:
            assert response.content, operation
        self.operations.add(operation)
        return response


def test_every_route_answers_as_the_document_says(service, document):
    answer = Answers(service, document)
    body = {"cameraUrls": [{"video": "vtest.avi", "realtime": True}], "endTime": time.time() + 60}
    conforms(document, "JobRequest", body)
    answer("POST /api/inference/{job_id}", "/api/inference/real", json=body)
    wait_until(lambda: service.job("real")["results"]["count"] >= 3, "results")
    answer("GET /api/inference/{job_id}", "/api/inference/real")
    answer("GET /api/inference")
    answer("GET /api/inference/{job_id}/results", "/api/inference/real/results")
    assert answer("GET /api/inference/{job_id}/results", "/api/inference/real/results",
                  params={"from_time": "1e9"}).json()["results"], \
        "a Unix time as the document has it (a number, in any JSON notation)"
    answer("GET /api/streams/{stream_id}/snapshot.jpg", "/api/streams/real.0/snapshot.jpg")
    answer("GET /api/streams/{stream_id}/recent.webm", "/api/streams/real.0/recent.webm")
    answer("GET /status")
    answer("GET /metrics")
    settings = answer("GET /api/config").json()
    answer("PATCH /api/config", json=settings)
    answer("GET /ready", token="")
    answer("GET /health", token="")
    answer("GET /", token="")
    answer("GET /api/openapi.json", token="")
    answer("DELETE /api/inference/{job_id}", "/api/inference/real")
    answer("GET /api/cameras")
    answer("POST /api/cameras/{name}/start", "/api/cameras/lobby/start")
    wait_until(lambda: service.json("GET", "/api/cameras/lobby")["results"]["count"] >= 2, "camera results")
    answer("GET /api/cameras/{name}", "/api/cameras/lobby")
    answer("GET /status")
    answer("GET /api/cameras/{name}/results", "/api/cameras/lobby/results")
    answer("POST /api/cameras/{name}/stop", "/api/cameras/lobby/stop")
    answer("POST /api/models/reload")
    answer("GET /api/inference/{job_id}", "/api/inference/none", status=404)
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert answer.operations == documented, "every route's answer checked"
    with pytest.raises(jsonschema.ValidationError):
        conforms(document, "Job", {**service.job("real"), "surprise": 1})


@pytest.fixture(scope="module")
def api_schema(service):
    schema = schemathesis.openapi.from_url(f"{service.base}/api/openapi.json")
    schema.config.update(base_url=service.base)
    return schema


def local_only(body: Any) -> Any:
    """Point every live camera URL of a job body at a closed loopback port."""
    if not isinstance(body, dict) or not isinstance(body.get("cameraUrls"), list):
        return body
    for camera in body["cameraUrls"]:
        video = camera.get("video") if isinstance(camera, dict) else None
        if isinstance(video, str) and scheme_of(video) in LIVE_SCHEMES:
            try:
                camera["video"] = urlsplit(video)._replace(netloc=f"{HOST}:{CLOSED_PORT}").geturl()
            except ValueError:
                pass  # the service refuses what urlsplit cannot read, the same way
    return body


def fuzz(service: EdgeService, operation: Any, mode: GenerationMode) -> None:
    """Send ``EXAMPLES`` generated requests of one operation and check every answer."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES if operation.label != RELOAD else 2, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def send(case: Any) -> None:
        if case.body is not None:
            case.body = local_only(case.body)
        # Schemas cannot say that a file must exist or a job be running: valid data may be refused.
        response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                                          excluded_checks=[positive_data_acceptance])
        if operation.label == "POST /api/inference/{job_id}" and response.status_code == 200:
            service.json("DELETE", f"/api/inference/{response.json()['id']}")

    send()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_keeps_the_contract_under_fuzzing(service, document, api_schema, mode):
    failures, operations = {}, set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations.add(operation.label)
        try:
            fuzz(service, operation, mode)
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # it takes nothing to get wrong
        except BaseException as e:  # the smallest failing cases found, in a group
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            failures[operation.label] = e
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert operations == documented - {"GET /api/openapi.json"}, "schemathesis skips its own schema's URL"
    assert not failures, "\n\n".join(f"{label}: {error}" for label, error in failures.items())


def test_the_service_is_healthy_after_the_fuzzing(service):
    assert service.json("GET", "/health", token="")["status"] == "ok"
    assert service.json("GET", "/ready", token="")["ready"]
    running = [j["id"] for j in service.json("GET", "/api/inference")["jobs"] if j["state"] == "running"]
    assert running == []
    # The fuzzing left thresholds anywhere in their ranges (conf_th 0 finds 300 people a frame).
    service.json("PATCH", "/api/config", json={key: getattr(RuntimeSettings(), key) for key in LIVE_KEYS})
    body = {"cameraUrls": [{"video": "vtest.avi"}], "endTime": time.time() + 30}
    service.json("POST", "/api/inference/after", json=body)
    wait_until(lambda: service.job("after")["results"]["count"] >= 1, "a job after the fuzzing")
    service.json("DELETE", "/api/inference/after")
    assert requests.get(f"{service.base}/status", timeout=10).status_code == 401
