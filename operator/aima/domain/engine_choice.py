"""Which Engine and variant an InferenceService runs (pure).

A service names an Engine, or AIMA chooses one: the Engines that serve the Model's type and
format, ranked by priority (then name, so the choice is stable), keeping the first with a variant
for the hardware the service will land on. The hardware is read from the nodes: GPU nodes (with
the requested GPU product) when the service wants GPUs, otherwise any node; their CPU
architecture picks between amd64 and arm64 images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aima.api.common import Reason
from aima.api.engine import Accelerator, Architecture, Engine, EngineVariant
from aima.api.inference_service import InferenceService
from aima.api.model import Model, ModelFormat
from aima.domain import capacity

Body = dict[str, Any]

ARCH_LABEL = "kubernetes.io/arch"


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """What engine choice needs to know about one node."""

    name: str
    architecture: str
    gpu_product: str | None
    gpus: int
    """Allocatable nvidia.com/gpu."""


@dataclass(frozen=True, kw_only=True)
class Choice:
    """The outcome: an engine and variant, or the reason there is none."""

    engine: Engine | None
    variant: EngineVariant | None
    reason: str
    message: str


def node_info(node: Body) -> NodeInfo:
    """The parts of a Node object that matter here (pure); GPUs as the capacity model counts them."""
    return NodeInfo(
        name=node["metadata"]["name"],
        architecture=node.get("metadata", {}).get("labels", {}).get(ARCH_LABEL, Architecture.AMD64),
        gpu_product=capacity.gpu_product(node),
        gpus=capacity.allocatable_gpus(node),
    )


def choose(
    service: InferenceService, *, model: Model | None, engines: Sequence[Engine], nodes: Sequence[NodeInfo]
) -> Choice:
    """The engine and variant for ``service`` (pure); the message says why, for EngineResolved."""
    ref = service.spec.engine_ref
    if ref is not None:
        engine = next((e for e in engines if e.metadata.name == ref.name), None)
        if engine is None:
            return Choice(
                engine=None,
                variant=None,
                reason=Reason.ENGINE_NOT_FOUND,
                message=f"Engine {ref.name} does not exist; install it (kubectl apply -f catalog/engines)",
            )
        accelerator = _accelerator(service, nodes=nodes, engine_gpus=engine.spec.resources.gpus)
        architectures = _architectures(service, accelerator=accelerator, nodes=nodes)
        return _named(engine, variant_name=ref.variant, accelerator=accelerator, architectures=architectures)
    accelerator = _accelerator(service, nodes=nodes)
    architectures = _architectures(service, accelerator=accelerator, nodes=nodes)
    hardware = f"{accelerator} nodes ({'/'.join(sorted(architectures))})"
    if model is None:
        return Choice(
            engine=None,
            variant=None,
            reason=Reason.MODEL_NOT_FOUND,
            message="Choosing an engine needs the Model's type and format",
        )
    return _automatic(
        model, engines=engines, accelerator=accelerator, architectures=architectures, hw=hardware
    )


def _named(
    engine: Engine, *, variant_name: str | None, accelerator: Accelerator, architectures: set[str]
) -> Choice:
    name = engine.metadata.name
    if variant_name is not None:
        variant = next((v for v in engine.spec.variants if v.name == variant_name), None)
        if variant is None:
            known = ", ".join(v.name for v in engine.spec.variants)
            return Choice(
                engine=engine,
                variant=None,
                reason=Reason.INVALID_SPEC,
                message=f"Engine {name} has no variant {variant_name}; it has {known}",
            )
        return Choice(
            engine=engine,
            variant=variant,
            reason=Reason.ENGINE_NAMED,
            message=f"Using Engine {name} variant {variant.name}, as engineRef names",
        )
    variant = _variant(engine, accelerator=accelerator, architectures=architectures)
    if variant is None:
        return Choice(
            engine=engine,
            variant=None,
            reason=Reason.NO_MATCHING_ENGINE,
            message=f"Engine {name} has no {accelerator} variant for {'/'.join(sorted(architectures))} "
            "nodes; name one with engineRef.variant",
        )
    return Choice(
        engine=engine,
        variant=variant,
        reason=Reason.ENGINE_NAMED,
        message=f"Using Engine {name} as engineRef names, variant {variant.name} for {accelerator} "
        f"{variant.architecture} nodes",
    )


def _automatic(
    model: Model, *, engines: Sequence[Engine], accelerator: Accelerator, architectures: set[str], hw: str
) -> Choice:
    # The spec's format when given (the API promises detection only when it is empty).
    model_format = model.spec.format or (model.status.format if model.status else None)
    formats = _possible_formats(model, known=model_format)
    wanted = f"{model.spec.type} models" + (f" in {model_format} format" if model_format else "")
    serving = [
        e
        for e in engines
        if model.spec.type in e.spec.model_types and formats.intersection(e.spec.model_formats)
    ]
    ranked = sorted(serving, key=lambda e: (-e.spec.priority, e.metadata.name or ""))
    for engine in ranked:
        variant = _variant(engine, accelerator=accelerator, architectures=architectures)
        if variant is not None:
            others = [e for e in ranked if e is not engine]
            rest = "; other candidates: " + ", ".join(
                f"{e.metadata.name} (priority {e.spec.priority})" for e in others
            )
            return Choice(
                engine=engine,
                variant=variant,
                reason=Reason.ENGINE_CHOSEN,
                message=f"Chose Engine {engine.metadata.name} variant {variant.name}: it serves {wanted} "
                f"on {hw} with priority {engine.spec.priority}" + (rest if others else ""),
            )
    names = ", ".join(str(e.metadata.name) for e in ranked) or "none"
    return Choice(
        engine=None,
        variant=None,
        reason=Reason.NO_MATCHING_ENGINE,
        message=f"No Engine serves {wanted} on {hw} (engines for the model: {names}); install one, "
        "or set engineRef",
    )


def _possible_formats(model: Model, *, known: ModelFormat | None) -> set[ModelFormat]:
    """The format, or until the loader reports it, the formats the source allows: Ollama weights come
    only from ollama:// sources (the Model's CEL rules say so), the others from anywhere else."""
    if known is not None:
        return {known}
    if model.spec.source.startswith("ollama://"):
        return {ModelFormat.OLLAMA}
    return set(ModelFormat) - {ModelFormat.OLLAMA}


