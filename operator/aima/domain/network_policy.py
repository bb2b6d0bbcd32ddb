"""The NetworkPolicy of an InferenceService's engine pods (pure).

Engines check no credentials: API keys are checked by the gateway. So an engine pod should take
connections only from the platform's own pods (the gateway, which routes to it, and the operator)
and from the peers an administrator adds (a Prometheus that scrapes engine /metrics). Only Ingress
is restricted. Egress stays open, because loaders and engines may need to reach model hubs,
registries and object stores that no list here could anticipate.

A policy takes effect only where the CNI enforces NetworkPolicy (Calico, Cilium). Elsewhere it is
accepted and has no effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aima.api.common import ApiModel
from aima.api.network import LabelSelector, NetworkPolicyPeer

Body = dict[str, Any]

KIND = "NetworkPolicy"
API_VERSION = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server gives every namespace, holding its name."""


@dataclass(frozen=True, kw_only=True)
class EngineIngress:
    """Who may connect to engine pods: what the planner needs from the operator's settings."""

    platform_namespace: str
    """Namespace of the gateway and operator pods."""
    platform_pods: LabelSelector
    """Labels of the gateway and operator pods in that namespace."""
    extra_peers: tuple[NetworkPolicyPeer, ...] = ()
    """Anyone else the administrator admits, such as Prometheus."""

    def peers(self) -> list[Body]:
        """The ingress rule's `from`: the platform's pods first, then the extra peers.

        It is never empty. An empty `from` would admit every source.
        """
        platform = {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: self.platform_namespace}},
            "podSelector": _wire(self.platform_pods),
        }
        return [platform, *(_wire(peer) for peer in self.extra_peers)]


def desired(*, metadata: Body, pods: dict[str, str], ingress: EngineIngress) -> Body:
    """The policy over the pods labelled ``pods``: ingress only from ``ingress``'s peers, to any of
    their ports (the peers are trusted with the engine's API and its metrics alike)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": ingress.peers()}],
        },
    }


def obsolete(owner: Body, *, ingress: EngineIngress | None, observed: Body | None) -> Body | None:
    """The policy to delete: the one the operator made for ``owner``, once policies are turned off.

    Level-triggered: with policies off, the desired state holds no policy of ours, so one made
    while they were on is removed. Leaving it until its owner is deleted would make the cluster
    depend on when the setting changed. A policy ``owner`` does not control is never touched.
    """
    if ingress is not None or observed is None:
        return None
    uid = owner["metadata"]["uid"]
    references = observed["metadata"].get("ownerReferences", [])
    owned = any(r.get("controller") and r.get("uid") == uid for r in references)
    return observed if owned else None


def _wire(model: ApiModel) -> Body:
    """A selector or peer as the API server takes it, with unset and empty fields left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)
