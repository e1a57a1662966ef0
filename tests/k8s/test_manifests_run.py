"""The dev overlay's Deployments, run on loopback as the manifests say.

Each Deployment's container command is started with its env (its ConfigMaps, the dev
Secret) where only addresses change: Service names and ports become loopback ports, the
database is the embedded one of the `mesh` fixture, the in-cluster offline model is the
mesh's, Redis is a local redis-server. Each must pass its readiness probe exactly as the
probe spec says (grpc.health.v1 Check on the probe's service, GET on the probe's path);
then a real Prometheus, with the scrape config's own relabelling rules on static
targets, scrapes every pod.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from meshctl.mesh import Mesh, free_port
from tests.support.k8s import ROOT, k8s_check
from tests.support.waiting import eventually_sync

SCRAPE_CONFIG = ROOT / "k8s" / "observability" / "prometheus.yml"
# Start order: auth first (everyone fetches its JWKS, the gateway's /readyz needs them),
# the gateway last.
ORDER = ("auth", "sessions", "memory", "evals", "agent", "gateway")


@dataclass
class LocalPod:
    name: str
    workload: Any
    ports: dict[str, int]  # container port name -> loopback port
    process: subprocess.Popen[bytes]
    log: Path

    def local(self, port: int | str) -> int:
        if isinstance(port, str):
            return self.ports[port]
        return self.ports[next(n for n, p in self._container_ports().items() if p == port)]

    def _container_ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.workload.container.get("ports", [])}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def dev_secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("agentmesh-secrets"))
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def local_env(
    workload: Any,
    ports: dict[str, dict[str, int]],
    secret: dict[str, str],
    mesh: Mesh,
    redis_port: int,
    database_url: str,
) -> dict[str, str]:
    """The container's env with cluster addresses replaced by loopback ones: secretKeyRefs
    become the dev Secret's values (optional ones it lacks are dropped), then `$(VAR)`
    references expand as the kubelet would (the Redis URL carries the dev password)."""
    env_vars = []
    for var in workload.container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env_vars.append(var)
        elif ref["key"] in secret:
            env_vars.append({"name": var["name"], "value": secret[ref["key"]]})
    container = {**workload.container, "env": env_vars, "_pod_labels": workload.labels}
    env, _ = k8s_check.container_env(container, RENDERED)
    env["DATABASE_URL"] = database_url
    own = ports[workload.name]
    for key, value in list(env.items()):
        if key in ("GRPC_HOST", "METRICS_HOST", "GATEWAY_HOST", "GATEWAY_METRICS_HOST"):
            env[key] = "127.0.0.1"
        elif key == "GATEWAY_METRICS_PORT":
            env[key] = str(own["metrics"])
        elif key == "GRPC_PORT":
            env[key] = str(own["grpc"])
        elif key == "METRICS_PORT":
            env[key] = str(own["metrics"])
        elif key == "GATEWAY_PORT":
            env[key] = str(own["http"])
        elif key.endswith("_ADDR") and value.startswith("dns:///"):
            # The headless Service's name becomes loopback; the dns resolver and
            # round_robin policy stay as the manifest sets them.
            host, _, _port = value.removeprefix("dns:///").partition(":")
            if host in ports:
                env[key] = f"dns:///127.0.0.1:{ports[host]['grpc']}"
        elif key == "LLM_BASE_URL" and "offline-llm" in value:
            env[key] = mesh.llm_url
        elif key == "RATE_LIMIT_STORAGE_URL" and "@redis:6379" in value:
            env[key] = value.replace("@redis:6379", f"@127.0.0.1:{redis_port}")
    # Only what the manifest sets, plus what any process needs to run at all.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**base, **env, "PYTHONUNBUFFERED": "1", "DATA_DIR": str(mesh.data_dir)}


def probe_passes(pod: LocalPod, probe: dict[str, Any]) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "grpc" in probe:
        target = f"127.0.0.1:{pod.local(probe['grpc']['port'])}"
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    get = probe["httpGet"]
    try:
        response = httpx.get(f"http://127.0.0.1:{pod.local(get['port'])}{get['path']}", timeout=timeout)
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


def wait_ready(pod: LocalPod) -> None:
    """Startup probe, then readiness probe, each with its own period and failure budget."""
    container = pod.workload.container
    for probe_name in ("startupProbe", "readinessProbe"):
        probe = container[probe_name]
        # Locally a process on 2 cores may start slower than the cluster budget allows;
        # give every probe at least 90 s, and fail fast when the process exits.
        budget = max(probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3), 90)

        def passes(probe_name: str = probe_name, probe: dict[str, Any] = probe) -> None:
            if pod.process.poll() is not None:
                pytest.fail(f"{pod.name} exited with {pod.process.returncode}: {pod.log.read_text()[-3000:]}")
            assert probe_passes(pod, probe), f"{pod.name}: {probe_name} did not pass"

        try:
            eventually_sync(passes, timeout_s=budget, interval_s=0.25)
        except AssertionError as exc:
            pytest.fail(f"{exc} in {budget}s: {pod.log.read_text()[-3000:]}")


RENDERED: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """redis-server with the manifest's AUTH and protected mode, and the dev Secret's password."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    docs = k8s_check.render_overlay("dev")
    password = dev_secret(docs)["REDIS_PASSWORD"]
    redis = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "redis")
    args = [str(a) for a in redis["spec"]["template"]["spec"]["containers"][0]["args"]]
    args = [password if a == "$(REDIS_PASSWORD)" else a for a in args]
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *args],
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
    )
    ping = ["redis-cli", "-p", str(port), "--no-auth-warning", "-a", password, "ping"]

    def pong() -> None:
        assert subprocess.run(ping, capture_output=True).stdout.strip() == b"PONG", "redis-server did not start"

    eventually_sync(pong, timeout_s=10, interval_s=0.1)
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def database_url(mesh: Mesh) -> Iterator[str]:
    """A database of its own on the mesh's embedded Postgres: the dev Secret's signing-key
    secret differs from the mesh's, so the two auth deployments must not share keys."""
    base = mesh.env["DATABASE_URL"]
    name = f"k8s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO CURRENT_USER").format(sql.Identifier(name)))
    parts = urlsplit(base)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="module")
