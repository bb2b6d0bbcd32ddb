"""Units: every operation of AIMA as a typed `{domain}.{action}`; the doors (`aima.doors`) serve them."""

from aima.units.catalog import registry
from aima.units.core import Context, Example, Input, Kind, Registry, Unit, command, query
from aima.units.envelope import ErrorInfo, Meta, Request, Response, execute
from aima.units.errors import ErrorCode, UnitError

__all__ = [
    "Context",
    "ErrorCode",
    "ErrorInfo",
    "Example",
    "Input",
    "Kind",
    "Meta",
    "Registry",
    "Request",
    "Response",
    "Unit",
    "UnitError",
    "command",
    "execute",
    "query",
    "registry",
]
