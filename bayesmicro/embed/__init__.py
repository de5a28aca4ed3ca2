"""Text → features: frozen transformers backbones, chat templates, pooling, a resumable on-disk cache."""

from bayesmicro.embed.backbone import DEFAULT_MODEL, default_model_path
from bayesmicro.embed.cache import EmbeddingCache, default_cache_root
from bayesmicro.embed.embedder import Embedder
from bayesmicro.embed.pooling import POOLINGS, pool

__all__ = ["DEFAULT_MODEL", "Embedder", "EmbeddingCache", "POOLINGS", "default_cache_root", "default_model_path",
           "pool"]
