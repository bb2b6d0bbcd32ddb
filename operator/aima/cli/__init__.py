"""The `aima` command line."""
