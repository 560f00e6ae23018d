"""semisam-fast: SemiSAM with an exported, batched, cached Segment Anything Model."""

__version__ = "0.1.0"
