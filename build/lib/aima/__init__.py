"""AIMA: an inference platform for GPU nodes on Kubernetes."""

__all__ = ["__version__"]

__version__ = "0.1.0"
