"""`python -m aima.loader`: the loader alone, without importing the rest of the `aima` command
(the operator, the MCP server, the API client), which `aima loader` loads first; it starts in a
fraction of the time and memory."""

from aima.loader.cli import loader

loader(prog_name="aima loader")
