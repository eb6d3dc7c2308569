"""deploy/kubernetes: every manifest valid against the Kubernetes OpenAPI schemas (offline, with
kubernetes-validate's bundled schemas) and consistent with the code in ways no schema can see.

`problems()` gathers every cross-reference fault (an env var no settings class reads, a probe naming another
gRPC service, a Secret key the example lacks, a Service selecting nothing, a sandbox privilege the compose
file does not grant, ...). The real manifests must have none; each mutation test breaks one thing in a copy
and expects `problems()` to name it, so the checks are shown to bite.

Then the pods' configuration is run for real (integration): each process started as its manifest says
(env, Secrets made as the README says, read-only root, emptyDirs, the sandbox's capabilities and seccomp
profile), two gateway replicas over one PostgreSQL, probed as the probes are written, answering a question.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import _digest_bytes, token_digest
from common.settings import Settings
from insightx.v1 import llm_gateway_pb2, llm_gateway_pb2_grpc, py_sandbox_pb2, py_sandbox_pb2_grpc
from tools.env_table import rows as env_rows

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
EXAMPLE = DEPLOY / "secret.example.yaml"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"

#: Kubernetes name → the service's module under services/ (None: the HTTP gateway).
GRPC_SERVICES = {
    "orchestrator": "orchestrator",
    "llm-gateway": "llm_gateway",
    "sql-engine": "sql_engine",
    "py-sandbox": "py_sandbox",
}
ALL_SERVICES = [*GRPC_SERVICES, "gateway"]
STATELESS = {"orchestrator", "llm-gateway", "gateway"}  # the ones an autoscaler may scale
SANDBOX = "py-sandbox"
CAP_BITS = {"KILL": 5, "SETGID": 6, "SETUID": 7, "SYS_ADMIN": 21}  # linux/capability.h
IMAGE_UID = 10001  # docker/*.Dockerfile: useradd --uid 10001 insightx
PROVIDER_ENV = re.compile(r"^(BYTEZ|OPENAI)_API_KEY(S|_\d+)?$")
#: Oldest Kubernetes the manifests target (securityContext.appArmorProfile is GA from 1.30) and newest.
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p not in (EXAMPLE, KUSTOMIZATION))


def manifests() -> list[Doc]:
    return [doc for path in manifest_files() for doc in load(path)]


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def containers(deployment: Doc) -> list[Doc]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def env_entries(container: Doc) -> list[Doc]:
    return list(container.get("env", []))


def secret_refs(docs: list[Doc]) -> Iterator[tuple[str, str, str, bool]]:
    """(deployment, secret, key, optional) for every secretKeyRef."""
    for name, deployment in of_kind(docs, "Deployment").items():
        for container in containers(deployment):
            for entry in env_entries(container):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield name, ref["name"], ref["key"], bool(ref.get("optional", False))


def env_of(deployment: Doc) -> dict[str, Doc]:
    """The variables a Deployment's first container sets one by one (not envFrom): name → its entry."""
    return {entry["name"]: entry for entry in env_entries(containers(deployment)[0])}


def known_env() -> set[str]:
    return {variable for variable, *_ in env_rows()}


def compose() -> Doc:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def default_port(service: str) -> int:
    addr_field = f"{GRPC_SERVICES[service]}_addr"
    return int(Settings.model_fields[addr_field].default.rsplit(":", 1)[1])


def health_name(service: str) -> str:
    module = importlib.import_module(f"services.{GRPC_SERVICES[service]}.server")
    return str(module.SERVICE_NAME)


def callers(service: str) -> set[str]:
    module = importlib.import_module(f"services.{GRPC_SERVICES[service]}.server")
    return set(module.CALLERS)


# --- the checks ---------------------------------------------------------------------------------------


def env_problems(docs: list[Doc], example: list[Doc]) -> list[str]:
    out: list[str] = []
    known = known_env()
    config_maps = of_kind(docs, "ConfigMap")
    for name, config_map in config_maps.items():
        for key in config_map.get("data", {}):
            if key not in known:
                out.append(f"ConfigMap {name}: {key} is read by no settings class")
    for name, deployment in of_kind(docs, "Deployment").items():
        for container in containers(deployment):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref not in config_maps:
                    out.append(f"Deployment {name}: envFrom names ConfigMap {ref!r}, which is not defined")
            for entry in env_entries(container):
                if entry["name"] not in known:
                    out.append(f"Deployment {name}: env {entry['name']} is read by no settings class")
    secrets = {doc["metadata"]["name"]: doc.get("stringData", {}) for doc in example}
    for deployment, secret, key, _optional in secret_refs(docs):
        if key not in secrets.get(secret, {}):
            out.append(f"Deployment {deployment}: Secret {secret} key {key} is not in secret.example.yaml")
    for secret, data in secrets.items():
        for key, value in data.items():
            if "REPLACE_WITH_" not in str(value):
                out.append(f"secret.example.yaml: {secret}.{key} holds a value, not a placeholder")
    return out


