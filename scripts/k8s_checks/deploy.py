"""Deploy pitfalls: pod security, scaling, Jobs, Redis AUTH, shared config, the base image."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .common import DOCKERFILE, ROOT, WORKLOAD_KINDS, Doc, by_kind, describe, selects
from .workloads import Workload, mesh_workloads

# ---------------------------------------------------------------- hardening the code relies on


def check_pod_security(docs: list[Doc]) -> list[str]:
    problems = []
    namespaces = by_kind(docs, "Namespace")
    if (
        not namespaces
        or namespaces[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted"
    ):
        problems.append("the Namespace must carry pod-security.kubernetes.io/enforce=restricted")
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = doc["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        if not pod_sc.get("runAsNonRoot") or pod_sc.get("runAsUser", 0) < 10000:
            problems.append(f"{describe(doc)}: pod must run as non-root with a UID >= 10000")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{describe(doc)}: seccompProfile RuntimeDefault missing")
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            sc = container.get("securityContext", {})
            where = f"{describe(doc)}/{container['name']}"
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: needs allowPrivilegeEscalation false and readOnlyRootFilesystem true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities must drop ALL")
            if not any(
                m["mountPath"] == "/tmp"  # noqa: S108 (a mount path in the manifest, not a temp file)
                and m["name"] in tmp_volumes
                for m in container.get("volumeMounts", [])
            ):
                problems.append(f"{where}: /tmp must be an emptyDir (the root filesystem is read-only)")
            resources = container.get("resources", {})
            if not all(resources.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")):
                problems.append(f"{where}: cpu and memory requests and limits are required")
            image = container["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{where}: image {image} must be pinned to a tag other than latest")
            # Always makes every start depend on a registry (kind/minikube-loaded images
            # have none); tags are immutable releases, so the node's copy is the right one.
            if container.get("imagePullPolicy") != "IfNotPresent":
                problems.append(f"{where}: imagePullPolicy {container.get('imagePullPolicy')} must be IfNotPresent")
    return problems


def check_replicas_and_scaling(docs: list[Doc], workloads: list[Workload], overlay: str) -> list[str]:
    problems = []
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in by_kind(docs, "HorizontalPodAutoscaler")}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for workload in workloads:
        if workload.doc["kind"] != "Deployment" or workload.program.kind not in ("grpc", "gateway"):
            continue
        name = workload.name
        hpa = hpas.get(name)
        if "replicas" in workload.doc["spec"] and hpa is not None:
            # Every apply would reset the HPA's count to this number, then the HPA scales again.
            problems.append(f"{describe(workload.doc)}: sets replicas, but {describe(hpa)} owns them")
        keys = {c.get("topologyKey") for c in workload.pod_spec.get("topologySpreadConstraints", [])}
        if not {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys:
            problems.append(f"{describe(workload.doc)}: spread across zones and nodes (topologySpreadConstraints)")
        if hpa is None:
            problems.append(f"{describe(workload.doc)}: no HorizontalPodAutoscaler")
        else:
            if overlay == "prod" and hpa["spec"].get("minReplicas", 1) < 2:
                problems.append(f"{describe(hpa)}: prod minReplicas must be 2+")
            metrics = {
                m.get("resource", {}).get("name") or m.get("pods", {}).get("metric", {}).get("name")
                for m in hpa["spec"]["metrics"]
            }
            if "cpu" not in metrics:
                problems.append(f"{describe(hpa)}: scales on CPU")
            if name == "agent" and "agent_runs_in_flight" not in metrics:
                problems.append(f"{describe(hpa)}: the agent also scales on agent_runs_in_flight")
        if not any(selects(p["spec"]["selector"], workload.labels) for p in pdbs):
            problems.append(f"{describe(workload.doc)}: no PodDisruptionBudget")
    if "agent_runs_in_flight" in (ROOT / "k8s/observability/prometheus-adapter-rules.yaml").read_text():
        from services.agent import metrics as agent_metrics

        if agent_metrics.runs_in_flight._name != "agent_runs_in_flight":
            problems.append("services/agent/metrics.py no longer exports agent_runs_in_flight (HPA, adapter)")
    return problems


def check_no_jobs(docs: list[Doc]) -> list[str]:
    """A Job's pod template is immutable and names hashed ConfigMaps and the image: in
    the default render it would make every re-apply after a change fail."""
    return [
        f"{describe(doc)}: Jobs belong in the opt-in components/migration-jobs, not the default render"
        for doc in by_kind(docs, "Job")
    ]


def check_migration_component(docs: list[Doc]) -> list[str]:
    from runtime.migrate_command import TARGETS

    problems = []
    jobs = {}
    for workload in mesh_workloads(docs):
        if workload.program.kind == "migration":
            jobs[workload.program.name] = workload.doc
    for service in sorted(set(TARGETS) - set(jobs)):
        problems.append(f"components/migration-jobs: no migration Job for {service}")
    for doc in jobs.values():
        spec = doc["spec"]
        if not 0 < spec.get("ttlSecondsAfterFinished", -1) <= 3600:
            problems.append(f"{describe(doc)}: ttlSecondsAfterFinished must be set (at most 1 h)")
        if "activeDeadlineSeconds" not in spec:
            problems.append(f"{describe(doc)}: activeDeadlineSeconds must bound a stuck migration")
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "migration":
            problems.append(f"{describe(doc)}: needs label app.kubernetes.io/component=migration (used to delete)")
    return problems


def check_redis(docs: list[Doc], workloads: list[Workload]) -> list[str]:
    """Redis with AUTH and protected mode; the gateway's URL carries the password."""
    problems = []
    for doc in by_kind(docs, "Deployment"):
        if doc["metadata"]["name"] != "redis":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        args = [str(a) for a in container.get("args", [])]
        options = dict(zip(args[::2], args[1::2], strict=False))
        if options.get("--protected-mode") != "yes":
            problems.append("Deployment/redis: --protected-mode must be yes")
        password = options.get("--requirepass", "")
        if not password.startswith("$(") or password.strip("$()") not in {
            e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }:
            problems.append("Deployment/redis: --requirepass must be $(VAR) with VAR from a Secret")
    for workload in workloads:
        url = workload.env.get("RATE_LIMIT_STORAGE_URL", "")
        if url.startswith("redis://") and not urlsplit(url).password:
            problems.append(f"{describe(workload.doc)}: RATE_LIMIT_STORAGE_URL has no password (Redis requires AUTH)")
    return problems


