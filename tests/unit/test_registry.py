"""The registry is the one list of services: deploy/ and the migrate command follow it."""

from __future__ import annotations

import base64
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine

from services import registry
from services.kit import migrations

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def manifests(entry: registry.ServiceEntry) -> list[dict]:
    path = DEPLOY / "k8s" / f"{entry.name}.yaml"
    assert path.exists(), f"{entry.name} has no Kubernetes manifest {path.relative_to(ROOT)}"
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def secret_env(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", []) if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}


@pytest.mark.parametrize("entry", registry.SERVICES, ids=lambda e: e.name)
def test_every_service_runs_in_compose_on_its_port_after_its_migration(
    compose: dict, entry: registry.ServiceEntry
) -> None:
    services = compose["services"]
    assert entry.name in services and f"{entry.name}-migrate" in services
    service = services[entry.name]
    assert service["command"] == [entry.module, "serve"]
    assert services[f"{entry.name}-migrate"]["command"] == [entry.module, "migrate"]
    assert f"{entry.port}:{entry.port}" in service["ports"]
    assert str(entry.port) in " ".join(service["healthcheck"]["test"])
    env = service["environment"]
    assert f"LOYALTY_{entry.name.upper()}_DB_URL" in env
    assert set(entry.required_secrets) <= set(env)
    assert ("LOYALTY_PII_KEY" in env) == ("LOYALTY_PII_KEY" in entry.required_secrets), "secrets: only what it uses"


@pytest.mark.parametrize("entry", registry.SERVICES, ids=lambda e: e.name)
def test_every_service_has_a_kubernetes_deployment_with_its_port_and_probes(entry: registry.ServiceEntry) -> None:
    docs = manifests(entry)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Job"} <= kinds
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [entry.module, "serve"]
    assert [p["containerPort"] for p in container["ports"]] == [entry.port]
    assert container["readinessProbe"]["grpc"]["port"] == entry.port
    assert container["livenessProbe"]["grpc"]["port"] == entry.port
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert [p["port"] for p in service["spec"]["ports"]] == [entry.port]
    for doc in docs:
        spec = doc["spec"]
        pod = (spec.get("jobTemplate", {}).get("spec", spec)).get("template", {}).get("spec")
        for c in (pod or {}).get("containers", []):
            names = secret_env(c)
            assert set(entry.required_secrets) <= names, (doc["metadata"]["name"], names)
            assert f"LOYALTY_{entry.name.upper()}_DB_URL" in names, (doc["metadata"]["name"], "its own database")
            assert ("LOYALTY_PII_KEY" in names) == ("LOYALTY_PII_KEY" in entry.required_secrets)


def test_every_service_has_a_database_in_compose_postgres(compose: dict) -> None:
    created = (DEPLOY / "postgres-init.sql").read_text()
    default = compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
    for entry in registry.SERVICES:
        assert entry.name == default or f"CREATE DATABASE {entry.name};" in created


def test_every_service_has_its_folder_wiring_and_migrations() -> None:
    for entry in registry.SERVICES:
        server = entry.server()
        assert entry.name == server.NAME
        assert callable(server.build_app)
        assert (ROOT / "services" / entry.name / "migrations" / "versions").is_dir()
        assert (ROOT / "services" / entry.name / "__main__.py").exists()


def test_migrate_applies_every_registry_services_migrations(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "LOYALTY_DATA_DIR": str(tmp_path), "LOYALTY_ADMIN_KEY": "admin",
           "LOYALTY_AUTH_SECRET": "secret", "LOYALTY_PII_KEY": base64.b64encode(b"p" * 32).decode()}
    subprocess.run([sys.executable, "-m", "services", "migrate"], cwd=ROOT, env=env, check=True)
    for entry in registry.SERVICES:
        engine = create_engine(f"sqlite:///{tmp_path / (entry.name + '.db')}")
        assert migrations.is_current(entry.name, engine), entry.name
        engine.dispose()


def test_the_gateway_runs_in_compose_in_front_of_every_service(compose: dict) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["gateway", "serve"] and "8080:8080" in gateway["ports"]
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    env = gateway["environment"]
    assert {"LOYALTY_AUTH_SECRET", "LOYALTY_GATEWAY_TOKEN_KEY", "LOYALTY_REDIS_URL"} <= set(env)
    assert "LOYALTY_ADMIN_KEY" not in env and "LOYALTY_PII_KEY" not in env, "secrets: only what it uses"
    for entry in registry.SERVICES:
        assert env[f"LOYALTY_{entry.name.upper()}_ADDR"] == f"{entry.name}:{entry.port}"
        assert gateway["depends_on"][entry.name] == {"condition": "service_healthy"}


def test_the_gateway_has_a_kubernetes_deployment_with_http_probes_behind_an_ingress() -> None:
    docs = [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "gateway.yaml").read_text()) if doc]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway", "serve"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    assert {"LOYALTY_AUTH_SECRET", "LOYALTY_GATEWAY_TOKEN_KEY", "LOYALTY_REDIS_URL"} <= secret_env(container)
    for entry in registry.SERVICES:
        assert env[f"LOYALTY_{entry.name.upper()}_ADDR"]["value"] == f"{entry.name}:{entry.port}"
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (ingress,) = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "ingress.yaml").read_text()) if d]
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends and all(b["name"] == service["metadata"]["name"] for b in backends)
    assert {b["port"]["name"] for b in backends} <= {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("entry", registry.SERVICES, ids=lambda e: e.name)
def test_every_one_shot_command_of_a_service_has_a_cronjob(entry: registry.ServiceEntry) -> None:
    """What a service runs itself in the embedded default runs as a CronJob in Kubernetes."""
    main = (ROOT / "services" / entry.name / "__main__.py").read_text()
    if "jobs.commands(" in main:  # the commands are listed by the service's jobs module
        commands = set(importlib.import_module(f"{entry.module}.jobs").commands(lambda settings: None))
    else:  # listed in __main__.py: commands={"name": fn, ...}
        listed = re.search(r"commands=\{([^}]*)\}", main)
        commands = set(re.findall(r'"([a-z-]+)":', listed.group(1))) if listed else set()
    scheduled = {doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][1]
                 for doc in manifests(entry) if doc["kind"] == "CronJob"}
    assert commands <= scheduled, (entry.name, commands - scheduled)
