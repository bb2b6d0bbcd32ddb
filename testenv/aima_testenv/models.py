"""Tiny real models made on the spot, never downloaded: random weights in the formats real engines
load, so an engine starts, tokenizes and generates for real (the words are noise; bound
max_tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


_LLAMA_MERGES = ("h e", "l l", "o Ġ", "w o")
_LLAMA_TOKENS = (*_SPECIALS, *_byte_level_vocabulary(), *(m.replace(" ", "") for m in _LLAMA_MERGES))
_LLAMA_SHAPE = {"embedding": 64, "feed_forward": 128, "layers": 2, "heads": 2}
"""2 layers, hidden 64, head size 32 (a size vLLM's CPU attention takes)."""


def _tiny_llama_tensors(seed: int) -> dict[str, Any]:
    """The tiny llama's weights under Hugging Face's names, float32.

    Noise, but ASCII letters only: every token embedding carries one large shared component that the
    output layer reads as "a letter", so each generated token is a whole character (a stream sends
    one event per token; random bytes would be held back as partial UTF-8) and the end token never
    wins (max_tokens bounds every reply)."""
    rng = np.random.default_rng(seed)
    embedding, feed_forward = _LLAMA_SHAPE["embedding"], _LLAMA_SHAPE["feed_forward"]
    size = len(_LLAMA_TOKENS)

    def noise(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones() -> Any:
        return np.ones(embedding, np.float32)

    letters = np.array([t.isascii() and t.isalpha() for t in _LLAMA_TOKENS])
    embeddings = rng.standard_normal((size, embedding)) * 0.02
    embeddings[:, 0] = 1.0
    tensors: dict[str, Any] = {"model.embed_tokens.weight": embeddings.astype(np.float32)}
    for layer in range(_LLAMA_SHAPE["layers"]):
        block = f"model.layers.{layer}"
        tensors[f"{block}.input_layernorm.weight"] = ones()
        for projection in ("q_proj", "k_proj", "v_proj"):
            tensors[f"{block}.self_attn.{projection}.weight"] = noise(embedding, embedding)
        tensors[f"{block}.self_attn.o_proj.weight"] = noise(embedding, embedding)
        tensors[f"{block}.post_attention_layernorm.weight"] = ones()
        tensors[f"{block}.mlp.gate_proj.weight"] = noise(feed_forward, embedding)
        tensors[f"{block}.mlp.up_proj.weight"] = noise(feed_forward, embedding)
        tensors[f"{block}.mlp.down_proj.weight"] = noise(embedding, feed_forward)
    tensors["model.norm.weight"] = ones()
    output = rng.standard_normal((size, embedding)) * 0.02
    output[:, 0] = np.where(letters, 1.0, -1.0)
    tensors["lm_head.weight"] = output.astype(np.float32)
    return tensors


_GGUF_NAMES = (
    ("model.embed_tokens", "token_embd"),
    ("model.layers.", "blk."),
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
)


def _gguf_name(name: str) -> str:
    for hugging_face, gguf_name in _GGUF_NAMES:
        name = name.replace(hugging_face, gguf_name)
    return name


def write_tiny_llama_gguf(path: Path, *, seed: int = 0) -> Path:
    """The tiny llama in F32 GGUF, with a byte-level BPE tokenizer and a ChatML template in its
    metadata: about 0.5 MB, loaded by llama.cpp as is."""
    tokens = list(_LLAMA_TOKENS)
    embedding, heads = _LLAMA_SHAPE["embedding"], _LLAMA_SHAPE["heads"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("aima-tiny-llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(embedding)
    writer.add_block_count(_LLAMA_SHAPE["layers"])
    writer.add_feed_forward_length(_LLAMA_SHAPE["feed_forward"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in _SPECIALS else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(list(_LLAMA_MERGES))
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<pad>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)
    for name, tensor in _tiny_llama_tensors(seed).items():
        writer.add_tensor(_gguf_name(name), tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_llama_safetensors(folder: Path, *, seed: int = 0) -> Path:
    """The same tiny llama in Hugging Face's layout (config.json, model.safetensors, tokenizer.json
    and its config with the ChatML template), as vLLM loads it: about 0.5 MB."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    tokens = list(_LLAMA_TOKENS)
    ids = {name: tokens.index(name) for name in ("<|endoftext|>", "<|im_end|>", "<pad>")}
    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[tuple(m.split(" ")) for m in _LLAMA_MERGES],  # type: ignore[misc]
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(list(_SPECIALS))
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        # transformers 5 would write "TokenizersBackend", which transformers 4 refuses.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<pad>",
        "model_max_length": 2048,
        "chat_template": _CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    embedding, heads = _LLAMA_SHAPE["embedding"], _LLAMA_SHAPE["heads"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(tokens),
        "hidden_size": embedding,
        "intermediate_size": _LLAMA_SHAPE["feed_forward"],
        "num_hidden_layers": _LLAMA_SHAPE["layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": embedding // heads,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<pad>"],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    generation = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    _write_safetensors(folder / "model.safetensors", _tiny_llama_tensors(seed))
    return folder


LORA_RANK = 8


def write_tiny_llama_lora(folder: Path, *, base: str, seed: int = 1, rank: int = LORA_RANK) -> Path:
    """A LoRA adapter for the tiny llama in PEFT's layout (adapter_config.json and
    adapter_model.safetensors, rank 8 on every attention projection), as vLLM loads it: about 35 KB.

    Its updates are large beside the base's noise, so greedy replies with and without it differ.
    ``base`` is the base model's name as the adapter's config records it; a ``rank`` above the
    engine's maximum makes an adapter the engine refuses."""
    rng = np.random.default_rng(seed)
    embedding = _LLAMA_SHAPE["embedding"]
    folder.mkdir(parents=True, exist_ok=True)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1))
    tensors: dict[str, Any] = {}
    for layer in range(_LLAMA_SHAPE["layers"]):
        for projection in targets:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{projection}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, embedding)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((embedding, rank)).astype(np.float32)
    _write_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder


def _write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    """The SafeTensors format by its specification (a little-endian u64 header length, a JSON header
    of dtypes, shapes and offsets padded to 8 bytes, then the raw data), for float32 tensors."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for tensor in tensors.values():
            out.write(np.ascontiguousarray(tensor, dtype="<f4").tobytes())


_WHISPER_LANGUAGE_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
    "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su "
    "yue"
)
_WHISPER_LANGUAGES = _WHISPER_LANGUAGE_CODES.split()
_WHISPER_VOCABULARY = 51866
"""large-v3's vocabulary size (100 languages)."""


def write_tiny_whisper_ct2(folder: Path, *, words: tuple[str, str] = ("hello", "world")) -> Path:
    """A 1-layer Whisper in CTranslate2's format (faster-whisper loads it as is: model.bin, its
    vocabulary, tokenizer.json, preprocessor_config.json) that transcribes any audio as the two words,
    with timestamps 0.00 -> 1.00: every layer's output weights are zero, so the residual stream
    carries the previous token's embedding alone, and the output projection reads each token of the
    chain <|startoftranscript|> -> <|en|>, <|transcribe|> -> <|0.00|> -> first -> second -> <|1.00|>
    -> <|endoftext|> as the next one. No training, no PyTorch; about 27 MB."""
    from ctranslate2.specs import model_spec, whisper_spec
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    first, second = words[0], "Ġ" + words[1]  # byte-level BPE marks a leading space with Ġ
    # Merges that spell each word left to right, so both encode to one token.
    merges = [(word[:i], word[i]) for word in (first, second) for i in range(1, len(word))]
    vocabulary = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for left, right in merges:
        vocabulary.setdefault(left + right, len(vocabulary))
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{language}|>" for language in _WHISPER_LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *(f"<|{i * 0.02:.2f}|>" for i in range(1501)),
    ]
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in [*specials, first, second]}
    count = tokenizer.get_vocab_size()
    tokens = [tokenizer.id_to_token(i) for i in range(count)]
    # CTranslate2 takes a Whisper whose vocabulary lacks the empty token as English-only, and
    # faster-whisper then prompts it with neither language nor task.
    tokens += ["", *(f"<|unused{i}|>" for i in range(_WHISPER_VOCABULARY - count - 1))]

    width, mels, heads, feed_forward = 64, 80, 2, 128
    spec = whisper_spec.WhisperSpec(1, heads, 1, heads)

    def zeros(layer: Any, scope: str, value: Any) -> None:
        name = scope.rsplit("/", 1)[-1]
        if value is None:
            setattr(layer, name, _whisper_zeros(scope, width=width, mels=mels, feed_forward=feed_forward))

    model_spec.visit_spec(spec, zeros)
    spec.encoder.position_encodings.encodings = np.zeros((1500, width), np.float32)
    spec.decoder.position_encodings.encodings = np.zeros((448, width), np.float32)
    chain = [
        ("<|startoftranscript|>", "<|en|>"),
        ("<|transcribe|>", "<|0.00|>"),
        ("<|0.00|>", first),
        (first, second),
        (second, "<|1.00|>"),
        ("<|1.00|>", "<|endoftext|>"),
    ]
    embeddings = np.zeros((_WHISPER_VOCABULARY, width), np.float32)
    projection = np.zeros((_WHISPER_VOCABULARY, width), np.float32)
    for step, (previous, following) in enumerate(chain):
        direction = np.zeros(width, np.float32)
        direction[2 * step], direction[2 * step + 1] = 1.0, -1.0  # zero mean: layer norms keep it
        embeddings[ids[previous]] += direction
        # Margin enough for a sure argmax; much larger ones made CTranslate2's beam search drift.
        projection[ids[following]] += 10.0 * direction
    spec.decoder.embeddings.weight = embeddings
    spec.decoder.projection.weight = projection
    spec.register_vocabulary(tokens)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [ids["<|endoftext|>"]]
    spec.config.lang_ids = [ids[f"<|{language}|>"] for language in _WHISPER_LANGUAGES]
    spec.config.alignment_heads = [(0, head) for head in range(heads)]
    spec.validate()
    spec.optimize()
    spec.save(str(folder))
    features = {
        "feature_size": mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(features))
    return folder