def token_problems(docs: list[Doc]) -> list[str]:
    """Each process gets its own token and the digests of exactly the callers its server.py lets in."""
    out: list[str] = []
    deployments = of_kind(docs, "Deployment")
    for name, deployment in deployments.items():
        env = env_of(deployment)
        takes = callers(name) if name in GRPC_SERVICES else set()
        given = {
            m.group(1).lower()
            for variable in env
            if (m := re.fullmatch(r"INSIGHTX_INTERNAL_([A-Z_]+)_TOKEN", variable))
        }
        if given != takes:
            out.append(
                f"Deployment {name}: recognises callers {sorted(given)}, its CALLERS are {sorted(takes)}"
            )
        for caller in given:
            ref = env[f"INSIGHTX_INTERNAL_{caller.upper()}_TOKEN"]["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) != ("insightx-internal-digests", f"{caller}-token"):
                out.append(f"Deployment {name}: {caller}'s token must come as its digest, not {ref}")
        calls_others = name in {"gateway", "orchestrator"}
        own = env.get("INSIGHTX_INTERNAL_TOKEN")
        if calls_others != (own is not None):
            out.append(
                f"Deployment {name}: INSIGHTX_INTERNAL_TOKEN {'missing' if calls_others else 'not its'}"
            )
        elif own is not None:
            ref = own["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) != ("insightx-internal-tokens", f"{name}-token"):
                out.append(f"Deployment {name}: presents another process's token ({ref['key']})")
    return out


def provider_problems(docs: list[Doc]) -> list[str]:
    """Provider keys reach the LLM gateway and nothing else."""
    out: list[str] = []
    for name, deployment in of_kind(docs, "Deployment").items():
        if name == "llm-gateway":
            continue
        for variable, entry in env_of(deployment).items():
            ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
            if PROVIDER_ENV.match(variable) or ref.get("name") == "insightx-llm-keys":
                out.append(f"Deployment {name}: gets provider key {variable}")
    return out


def service_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    config = of_kind(docs, "ConfigMap")["insightx-config"]["data"]
    if set(services) != set(ALL_SERVICES):
        out.append(f"Services {sorted(services)}, expected {sorted(ALL_SERVICES)}")
    for name, service in services.items():
        selector = service["spec"]["selector"]
        selected = [
            d
            for d, deployment in deployments.items()
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        ]
        if selected != [name]:
            out.append(f"Service {name}: selects Deployments {selected}")
            continue
        container = containers(deployments[name])[0]
        named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            target_port = named_ports.get(target) if isinstance(target, str) else target
            if target_port != port["port"]:
                out.append(
                    f"Service {name}: port {port['port']} → {target!r}, the container has {named_ports}"
                )
        headless = service["spec"].get("clusterIP") == "None"
        if name in GRPC_SERVICES:
            if not headless:
                out.append(f"Service {name}: a gRPC Service must be headless for round_robin")
            addr = config.get(f"INSIGHTX_{GRPC_SERVICES[name].upper()}_ADDR", "")
            expected = f"dns:///{name}:{default_port(name)}"  # every replica, health-checked
            if addr != expected:
                out.append(
                    f"Service {name}: INSIGHTX_{GRPC_SERVICES[name].upper()}_ADDR is {addr!r}, not {expected}"
                )
            if [p["port"] for p in service["spec"]["ports"]] != [default_port(name)]:
                out.append(f"Service {name}: port is not the default {default_port(name)}")
        else:
            if headless:
                out.append(f"Service {name}: the HTTP gateway needs a load-balanced (not headless) Service")
            if [p["port"] for p in service["spec"]["ports"]] != [
                Settings.model_fields["gateway_port"].default
            ]:
                out.append(f"Service {name}: port is not INSIGHTX_GATEWAY_PORT's default")
    return out


def probe_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    allowed = json.loads(
        of_kind(docs, "ConfigMap")["insightx-gateway-config"]["data"]["INSIGHTX_ALLOWED_HOSTS"]
    )
    for name, deployment in of_kind(docs, "Deployment").items():
        container = containers(deployment)[0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                out.append(f"Deployment {name}: no {kind}")
                continue
            if name in GRPC_SERVICES:
                grpc = probe.get("grpc")
                if grpc is None:
                    out.append(f"Deployment {name}: {kind} is not a gRPC probe")
                elif grpc["port"] != ports.get("grpc") or grpc.get("service") != health_name(name):
                    out.append(f"Deployment {name}: {kind} asks {grpc}, not {health_name(name)} on {ports}")
            else:
                http = probe.get("httpGet")
                if http is None or http["port"] not in ("http", ports.get("http")):
                    out.append(f"Deployment {name}: {kind} is not an HTTP probe on its port")
                    continue
                hosts = [h["value"] for h in http.get("httpHeaders", []) if h["name"].lower() == "host"]
                if not hosts or hosts[0] not in allowed:
                    out.append(f"Deployment {name}: {kind} Host {hosts} is refused by INSIGHTX_ALLOWED_HOSTS")
                if kind == "readinessProbe" and http["path"] != "/health":
                    out.append(f"Deployment {name}: readiness must be /health, not {http['path']}")
    return out


def scaling_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    deployments = of_kind(docs, "Deployment")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    targets = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas.values()}
    if targets != STATELESS:
        out.append(f"HorizontalPodAutoscalers target {sorted(targets)}, expected {sorted(STATELESS)}")
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            out.append(f"HPA {hpa['metadata']['name']}: targets no Deployment ({target})")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        if len(covering) != 1:
            out.append(f"Deployment {name}: {len(covering)} PodDisruptionBudgets, expected 1")
            continue
        least = deployment["spec"]["replicas"]
        hpa = next((h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"] == name), None)
        if hpa is not None:
            least = hpa["spec"].get("minReplicas", 1)
        if covering[0]["spec"].get("minAvailable", 0) >= least:
            out.append(f"Deployment {name}: its PodDisruptionBudget would block every eviction")
        for container in containers(deployment):
            res = container.get("resources", {})
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(bound, {})):
                    out.append(f"Deployment {name}: {container['name']} lacks cpu/memory {bound}")
    return out


def security_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    sandbox_compose = compose()["services"]["py_sandbox"]
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        if pod.get("automountServiceAccountToken") is not False:
            out.append(f"Deployment {name}: mounts a service account token it does not need")
        for container in pod["containers"]:
            sc = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            if name == SANDBOX:
                out += sandbox_problems(pod, container, sc, sandbox_compose)
                continue
            # Pod Security Standards, `restricted`.
            if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") != IMAGE_UID:
                out.append(f"Deployment {name}: must run as the image's non-root uid {IMAGE_UID}")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"Deployment {name}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                out.append(f"Deployment {name}: must drop every capability and add none")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                out.append(f"Deployment {name}: seccomp must be RuntimeDefault")
    return out


def sandbox_problems(pod: Doc, container: Doc, sc: Doc, composed: Doc) -> list[str]:
    """The sandbox gets exactly the privileges docker-compose.yml grants it, and nothing more."""
    out: list[str] = []
    caps = sc.get("capabilities", {})
    if caps.get("drop") != composed["cap_drop"] or sorted(caps.get("add", [])) != sorted(composed["cap_add"]):
        out.append(
            f"py-sandbox: capabilities {caps} are not compose's {composed['cap_drop']} {composed['cap_add']}"
        )
    if sc.get("privileged"):
        out.append("py-sandbox: privileged")
    options = dict(option.split("=", 1) for option in composed["security_opt"])
    profile = ROOT / options["seccomp"]
    seccomp = sc.get("seccompProfile", {})
    if seccomp.get("type") != "Localhost" or Path(seccomp.get("localhostProfile", "")).name != profile.name:
        out.append(f"py-sandbox: seccomp {seccomp} is not the Localhost profile {profile.name}")
    armor = sc.get("appArmorProfile", {}).get("type", "RuntimeDefault")
    if (armor == "Unconfined") != (options.get("apparmor") == "unconfined"):
        out.append(f"py-sandbox: AppArmor {armor} differs from compose's {options.get('apparmor')}")
    arches = {a.removeprefix("SCMP_ARCH_").lower() for a in json.loads(profile.read_text())["architectures"]}
    node_arch = pod.get("nodeSelector", {}).get("kubernetes.io/arch")
    if {"x86_64": "amd64"}.get(next(iter(arches)), "?") != node_arch or len(arches) != 1:
        out.append(f"py-sandbox: the seccomp profile is for {arches}, the pod may land on {node_arch}")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    composed_ro = any(v.endswith(":/data:ro") for v in composed["volumes"])
    if composed_ro != bool(mounts.get("/data", {}).get("readOnly")):
        out.append("py-sandbox: /data must be read-only, as in compose")
    return out


def image_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    for name, deployment in of_kind(docs, "Deployment").items():
        module = GRPC_SERVICES.get(name, "gateway")
        container = containers(deployment)[0]
        repo = container["image"].rsplit(":", 1)[0]
        dockerfile = ROOT / "docker" / f"{module}.Dockerfile"
        if repo != f"insightx/{module}" or not dockerfile.is_file():
            out.append(
                f"Deployment {name}: image {container['image']} is not the one {dockerfile.name} builds"
            )
            continue
        exposed = {int(p) for p in re.findall(r"^EXPOSE (\d+)", dockerfile.read_text(), re.M)}
        if {p["containerPort"] for p in container["ports"]} != exposed:
            out.append(f"Deployment {name}: ports differ from {dockerfile.name}'s EXPOSE {exposed}")
        if "command" in container or "args" in container:
            out.append(f"Deployment {name}: overrides the image's CMD")
    return out


def network_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
        for p in of_kind(docs, "NetworkPolicy").values()
    }
    for name in GRPC_SERVICES:
        policy = policies.get(name)
        if policy is None:
            out.append(f"NetworkPolicy: none for {name}")
            continue
        allowed = set()
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                out.append(f"NetworkPolicy {name}: a rule lets in every pod")
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports != {default_port(name)}:
                out.append(f"NetworkPolicy {name}: opens {ports}, not {default_port(name)}")
            for peer in rule.get("from", []):
                allowed.add(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name"))
        if allowed != callers(name):
            out.append(
                f"NetworkPolicy {name}: lets in {sorted(map(str, allowed))}, not {sorted(callers(name))}"
            )
    return out


def problems(docs: list[Doc], example: list[Doc]) -> list[str]:
    return [
        *env_problems(docs, example),
        *token_problems(docs),
        *provider_problems(docs),
        *service_problems(docs),
        *probe_problems(docs),
        *scaling_problems(docs),
        *security_problems(docs),
        *image_problems(docs),
        *network_problems(docs),
    ]


# --- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*manifest_files(), EXAMPLE], ids=lambda p: p.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    docs = load(path)
    assert docs
    for doc in docs:
        # strict: a misspelt or misplaced field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misplaced_field() -> None:
    deployment = copy.deepcopy(of_kind(manifests(), "Deployment")["orchestrator"])
    containers(deployment)[0]["livenesProbe"] = containers(deployment)[0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_the_manifests_agree_with_the_code() -> None:
    assert problems(manifests(), load(EXAMPLE)) == []


def test_kustomization_applies_every_manifest_and_no_secret() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    assert all(doc["kind"] != "Secret" for doc in manifests()), "Secrets are created by hand, never committed"
    images = {
        c["image"].rsplit(":", 1)[0]
        for d in of_kind(manifests(), "Deployment").values()
        for c in containers(d)
    }
    assert {i["name"] for i in kustomization["images"]} == images
    namespaces = of_kind(manifests(), "Namespace")
    assert list(namespaces) == [kustomization["namespace"]]


def test_a_deployment_per_service_with_the_shared_volume_where_compose_has_it() -> None:
    deployments = of_kind(manifests(), "Deployment")
    assert sorted(deployments) == sorted(ALL_SERVICES)
    composed = compose()["services"]
    for name, deployment in deployments.items():
        module = GRPC_SERVICES.get(name, "gateway")
        pod = deployment["spec"]["template"]["spec"]
        claims = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == "insightx-data"
        }
        mounts = {
            m["mountPath"] for m in containers(deployment)[0].get("volumeMounts", []) if m["name"] in claims
        }
        assert ("/data" in mounts) == bool(composed[module].get("volumes")), name
    assert "insightx-data" in of_kind(manifests(), "PersistentVolumeClaim")


MUTATIONS: dict[str, tuple[str, str]] = {
    # id: (what to break, text expected in a problem)
    "probe names another service": ("probe", "readinessProbe asks"),
    "env var no settings class reads": ("env", "INSIGHTX_SQL_QUERY_WORKER is read by no"),
    "secret key missing from the example": ("secret", "key cookie-key is not in secret.example.yaml"),
    "service selects nothing": ("selector", "Service sql-engine: selects Deployments []"),
    "grpc service not headless": ("headless", "must be headless"),
    "sandbox gains a capability": ("capability", "py-sandbox: capabilities"),
    "sandbox seccomp unconfined": ("seccomp", "py-sandbox: seccomp"),
    "orchestrator gets provider keys": ("provider", "Deployment orchestrator: gets provider key"),
    "service recognises a non-caller": ("caller", "Deployment llm-gateway: recognises callers"),
    "network policy lets in a non-caller": ("network", "NetworkPolicy llm-gateway: lets in"),
    "root where non-root is due": ("root", "Deployment gateway: must run as the image's non-root"),
    "autoscaled sandbox": ("hpa", "HorizontalPodAutoscalers target"),
    "gateway probe with refused Host": ("host", "Host ['insightx.internal'] is refused"),
}


def mutate(docs: list[Doc], what: str) -> None:
    deployments = of_kind(docs, "Deployment")

    def env(name: str) -> list[Doc]:
        return containers(deployments[name])[0].setdefault("env", [])

    if what == "probe":
        containers(deployments["sql-engine"])[0]["readinessProbe"]["grpc"]["service"] = (
            "insightx.v1.PySandboxService"
        )
    elif what == "env":
        env("sql-engine").append({"name": "INSIGHTX_SQL_QUERY_WORKER", "value": "4"})
    elif what == "secret":
        env("gateway").append(
            {
                "name": "INSIGHTX_SECRET_KEY",
                "valueFrom": {"secretKeyRef": {"name": "insightx-gateway", "key": "cookie-key"}},
            }
        )
    elif what == "selector":
        of_kind(docs, "Service")["sql-engine"]["spec"]["selector"] = {"app.kubernetes.io/name": "sql_engine"}
    elif what == "headless":
        del of_kind(docs, "Service")["orchestrator"]["spec"]["clusterIP"]
    elif what == "capability":
        containers(deployments["py-sandbox"])[0]["securityContext"]["capabilities"]["add"].append(
            "SYS_PTRACE"
        )
    elif what == "seccomp":
        containers(deployments["py-sandbox"])[0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    elif what == "provider":
        env("orchestrator").append(
            {
                "name": "BYTEZ_API_KEYS",
                "valueFrom": {"secretKeyRef": {"name": "insightx-llm-keys", "key": "bytez-api-keys"}},
            }
        )
    elif what == "caller":
        env("llm-gateway").append(
            {
                "name": "INSIGHTX_INTERNAL_GATEWAY_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "insightx-internal-digests", "key": "gateway-token"}},
            }
        )
    elif what == "network":
        rule = of_kind(docs, "NetworkPolicy")["llm-gateway"]["spec"]["ingress"][0]
        rule["from"].append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}})
    elif what == "root":
        deployments["gateway"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    elif what == "hpa":
        hpa = copy.deepcopy(of_kind(docs, "HorizontalPodAutoscaler")["gateway"])
        hpa["metadata"]["name"] = hpa["spec"]["scaleTargetRef"]["name"] = "py-sandbox"
        docs.append(hpa)
    elif what == "host":
        probe = containers(deployments["gateway"])[0]["livenessProbe"]
        probe["httpGet"]["httpHeaders"] = [{"name": "Host", "value": "insightx.internal"}]
    else:  # pragma: no cover
        raise AssertionError(what)


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_check_catches_its_fault(mutation: str) -> None:
    what, expected = MUTATIONS[mutation]
    docs = copy.deepcopy(manifests())
    mutate(docs, what)
    found = problems(docs, load(EXAMPLE))
    assert any(expected in problem for problem in found), found


def test_the_example_secret_holds_placeholders_only() -> None:
    example = copy.deepcopy(load(EXAMPLE))
    example[0]["stringData"]["gateway-token"] = "4f1c0a9e"
    assert any("holds a value, not a placeholder" in p for p in problems(manifests(), example))


# --- the pods' configuration, run for real --------------------------------------------------------------
# Each process below starts with exactly the environment its Deployment gives it (ConfigMaps, literals and
# Secrets made the way the README says), only moved to loopback and free ports, with the filesystem and
# privileges its manifest gives it (pod_command), and is probed the way its probes are written. What is
# not reproduced: the non-root uid (the interpreter here lives under /root), RuntimeDefault seccomp,
# AppArmor and cluster DNS.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def readme_secrets(database_url: str = "postgresql://nobody@127.0.0.1:1/none") -> dict[str, dict[str, str]]:
    """The Secrets as README's `kubectl create secret` lines make them: tokens, `sha256:` digests, the
    cookie key and the database."""
    tokens = {caller: secrets.token_hex(32) for caller in ("gateway", "orchestrator")}
    return {
        "insightx-internal-tokens": {f"{c}-token": t for c, t in tokens.items()},
        "insightx-internal-digests": {
            f"{c}-token": "sha256:" + hashlib.sha256(t.encode()).hexdigest() for c, t in tokens.items()
        },
        "insightx-gateway": {"secret-key": secrets.token_hex(32)},
        "insightx-database": {"url": database_url},
    }


def pod_env(docs: list[Doc], name: str, made: dict[str, dict[str, str]]) -> dict[str, str]:
    """What the kubelet would set in the Deployment's container: envFrom ConfigMaps, then env entries."""
    config_maps = of_kind(docs, "ConfigMap")
    container = containers(of_kind(docs, "Deployment")[name])[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= config_maps[source["configMapRef"]["name"]]["data"]
    for entry in env_entries(container):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        value = made.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"{name}: the pod would not start without {ref}"
            continue
        env[entry["name"]] = value
    return env


#: Loads a Localhost seccomp profile as the container runtime would (default: the profile's errno), then
#: becomes the service.
SECCOMP_LOADER = """
import json, os, sys
import pyseccomp
profile = json.load(open(sys.argv[1]))
flt = pyseccomp.SyscallFilter(defaction=pyseccomp.ERRNO(profile["defaultErrnoRet"]))
for rule in profile["syscalls"]:
    if rule["action"] == "SCMP_ACT_ALLOW":
        for name in rule["names"]:
            flt.add_rule(pyseccomp.ALLOW, name)
flt.load()
os.execv(sys.executable, [sys.executable, "-m", sys.argv[2]])
"""


def pod_command(docs: list[Doc], name: str, data: str) -> list[str]:
    """The Deployment's process as its pod would run it, read from its manifest: in a mount namespace of its
    own with a read-only root where readOnlyRootFilesystem says so, a tmpfs for each emptyDir, the data
    volume read-only where the mount says so, no writable cgroup hierarchy (as in a container), and for
    the sandbox its capabilities as the bounding set and its Localhost seccomp profile loaded."""
    pod = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sc = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    steps = []
    if sc.get("readOnlyRootFilesystem"):
        steps += ["mount --bind / /", "mount -o remount,bind,ro /"]
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            hidden = [p for p in (ROOT, Path(sys.executable)) if Path(mount["mountPath"]) in p.parents]
            if hidden:  # e.g. a checkout under /tmp: the pod's tmpfs would hide the code it runs
                pytest.skip(
                    f"the emptyDir at {mount['mountPath']} would hide {hidden[0]}: check out elsewhere"
                )
            size = volume["emptyDir"].get("sizeLimit", "64Mi").removesuffix("i")
            steps.append(f"mount -t tmpfs -o size={size} tmpfs {mount['mountPath']}")
        elif mount.get("readOnly"):
            steps += [f"mount --bind {data} {data}", f"mount -o remount,bind,ro {data}"]
    steps.append("mount -t tmpfs -o ro tmpfs /sys/fs/cgroup")
    command = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        " && ".join([*steps, 'exec "$0" "$@"']),
    ]
    if added := sc.get("capabilities", {}).get("add"):
        bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in added)])
        command += ["setpriv", f"--bounding-set={bounding}", "--"]
    module = "gateway" if name == "gateway" else f"services.{GRPC_SERVICES[name]}"
    seccomp = sc.get("seccompProfile", {})
    if seccomp.get("type") == "Localhost":
        profile = ROOT / "docker" / Path(seccomp["localhostProfile"]).name  # what README says to install
        return [*command, sys.executable, "-c", SECCOMP_LOADER, str(profile), module]
    return [*command, sys.executable, "-m", module]


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`command` with only `env` (no inherited INSIGHTX_*, no .env), its output in `log`."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip(
            "a pod's filesystem and privileges need root and util-linux's unshare and setpriv (as CI has)"
        )
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=base | env, cwd="/", stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def wait_serving(proc: subprocess.Popen[bytes], port: int, service: str, log: Path) -> None:
    """Polls grpc.health.v1 as the kubelet's gRPC probe does (no credential) until SERVING."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, tail(log)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{service} on {port} never SERVING\n{tail(log)}")


def wait_http(
    proc: subprocess.Popen[bytes], url: str, headers: dict[str, str], status: int, log: Path
) -> None:
    """Polls `url` as the kubelet's HTTP probe does until it answers `status`."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, tail(log)
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == status:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered {status}\n{tail(log)}"
        time.sleep(0.3)


