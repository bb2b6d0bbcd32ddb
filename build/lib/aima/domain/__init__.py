"""Pure planning: desired children and status from specs and observations. No I/O, no clients."""
