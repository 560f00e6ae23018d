"""The embedding cache (store.py: `EmbeddingCache`; shards.py: fingerprint, shards, source records)."""
from .shards import FORMAT_VERSION, Shard, fingerprint, shard_stem, source_record
from .store import EmbeddingCache

__all__ = ["FORMAT_VERSION", "EmbeddingCache", "Shard", "fingerprint", "shard_stem", "source_record"]
