"""The embedding cache: fp16 SAM image embeddings, one row per (case, slice), memory-mapped for reads.

Layout: `<dir>/cache.json` (fingerprint, embedding shape) and `<dir>/shards/<case>.<first>-<last>.npy` with a
`.json` beside each (the slice indices it holds, the slice size, a checksum, and the source: the shape and a content
hash of the volume its slices came from, so that a cache never serves another scan under the same case name).
A shard is one encoder batch of one case, written to a temp name and renamed, its JSON
renamed after it: a shard counts as finished only when its JSON exists, so an interrupted build (even kill -9)
resumes by recomputing at most the batch it was in, and never reads a half-written file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import UserError
from ..fsutil import atomic_write, remove_stale_temps
from .shards import FORMAT_VERSION, Shard, diff, shard_from, shard_stem, source_record

class EmbeddingCache:
    """Open (or create) a cache folder. `fingerprint` given: a cache with another one is refused."""

    def __init__(self, root: str | Path, fingerprint: dict | None = None, create: bool = False,
                 clean: bool | None = None, embedding_shape: list[int] | None = None) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        meta_path = self.root / "cache.json"
        if meta_path.is_file():
            try:
                self.meta = json.loads(meta_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(f"cache {self.root} has a corrupt cache.json") from None
            if not isinstance(self.meta, dict) or not isinstance(self.meta.get("fingerprint"), dict):
                raise UserError(f"cache {self.root} has a cache.json without a fingerprint (not written by embed); "
                                "use another --cache folder or delete this one")
            if fingerprint is not None and self.meta.get("fingerprint") != fingerprint:
                raise UserError(f"cache {self.root} was built with a different fingerprint "
                                f"({diff(self.meta.get('fingerprint', {}), fingerprint)}); "
                                "use another --cache folder or delete this one")
        elif create and fingerprint is not None:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            self.meta = {"fingerprint": fingerprint, "embedding_shape": embedding_shape}
            self.write_meta()
        else:
            raise UserError(f"no embedding cache at {self.root}; build one with `semisam-fast embed --cache {root}`")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if create if clean is None else clean:  # never while other processes write (torchrun: rank 0, before them)
            remove_stale_temps(self.shard_dir)  # what a killed build was writing; its shard is redone
        self._shards: dict[str, list[Shard]] = {}
        self._rows: dict[str, dict[int, tuple[Shard, int]]] = {}  # (case, slice) -> (shard, row)
        self._maps: dict[Path, np.ndarray] = {}
        self._resident: dict[tuple[str, str], tuple[torch.Tensor, dict[int, int]]] = {}  # see gather()
        self._sources_checked: set[str] = set()  # cases whose volume was checked against the shards' source
        self._scan()

    # ---- index -------------------------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Read the index (one file for all shards, written at the end of every build) and the sidecars of shards
        it does not list yet (a build still running, or killed): opening a large cache parses one file, not one
        per shard."""
        self._shards.clear()
        self._rows.clear()
        indexed: dict[str, dict] = {}
        index_path = self.root / "index.json"
        if index_path.is_file():
            try:
                indexed = json.loads(index_path.read_text())["shards"]
            except (json.JSONDecodeError, KeyError, TypeError):
                indexed = {}  # rebuilt from the sidecars below; the next build rewrites it
        for info_path in sorted(self.shard_dir.glob("*.json")):
            if info_path.name.startswith("."):  # a sidecar still being written (or a killed writer's): not a shard
                continue
            info = indexed.get(info_path.stem) if isinstance(indexed, dict) else None
            if not isinstance(info, dict) or info.get("mtime_ns") != info_path.stat().st_mtime_ns:  # new or rewritten
                try:
                    info = json.loads(info_path.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    info = None
            self._add(shard_from(info, info_path))

    def write_index(self) -> None:
        """One file listing every finished shard (what `_scan` reads instead of every sidecar)."""
        shards = {shard.npy.stem: {"case_id": shard.case_id, "slices": shard.slices, "height": shard.height,
                                   "width": shard.width, "sha256": shard.sha256, "source": shard.source,
                                   "mtime_ns": shard.npy.with_suffix(".json").stat().st_mtime_ns}
                  for shards in self._shards.values() for shard in shards}
        text = json.dumps({"format": FORMAT_VERSION, "shards": shards})
        atomic_write(self.root / "index.json", lambda tmp: tmp.write_text(text))

    def coverage_problems(self, wanted: dict[str, list[int]]) -> list[str]:
        """Slices that should be cached and are not, or are cached in more than one shard."""
        problems = []
        for case_id, slices in wanted.items():
            counts: dict[int, int] = {}
            for shard in self._shards.get(case_id, []):
                for z in shard.slices:
                    counts[z] = counts.get(z, 0) + 1
            missing = [z for z in slices if z not in counts]
            twice = [z for z, n in counts.items() if n > 1]
            if missing:
                problems.append(f"{case_id}: {len(missing)} slices missing (first {missing[:3]})")
            if twice:
                problems.append(f"{case_id}: slices {twice[:3]} in more than one shard")
        return problems

    def _add(self, shard: Shard) -> None:
        self._shards.setdefault(shard.case_id, []).append(shard)
        rows = self._rows.setdefault(shard.case_id, {})
        for row, z in enumerate(shard.slices):
            rows[z] = (shard, row)

    def write_meta(self) -> None:
        atomic_write(self.root / "cache.json", lambda tmp: tmp.write_text(json.dumps(self.meta, indent=2)))

    @property
    def fingerprint(self) -> dict:
        return self.meta["fingerprint"]

    @property
    def case_ids(self) -> list[str]:
        return sorted(self._shards)

    def slices(self, case_id: str) -> list[int]:
        return sorted(self._rows.get(case_id, {}))

    def num_rows(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def size_bytes(self) -> int:
        return sum(s.npy.stat().st_size for shards in self._shards.values() for s in shards)

    def _require(self, case_id: str) -> list[Shard]:
        if case_id not in self._shards:
            raise UserError(f"case {case_id} is not in the cache {self.root}; run `semisam-fast embed` for it")
        return self._shards[case_id]

    # ---- writing -----------------------------------------------------------------------------------------------
    def write(self, case_id: str, slices: list[int], embeddings: torch.Tensor | np.ndarray, height: int,
              width: int, source: dict) -> None:
        """Store embeddings (rows, C, h, w) of the given slices of a case, atomically; `source`: the case volume's
        `source_record`, checked by `check_source` when the rows are used."""
        array = np.ascontiguousarray(embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor)
                                     else embeddings, dtype=np.float16)
        if self.meta.get("embedding_shape") is None:
            self.meta["embedding_shape"] = list(array.shape[1:])
            self.write_meta()
        if len(slices) != len(array):
            raise ValueError(f"{len(slices)} slice indices for {len(array)} embeddings")
        stem = f"{shard_stem(case_id)}.{slices[0]:05d}-{slices[-1]:05d}"
        npy = self.shard_dir / f"{stem}.npy"
        atomic_write(npy, lambda tmp: np.save(tmp, array))
        info = {"case_id": case_id, "slices": [int(z) for z in slices], "height": height, "width": width,
                "sha256": hashlib.sha256(array.tobytes()).hexdigest(), "source": source}
        atomic_write(npy.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(info)))
        self._add(Shard(case_id, info["slices"], height, width, npy, info["sha256"], source))

    # ---- what the rows came from ---------------------------------------------------------------------------------
    def check_source(self, case_id: str, image: np.ndarray, record: dict | None = None) -> None:
        """Refuse to serve a case whose volume is not the one its rows were computed from (another scan under the
        same case name, or an edited one): one UserError naming the case. Checked once per case and cache object
        (`record`: the volume's `source_record` when the caller has it already)."""
        if case_id in self._sources_checked or case_id not in self._shards:
            return
        have = record or source_record(image)
        for source in (shard.source for shard in self._shards[case_id]):
            if source["shape"] != have["shape"]:
                raise UserError(f"case {case_id}: the cache {self.root} was built from a volume of shape "
                                f"{tuple(source['shape'])}, this one is {tuple(have['shape'])}: another scan under "
                                "the same name; re-run embed into a new --cache folder")
            if source["sha256"] != have["sha256"]:
                raise UserError(f"case {case_id}: the cache {self.root} was built from another volume of the same "
                                "shape (its voxels differ); re-run embed into a new --cache folder")
        self._sources_checked.add(case_id)

    # ---- reading -----------------------------------------------------------------------------------------------
    def _open(self, shard: Shard) -> np.ndarray:
        """The shard memory-mapped, after checking its header and size against its sidecar (cheap: no data read)."""
        try:
            array = np.load(shard.npy, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # numpy raises OSError, ValueError or EOFError (a 0-byte file) here
            raise UserError(f"cache shard {shard.npy} is missing, truncated or corrupt ({type(exc).__name__}: "
                            f"{exc}); delete it and re-run embed") from None
        if array.shape[0] != len(shard.slices) or list(array.shape[1:]) != self.meta["embedding_shape"]:
            raise UserError(f"cache shard {shard.npy} has shape {array.shape}, expected {len(shard.slices)} rows of "
                            f"{self.meta['embedding_shape']}; delete it and re-run embed")
        return array

    def check_files(self, case_id: str) -> None:
        """The header and size of each shard of a case (what `embed` checks before it counts them as done)."""
        for shard in self._shards.get(case_id, []):
            self._open(shard)

    def _map(self, shard: Shard) -> np.ndarray:
        """A shard, checked once per process when first opened: size, then checksum (a flipped bit keeps the
        size), so no command reads a damaged shard silently."""
        if shard.npy not in self._maps:
            array = self._open(shard)
            if hashlib.sha256(np.ascontiguousarray(array).data).hexdigest() != shard.sha256:
                raise UserError(f"cache shard {shard.npy} is truncated or corrupt (it fails its checksum); delete it "
                                "and re-run embed")
            self._maps[shard.npy] = array
        return self._maps[shard.npy]

    def get(self, case_id: str, slices: Iterable[int]) -> torch.Tensor:
        """Embeddings (n, C, h, w) float32 of the given slices of one case."""
        self._require(case_id)
        index = self._rows[case_id]
        rows = []
        for z in slices:
            if z not in index:
                raise UserError(f"slice {z} of case {case_id} is not in the cache {self.root}")
            shard, row = index[z]
            rows.append(self._map(shard)[row])
        # stacked as stored (fp16), widened by torch (threaded; numpy's astype was 2-4x slower on a round's reads)
        return torch.from_numpy(np.stack(rows)).float()

    def gather(self, keys: list[tuple[str, int]], device: str = "cpu", resident: bool | None = None) -> torch.Tensor:
        """Embeddings (n, C, h, w) float32 on `device` of (case, slice) pairs from any cases, in order.

        resident (default: on a GPU): each case's rows are copied to `device` once, as stored (fp16, ~2 MB a
        LiteMedSAM slice), the first time the case is asked for. A 3D training step reads ~160 slices; through host
        memory from the memory-mapped shards every step that cost more than the V-Net step itself
        (bench/results/gpu_NVIDIA_H200_train.json)."""
        if resident is None:
            resident = device.startswith("cuda")
        by_case: dict[str, list[int]] = {}
        for position, (case_id, _) in enumerate(keys):
            by_case.setdefault(case_id, []).append(position)
        if len(by_case) == 1 and not resident:  # one case (a round's reads): its rows are the result, no second copy
            return self.get(keys[0][0], [z for _, z in keys]).to(device)
        out: torch.Tensor | None = None
        for case_id, positions in by_case.items():
            zs = [keys[i][1] for i in positions]
            if resident:
                table, where = self._on_device(case_id, device)
                if any(z not in where for z in zs):
                    self.get(case_id, zs)  # raises the cache's own error
                rows = table[[where[z] for z in zs]].float()
            else:
                rows = self.get(case_id, zs).to(device)
            if out is None:
                out = rows.new_empty(len(keys), *rows.shape[1:])
            out[positions] = rows
        return out if out is not None else torch.empty(0)

    def _on_device(self, case_id: str, device: str) -> tuple[torch.Tensor, dict[int, int]]:
        if (case_id, device) not in self._resident:
            zs = self.slices(case_id)
            table = self.get(case_id, zs).to(device=device, dtype=torch.float16)  # stored as fp16: lossless
            self._resident[(case_id, device)] = (table, {z: row for row, z in enumerate(zs)})
        return self._resident[(case_id, device)]

    def check_decoder(self, backend: Any) -> None:
        """Refuse a decoder backend of another model or checkpoint than the one these embeddings came from."""
        fp = self.fingerprint
        if fp["model"] != backend.model or fp["checkpoint_sha256"] != backend.encoder_checkpoint_sha256:
            raise UserError(f"cache {self.root} holds {fp['model']} embeddings of another checkpoint than the "
                            f"decoder's ({backend.model})")

    def verify(self) -> list[str]:
        """Full check of every shard (sizes and checksums); returns the problems found."""
        problems = []
        for shards in self._shards.values():
            for shard in shards:
                try:
                    self._map(shard)
                except UserError as exc:
                    problems.append(str(exc))
        return problems
