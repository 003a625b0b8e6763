"""The Helm chart, rendered by a real Helm and checked against Kubernetes 1.30's schemas.

No cluster runs here: what is checked is what Helm renders (default values, the on-prem +
cloud example, and values the schema must refuse), each object against the API schemas
of the named Kubernetes version, and the server's config file as the server loads it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakecache.server.config import load_config

from .generator import settings_table
from .helm_tool import find_helm

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "lakecache"
EXAMPLE = REPO / "deploy" / "helm" / "examples" / "onprem-and-cloud.yaml"
#: The Kubernetes version the rendered objects are validated against.
K8S_VERSION = "1.30.0"
#: Custom resources: no schema ships for them (checked field by field below).
CUSTOM_KINDS = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return find_helm()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def render(helm: Path, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(helm), "template", "lc", str(chart), "--kube-version", K8S_VERSION, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def refused(helm: Path, *args: str) -> str:
    done = subprocess.run(
        [str(helm), "template", "lc", str(CHART), *args], capture_output=True, text=True
    )
    assert done.returncode != 0, "helm rendered values the schema should refuse"
    return done.stderr


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def validate_all(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def test_helm_is_real_and_lints_the_chart(helm: Path) -> None:
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.startswith("v3."), version.stdout
    for extra in ([], ["-f", str(EXAMPLE)]):
        done = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), *extra], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_default_values_render_valid_objects(helm: Path) -> None:
    objects = render(helm)
    validate_all(objects)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"} <= kinds
    assert {"NetworkPolicy", "PersistentVolumeClaim", "ServiceAccount"} <= kinds
    assert "Ingress" not in kinds and "ServiceMonitor" not in kinds  # both opt-in
    server = next(
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("server")
    )
    assert server["spec"]["replicas"] == 2
    pod = server["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["memory"]
    # Credentials come from Secrets, never as plain values.
    env = env_of(server)
    for name in ("LAKECACHE_CATALOG", "LAKECACHE_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    # The generated admin password is a real one (kept across upgrades by lookup).
    admin = next(s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("admin"))
    assert len(admin["stringData"]["admin-password"]) == 24


def test_the_catalog_secret_quotes_the_password_into_the_url(helm: Path) -> None:
    objects = render(helm, "--set", "catalog.password=p@ss/w:rd", "--set", "catalog.host=db")
    secret = next(
        s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("catalog")
    )
    url = secret["stringData"]["catalog-url"]
    assert url == "postgresql+psycopg://lakecache:p%40ss%2Fw%3Ard@db:5432/lakecache"
    config = next(iter(by_kind(objects, "ConfigMap")))
    assert "p@ss" not in yaml.safe_dump(config)


def test_multi_site_example_renders_one_agent_per_site(helm: Path) -> None:
    objects = render(helm, "-f", str(EXAMPLE))
    validate_all(objects)
    onprem = next(iter(by_kind(objects, "DaemonSet")))
    assert onprem["metadata"]["labels"]["lakecache.io/site"] == "onprem"
    spec = onprem["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"lakecache.io/site": "onprem"}
    assert spec["volumes"][0]["hostPath"]["path"] == "/data/lakecache"
    assert spec["containers"][0]["args"][:3] == ["agent", "--site", "onprem"]
    assert "LAKECACHE_CATALOG" in env_of(onprem)  # in the cluster: the catalog directly
    cloud = next(
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("cloud")
    )
    assert cloud["spec"]["replicas"] == 2
    assert cloud["spec"]["template"]["spec"]["volumes"][0]["nfs"]["server"]
    env = env_of(cloud)
    # Through the server as the site's agent user: no database or lake credentials.
    assert env["LAKECACHE_SERVER"]["value"] == "https://lakecache.example.com"
    assert env["LAKECACHE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "lakecache-cloud-agent"
    assert not {"LAKECACHE_CATALOG", "LAKECACHE_S3_SECRET_KEY"} & set(env)
    # Existing secrets are used by name; the chart makes none of its own.
    assert by_kind(objects, "Secret") == []
    ingress = next(iter(by_kind(objects, "Ingress")))
    assert ingress["spec"]["tls"][0]["secretName"] == "lakecache-tls"


def test_the_service_monitor_scrapes_the_service(helm: Path) -> None:
    """ServiceMonitor is a CRD (no schema here): its fields are checked against the Service."""
    objects = render(helm, "-f", str(EXAMPLE))
    monitor = next(iter(by_kind(objects, "ServiceMonitor")))
    service = next(iter(by_kind(objects, "Service")))
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["name"] == "lakecache-metrics"


def test_the_server_config_file_loads_as_the_server_reads_it(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, "-f", str(EXAMPLE))
    config_map = next(iter(by_kind(objects, "ConfigMap")))
    path = tmp_path / "server.toml"
    path.write_text(config_map["data"]["server.toml"])
    _, config = load_config(path, {"LAKECACHE_HOME": str(tmp_path / "home")})
    assert config.host == "0.0.0.0" and config.agents is False
    assert config.cookie_secure is True and config.lake_gc is True
    sites = {s.name: s for s in config.sites}
    assert set(sites) == {"onprem", "cloud"}
    assert sites["onprem"].volumes[0].capacity == 3 * 10**12
    assert sites["cloud"].volumes[0].ttl_seconds == 12 * 3600
    assert sites["cloud"].compute[0].backend == "kubernetes"


def test_the_schema_refuses_bad_values(helm: Path) -> None:
    said = refused(helm, "--set", "sites[0].volume.capacity=lots")
    assert "capacity" in said
    said = refused(helm, "--set", "lake.url=/not/s3")
    assert "lake" in said
    said = refused(
        helm, "--set", "sites[0].volume.nfs.server=x", "--set", "sites[0].volume.nfs.path=/e"
    )
    assert "oneOf" in said or "volume" in said
    said = refused(helm, "--set", "server.replicas=0")
    assert "replicas" in said


def test_notes_say_how_to_log_in(helm: Path, tmp_path: Path) -> None:
    # `helm template` does not print NOTES.txt: render it through a template of a copy.
    chart = tmp_path / "lakecache"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '{{ include "lakecache/templates/NOTES.txt" . | indent 4 }}\n'
    )
    objects = render(helm, "--show-only", "templates/zz-notes.yaml", chart=chart)
    notes = objects[0]["data"]["notes"]
    assert "kubectl -n default get secret lc-lakecache-admin" in notes
    assert "lakecache login http://127.0.0.1:8765 --user admin" in notes
    assert "port-forward svc/lc-lakecache 8765:8765" in notes
    objects = render(
        helm, "--show-only", "templates/zz-notes.yaml", "-f", str(EXAMPLE), chart=chart
    )
    notes = objects[0]["data"]["notes"]
    assert "lakecache login https://lakecache.example.com --user admin" in notes
    assert "site onprem: agent DaemonSet" in notes


def test_every_variable_the_chart_sets_is_a_documented_setting(helm: Path) -> None:
    table = settings_table().markdown()
    for args in ([], ["-f", str(EXAMPLE)]):
        for workload in render(helm, *args):
            if workload["kind"] not in {"Deployment", "DaemonSet"}:
                continue
            for name in env_of(workload):
                assert f"`{name}`" in table, f"{name} is set by the chart but not documented"
