"""The OpenAI-compatible gateway: ``/v1`` requests routed by ``model`` to ready InferenceService replicas.

Modules: ``routes`` (the routing table, pure), ``watching`` (the table and the API keys kept current
by watches), ``engine_load`` (the replicas' own metrics, scored), ``balancer`` (the least loaded
replica, prefix affinity), ``keys`` (API keys), ``quotas`` (their request and token limits, shared
through Redis), ``scaling`` (scale from zero, 503 while starting, held requests bounded),
``holding`` (a held stream's heartbeats), ``autoscaling`` (replicas from the requests in flight, and
the signals exported for other autoscalers), ``metrics``, ``bodies`` (reading ``model``), ``proxy``
(the handlers) and ``app`` (composition).
"""

from aima.gateway.app import create_app, install, open_gateway
from aima.gateway.keys import KeyStore
from aima.gateway.proxy import Proxy
from aima.gateway.routes import Backend, ServiceView, StaticRoutes

__all__ = [
    "Backend",
    "KeyStore",
    "Proxy",
    "ServiceView",
    "StaticRoutes",
    "create_app",
    "install",
    "open_gateway",
]