def cluster_env(
    docs: list[Doc], name: str, made: dict[str, dict[str, str]], ports: dict[str, int], data: str
) -> dict[str, str]:
    """A pod's env with the Services' names swapped for loopback and free ports (no cluster DNS here),
    and the data volume (where the pod mounts it) at `data`."""
    env = pod_env(docs, name, made) | {"INSIGHTX_GRPC_LISTEN_HOST": "127.0.0.1"}
    for service, module in GRPC_SERVICES.items():
        variable = f"INSIGHTX_{module.upper()}_ADDR"
        assert env[variable] == f"dns:///{service}:{default_port(service)}"  # the manifest's, only moved
        env[variable] = f"dns:///127.0.0.1:{ports[service]}"
    pod = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
    if any(v.get("persistentVolumeClaim") for v in pod.get("volumes", [])):
        env["INSIGHTX_DATA_DIR"] = data
    if name == "gateway":
        env |= {"INSIGHTX_GATEWAY_HOST": "127.0.0.1", "INSIGHTX_GATEWAY_PORT": str(ports["gateway"])}
    return env


def probe_of(docs: list[Doc], name: str, kind: str) -> Doc:
    return dict(containers(of_kind(docs, "Deployment")[name])[0][kind])


@pytest.fixture
def volume() -> Iterator[str]:
    """The shared data volume's stand-in: on /dev/shm, a mount a pod's read-only root leaves writable."""
    path = tempfile.mkdtemp(prefix="insightx-k8s-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
def test_llm_gateway_pod_takes_the_orchestrator_alone(tmp_path: Path, volume: str) -> None:
    docs, made = manifests(), readme_secrets()
    ports = {name: free_port() for name in ALL_SERVICES}
    env, log = cluster_env(docs, "llm-gateway", made, ports, volume), tmp_path / "llm-gateway.log"
    with running(pod_command(docs, "llm-gateway", volume), env, log) as proc:
        wait_serving(
            proc,
            ports["llm-gateway"],
            probe_of(docs, "llm-gateway", "readinessProbe")["grpc"]["service"],
            log,
        )
        with grpc.insecure_channel(f"127.0.0.1:{ports['llm-gateway']}") as channel:
            stub = llm_gateway_pb2_grpc.LlmGatewayServiceStub(channel)
            request = llm_gateway_pb2.GetKeyStatusRequest()

            def as_caller(caller: str) -> tuple[tuple[str, str], ...]:
                return (("authorization", f"Bearer {made['insightx-internal-tokens'][f'{caller}-token']}"),)

            stub.GetKeyStatus(request, metadata=as_caller("orchestrator"), timeout=5)  # the one caller: OK
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetKeyStatus(request, metadata=as_caller("gateway"), timeout=5)
            assert refused.value.code() in {
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            }


@pytest.mark.integration
def test_gateway_pod_answers_its_probes_and_refuses_a_pod_ip_host(
    tmp_path: Path, volume: str, postgres_url: str
) -> None:
    docs, made = manifests(), readme_secrets(postgres_url)
    ports = {name: free_port() for name in ALL_SERVICES}
    env, log = cluster_env(docs, "gateway", made, ports, volume), tmp_path / "gateway.log"
    base = f"http://127.0.0.1:{ports['gateway']}"
    with running(pod_command(docs, "gateway", volume), env, log) as proc:
        for kind, status in (("livenessProbe", 200), ("readinessProbe", 503)):
            # Alive without any peer; not ready while no service behind it answers.
            http = probe_of(docs, "gateway", kind)["httpGet"]
            headers = {h["name"]: h["value"] for h in http["httpHeaders"]}
            wait_http(proc, base + http["path"], headers, status, log)
        # The kubelet's default Host (the pod's IP) is refused: hence the probes' Host header.
        assert httpx.get(base + "/", headers={"Host": "10.1.2.3:8000"}, timeout=10).status_code == 400


def test_the_readme_digest_recipe_gives_what_services_accept() -> None:
    recipe = 'printf %s "$G" | sha256sum | cut -c1-64'
    assert recipe in (ROOT / "README.md").read_text()
    token = secrets.token_hex(32)
    out = subprocess.run(
        ["bash", "-c", recipe],
        env={"G": token, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sha256:" + out.stdout.strip() == token_digest(token)
    # The example's placeholders are no usable digest: a service given one refuses to start.
    placeholder = load(EXAMPLE)[1]["stringData"]["gateway-token"]
    with pytest.raises(ValueError, match="sha256: followed by 64"):
        _digest_bytes(placeholder)


@pytest.mark.integration
def test_the_pods_answer_questions_together(tmp_path: Path, volume: str, postgres_url: str) -> None:
    """Every process as its pod runs it (pod_command), from its Deployment's env and Secrets, two gateway
    replicas over one PostgreSQL: both turn ready, a dataset uploaded through one is asked about through
    the other and its chat is listed by the first, and the sandbox runs code with exactly its pod's
    privileges."""
    docs, made = manifests(), readme_secrets(postgres_url)
    ports = {name: free_port() for name in ALL_SERVICES}
    replicas = {"gateway": ports["gateway"], "gateway-2": free_port()}
    with contextlib.ExitStack() as stack:
        procs = {}
        # The sandbox first: it reads a fresh volume no writer has laid out yet (read-only, it cannot).
        for name in sorted(GRPC_SERVICES, key=lambda n: n != SANDBOX):
            env, log = cluster_env(docs, name, made, ports, volume), tmp_path / f"{name}.log"
            procs[name] = stack.enter_context(running(pod_command(docs, name, volume), env, log))
        for replica, port in replicas.items():
            env = cluster_env(docs, "gateway", made, ports, volume) | {"INSIGHTX_GATEWAY_PORT": str(port)}
            procs[replica] = stack.enter_context(
                running(pod_command(docs, "gateway", volume), env, tmp_path / f"{replica}.log")
            )
        for name in GRPC_SERVICES:
            probe = probe_of(docs, name, "readinessProbe")["grpc"]["service"]
            wait_serving(procs[name], ports[name], probe, tmp_path / f"{name}.log")
        ready = probe_of(docs, "gateway", "readinessProbe")["httpGet"]
        probe_headers = {h["name"]: h["value"] for h in ready["httpHeaders"]}
        one, two = (f"http://127.0.0.1:{port}" for port in replicas.values())
        for replica, base in zip(replicas, (one, two), strict=True):
            wait_http(procs[replica], base + ready["path"], probe_headers, 200, tmp_path / f"{replica}.log")

        token = (Path(volume) / "gateway" / "auth_token").read_text().strip()  # one for both replicas
        headers = {"Host": "localhost", "Authorization": f"Bearer {token}"}
        table = "id,region\n" + "".join(f"{i},{['North', 'South'][i % 2]}\n" for i in range(137))
        files = {"file": ("t.csv", table, "text/csv")}
        reply = httpx.post(one + "/api/datasets", headers=headers, files=files, timeout=60)
        assert reply.status_code == 200, reply.text
        session = reply.json()["session_id"]
        body = {"session_id": session, "message": "How many rows are there?", "history": []}
        with httpx.stream("POST", two + "/api/chat/stream", headers=headers, json=body, timeout=60) as sse:
            assert sse.status_code == 200
            chat_id = sse.headers["x-chat-id"]
            events = [json.loads(line[6:]) for line in sse.iter_lines() if line.startswith("data: ")]
        assert events[-1]["type"] == "final_response", events[-3:]
        assert events[-1]["data"]["answer"] == 137
        listed = httpx.get(f"{one}/api/sessions/{session}/chats", headers=headers, timeout=10)
        assert [chat["chat_id"] for chat in listed.json()["chats"]] == [chat_id], listed.text

        # The sandbox pod: four capabilities, its own seccomp profile, the data read-only, no cgroup.
        status_lines = Path(f"/proc/{procs[SANDBOX].pid}/status").read_text().splitlines()
        fields = dict(line.split(":\t", 1) for line in status_lines if ":\t" in line)
        assert fields["Seccomp"].strip() == "2"  # a filter is loaded
        added = containers(of_kind(docs, "Deployment")[SANDBOX])[0]["securityContext"]["capabilities"]["add"]
        assert int(fields["CapBnd"], 16) == sum(1 << CAP_BITS[cap] for cap in added)
        code = {"session_id": session, "code": "result = int(df['id'].sum())"}
        reply = httpx.post(two + "/api/python/run", headers=headers, json=code, timeout=60)
        assert reply.status_code == 200 and reply.json()["result"] == 137 * 136 // 2, reply.text
        with grpc.insecure_channel(f"127.0.0.1:{ports['py-sandbox']}") as channel:
            gateway_token = made["insightx-internal-tokens"]["gateway-token"]
            status = py_sandbox_pb2_grpc.PySandboxServiceStub(channel).GetSandboxStatus(
                py_sandbox_pb2.GetSandboxStatusRequest(),
                metadata=(("authorization", f"Bearer {gateway_token}"),),
                timeout=10,
            )
        isolation = status.isolation
        assert isolation.level == "strong" and status.accepting_code, list(isolation.problems)
        assert isolation.cgroup == "", "a pod has no writable cgroup: runs get none, as the manifest says"


def test_the_readme_creates_every_secret_a_pod_cannot_start_without() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Kubernetes") :]
    section = section[: section.index("\n## ", 1)]
    created: set[tuple[str, str]] = set()
    for command in section.replace("\\\n", " ").splitlines():
        if m := re.search(r"create secret generic (\S+)(.*)", command):
            created |= {(m.group(1), key) for key in re.findall(r"--from-literal=([\w-]+)=", m.group(2))}
    required = {(secret, key) for _, secret, key, optional in secret_refs(manifests()) if not optional}
    assert required <= created, f"the README never creates {sorted(required - created)}"
    example = {(d["metadata"]["name"], key) for d in load(EXAMPLE) for key in d["stringData"]}
    assert created <= example, f"the README creates what no pod reads: {sorted(created - example)}"
