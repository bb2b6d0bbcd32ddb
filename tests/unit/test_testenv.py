"""Pure parts of the local control plane (node manifests, certificates, free ports), the loader
Job player of `aima dev` against a fake plane, and the fake engine as the fake-engine image runs it."""

from __future__ import annotations

import ast
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aima_testenv import ControlPlaneError, engines, host, nodes, pki, processes, system_pods
from aima_testenv.loader_jobs import LocalLoaderJobs
from aima_testenv.realnode import Images

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "gpus", "tainted"),
    [(nodes.DEFAULT_NODES[0], "8", True), (nodes.DEFAULT_NODES[2], None, False)],
    ids=["gpu node", "cpu node"],
)
def test_node_manifest_capacity_and_taint(spec: nodes.NodeSpec, gpus: str | None, tainted: bool) -> None:
    manifest = nodes.node_manifest(spec)
    assert manifest["status"]["allocatable"].get("nvidia.com/gpu") == gpus
    assert manifest["status"]["capacity"] == manifest["status"]["allocatable"]
    assert (nodes.GPU_TAINT in manifest["spec"]["taints"]) is tainted
    assert manifest["metadata"]["labels"]["type"] == "kwok"


def test_gpu_feature_labels_follow_gfd_names() -> None:
    labels = nodes.gpu_feature_labels(nodes.H100, count=8)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == "81559"  # MiB, as GFD writes it
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.present"] == "true"


def test_pki_admin_is_a_cluster_admin_client_and_serving_cert_covers_loopback(tmp_path: Path) -> None:
    files = pki.generate(tmp_path)
    admin = x509.load_pem_x509_certificate(files.admin_cert.read_bytes())
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    serving = x509.load_pem_x509_certificate(files.serving_cert.read_bytes())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert files.admin_key.stat().st_mode & 0o077 == 0


def test_free_port_is_not_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert processes.port_is_open(taken)
        assert all(processes.free_port() != taken for _ in range(20))


def test_free_ports_lie_below_the_ephemeral_range_that_outgoing_connections_use() -> None:
    lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(1024 < processes.free_port() < lowest for _ in range(20))


def test_a_missing_host_prerequisite_is_named_with_the_command_that_adds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        host.shutil, "which", lambda program: None if program == "runc" else f"/usr/bin/{program}"
    )
    monkeypatch.setattr(host, "CNI_BIN_DIR", Path("/nonexistent-cni"))
    with pytest.raises(host.HostError) as refused:
        host.check_prerequisites([])
    message = str(refused.value)
    assert "runc is not installed: apt-get install -y runc" in message
    assert "/nonexistent-cni/bridge is missing: apt-get install -y containernetworking-plugins" in message


def test_the_kubelet_client_certificate_names_the_node_in_the_nodes_group(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path / "pki")
    cert_path, _ = keys.client(
        tmp_path / "node", common_name="system:node:real-node", organization="system:nodes"
    )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:real-node"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"


def test_system_pods_keep_dns_volumes_and_the_policy_enforcer_on_the_real_node(tmp_path: Path) -> None:
    names = ("coredns", "local-path-provisioner", "base", system_pods.ENFORCER)
    images = Images(references={name: f"localhost/{name}:k" for name in names}, archives={})
    objects = system_pods.manifests(images, volumes=tmp_path / "volumes")
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in deployments} == set(
        system_pods.DEPLOYMENTS
    )
    (enforcer,) = [o for o in objects if o["kind"] == "DaemonSet"]
    for workload in [*deployments, enforcer]:
        assert workload["spec"]["template"]["spec"]["nodeSelector"] == {"aima.dev/real-node": "true"}
    # Its rules go into the host's nftables, where it also reads the queue.
    assert enforcer["spec"]["template"]["spec"]["hostNetwork"] is True
    (dns,) = [o for o in objects if o["kind"] == "Service"]
    assert dns["spec"]["clusterIP"] == "10.96.0.10"
    assert (
        "forward"
        not in next(
            o for o in objects if o.get("metadata", {}).get("name") == "coredns" and o["kind"] == "ConfigMap"
        )["data"]["Corefile"]
    )


class ShrinkingPlane:
    """A control plane whose namespace `gone` was deleted after its loader Job was listed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "logs").mkdir()

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        items = [_loader_job("gone", "first"), _loader_job("team", "second")]
        return subprocess.CompletedProcess(list(args), 0, stdout=json.dumps({"items": items}), stderr="")

    def service_account_kubeconfig(self, *, namespace: str, name: str) -> Path:
        if namespace == "gone":
            raise ControlPlaneError(f'kubectl create token {name} failed: namespaces "gone" not found')
        return self.workdir / "kubeconfig"


def _loader_job(namespace: str, name: str) -> dict[str, Any]:
    container = {"args": ["--version", "--dest", "/models/x"], "volumeMounts": [{"mountPath": "/models"}]}
    pod = {
        "containers": [container],
        "volumes": [{"persistentVolumeClaim": {"claimName": "cache"}}],
        "serviceAccountName": "aima-loader",
    }
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"},
        "spec": {"backoffLimit": 0, "template": {"spec": pod}},
    }


def test_a_loader_job_that_cannot_be_played_is_logged_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plane = ShrinkingPlane(tmp_path)
    second = tmp_path / "logs" / "loader-second.log"
    with caplog.at_level(logging.ERROR), LocalLoaderJobs(plane, volumes=tmp_path / "volumes"):  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while not (second.exists() and second.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "Usage: aima" in second.read_text()  # the Job after the bad one ran its command line
    assert any("Loader Job gone/first could not be played" in r.getMessage() for r in caplog.records)


def test_the_fake_engine_runs_as_a_lone_script_on_python_and_aiohttp(tmp_path: Path) -> None:
    """images.sh's fake-engine image is the project's image plus engines.py alone, run as a script:
    it may import nothing but the standard library and aiohttp, and it serves from a copy anywhere."""
    source = Path(engines.__file__)
    tree = ast.parse(source.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {name.split(".")[0] for name in imported} - sys.stdlib_module_names == {"aiohttp"}
    script = tmp_path / "engines.py"
    shutil.copyfile(source, script)
    port = processes.free_port()
    argv = [sys.executable, "-I", str(script), "--port", str(port), "--model", "tiny"]
    with subprocess.Popen(argv, stderr=subprocess.DEVNULL) as engine:
        try:
            deadline = time.monotonic() + 30
            while not processes.port_is_open(port) and engine.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as reply:
                assert [m["id"] for m in json.load(reply)["data"]] == ["tiny"]
        finally:
            engine.terminate()
