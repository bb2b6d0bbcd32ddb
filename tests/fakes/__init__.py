"""Local HTTP servers that speak the Hugging Face Hub's and an Ollama registry's APIs, with faults."""
