"""kopf wiring: one module per kind; `run` starts them all."""
