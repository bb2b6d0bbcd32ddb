"""Stopping the real node leaves the host as it found it: no process of the node, no mount, network
namespace, bridge, iptables chain, nftables table (the NetworkPolicy enforcer's) or changed sysctl.
Runs last (see conftest.py): it stops the node the session shares."""

from __future__ import annotations

import pytest

from aima_testenv import ControlPlane, host
from aima_testenv.realnode import BRIDGE

pytestmark = pytest.mark.realnode


def test_stopping_the_node_leaves_nothing_behind(real_cluster: ControlPlane) -> None:
    node = real_cluster.real_node
    assert node is not None
    before, pids, folder = node.host_before, node.pids(), str(node.folder)
    assert pids, "the node's programs ran"
    real_cluster.stop_real_node()
    after = host.snapshot()
    assert after.added_since(before) == {
        "mounts": [],
        "network namespaces": [],
        "links": [],
        "iptables chains": [],
        "nftables tables": [],
        "sysctls": [],
    }
    assert BRIDGE not in after.links
    assert not [pid for pid in pids if host.alive(pid)]
    assert not host.pids_mentioning(folder), "no process runs from the node's folder"
