"""Where the join packages come from: the settings and a task's override (api.packages),
the Job's volumes, mounts and init container per source (k8s.builders), and the job
finding, fetching and checking them before any machine (job.package)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from penetrator.api import CONFIGMAP_NAME_ANNOTATION, JOB_NAME_ANNOTATION, NODE_LABEL, NodeTask
from penetrator.api.packages import (
    PackageError,
    PackageSettings,
    TaskPackages,
    UrlPackage,
    resolve,
)
from penetrator.api.settings import Settings, SettingsError, load_settings
from penetrator.job.package import PackageProblem, describe_root, fetch_package, load_packages
from penetrator.k8s.builders import (
    DOWNLOAD_DIR,
    PACKAGES_DIR,
    ClusterInfo,
    build_job,
    build_job_config,
)
from support import nodetask

SHA = "ab" * 32
CLUSTER = ClusterInfo("https://172.31.0.1:6443", "sha256:" + "cd" * 32)


def task(**spec: Any) -> NodeTask:
    metadata = {
        "name": "nodes",
        "uid": "1234-uid",
        "labels": {NODE_LABEL: "nodes-x1y2z3"},
        "annotations": {JOB_NAME_ANNOTATION: "nodes-job", CONFIGMAP_NAME_ANNOTATION: "nodes-cm"},
    }
    base = {"sshCredential": "login", "nodeNamesOverride": {"edge-a": "10.0.0.1"}}
    return NodeTask.from_dict(nodetask("nodes", metadata=metadata, **{**base, **spec}))


# --- settings and the task's override ---------------------------------------------------


def test_default_is_the_jobs_own_filesystem() -> None:
    got = resolve(PackageSettings(), None, "v1.37.2")
    assert (got.source, got.version) == ("job", "v1.37.2")


def test_url_source_needs_the_version_and_a_sha256() -> None:
    urls = {"v1.37.2": {"amd64": {"url": "https://pkg.example/a.tgz", "sha256": SHA}}}
    s = PackageSettings.model_validate({"source": "url", "urls": urls})
    got = resolve(s, None, "v1.37.2")
    assert got.urls == {"amd64": UrlPackage(url="https://pkg.example/a.tgz", sha256=SHA)}
    with pytest.raises(
        PackageError,
        match=r"settings packages\.urls: no package for Kubernetes v1\.36\.0 "
        r"\(versions listed: v1\.37\.2\)",
    ):
        resolve(s, None, "v1.36.0")
    with pytest.raises(SettingsError, match=r"packages\.urls\.v1\.37\.2\.amd64\.sha256"):
        load_settings({"packages": {"urls": {"v1.37.2": {"amd64": {"url": "https://x/y"}}}}})
    with pytest.raises(
        SettingsError, match=r"sha256: Value error, must be 64 lowercase hex|sha256: must be 64"
    ):
        load_settings(
            {"packages": {"urls": {"v1.37.2": {"amd64": {"url": "https://x/y", "sha256": "nope"}}}}}
        )
    with pytest.raises(SettingsError, match=r"url: 'ftp://x.example/a' is not an http"):
        load_settings(
            {
                "packages": {
                    "urls": {"v1.37.2": {"amd64": {"url": "ftp://x.example/a", "sha256": SHA}}}
                }
            }
        )
    with pytest.raises(SettingsError, match=r"packages\.urls\.v1\.37\.2\.s390x"):
        load_settings(
            {"packages": {"urls": {"v1.37.2": {"s390x": {"url": "https://x/y", "sha256": SHA}}}}}
        )


def test_host_path_is_opt_in() -> None:
    with pytest.raises(PackageError, match=r"packages\.hostPath\.allowed is false"):
        resolve(PackageSettings(source="hostPath"), None, "v1.37.2")
    with pytest.raises(PackageError, match=r"spec\.packages\.source hostPath"):
        resolve(PackageSettings(), TaskPackages(source="hostPath"), "v1.37.2")
    allowed = PackageSettings.model_validate({"hostPath": {"allowed": True}})
    got = resolve(allowed, TaskPackages(source="hostPath", host_path="/srv/pkgs/"), "v1.37.2")
    assert (got.source, got.host_path) == ("hostPath", "/srv/pkgs")
    with pytest.raises(SettingsError, match=r"packages\.hostPath\.path"):
        load_settings({"packages": {"hostPath": {"path": "relative/dir"}}})


def test_image_needs_a_reference_and_the_task_may_name_its_own() -> None:
    with pytest.raises(PackageError, match=r"packages\.image\.reference"):
        resolve(PackageSettings(source="image"), None, "v1.37.2")
    got = resolve(PackageSettings(), TaskPackages(source="image", image="reg/pkgs:2"), "v1.37.2")
    assert got.image is not None
    assert (got.source, got.image.reference, got.image.mount) == ("image", "reg/pkgs:2", "volume")


def test_the_tasks_version_wins_and_is_normalised() -> None:
    got = resolve(PackageSettings(), TaskPackages(kubernetes_version="1.36.1"), "v1.37.2")
    assert got.version == "v1.36.1"
    with pytest.raises(ValidationError, match="is not a Kubernetes version"):
        TaskPackages(kubernetes_version="latest")


def test_the_task_field_round_trips_through_the_model() -> None:
    urls = {"v1.37.2": {"arm64": {"url": "http://10.0.0.9/a.tgz", "sha256": SHA}}}
    t = task(packages={"source": "url", "urls": urls})
    assert t.spec.packages is not None
    assert t.to_dict()["spec"]["packages"] == {"source": "url", "urls": urls}


def test_settings_job_kubernetes_version_defaults_to_the_clusters() -> None:
    assert Settings().job.kubernetes_version is None
    assert (
        load_settings({"job": {"kubernetesVersion": "v1.36.0"}}).job.kubernetes_version == "v1.36.0"
    )


# --- the Job per source -------------------------------------------------------------------


def pod_of(settings: Settings, t: NodeTask, version: str = "v1.37.2") -> Any:
    packages = resolve(settings.packages, t.spec.packages, version)
    job = build_job(t, settings, packages=packages)
    config = build_job_config(t, {"edge-a": "10.0.0.1"}, CLUSTER, settings.job, packages=packages)
    return job.spec.template.spec, config


def test_job_source_changes_nothing() -> None:
    pod, config = pod_of(Settings(), task())
    assert [v.name for v in pod.volumes] == ["config", "credentials", "api-access", "tmp"]
    assert pod.initContainers is None
    assert config.packages == Settings().job.packages
    assert config.kubernetes_version == "v1.37.2"


def test_host_path_source_mounts_the_directory_read_only() -> None:
    s = Settings.model_validate(
        {"packages": {"source": "hostPath", "hostPath": {"allowed": True, "path": "/srv/p"}}}
    )
    pod, config = pod_of(s, task(), "v1.36.0")
    volume = pod.volumes[-1]
    assert (volume.hostPath.path, volume.hostPath.type) == ("/srv/p", "Directory")
    mount = pod.containers[0].volumeMounts[-1]
    assert (mount.name, mount.mountPath, mount.readOnly) == ("packages", PACKAGES_DIR, True)
    assert (config.packages, config.package_root) == ({}, f"{PACKAGES_DIR}/v1.36.0")
    assert config.kubernetes_version == "v1.36.0"


def test_image_source_as_an_image_volume() -> None:
    s = Settings.model_validate(
        {"packages": {"source": "image", "image": {"reference": "reg/p:1"}}}
    )
    pod, config = pod_of(s, task())
    volume = pod.volumes[-1]
    assert (volume.image.reference, volume.image.pullPolicy) == ("reg/p:1", "IfNotPresent")
    assert pod.containers[0].volumeMounts[-1].readOnly
    assert config.package_root == f"{PACKAGES_DIR}/packages/v1.37.2"
    assert pod.initContainers is None


def test_image_source_copied_by_an_init_container() -> None:
    s = Settings.model_validate(
        {"packages": {"source": "image", "image": {"reference": "reg/p:1", "mount": "copy"}}}
    )
    pod, config = pod_of(s, task())
    (init,) = pod.initContainers
    assert init.image == "reg/p:1"
    assert init.command == ["cp", "-R", "/packages/.", PACKAGES_DIR]
    assert init.volumeMounts[0].mountPath == PACKAGES_DIR
    assert not init.volumeMounts[0].readOnly
    assert init.securityContext.readOnlyRootFilesystem
    assert init.securityContext.capabilities.drop == ["ALL"]
    volume = pod.volumes[-1]
    assert volume.emptyDir is not None
    assert pod.containers[0].volumeMounts[-1].readOnly
    assert config.package_root == f"{PACKAGES_DIR}/v1.37.2"


def test_url_source_fetches_into_an_empty_dir() -> None:
    urls = {"v1.37.2": {"amd64": {"url": "https://p.example/a.tgz", "sha256": SHA}}}
    s = Settings.model_validate({"packages": {"source": "url", "urls": urls}})
    pod, config = pod_of(s, task())
    volume = pod.volumes[-1]
    assert (volume.name, volume.emptyDir.sizeLimit) == ("packages", "2Gi")
    assert pod.containers[0].volumeMounts[-1].mountPath == DOWNLOAD_DIR
    assert config.packages == {}
    assert config.package_urls == {"amd64": UrlPackage(url="https://p.example/a.tgz", sha256=SHA)}
    assert config.download_dir == DOWNLOAD_DIR


def test_a_task_overrides_the_settings_source() -> None:
    urls = {"v1.37.2": {"amd64": {"url": "https://p.example/a.tgz", "sha256": SHA}}}
    _, config = pod_of(Settings(), task(packages={"source": "url", "urls": urls}))
    assert config.package_urls["amd64"].sha256 == SHA


# --- the job: find, fetch, check ----------------------------------------------------------


def tarball(path: Path, data: bytes = b"\x1f\x8b package") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_a_root_gives_the_architectures_it_has(tmp_path: Path) -> None:
    sha = tarball(tmp_path / "v1.37.2" / "amd64" / "edgeadm-linux-amd64-v1.37.2.tgz")
    got = describe_root(tmp_path / "v1.37.2", "v1.37.2")
    assert list(got) == ["amd64"]
    assert got["amd64"].sha256 == sha
    with pytest.raises(PackageProblem, match=r"no package for Kubernetes v1\.36\.0") as e:
        describe_root(tmp_path / "v1.36.0", "v1.36.0")
    assert e.value.reason == "PackageNotFound"
    tarball(tmp_path / "v1.37.2" / "amd64" / "other.tar.gz")
    with pytest.raises(PackageProblem, match="several tarballs"):
        describe_root(tmp_path / "v1.37.2", "v1.37.2")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_checks_the_sha256(tmp_path: Path, served: str) -> None:
    sha = tarball(tmp_path / "www" / "a.tgz", b"the package" * 1000)
    dest = tmp_path / "downloads"
    pkg = asyncio.run(
        fetch_package("amd64", UrlPackage(url=f"{served}/a.tgz", sha256=sha), dest, 30)
    )
    assert (pkg.sha256, pkg.size) == (sha, 11000)
    assert pkg.path.read_bytes() == b"the package" * 1000
    with pytest.raises(PackageProblem, match=f"expected SHA-256 {SHA}, got {sha}") as e:
        asyncio.run(fetch_package("amd64", UrlPackage(url=f"{served}/a.tgz", sha256=SHA), dest, 30))
    assert e.value.reason == "PackageChecksumMismatch"
    assert not list(dest.glob(f"*{SHA[:16]}*"))  # nothing kept
    with pytest.raises(PackageProblem, match="not found") as e:
        asyncio.run(
            fetch_package("amd64", UrlPackage(url=f"{served}/gone.tgz", sha256=sha), dest, 30)
        )
    assert e.value.reason == "PackageNotFound"


def test_fetch_from_nowhere_is_a_fetch_failure(tmp_path: Path) -> None:
    with pytest.raises(PackageProblem) as e:
        asyncio.run(
            fetch_package(
                "amd64", UrlPackage(url="http://127.0.0.1:9/a.tgz", sha256=SHA), tmp_path, 10
            )
        )
    assert e.value.reason == "PackageFetchFailed"
    assert "a.tgz" in str(e.value)


def test_load_packages_from_a_config(tmp_path: Path, served: str) -> None:
    sha = tarball(tmp_path / "www" / "arm.tgz")
    t = task()
    from penetrator.api.packages import ResolvedPackages

    packages = ResolvedPackages(
        "url", "v1.37.2", urls={"arm64": UrlPackage(url=f"{served}/arm.tgz", sha256=sha)}
    )
    config = build_job_config(t, {"edge-a": "10.0.0.1"}, CLUSTER, Settings().job, packages=packages)
    config = config.model_copy(update={"download_dir": str(tmp_path / "dl")})
    got = asyncio.run(load_packages(config))
    assert list(got) == ["arm64"]
    assert got["arm64"].path.parent == tmp_path / "dl"