def _whisper_zeros(scope: str, *, width: int, mels: int, feed_forward: int) -> Any:
    """A zero (a layer norm's gamma: one) tensor of the shape the variable at ``scope`` takes."""
    name = scope.rsplit("/", 1)[-1]
    if name in ("gamma", "beta"):
        return (np.ones if name == "gamma" else np.zeros)(width, np.float32)
    shapes = {
        "conv1/weight": (width, mels, 3),
        "conv2/weight": (width, width, 3),
        "self_attention/linear_0/weight": (3 * width, width),  # queries, keys and values, fused
        "self_attention/linear_1/weight": (width, width),
        "/attention/linear_1/weight": (2 * width, width),  # the encoder's keys and values, fused
        "ffn/linear_0/weight": (feed_forward, width),
        "ffn/linear_1/weight": (width, feed_forward),
    }
    shape = next((s for suffix, s in shapes.items() if scope.endswith(suffix)), (width, width))
    return np.zeros(shape, np.float32)


KOKORO_SAMPLES_PER_PHONEME = 600
"""Audio samples the tiny Kokoro makes per phoneme id (25 ms at Kokoro's 24 kHz)."""


def write_tiny_kokoro_onnx(folder: Path, *, voices: tuple[str, ...] = ("af_heart", "am_adam")) -> Path:
    """A Kokoro-82M stand-in laid out as msgflux/Kokoro-82M-streaming-onnx is (what fastkokoro loads:
    ``onnx/kokoro-82m-streaming-b96-fp16.onnx`` and ``voices.npz``), with Kokoro's interface (phoneme
    ids ``tokens`` [1, N], ``style`` [1, 256], ``speed`` [1] in; ``audio`` out) and random weights:
    each phoneme becomes 600 samples of noise, so the audio's length follows the text. About 1.5 MB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    vocabulary, style, samples = 178, 256, KOKORO_SAMPLES_PER_PHONEME  # Kokoro's phoneme ids, style width

    def constant(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [
        helper.make_node("Gather", ["embedding", "tokens"], ["per_phoneme"], axis=0),  # [1, N, F]
        helper.make_node("MatMul", ["style", "style_weights"], ["styled"]),  # [1, F]
        helper.make_node("Unsqueeze", ["styled", "one"], ["styled_3d"]),  # [1, 1, F]
        helper.make_node("Add", ["per_phoneme", "styled_3d"], ["summed"]),
        helper.make_node("Tanh", ["summed"], ["bounded"]),
        helper.make_node("Mul", ["bounded", "amplitude"], ["quiet"]),
        helper.make_node("Mul", ["quiet", "speed"], ["paced"]),
        helper.make_node("Reshape", ["paced", "flat"], ["audio"]),  # [N * F]
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_kokoro",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "n"]),
            helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, style]),
            helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["t"])],
        initializer=[
            constant("embedding", (rng.standard_normal((vocabulary, samples)) * 0.5).astype(np.float32)),
            constant("style_weights", (rng.standard_normal((style, samples)) * 0.05).astype(np.float32)),
            constant("amplitude", np.array([0.3], np.float32)),
            constant("flat", np.array([-1], np.int64)),
            constant("one", np.array([1], np.int64)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny-kokoro")
    model.ir_version = 8  # what ONNX Runtime releases of the last years all read
    onnx.checker.check_model(model)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "onnx" / "kokoro-82m-streaming-b96-fp16.onnx"))
    # One style vector per phoneme count (Kokoro indexes its voice packs by the text's length).
    packs = {v: (rng.standard_normal((510, 1, style)) * 0.1).astype(np.float32) for v in voices}
    with (folder / "voices.npz").open("wb") as out:
        np.savez(out, **packs)  # type: ignore[arg-type]
    return folder


_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BERT_WORDS = ("hello", "world", "the", "is", "of", "and", "cat", "dog", "query", "document", "paris")
_BERT_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_BERT_TOKENS = (
    *_BERT_SPECIALS,
    *_BERT_WORDS,
    *_BERT_CHARACTERS,
    *(f"##{c}" for c in _BERT_CHARACTERS),
    *".,!?'-:;()",
)
"""A WordPiece vocabulary in which every lowercase ASCII word has a spelling (letter by letter at
worst); anything else is [UNK]."""
BERT_SHAPE = {"hidden": 64, "feed_forward": 128, "layers": 2, "heads": 2, "positions": 512}
"""2 layers, hidden 64: the tiny BERTs' embeddings have 64 dimensions."""