def _variant(engine: Engine, *, accelerator: Accelerator, architectures: set[str]) -> EngineVariant | None:
    return next(
        (
            v
            for v in engine.spec.variants
            if v.accelerator is accelerator and str(v.architecture) in architectures
        ),
        None,
    )


def _accelerator(
    service: InferenceService, *, nodes: Sequence[NodeInfo], engine_gpus: int | None = None
) -> Accelerator:
    """GPUs when asked for (a count or a product), or when the cluster has GPU nodes and the count is
    left to the engine; CPU when gpus is 0, when the count is left to a named engine that asks for
    none, or when no node has a GPU."""
    resources = service.spec.resources
    if resources.gpus == 0 or (resources.gpus is None and resources.gpu_product is None and engine_gpus == 0):
        return Accelerator.CPU
    if resources.gpus is not None or resources.gpu_product is not None:
        return Accelerator.NVIDIA_GPU
    return Accelerator.NVIDIA_GPU if any(n.gpus > 0 for n in nodes) else Accelerator.CPU


def _architectures(
    service: InferenceService, *, accelerator: Accelerator, nodes: Sequence[NodeInfo]
) -> set[str]:
    product = service.spec.resources.gpu_product
    if accelerator is Accelerator.NVIDIA_GPU:
        fitting = [n for n in nodes if n.gpus > 0 and (product is None or n.gpu_product == product)]
    else:
        fitting = list(nodes)
    return {n.architecture for n in fitting} or {str(Architecture.AMD64)}
