"""What the real-node suite's fixtures and tests share: names of its namespaces and the figures it
measured, printed at the end of the run (the closing note quotes them)."""

from __future__ import annotations

HUB_NAMESPACE = "aima-fakes"
HUB_REPO = "acme/tiny-llm"
WHISPER_REPO = "acme/tiny-whisper"
VLLM_REPO = "acme/tiny-vllm"
LORA_REPO = "acme/tiny-vllm-sql-lora"
BROKEN_LORA_REPO = "acme/tiny-vllm-rank128-lora"
"""A LoRA of rank 128, above the catalog's --max-lora-rank=64: vLLM refuses to load it."""
KOKORO_REPO = "acme/tiny-kokoro"
EMBEDDER_REPO = "acme/tiny-bert-embedder"
RERANKER_REPO = "acme/tiny-bert-reranker"
HUB_WEIGHTS_BYTES = 48 * 2**20
PLATFORM_NAMESPACE = "aima-system"
SERVING_NAMESPACE = "serving"
SERVICE = "tiny-chat"
"""The InferenceService the serving tests share, in SERVING_NAMESPACE."""

FIGURES: dict[str, str] = {}
