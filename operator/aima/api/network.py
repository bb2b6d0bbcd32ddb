"""Kubernetes' label selector and NetworkPolicy peer (`networking.k8s.io/v1`), as the operator's
settings name who may connect to engine pods.

Validated once, when the operator starts: a misspelt field or an impossible peer stops it with the
field named, instead of failing the apply of every InferenceService's NetworkPolicy later.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from aima.api.common import ApiModel

__all__ = [
    "IPBlock",
    "LabelSelector",
    "LabelSelectorOperator",
    "LabelSelectorRequirement",
    "NetworkPolicyPeer",
]


class LabelSelectorOperator(StrEnum):
    """How a requirement relates a label's value to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One set-based requirement, shaped like `metav1.LabelSelectorRequirement`."""

    key: str = Field(min_length=1, max_length=317)
    """The label key."""
    operator: LabelSelectorOperator
    """In and NotIn need values; Exists and DoesNotExist take none."""
    values: list[str] = Field(default_factory=list)
    """The values the label is compared with."""

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (LabelSelectorOperator.IN, LabelSelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            needs = "needs values" if wants_values else "takes no values"
            raise ValueError(f"operator {self.operator.value} {needs}")
        return self


class LabelSelector(ApiModel):
    """A label selector, shaped like `metav1.LabelSelector`; an empty one selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must all have these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Requirements that must all hold."""


class IPBlock(ApiModel):
    """A range of IP addresses, for peers that are not pods (a node, a load balancer)."""

    cidr: str = Field(min_length=1)
    """The range, e.g. `10.0.0.0/8`."""
    except_: list[str] = Field(default_factory=list, alias="except")
    """Ranges inside it that are left out."""


class NetworkPolicyPeer(ApiModel):
    """Who may connect, shaped like `networking.k8s.io/v1` NetworkPolicyPeer: pods by label (in the
    policy's namespace, or in the namespaces a namespaceSelector selects), or an IP range."""

    pod_selector: LabelSelector | None = None
    """Pods by label; alone, in the policy's own namespace."""
    namespace_selector: LabelSelector | None = None
    """Namespaces by label (`kubernetes.io/metadata.name` is each namespace's name)."""
    ip_block: IPBlock | None = None
    """An IP range; excludes the two selectors."""

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if selectors == (self.ip_block is not None):
            raise ValueError("a peer names podSelector and/or namespaceSelector, or else ipBlock")
        return self
