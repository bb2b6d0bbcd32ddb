"""Load and validate the catalog: `catalog/engines/`, `catalog/models/` and `catalog/pipelines/`.

The catalog is the single source of engine configuration; the operator installs its Engines and
offers its Model presets and Pipeline templates. Loading is strict: an unknown field (a typo) or a
document of the wrong kind is an error naming the file, so a broken catalog never ships.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pydantic
import yaml

from aima.api.common import API_VERSION, ApiModel, ObjectMeta
from aima.api.engine import Engine
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import Pipeline, PipelineRun

__all__ = ["KINDS", "Catalog", "CatalogError", "load_catalog", "load_file", "parse_documents"]

KINDS: Final[Mapping[str, type[ApiModel]]] = {
    "Engine": Engine,
    "Model": Model,
    "InferenceService": InferenceService,
    "Pipeline": Pipeline,
    "PipelineRun": PipelineRun,
}

_T = TypeVar("_T", bound=ApiModel)

_FOLDERS: Final = {"engines": "Engine", "models": "Model", "pipelines": "Pipeline"}


class CatalogError(ValueError):
    """A catalog document is invalid; the message names the file, the document and the problem."""


@dataclass(frozen=True, kw_only=True)
class Catalog:
    """Everything in the catalog, validated."""

    engines: tuple[Engine, ...]
    models: tuple[Model, ...]
    pipelines: tuple[Pipeline, ...]


def parse_documents(text: str, *, source: str) -> list[ApiModel]:
    """Validate every YAML document in `text` as an AIMA object (pure); `source` names it in errors."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise CatalogError(f"{source}: not valid YAML: {error}") from None
    return [_parse(document, where=f"{source} document {i + 1}") for i, document in enumerate(documents)]


def _parse(document: Any, *, where: str) -> ApiModel:
    if not isinstance(document, dict):
        raise CatalogError(f"{where}: expected a mapping with apiVersion and kind")
    if document.get("apiVersion") != API_VERSION:
        raise CatalogError(f"{where}: apiVersion must be {API_VERSION}, not {document.get('apiVersion')!r}")
    kind = KINDS.get(str(document.get("kind")))
    if kind is None:
        raise CatalogError(
            f"{where}: unknown kind {document.get('kind')!r}; expected one of {', '.join(KINDS)}"
        )
    try:
        parsed = kind.model_validate(document)
    except pydantic.ValidationError as error:
        raise CatalogError(f"{where}: {error}") from None
    return parsed


def load_file(path: Path) -> list[ApiModel]:
    """Read and validate one YAML file."""
    return parse_documents(path.read_text(), source=str(path))


def load_catalog(root: Path) -> Catalog:
    """Read and validate `root/engines`, `root/models` and `root/pipelines`."""
    found = {folder: _load_folder(root / folder, kind=kind) for folder, kind in _FOLDERS.items()}
    return Catalog(
        engines=tuple(_of_type(found["engines"], Engine)),
        models=tuple(_of_type(found["models"], Model)),
        pipelines=tuple(_of_type(found["pipelines"], Pipeline)),
    )


def _load_folder(folder: Path, *, kind: str) -> list[ApiModel]:
    objects: list[ApiModel] = []
    for path in sorted(folder.glob("*.yaml")):
        for item in load_file(path):
            if getattr(item, "kind", None) != kind:
                raise CatalogError(
                    f"{path}: {folder.name}/ holds {kind} objects only, found {getattr(item, 'kind', '?')}"
                )
            objects.append(item)
    _require_unique_names(objects, folder=folder)
    return objects


def _require_unique_names(objects: Sequence[ApiModel], *, folder: Path) -> None:
    names = [_name(o) for o in objects]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogError(f"{folder}: names used more than once: {', '.join(duplicates)}")
    if any(not n for n in names):
        raise CatalogError(f"{folder}: every catalog object needs metadata.name")


def _name(item: ApiModel) -> str:
    metadata = getattr(item, "metadata", None)
    return metadata.name or "" if isinstance(metadata, ObjectMeta) else ""


def _of_type(items: Iterable[ApiModel], kind: type[_T]) -> list[_T]:
    return [item for item in items if isinstance(item, kind)]