def check_shared_config(workloads: list[Workload], overlay: str) -> list[str]:
    """Every process, the gateway included, reads the same APP_ENV and LOG_FORMAT; in prod
    the gateway declares its proxy and names the proxy's networks."""
    problems = []
    seen: dict[str, set[str]] = {"APP_ENV": set(), "LOG_FORMAT": set()}
    for workload in workloads:
        if workload.program.kind not in ("grpc", "gateway", "migration"):
            continue
        for key, values in seen.items():
            values.add(workload.env.get(key, "<unset>"))
        if workload.program.kind == "gateway" and overlay == "prod":
            if workload.env.get("GATEWAY_BEHIND_PROXY") != "true":
                problems.append(f"{describe(workload.doc)}: prod sits behind an ingress: GATEWAY_BEHIND_PROXY=true")
            if not workload.env.get("TRUSTED_PROXIES"):
                problems.append(f"{describe(workload.doc)}: TRUSTED_PROXIES unset")
    for key, values in seen.items():
        if len(values) != 1 or "<unset>" in values:
            problems.append(f"{key} differs between the processes ({sorted(values)}): one shared ConfigMap sets it")
    if overlay == "prod" and seen["APP_ENV"] != {"production"}:
        problems.append(f"prod runs APP_ENV={sorted(seen['APP_ENV'])}, not production")
    return problems


# ---------------------------------------------------------------- image


def check_dockerfile() -> list[str]:
    """Every FROM pins the base by digest: `@sha256:<64 hex>` or the digest build ARG,
    whose default must then be a real digest or refused by `make images`."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S*)", text, flags=re.MULTILINE))
    problems = []
    for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        if "@" not in image:
            problems.append(f"Dockerfile: FROM {image} is not pinned by digest")
            continue
        digest = image.split("@", 1)[1]
        variable = re.fullmatch(r"\$\{?(\w+)\}?", digest)
        value = args.get(variable.group(1), "") if variable else digest
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value) and "images-refuse-unset-digest" not in _makefile_images():
            problems.append(f"Dockerfile: FROM {image}: digest {value!r} is a placeholder nothing refuses")
    return problems


def _makefile_images() -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^images:.*?(?=^\S)", text, flags=re.MULTILINE | re.DOTALL)
    return match.group(0) if match else ""
