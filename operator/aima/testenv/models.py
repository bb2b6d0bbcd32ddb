"""Tiny real models made on the spot, never downloaded: random weights in the formats real engines
load, so an engine starts, tokenizes and generates for real (the words are noise; bound
max_tokens)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_vocabulary() -> list[str]:
    """GPT-2's byte-to-character table: every byte has a printable token, so any text tokenizes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            characters.append(256 + extra)
            extra += 1
    return [chr(c) for c in characters]


def write_tiny_llama_gguf(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer llama-architecture model (hidden 64, head size 32) in F32 GGUF, with a byte-level
    BPE tokenizer and a ChatML template in its metadata: about 0.5 MB, loaded by llama.cpp as is."""
    rng = np.random.default_rng(seed)
    merges = ["h e", "l l", "o Ġ", "w o"]
    tokens = [*_SPECIALS, *_byte_level_vocabulary(), *(m.replace(" ", "") for m in merges)]
    embedding, feed_forward, layers, heads = 64, 128, 2, 2
    head_size = embedding // heads
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("aima-tiny-llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(head_size)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in _SPECIALS else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<pad>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def ones(name: str) -> None:
        writer.add_tensor(name, np.ones(embedding, np.float32))

    # Noise, but ASCII letters only: every token embedding carries one large shared component that
    # the output layer reads as "a letter", so each generated token is a whole character (a stream
    # sends one event per token; random bytes would be held back as partial UTF-8) and the end token
    # never wins (max_tokens bounds every reply).
    letters = np.array([t.isascii() and t.isalpha() for t in tokens])
    embeddings = rng.standard_normal((len(tokens), embedding)) * 0.02
    embeddings[:, 0] = 1.0
    writer.add_tensor("token_embd.weight", embeddings.astype(np.float32))
    for layer in range(layers):
        block = f"blk.{layer}"
        ones(f"{block}.attn_norm.weight")
        for projection in ("attn_q", "attn_k", "attn_v"):
            random(f"{block}.{projection}.weight", heads * head_size, embedding)
        random(f"{block}.attn_output.weight", embedding, heads * head_size)
        ones(f"{block}.ffn_norm.weight")
        random(f"{block}.ffn_gate.weight", feed_forward, embedding)
        random(f"{block}.ffn_up.weight", feed_forward, embedding)
        random(f"{block}.ffn_down.weight", embedding, feed_forward)
    ones("output_norm.weight")
    output = rng.standard_normal((len(tokens), embedding)) * 0.02
    output[:, 0] = np.where(letters, 1.0, -1.0)
    writer.add_tensor("output.weight", output.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
