"""The MCP door: tools and resources generated from the unit registry, over stdio or streamable HTTP."""

from aima.doors.mcp.server import Policy, build_server, offered_units, tool_name
from aima.doors.mcp.transports import McpDoor

__all__ = ["McpDoor", "Policy", "build_server", "offered_units", "tool_name"]
