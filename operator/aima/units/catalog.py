"""The registry of every unit AIMA offers; the doors are generated from it."""

from __future__ import annotations

from aima.units import alert, device, engine, inference, model, overview, pipeline, resource, service
from aima.units.core import Registry

__all__ = ["registry"]


def registry() -> Registry:
    """A registry with every domain's units."""
    return Registry(
        [
            *model.UNITS,
            *engine.UNITS,
            *service.UNITS,
            *resource.UNITS,
            *overview.UNITS,
            *inference.UNITS,
            *pipeline.UNITS,
            *device.UNITS,
            *alert.UNITS,
        ]
    )