def write_tiny_bert_embedder(folder: Path, *, seed: int = 0) -> Path:
    """A tiny BERT sentence embedder in sentence-transformers' layout (a BertModel in SafeTensors,
    its WordPiece tokenizer, mean pooling in 1_Pooling), as infinity loads it: random
    weights, 64-dimensional embeddings, about 200 KB. No PyTorch."""
    _write_bert(folder, _tiny_bert_tensors(seed, prefix=""), architecture="BertModel")
    pooling = {
        "word_embedding_dimension": BERT_SHAPE["hidden"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=1))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=1))
    sentence_bert = {"max_seq_length": BERT_SHAPE["positions"], "do_lower_case": True}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sentence_bert))
    return folder


def write_tiny_bert_reranker(folder: Path, *, seed: int = 1) -> Path:
    """A tiny BERT cross-encoder (BertForSequenceClassification with one label: a relevance score
    per query and document), as infinity and sentence-transformers' CrossEncoder load it: random
    weights, about 200 KB. No PyTorch."""
    rng = np.random.default_rng(seed)
    tensors = _tiny_bert_tensors(seed, prefix="bert.")
    tensors["classifier.weight"] = (rng.standard_normal((1, BERT_SHAPE["hidden"])) * 0.5).astype(np.float32)
    tensors["classifier.bias"] = np.zeros(1, np.float32)
    # One label makes it a reranker to infinity; two or more, a classifier.
    _write_bert(folder, tensors, architecture="BertForSequenceClassification", id2label={"0": "LABEL_0"})
    return folder


