"""The doors: the ways in to the units, each generated from the registry.

`http` (the units API, with the resource watch of `watch` and the pipeline runs of `pipelines`
mounted on it) and `mcp` (tools and resources for agents). They sit above the units and share two
things only: one authentication (`auth`) and one error envelope (`wire`).
"""
