"""Local HTTP servers that speak the Hugging Face Hub's, ModelScope's and an Ollama registry's APIs,
with faults."""
