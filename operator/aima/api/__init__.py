"""The AIMA API: pydantic models of the custom resources, the source of the CRDs in `crds/`."""

from aima.api.common import API_VERSION, GROUP, VERSION
from aima.api.engine import Engine
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import Pipeline, PipelineRun

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Engine",
    "InferenceService",
    "Model",
    "Pipeline",
    "PipelineRun",
]
