"""`embed`: run the encoder in batches over every slice of the listed cases, into the embedding cache."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .backends import Backend
from .cache import EmbeddingCache, fingerprint, source_record
from .data import Dataset, every_kth
from .distributed import World, my_cases
from .errors import UserError
from .locks import folder_lock
from .models import get_spec, preprocess


def backend_fingerprint(backend: Backend) -> dict:
    spec = get_spec(backend.model)
    return fingerprint(spec.name, backend.encoder_checkpoint_sha256, spec.image_size, spec.normalization,
                       backend.precision, backend.encoder_sha256)


def encode_slices(backend: Backend, image: np.ndarray, slices: list[int], batch: int = 8) -> torch.Tensor:
    """The encoder on the given slices of an (H, W, Z) volume, `batch` per call: how a volume's slices become
    embeddings, for the cache (`build_cache`) and for pseudo-label's pass without one."""
    spec = get_spec(backend.model)
    parts = []
    for start in range(0, len(slices), batch):
        chunk = list(slices[start:start + batch])
        stack = torch.from_numpy(np.ascontiguousarray(image[:, :, chunk].transpose(2, 0, 1)))
        parts.append(backend.encode(preprocess(stack, spec.image_size, spec.normalization)))
    return torch.cat(parts)


@dataclass
class EmbedSummary:
    slices_total: int
    slices_computed: int
    slices_reused: int
    seconds: float
    cache_bytes: int

    @property
    def slices_per_second(self) -> float:
        return self.slices_computed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.slices_total} slices ({self.slices_computed} computed, {self.slices_reused} already cached), "
                f"{self.seconds:.1f} s, {self.slices_per_second:.2f} slices/s, cache {self.cache_bytes / 2**20:.0f} MiB")


def build_cache(dataset: Dataset, backend: Backend, cache_dir: str | Path, case_ids: list[str] | None = None,
                batch: int = 8, every: int = 1, progress: bool = True, world: World | None = None) -> EmbedSummary:
    """Encode what is not yet cached; resumable. Labels are never read here.

    Under torchrun (`world`): rank 0 creates the cache (fingerprint, embedding shape, batch grouping) and clears
    what a killed build left, before the others open it; whole cases are dealt out (`my_cases`); each process
    writes only its own cases' shards; at the end rank 0 checks that every wanted slice is cached exactly once and
    writes the index. The result is the cache one process would have built. Rank 0 holds the folder's lock
    (`locks.FolderLock`) throughout: a second build into the same folder is refused."""
    world = world or World()
    with folder_lock(cache_dir, "embed", enabled=world.leader):
        return _build(dataset, backend, cache_dir, case_ids, batch, every, progress, world)


def _build(dataset: Dataset, backend: Backend, cache_dir: str | Path, case_ids: list[str] | None, batch: int,
           every: int, progress: bool, world: World) -> EmbedSummary:
    spec = get_spec(backend.model)
    fingerprint = backend_fingerprint(backend)
    if world.leader:
        cache = EmbeddingCache(cache_dir, fingerprint, create=True, embedding_shape=list(spec.embedding_shape))
        if cache.meta.get("batch") not in (None, batch):
            raise UserError(f"cache {cache_dir} groups its shards by --batch {cache.meta['batch']}; resume it with "
                            "that batch (a different one would not give the same cache)")
        if cache.meta.get("batch") is None:
            cache.meta["batch"] = batch
            cache.write_meta()
    world.barrier()
    if not world.leader:
        cache = EmbeddingCache(cache_dir, fingerprint, clean=False)
    case_ids = case_ids if case_ids is not None else dataset.case_ids
    wanted_slices = {case_id: every_kth(dataset.num_slices(case_id), every) for case_id in case_ids}
    mine = my_cases(case_ids, lambda c: len(wanted_slices[c]), world)
    todo: dict[str, list[list[int]]] = {}
    total = 0
    for case_id in mine:
        wanted = wanted_slices[case_id]
        total += len(wanted)
        cache.check_files(case_id)  # a shard emptied or cut since it was written is not "already cached"
        done = set(cache.slices(case_id))
        # fixed batch groups: a resumed build recomputes exactly the groups an uninterrupted one would have,
        # so both end bit-for-bit equal
        groups = [[z for z in wanted[i:i + batch] if z not in done] for i in range(0, len(wanted), batch)]
        if any(groups):
            todo[case_id] = [g for g in groups if g]
    n_todo = sum(len(g) for groups in todo.values() for g in groups)
    start = time.perf_counter()
    with tqdm(total=n_todo, unit="slice", desc="embed", disable=not progress, dynamic_ncols=True) as bar:
        for case_id, groups in todo.items():
            image = dataset.load(case_id, with_label=False).image
            height, width = image.shape[0], image.shape[1]
            source = source_record(image)
            cache.check_source(case_id, image, source)  # a resumed build adds to the same scan's rows only
            for chunk in groups:  # one encoder batch -> one shard
                cache.write(case_id, chunk, encode_slices(backend, image, chunk, len(chunk)), height, width, source)
                bar.update(len(chunk))
    seconds = time.perf_counter() - start
    computed = world.sum(n_todo)
    world.barrier()  # every process's shards are written
    if world.leader:
        if world.distributed:  # the other processes' shards: this process's index has only its own
            cache = EmbeddingCache(cache_dir, fingerprint, clean=False)
        problems = cache.coverage_problems(wanted_slices)
        if problems:
            raise UserError(f"cache {cache_dir} is incomplete after the build: {'; '.join(problems[:3])}; re-run embed")
        cache.write_index()
    world.barrier()
    all_slices = sum(len(z) for z in wanted_slices.values())
    return EmbedSummary(all_slices, computed, all_slices - computed, seconds, cache.size_bytes())

