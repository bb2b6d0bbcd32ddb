"""Resources by URI: `aima://models/{name}` and friends, each read by running a query unit.

One table serves both doors that address resources: MCP lists them as resources and resource
templates, and the HTTP door reads and watches them (`aima.doors.watch`). A URI names a query unit
and its input; an address whose unit is not in the registry is not offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from aima.kube import Resource, resources
from aima.units.core import Registry

__all__ = ["ADDRESSES", "Address", "offered", "resolve"]

_PARAMETER = re.compile(r"\{([a-z]+)\}")
# Names and namespaces are DNS names: this also keeps '/', '..' and escapes out of parameters.
_VALUE = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"


@dataclass(frozen=True, kw_only=True)
class Address:
    """A URI template, the query unit that reads it, and the API resource whose changes change it."""

    template: str
    unit: str
    description: str
    watches: Resource | None = None
    """Watched for changes; None: the HTTP watch polls instead."""

    @cached_property
    def parameters(self) -> tuple[str, ...]:
        return tuple(_PARAMETER.findall(self.template))

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        pattern = re.escape(self.template)
        for name in self.parameters:
            pattern = pattern.replace(re.escape(f"{{{name}}}"), f"(?P<{name}>{_VALUE})")
        return re.compile(pattern)

    def match(self, uri: str) -> dict[str, str] | None:
        """The parameters of `uri`, or None when it is not of this address."""
        found = self._pattern.fullmatch(uri)
        return None if found is None else {k: v for k, v in found.groupdict().items() if k in self.parameters}


ADDRESSES: tuple[Address, ...] = (
    Address(
        template="aima://models",
        unit="model.list",
        description="Models of the default namespace: type, source, readiness, download progress.",
        watches=resources.MODELS,
    ),
    Address(
        template="aima://namespaces/{namespace}/models",
        unit="model.list",
        description="Models of one namespace: type, source, readiness, download progress.",
        watches=resources.MODELS,
    ),
    Address(
        template="aima://models/{name}",
        unit="model.get",
        description="One Model of the default namespace, with spec and status.",
        watches=resources.MODELS,
    ),
    Address(
        template="aima://models/{namespace}/{name}",
        unit="model.get",
        description="One Model, with spec and status.",
        watches=resources.MODELS,
    ),
    Address(
        template="aima://services",
        unit="service.list",
        description="InferenceServices of the default namespace: replicas, readiness and why not.",
        watches=resources.INFERENCE_SERVICES,
    ),
    Address(
        template="aima://namespaces/{namespace}/services",
        unit="service.list",
        description="InferenceServices of one namespace: replicas, readiness and why not.",
        watches=resources.INFERENCE_SERVICES,
    ),
    Address(
        template="aima://services/{name}",
        unit="service.get",
        description="One InferenceService of the default namespace; its conditions explain a pending one.",
        watches=resources.INFERENCE_SERVICES,
    ),
    Address(
        template="aima://services/{namespace}/{name}",
        unit="service.get",
        description="One InferenceService; its conditions explain a pending one.",
        watches=resources.INFERENCE_SERVICES,
    ),
    Address(
        template="aima://engines",
        unit="engine.list",
        description="Engines installed in the cluster.",
        watches=resources.ENGINES,
    ),
    Address(
        template="aima://engines/{name}",
        unit="engine.get",
        description="One Engine: variants, args templates, defaults.",
        watches=resources.ENGINES,
    ),
    Address(
        template="aima://overview",
        unit="resource.overview",
        description="The cluster at a glance: free GPUs, namespaces, what runs and what is not as asked.",
    ),
    Address(
        template="aima://gpus",
        unit="resource.status",
        description="GPUs per node: allocatable, used, free.",
    ),
)
"""Every resource URI; a domain adds its own here."""


def offered(registry: Registry) -> list[Address]:
    """The addresses whose unit the registry has."""
    return [a for a in ADDRESSES if a.unit in registry]


def resolve(registry: Registry, uri: str) -> tuple[Address, dict[str, Any]] | None:
    """The address of `uri` and the input of its unit, or None when no offered address matches."""
    for address in offered(registry):
        parameters = address.match(uri)
        if parameters is not None:
            return address, dict(parameters)
    return None
