"""The AIMA API: pydantic models of the custom resources, the source of the CRDs in `crds/`."""

from aima.api.alert import AlertRule
from aima.api.common import API_VERSION, GROUP, VERSION
from aima.api.device import NodeDevices
from aima.api.engine import Engine
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import Pipeline, PipelineRun

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AlertRule",
    "Engine",
    "InferenceService",
    "Model",
    "NodeDevices",
    "Pipeline",
    "PipelineRun",
]
