"""docker-compose.yml is a consistent production stack (Docker does not run here).

Each check is a function returning the problems it finds, so a test can also prove that
the check catches a broken file.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tether.core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {"postgresql", "ledger-db", "temporal", "temporal-ui", "worker", "console"}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def pinned_images(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        image = service.get("image")
        if "build" in service:
            continue
        if not image or ":" not in image:
            problems.append(f"service {name!r}: image {image!r} has no tag")
            continue
        tag = image.rsplit(":", 1)[1]
        if tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"service {name!r}: image {image!r} is not pinned to a version")
    return problems


IMAGE_SET = {*tomllib.loads((ROOT / "tether.toml").read_text()), "policy_model"}
"""Settings the image itself sets: its tether.toml (the app it runs) and the casbin model,
which ships inside the package."""


def worker_settings(compose: dict[str, Any]) -> list[str]:
    env = _env(compose["services"]["worker"])
    return [
        f"worker does not set {var} (setting {field!r})"
        for field in Settings.model_fields
        if (var := f"TETHER_{field.upper()}") not in env and field not in IMAGE_SET
    ]


def interpolations_defined(text: str, example: str) -> list[str]:
    defined = {
        line.split("=", 1)[0].strip()
        for line in example.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    return [
        f"${{{var}}} is used but not defined in .env.example"
        for var in sorted(set(INTERPOLATION.findall(text)) - defined)
    ]


def host_ports(compose: dict[str, Any]) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            parts = str(port).split(":")  # [address:]host:container
            host = parts[-2]
            if host in seen:
                problems.append(f"host port {host} is published by {seen[host]!r} and {name!r}")
            seen[host] = name
    return problems


def dependencies(compose: dict[str, Any]) -> list[str]:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for dep, how in items:
            if dep not in services:
                problems.append(f"{name!r} depends on undefined service {dep!r}")
            elif how.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(
                    f"{name!r} waits for {dep!r} to be healthy but it has no healthcheck"
                )
    return problems


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            secret = any(word in key.upper() for word in SECRET_WORDS)
            if secret and "${" not in value and not value.startswith("/run/secrets/"):
                problems.append(f"service {name!r}: {key} holds a literal secret")
            if "://" in value and "@" in value and "${" not in value.split("@")[0]:
                problems.append(f"service {name!r}: {key} embeds a literal password")
    return problems


def test_required_services_exist_and_restart() -> None:
    services = _compose()["services"]
    assert set(services) >= REQUIRED, f"missing services: {REQUIRED - set(services)}"
    for name in REQUIRED:
        assert services[name].get("restart") == "unless-stopped", f"{name!r} has no restart policy"
    for name in ("postgresql", "ledger-db", "temporal"):
        assert "healthcheck" in services[name], f"{name!r} has no healthcheck"


def test_images_pinned() -> None:
    assert pinned_images(_compose()) == []


def test_worker_sets_every_setting() -> None:
    assert worker_settings(_compose()) == []


def test_console_runs_the_worker_image_with_the_worker_configuration() -> None:
    services = _compose()["services"]
    console, worker = services["console"], services["worker"]
    assert console["image"] == worker["image"]
    assert console["command"] == ["tether", "console"]
    assert _env(console) == _env(worker)
    assert set(worker["secrets"]) <= set(console["secrets"])
    assert "approval_key" in console["secrets"]
    env = _env(console)
    assert f":{env['TETHER_CONSOLE_PORT']}" in console["ports"][0]
    assert env["TETHER_CONSOLE_SECURE_COOKIES"] == "true"


def _mounted(service: dict[str, Any], target_suffix: str) -> Path:
    """The project file a service mounts at a path ending in `target_suffix`."""
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if target.endswith(target_suffix):
            return ROOT / source
    raise AssertionError(f"nothing is mounted at *{target_suffix}")


def test_telemetry_reaches_the_trace_viewer_and_metrics_store() -> None:
    services = _compose()["services"]
    assert set(services) >= OBSERVABILITY
    for name in OBSERVABILITY:
        assert services[name].get("restart") == "unless-stopped", f"{name!r} has no restart"
    env = _env(services["worker"])
    assert env["TETHER_TELEMETRY_EXPORTER"] == "otlp"
    assert env["TETHER_TELEMETRY_CAPTURE_CONTENT"] == "false"
    endpoint = env["TETHER_TELEMETRY_OTLP_ENDPOINT"]
    host, port = endpoint.removeprefix("http://").split(":")
    assert host in services
    collector = yaml.safe_load(_mounted(services[host], "config.yaml").read_text())
    receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver.endswith(f":{port}")
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for pipeline in pipelines.values():
        assert "otlp" in pipeline["receivers"]
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
        assert set(pipeline["processors"]) <= set(collector["processors"])
    trace_host = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert trace_host in services
    scrape_port = collector["exporters"]["prometheus"]["endpoint"].split(":")[-1]
    scrape = yaml.safe_load(_mounted(services["prometheus"], "prometheus.yml").read_text())
    targets = [
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert f"{host}:{scrape_port}" in targets


def test_workers_scale_report_health_and_drain() -> None:
    worker = _compose()["services"]["worker"]
    env = _env(worker)
    assert worker["deploy"]["replicas"] >= 2
    assert "ports" not in worker, "replicas cannot share a published host port"
    assert env["TETHER_LOG_FORMAT"] == "json"
    assert env["TETHER_HEALTH_HOST"] == "0.0.0.0"
    probe = " ".join(worker["healthcheck"]["test"])
    assert f":{env['TETHER_HEALTH_PORT']}/readyz" in probe
    grace = float(env["TETHER_SHUTDOWN_GRACE_SECONDS"])
    assert float(worker["stop_grace_period"].removesuffix("s")) > grace, (
        "Docker would SIGKILL workers before running activities finish"
    )


def test_interpolated_variables_have_examples() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    assert interpolations_defined(text, example) == []


def test_ports_dependencies_and_secrets() -> None:
    compose = _compose()
    assert host_ports(compose) == []
    assert dependencies(compose) == []
    assert literal_secrets(compose) == []


def test_worker_talks_to_the_services_in_the_file() -> None:
    compose = _compose()
    env = _env(compose["services"]["worker"])
    assert env["TETHER_TEMPORAL_ADDRESS"].split(":")[0] in compose["services"]
    host = env["TETHER_DATABASE_URL"].split("@")[1].split(":")[0]
    assert host in compose["services"]
    assert env["TETHER_DATABASE_URL"].startswith("postgresql+psycopg://")
    # The paths point inside the image, where the Dockerfile puts the project.
    for key in ("TETHER_POLICY_PATH", "TETHER_MODEL_SCRIPT"):
        relative = Path(env[key]).relative_to("/app")
        assert (ROOT / relative).is_file(), f"{key} names {env[key]}, not in the project"


def test_dockerfile_pinned_and_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.MULTILINE)
    assert base and re.search(r":\d", base.group(1)), "the base image is not pinned"
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE), "the image runs as root"
    for folder in ("tether", "workflows", "activities", "governance", "verification", "examples"):
        assert f"COPY {folder} " in text, f"the image lacks {folder}/"
    # The image's app is declared like any author's: tether.toml beside the project.
    assert "COPY tether.toml " in text


def test_checks_catch_drift() -> None:
    broken = copy.deepcopy(_compose())
    worker = broken["services"]["worker"]
    worker["environment"] = {k: v for k, v in _env(worker).items() if k != "TETHER_TASK_QUEUE"}
    assert worker_settings(broken) == [
        "worker does not set TETHER_TASK_QUEUE (setting 'task_queue')"
    ]
    broken["services"]["temporal-ui"]["image"] = "temporalio/ui:latest"
    assert pinned_images(broken)
    broken["services"]["temporal-ui"]["ports"] = ["7233:8080"]
    assert host_ports(broken)
    broken["services"]["worker"]["depends_on"] = {"nope": {"condition": "service_healthy"}}
    assert dependencies(broken)
    broken["services"]["ledger-db"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    assert literal_secrets(broken)
    assert interpolations_defined("${NEW_SECRET}", "OTHER=1") == [
        "${NEW_SECRET} is used but not defined in .env.example"
    ]
