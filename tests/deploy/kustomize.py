"""Just enough of kustomize to render deploy/k8s's overlays offline: no kustomize or kubectl
binary is installed here, and PyPI has no kustomize that runs on Python 3.11.

deploy/k8s's kustomizations use only what this implements, and `build` refuses anything else
(an unknown field, a patch with a target or a ``$patch`` directive), so a kustomization that
grows past it fails the tests instead of being rendered wrongly:

- ``resources``: files (YAML streams) and directories holding a kustomization.yaml;
- ``patches`` with ``path`` only: strategic-merge patches, each matched to one resource by
  kind and name. Maps merge key by key; the lists Kubernetes merges by a key (containers and
  env by name, volumeMounts by mountPath, ...) merge element by element on it; every other list
  is replaced whole, as the API server's strategic merge does for lists without a merge key
  (the HPA's ``metrics``, ``tolerations``, a container's ``args``);
- ``images``: ``name`` -> ``newName``/``newTag`` on every ``containers``/``initContainers``
  element of any resource (kustomize's image transformer does the same for custom resources);
- ``namespace``: set on every namespaced resource (and a Namespace resource is renamed to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
#: Strategic merge's keys for the lists deploy/k8s's patches touch (from the Kubernetes API's
#: patchMergeKey annotations).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl apply -k directory`` would apply."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - FIELDS
    if unknown:
        raise Unsupported(f"{directory}/kustomization.yaml: {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += build(path) if path.is_dir() else load(path)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{directory}: a patch with {sorted(patch)} (only path)")
        for change in load(directory / patch["path"]):
            merge(target(docs, change), change)
    for image in kustomization.get("images", []):
        for doc in docs:
            retag(doc, image)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = kustomization["namespace"]
            elif doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def target(docs: list[dict[str, Any]], change: dict[str, Any]) -> dict[str, Any]:
    found = [
        doc
        for doc in docs
        if doc["kind"] == change["kind"] and doc["metadata"]["name"] == change["metadata"]["name"]
    ]
    if len(found) != 1:
        raise Unsupported(
            f"a patch of {change['kind']}/{change['metadata']['name']} matches "
            f"{len(found)} resources"
        )
    return found[0]


def merge(base: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if key.startswith("$"):
            raise Unsupported(f"strategic merge directive {key}")
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and key in MERGE_KEYS:
            by = MERGE_KEYS[key]
            for item in value:
                same = [o for o in old if o.get(by) == item.get(by)]
                if same:
                    merge(same[0], item)
                else:
                    old.append(item)
        else:
            base[key] = value


def retag(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name = container.get("image", "").split("@")[0].rsplit(":", 1)[0]
                    if name == image["name"]:
                        new = image.get("newName", image["name"])
                        container["image"] = (
                            f"{new}:{image['newTag']}" if "newTag" in image else new
                        )
            else:
                retag(value, image)
    elif isinstance(node, list):
        for item in node:
            retag(item, image)
