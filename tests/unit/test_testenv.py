"""Pure parts of the local control plane: node manifests, certificates, free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aima.testenv import nodes, pki, processes

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
