"""The real node's own system pods (pure: manifests only): CoreDNS for cluster.local, forwarding
nothing (these hosts reach no outside DNS), the local-path provisioner for dynamic PVCs, and
kube-network-policies, which enforces NetworkPolicy (the bridge CNI does not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aima_testenv.realnode import Images

DNS_NAMESPACE = "kube-system"
STORAGE_NAMESPACE = "local-path-storage"
STORAGE_CLASS = "local-path"
DEPLOYMENTS = ((DNS_NAMESPACE, "coredns"), (STORAGE_NAMESPACE, "local-path-provisioner"))
ENFORCER = "kube-network-policies"
"""The NetworkPolicy enforcer: its image, and its DaemonSet in DNS_NAMESPACE."""
ENFORCER_TABLE = "inet kube-network-policies"
"""The nftables table it keeps on the host."""
ENFORCER_QUEUE = 100
"""The nfqueue its table sends the new connections of selected pods to, for its verdict."""
_DNS_PORT = 1053  # above 1024, so CoreDNS runs as non-root; the Service maps 53 to it
_COREFILE = f""".:{_DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
    loop
}}
"""
_ON_REAL_NODE = {"aima.dev/real-node": "true"}
_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def manifests(images: Images, *, volumes: Path) -> list[dict[str, Any]]:
    """Every object of the system pods; local-path volumes are folders under ``volumes``."""
    return [
        *_coredns(images["coredns"]),
        *_local_path(images["local-path-provisioner"], images["base"], volumes),
        *_enforcer(images[ENFORCER]),
    ]


def _cluster_role_binding(name: str, namespace: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def _deployment(name: str, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"serviceAccountName": name, "nodeSelector": _ON_REAL_NODE, **pod},
            },
        },
    }


def _coredns(image: str) -> list[dict[str, Any]]:
    rules = [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    pod = {
        "containers": [
            {
                "name": "coredns",
                "image": image,
                "imagePullPolicy": "Never",
                "args": ["-conf", "/etc/coredns/Corefile"],
                "ports": [
                    {"name": "dns", "containerPort": _DNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": _DNS_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                "securityContext": _RESTRICTED_CONTAINER,
                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
            }
        ],
        "dnsPolicy": "Default",
        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
    }
    return [
        *_cluster_role_binding("coredns", DNS_NAMESPACE, rules),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": DNS_NAMESPACE},
            "data": {"Corefile": _COREFILE},
        },
        _deployment("coredns", DNS_NAMESPACE, pod),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": DNS_NAMESPACE, "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": "10.96.0.10",
                "selector": {"app": "coredns"},
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": _DNS_PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": _DNS_PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def _local_path(image: str, helper_image: str, volumes: Path) -> list[dict[str, Any]]:
    name = "local-path-provisioner"
    rules = [
        {
            "apiGroups": [""],
            "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "patch", "update", "delete"]},
        {
            "apiGroups": [""],
            "resources": ["persistentvolumes"],
            "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
    ]
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(volumes)]}]}
    helper = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "helper-pod", "image": helper_image, "imagePullPolicy": "Never"}],
        },
    }
    pod = {
        "containers": [
            {
                "name": name,
                "image": image,
                "imagePullPolicy": "Never",
                "command": [
                    "/local-path-provisioner",
                    "start",
                    "--config=/etc/config/config.json",
                    # Its helper pods (which make and remove the volume folders) run as this too.
                    f"--service-account-name={name}",
                ],
                "env": [
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"},
                ],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/config/"}],
            }
        ],
        "volumes": [{"name": "config", "configMap": {"name": "local-path-config"}}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORAGE_NAMESPACE}},
        *_cluster_role_binding(name, STORAGE_NAMESPACE, rules),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": STORAGE_NAMESPACE},
            "data": {
                "config.json": json.dumps(config),
                "setup": 'set -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                "teardown": 'set -eu\nrm -rf "$VOL_DIR"\n',
                "helperPod.yaml": json.dumps(helper),
            },
        },
        _deployment(name, STORAGE_NAMESPACE, pod),
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]


def _enforcer(image: str) -> list[dict[str, Any]]:
    """kube-network-policies as its own install.yaml runs it: a DaemonSet in the host's network
    namespace with NET_ADMIN, for its nftables rules and the nfqueue it decides packets from."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
    ]
    labels = {"app": ENFORCER}
    args = [
        "--hostname-override=$(NODE_NAME)",
        f"--nfqueue-id={ENFORCER_QUEUE}",
        # Kernels from 6.12 on have the conntrack fix this works around. (containerd 1.6 runs no NRI:
        # its plugin logs that it cannot connect and exits; v0.8.0's --disable-nri is not wired up.)
        "--netfilter-bug-1766-fix=false",
        # Its metrics on loopback only: in the host's network, any other address is the host's.
        "--metrics-bind-address=127.0.0.1:0",
        "--v=1",
    ]
    pod = {
        "serviceAccountName": ENFORCER,
        "hostNetwork": True,
        "dnsPolicy": "Default",
        "nodeSelector": _ON_REAL_NODE,
        "priorityClassName": "system-node-critical",
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": ENFORCER,
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                },
            }
        ],
    }
    return [
        *_cluster_role_binding(ENFORCER, DNS_NAMESPACE, rules),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": ENFORCER, "namespace": DNS_NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
    ]
