"""The service configuration: YAML file, environment overrides, and errors that name the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.service.state import source_options
from edge.settings import (
    LIVE_KEYS,
    ConfigError,
    RuntimeSettings,
    ServiceSettings,
    environment_names,
    load_service_settings,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "edge" / "service" / "config.example.yaml"
BUNDLE = ROOT / "models" / "default" / "cpu"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_the_defaults_on_loopback():
    config = load_service_settings(None, {})
    assert config == ServiceSettings() and (config.host, config.port) == ("127.0.0.1", 8000)
    assert config.runtime == RuntimeSettings() and config.token == "" and config.selftest_on_start


def test_the_example_is_the_contract_the_deploy_templates():
    config = load_service_settings(EXAMPLE, {})
    assert (config.listen, config.max_streams) == ("127.0.0.1:8000", 4)
    assert config.bundle == "/opt/edge/models/current"
    assert (config.media_root, config.results_dir) == ("/srv/edge/media", "/var/lib/edge/results")
    assert config.results_keep_days == 30
    assert config.backend == {"threads": 1} and config.source == {"transport": "tcp"}
    assert config.runtime == RuntimeSettings() and source_options(config).transport == "tcp"


def test_an_older_configuration_with_retention_seconds_still_loads(tmp_path):
    # Deprecated without effect (attributes go with their track's record after max_age_seconds),
    # still accepted and still validated, so a board's older config.yaml keeps working.
    config = load_service_settings(write(tmp_path, "runtime: {retention_seconds: 120}"), {})
    assert config.runtime.retention_seconds == 120
    with pytest.raises(ConfigError, match="retention_seconds"):
        load_service_settings(write(tmp_path, "runtime: {retention_seconds: -1}"), {})


def test_every_environment_variable_edge_serve_help_lists_is_read(tmp_path):
    # The list is generated from the settings; each of its variables reaches its setting.
    names = environment_names()
    assert {"EDGE_TOKEN_FILE", "EDGE_MQTT__HOST", "EDGE_RUNTIME__CONF_TH", "EDGE_BACKEND__<KEY>"} <= {*names}
    assert not any(n.startswith("EDGE_CAMERAS") for n in names)
    secret = write(tmp_path, "s3cret")
    values = {"EDGE_LISTEN": "127.0.0.1:9", "EDGE_TOKEN_FILE": str(secret), "EDGE_RUNTIME__TRACKER": "sort",
              "EDGE_MQTT__PASSWORD_FILE": str(secret), "EDGE_MQTT__CA_FILE": str(secret),
              "EDGE_RUNTIME__ATTRIBUTES": "false", "EDGE_SELFTEST_ON_START": "false",
              "EDGE_MQTT__TLS": "true",
              **{f"EDGE_RUNTIME__{k}": "0.5" for k in ("CONF_TH", "IOU_TH", "ATTR_MIN_CONFIDENCE")}}
    defaults = load_service_settings(None, {"EDGE_MQTT__HOST": "broker"}).model_dump()
    for name in names:
        env = {"EDGE_MQTT__HOST": "broker", name.replace("<KEY>", "THREADS"): values.get(name, "2")}
        loaded = load_service_settings(None, env).model_dump()
        table, _, key = name.removeprefix("EDGE_").lower().replace("<key>", "threads").partition("__")
        if key:
            loaded, defaults_of = loaded[table], defaults[table]
        else:
            key, defaults_of = table, defaults
        assert loaded[key] != defaults_of.get(key), f"{name} did not reach its setting"
    help_text = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--help"], capture_output=True,
                               text=True, check=True, env={**os.environ, "COLUMNS": "1000"}).stdout
    assert all(name in help_text for name in names) and all(key in help_text for key in LIVE_KEYS)


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "listen: 127.0.0.1:9000\ntoken: file\nruntime: {conf_th: 0.5, tracker: bytetrack}")
    config = load_service_settings(path, {
        "EDGE_LISTEN": "0.0.0.0:8080", "EDGE_BUNDLE": "/b", "EDGE_TOKEN": "12345", "EDGE_MEDIA_ROOT": "/m",
        "EDGE_RESULTS_DIR": "/r", "EDGE_MAX_STREAMS": "2", "EDGE_SELFTEST_ON_START": "false",
        "EDGE_RESULTS_KEEP_DAYS": "7.5",
        "EDGE_RUNTIME__CONF_TH": "0.4", "EDGE_BACKEND__THREADS": "2", "EDGE_SOURCE__TRANSPORT": "udp",
        "PATH": "/usr/bin",
    })
    assert (config.host, config.port, config.bundle, config.token) == ("0.0.0.0", 8080, "/b", "12345")
    assert (config.media_root, config.results_dir, config.max_streams) == ("/m", "/r", 2)
    assert config.selftest_on_start is False and config.results_keep_days == 7.5
    assert (config.runtime.conf_th, config.runtime.tracker) == (0.4, "bytetrack")
    assert config.backend == {"threads": 2} and config.source == {"transport": "udp"}
    assert "12345" not in repr(config), "the token stays out of logs"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("listen: 8000\n", {}, "listen must be a string"),
        ("listen: localhost\n", {}, "listen must be host:port"),
        ("max_streams: '4'\n", {}, "max_streams must be an integer"),
        ("max_streams: 0\n", {}, "max_streams must be within 1..64"),
        ("token: 'two words'\n", {}, "token must be printable ASCII without spaces"),
        ("tokens: x\n", {}, "the configuration has unknown field(s) 'tokens'"),
        ("runtime: {conf_th: 2}\n", {}, "conf_th must be within [0, 1]"),
        ("runtime: {threads: 2}\n", {}, "runtime.threads"),
        ("runtime: {colour: red}\n", {}, "runtime has unknown field(s) 'colour'"),
        ("backend: 2\n", {}, "backend must be a JSON object"),
        ("selftest_on_start: 'yes'\n", {}, "selftest_on_start must be true or false"),
        ("- a list\n", {}, "must be a mapping of settings"),
        ("listen: [\n", {}, "cannot read the configuration"),
        ("", {"EDGE_MAX_STREAMS": "four"}, "EDGE_MAX_STREAMS must be an integer, got 'four'"),
        ("results_keep_days: -1\n", {}, "results_keep_days must be >= 0"),
        ("results_keep_days: true\n", {}, "results_keep_days must be a number"),
        ("", {"EDGE_SELFTEST_ON_START": "maybe"}, "EDGE_SELFTEST_ON_START must be true or false"),
        ("", {"EDGE_LISTNE": "x"}, "EDGE_LISTNE: unknown setting"),
        ("", {"EDGE_RUNTIME__CONF_TH": "high"}, "conf_th must be a number"),
        ("token_file: /nonexistent/token\n", {}, "token_file: cannot read the token: No such file"),
        ("token: abc\ntoken_file: /etc/hostname\n", {}, "give the token or a token_file, not both"),
        ("token_file: /dev/null\n", {}, "token_file: /dev/null is empty"),
    ],
)
def test_bad_settings_are_refused_naming_them(tmp_path, text, environ, message):
    with pytest.raises(ConfigError) as error:
        load_service_settings(write(tmp_path, text), environ)
    assert message in str(error.value)


def test_the_token_can_come_from_a_file_and_stays_out_of_logs(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-a-file-123\n")  # as systemd-creds or a vault agent write it
    config = load_service_settings(write(tmp_path, f"token_file: {secret}\n"), {})
    assert config.token == "from-a-file-123" and "from-a-file-123" not in repr(config)
    assert load_service_settings(None, {"EDGE_TOKEN_FILE": str(secret)}).token == "from-a-file-123"
    secret.write_text("two words")
    with pytest.raises(ConfigError) as error:
        load_service_settings(None, {"EDGE_TOKEN_FILE": str(secret)})
    assert "token must be printable ASCII" in str(error.value) and "two words" not in str(error.value)


def test_bad_source_options_are_refused():
    with pytest.raises(ConfigError, match="source: .*transport"):
        source_options(ServiceSettings(source={"transport": "quic"}))
    with pytest.raises(ConfigError, match="source: .*unexpected keyword argument 'fps'"):
        source_options(ServiceSettings(source={"fps": 5}))


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [("max_streams: 100\n", {}, "max_streams must be within 1..64"),
     ("runtime: {tracker: deepsort}\n", {}, "runtime.tracker 'deepsort'"),
     ("source: {backoff_initial_s: 0}\n", {}, "source: backoff"),
     ("backend: {thraeds: 2}\n", {}, "backend: no backend has the option(s) thraeds"),
     ("detector: {cores: 2}\n", {}, "backend/detector: OnnxRuntimeBackend has no option cores"),
     ("attributes: {threads: two}\n", {},
      "attributes: OnnxRuntimeBackend options: threads must be an integer"),
     ("", {"EDGE_ATTRIBUTES__THRAEDS": "1"}, "attributes: no backend has the option(s) thraeds")],
)
def test_edge_serve_exits_2_on_a_bad_configuration(tmp_path, text, environ, message):
    env = dict(os.environ, EDGE_BUNDLE=str(BUNDLE), EDGE_RESULTS_DIR=str(tmp_path / "results"), **environ)
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "serve", "--config", str(write(tmp_path, text))],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_ffmpeg_decoders_preset_follows_the_bundles_target(tmp_path):
    from edge.runtime.decoders import target_preset

    assert [target_preset(t) for t in ("rk3588", "rk3576", "jetson-orin", "openvino", "cpu", None)] == [
        "rkmpp", "rkmpp", "nvmpi", "vaapi", "software", "software"]
    cpu = load_service_settings(write(tmp_path, "bundle: models/default/cpu\nsource: {decoder: ffmpeg}"), {})
    assert source_options(cpu).preset == "software"  # the cpu bundle's target
    chosen = load_service_settings(write(tmp_path, "source: {decoder: ffmpeg, preset: qsv}"), {})
    assert source_options(chosen).preset == "qsv"
    opencv = load_service_settings(write(tmp_path, "source: {transport: udp}"), {})
    assert source_options(opencv).decoder == "opencv"
    with pytest.raises(ConfigError, match="source: .*preset"):
        source_options(load_service_settings(write(tmp_path, "source: {decoder: ffmpeg, preset: nope}"), {}))


def test_live_streams_are_decoded_to_fit_the_detectors_input_unless_told(tmp_path):
    cpu = load_service_settings(write(tmp_path, f"bundle: {BUNDLE}"), {})
    assert source_options(cpu).fit_size == (640, 640)  # the detector's input
    assert source_options(cpu).decode_size((1920, 1080)) == (640, 360)
    full = load_service_settings(write(tmp_path, f"bundle: {BUNDLE}\nsource: {{fit_size: null}}"), {})
    assert source_options(full).decode_size((1920, 1080)) == (1920, 1080)
    told = f"bundle: {BUNDLE}\nsource: {{output_size: [960, 540]}}"
    mine = load_service_settings(write(tmp_path, told), {})
    assert source_options(mine).decode_size((1920, 1080)) == (960, 540)
