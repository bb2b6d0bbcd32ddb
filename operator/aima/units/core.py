"""Units: typed operations `{domain}.{action}` with pydantic input and output models.

A unit is either a command (it changes state) or a query (it does not). Units are declared with the
`command` and `query` decorators in one module per domain; their input and output models come from
the handler's annotations, so the schemas every door publishes are the models the handler receives
and returns. The doors (HTTP, MCP, CLI) are generated from a `Registry` and never special-case a unit.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict

from aima.api.common import ApiModel
from aima.kube import KubeClient
from aima.settings import Settings

__all__ = [
    "Context",
    "Example",
    "Input",
    "Kind",
    "Registry",
    "Unit",
    "command",
    "query",
]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class Kind(StrEnum):
    """Whether a unit changes state (command) or only reads it (query)."""

    COMMAND = "command"
    QUERY = "query"


class Input(ApiModel):
    """Base of unit inputs: camelCase on the wire (snake_case accepted), unknown fields rejected."""

    model_config = ConfigDict(extra="forbid")


ProgressFn = Callable[[float, float | None, str], Awaitable[None]]
"""Progress so far, the total where known, and what is happening, in words."""


@dataclass(frozen=True, kw_only=True)
class Context:
    """What units act through: the API server client, the settings and the default namespace."""

    kube: KubeClient
    settings: Settings = field(default_factory=Settings)
    namespace: str = "default"
    namespaces: frozenset[str] | None = None
    """The namespaces this caller may act in (an agent's allow-list); None allows every namespace.
    `execute` enforces it on inputs; units that list across namespaces filter with `allows`."""
    http: aiohttp.ClientSession | None = None
    """A shared HTTP session for units that call HTTP services (inference.* to the gateway); None
    opens one per call. Whoever builds the Context owns and closes it."""
    progress: ProgressFn | None = None
    """Where a long unit reports how far it has got (the MCP door sends progress notifications);
    None drops the reports."""
    known_namespaces: set[str] = field(default_factory=set)
    """Namespaces seen to exist, so that `execute` asks the API server about each one once."""
    registry: Registry | None = None
    """The registry the call came through, set by `execute`: a unit that checks other units' shapes
    (pipeline.validate) reads them here, as importing the catalog would import that unit itself."""

    async def report(self, done: float, total: float | None, message: str) -> None:
        """Report progress, if the caller listens."""
        if self.progress is not None:
            await self.progress(done, total, message)

    def namespace_of(self, requested: str | None) -> str:
        """The namespace an input names, or the context's default."""
        return requested or self.namespace

    def allows(self, namespace: str | None) -> bool:
        """Whether objects of `namespace` may be shown to this caller (cluster-scoped ones always)."""
        return self.namespaces is None or namespace is None or namespace in self.namespaces


@dataclass(frozen=True, kw_only=True)
class Example:
    """One documented call of a unit; every example validates against the unit's input model."""

    description: str
    input: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Unit(Generic[In, Out]):
    """One operation: its name, schemas, documentation, hints, and the handler that runs it."""

    name: str
    kind: Kind
    description: str
    input: type[In]
    output: type[Out]
    handler: Callable[[Context, In], Awaitable[Out]]
    examples: tuple[Example, ...] = ()
    destructive: bool = False
    """It may delete or stop something people rely on; MCP clients ask before calling it."""
    idempotent: bool = False
    """Calling it twice with the same input has the effect of calling it once."""

    @property
    def domain(self) -> str:
        return self.name.partition(".")[0]

    @property
    def action(self) -> str:
        return self.name.partition(".")[2]

    @property
    def read_only(self) -> bool:
        return self.kind is Kind.QUERY


def command(
    name: str,
    *,
    description: str,
    examples: Sequence[Example] = (),
    destructive: bool = False,
    idempotent: bool = False,
) -> Callable[[Callable[[Context, In], Awaitable[Out]]], Unit[In, Out]]:
    """Declare a command; input and output models come from the handler's annotations."""
    return _declare(
        name, kind=Kind.COMMAND, description=description, examples=examples,
        destructive=destructive, idempotent=idempotent,
    )  # fmt: skip


def query(
    name: str, *, description: str, examples: Sequence[Example] = ()
) -> Callable[[Callable[[Context, In], Awaitable[Out]]], Unit[In, Out]]:
    """Declare a query: no side effects, so it is read-only and idempotent."""
    return _declare(
        name, kind=Kind.QUERY, description=description, examples=examples, destructive=False, idempotent=True
    )


def _declare(
    name: str,
    *,
    kind: Kind,
    description: str,
    examples: Sequence[Example],
    destructive: bool,
    idempotent: bool,
) -> Callable[[Callable[[Context, In], Awaitable[Out]]], Unit[In, Out]]:
    def decorate(handler: Callable[[Context, In], Awaitable[Out]]) -> Unit[In, Out]:
        hints = typing.get_type_hints(handler)
        parameters = [v for k, v in hints.items() if k != "return"]
        return Unit(
            name=name,
            kind=kind,
            description=description,
            input=parameters[-1],
            output=hints["return"],
            handler=handler,
            examples=tuple(examples),
            destructive=destructive,
            idempotent=idempotent,
        )

    return decorate


class Registry:
    """The catalog of units, by name; the one thing every door is generated from."""

    def __init__(self, units: Iterable[Unit[Any, Any]]) -> None:
        self._units: dict[str, Unit[Any, Any]] = {}
        for unit in units:
            if unit.name in self._units:
                raise ValueError(f"unit {unit.name} is declared twice")
            self._units[unit.name] = unit

    def __iter__(self) -> Iterator[Unit[Any, Any]]:
        return iter(sorted(self._units.values(), key=lambda u: u.name))

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, name: object) -> bool:
        return name in self._units

    def get(self, name: str) -> Unit[Any, Any] | None:
        """The unit of this name, or None."""
        return self._units.get(name)