def local_pods(
    mesh: Mesh, redis_port: int, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalPod]]:
    RENDERED[:] = k8s_check.render_overlay("dev")
    workloads = {
        w.name: w
        for w in k8s_check.mesh_workloads(RENDERED)
        if w.doc["kind"] == "Deployment" and w.program.kind in ("grpc", "gateway")
    }
    assert sorted(workloads) == sorted(ORDER)
    ports = {name: {p["name"]: free_port() for p in w.container["ports"]} for name, w in workloads.items()}
    secret = dev_secret(RENDERED)
    logs = tmp_path_factory.mktemp("pods")
    pods: dict[str, LocalPod] = {}
    try:
        for name in ORDER:
            workload = workloads[name]
            command = workload.container["command"]
            assert command[:2] == ["python", "-m"]
            log = logs / f"{name}.log"
            process = subprocess.Popen(
                [sys.executable, *command[1:]],
                cwd=ROOT,
                env=local_env(workload, ports, secret, mesh, redis_port, database_url),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            pods[name] = LocalPod(name, workload, ports[name], process, log)
            wait_ready(pods[name])
        yield pods
    finally:
        for pod in reversed(list(pods.values())):
            pod.stop()


def static_scrape_config(pods: dict[str, LocalPod]) -> dict[str, Any]:
    """prometheus.yml with the kubernetes_sd_configs replaced by static targets carrying
    the same __meta_* labels the pod role would; the relabel rules are the file's own."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = config["scrape_configs"][0]
    del job["kubernetes_sd_configs"]
    targets = []
    for pod in pods.values():
        meta = pod.workload.doc["spec"]["template"]["metadata"]
        annotations = meta.get("annotations", {})
        labels = {
            "__meta_kubernetes_namespace": "agentmesh",
            "__meta_kubernetes_pod_name": f"{pod.name}-local",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": meta["labels"]["app.kubernetes.io/name"],
        }
        for key, value in annotations.items():
            if key.startswith("prometheus.io/"):
                safe = key.replace("prometheus.io/", "prometheus_io_")
                # The annotation names a container port; locally it lives on another port.
                local_value = str(pod.local(int(value))) if key == "prometheus.io/port" else value
                labels[f"__meta_kubernetes_pod_annotation_{safe}"] = local_value
        # The pod role yields the pod IP with the first container port; the relabelling
        # must move it to the annotated port.
        first = pod.workload.container["ports"][0]["name"]
        targets.append({"targets": [f"127.0.0.1:{pod.ports[first]}"], "labels": labels})
    job["static_configs"] = targets
    job["scrape_interval"] = "1s"
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("rule_files", None)
    return config


@pytest.fixture(scope="module")
def prometheus(local_pods: dict[str, LocalPod], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no Prometheus server (apt-get install -y prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(static_scrape_config(local_pods)))
    port = free_port()
    log = workdir / "prometheus.log"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {log.read_text()}")
        try:
            status = httpx.get(f"{url}/-/ready", timeout=1).status_code
        except httpx.HTTPError as exc:
            raise AssertionError(log.read_text()) from exc
        assert status == 200, log.read_text()

    eventually_sync(ready, timeout_s=30, interval_s=0.2)
    yield url
    process.terminate()
    process.wait(10)


def test_every_deployment_passes_its_readiness_probe(local_pods: dict[str, LocalPod]) -> None:
    for pod in local_pods.values():
        assert pod.process.poll() is None, f"{pod.name} exited"
        assert probe_passes(pod, pod.workload.container["readinessProbe"]), pod.name
        assert probe_passes(pod, pod.workload.container["livenessProbe"]), pod.name


def test_prometheus_scrapes_every_pod_through_the_relabelling(prometheus: str, local_pods: dict[str, LocalPod]) -> None:

    def scraped() -> dict[str, tuple[str, str]]:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="agentmesh-pods"}'}).json()
        up = {r["metric"]["service"]: (r["value"][1], r["metric"]["instance"]) for r in result["data"]["result"]}
        assert sorted(up) == sorted(local_pods)
        assert all(value == "1" for value, _ in up.values()), f"targets down: {up}"
        return up

    up = eventually_sync(scraped, timeout_s=30, interval_s=0.5)
    for name, (value, instance) in up.items():
        pod = local_pods[name]
        annotated = int(pod.workload.doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        assert value == "1", f"{name} is down at {instance}"
        assert instance == f"127.0.0.1:{pod.local(annotated)}"
    # The gRPC services' own series reach Prometheus with the relabelled labels.
    series = httpx.get(
        f"{prometheus}/api/v1/series", params={"match[]": 'process_start_time_seconds{namespace="agentmesh"}'}
    ).json()["data"]
    assert {s["service"] for s in series} >= {"auth", "sessions", "memory", "evals", "agent"}


def test_redis_refuses_clients_without_the_password(redis_port: int) -> None:
    reply = subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True, text=True).stdout
    assert "NOAUTH" in reply


def test_gateway_serves_metrics_on_its_own_port_only(local_pods: dict[str, LocalPod]) -> None:
    gateway = local_pods["gateway"]
    public = httpx.get(f"http://127.0.0.1:{gateway.ports['http']}/metrics", timeout=5)
    assert public.status_code == 404
    metrics = httpx.get(f"http://127.0.0.1:{gateway.ports['metrics']}/metrics", timeout=5)
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