def _tiny_bert_tensors(seed: int, *, prefix: str) -> dict[str, Any]:
    """A BertModel's weights under Hugging Face's names (``prefix`` "bert." inside a task model)."""
    rng = np.random.default_rng(seed)
    hidden, feed_forward = BERT_SHAPE["hidden"], BERT_SHAPE["feed_forward"]

    def noise(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def layer_norm(name: str) -> dict[str, Any]:
        return {f"{name}.weight": np.ones(hidden, np.float32), f"{name}.bias": np.zeros(hidden, np.float32)}

    def dense(name: str, outputs: int, inputs: int) -> dict[str, Any]:
        return {f"{name}.weight": noise(outputs, inputs), f"{name}.bias": np.zeros(outputs, np.float32)}

    tensors: dict[str, Any] = {
        "embeddings.word_embeddings.weight": noise(len(_BERT_TOKENS), hidden),
        "embeddings.position_embeddings.weight": noise(BERT_SHAPE["positions"], hidden),
        "embeddings.token_type_embeddings.weight": noise(2, hidden),
        **layer_norm("embeddings.LayerNorm"),
        **dense("pooler.dense", hidden, hidden),
    }
    for layer in range(BERT_SHAPE["layers"]):
        block = f"encoder.layer.{layer}"
        for projection in ("query", "key", "value"):
            tensors |= dense(f"{block}.attention.self.{projection}", hidden, hidden)
        tensors |= dense(f"{block}.attention.output.dense", hidden, hidden)
        tensors |= layer_norm(f"{block}.attention.output.LayerNorm")
        tensors |= dense(f"{block}.intermediate.dense", feed_forward, hidden)
        tensors |= dense(f"{block}.output.dense", hidden, feed_forward)
        tensors |= layer_norm(f"{block}.output.LayerNorm")
    return {prefix + name: tensor for name, tensor in tensors.items()}


def _write_bert(folder: Path, tensors: dict[str, Any], *, architecture: str, **extra: Any) -> None:
    """config.json, model.safetensors and the WordPiece tokenizer of a tiny BERT."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_wordpiece_tokenizer(folder)
    config = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": len(_BERT_TOKENS),
        "hidden_size": BERT_SHAPE["hidden"],
        "num_hidden_layers": BERT_SHAPE["layers"],
        "num_attention_heads": BERT_SHAPE["heads"],
        "intermediate_size": BERT_SHAPE["feed_forward"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": BERT_SHAPE["positions"],
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    _write_safetensors(folder / "model.safetensors", tensors)


def _write_wordpiece_tokenizer(folder: Path) -> None:
    """BERT's uncased WordPiece tokenizer over the tiny vocabulary: [CLS] A [SEP] (B [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocabulary = {token: i for i, token in enumerate(_BERT_TOKENS)}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocabulary, unk_token=_BERT_SPECIALS[1]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, vocabulary[t]) for t in ("[CLS]", "[SEP]")],
    )
    tokenizer.add_special_tokens(list(_BERT_SPECIALS))
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        # transformers 5 would write "TokenizersBackend", which transformers 4 (infinity) refuses.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **{f"{role}_token": f"[{role.upper()}]" for role in ("unk", "pad", "cls", "sep", "mask")},
        "model_max_length": BERT_SHAPE["positions"],
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
