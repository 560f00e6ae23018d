"""`build_trainer`: the data opened and split, SAM attached (cache or online), the run described; then `Trainer.run`
is `semisam-fast train`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..checkpoints import keep_run_record
from ..data import every_kth, process_unlabelled, run_unlabelled
from ..distributed import World
from ..errors import UserError
from ..nets import student_geometry
from ..provenance import describe
from ..choices import DEFAULT_MODEL
from .config import TrainConfig
from .loop import Trainer
from .methods import METHODS


def build_trainer(config: TrainConfig, data: str | Path, list_file: str | Path | None, labeled: int, val: int,
                  run_dir: str | Path, cache: str | Path | None = None, backend: str = "torch",
                  artefact: str | Path | None = None, checkpoint: str | Path | None = None,
                  device: str = "cpu", tensorboard: bool = True, world: World | None = None,
                  precision: str | None = None) -> Trainer:
    """Open the data, split it, attach SAM (cache or online) and describe the run in <run_dir>/run.json.
    `world`: this process's place under torchrun (each process holds only its share of the unlabelled cases).
    `precision`: the SAM decoder's (`create_backend`: torch's dtype, openvino's compute precision, the export
    onnx / engine open)."""
    from ..backends import create_backend
    from ..cache import EmbeddingCache
    from ..data import open_dataset, split_cases
    from .sam_term import SamTeacher

    world = world or World()
    dataset = open_dataset(data, list_file)
    split = split_cases(dataset.case_ids, labeled, val)
    config = with_classes(config, dataset.label_values)
    if config.sam_prompt_run is not None:  # recorded as an absolute path: a resume from elsewhere finds the same run
        config = replace(config, sam_prompt_run=str(Path(config.sam_prompt_run).resolve()))
    run_dir = Path(run_dir)
    sam = None
    if METHODS[config.method].needs_sam:
        if config.sam_online:
            model = DEFAULT_MODEL
            if cache is not None:
                model = EmbeddingCache(cache).fingerprint["model"]
            runtime = create_backend(backend, model, checkpoint, artefact, device, precision)
            mine = process_unlabelled(dataset, split, config.unlabelled_cases, config.unlabelled_every, world)
            images = {cid: dataset.load(cid, with_label=False).image for cid in mine}
            sam = SamTeacher(runtime, None, config.targets.margin, online_images=images)
        else:
            if cache is None:
                raise UserError(f"--method {config.method} needs --cache DIR (from `semisam-fast embed`) or "
                                "--sam-online")
            store = EmbeddingCache(cache)
            runtime = create_backend(backend, store.fingerprint["model"], checkpoint, artefact, device, precision)
            store.check_decoder(runtime)
            _check_cache_covers(store, dataset, split, config)
            sam = SamTeacher(runtime, store, config.targets.margin)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"data": str(Path(data).resolve()), "list": str(Path(list_file).resolve()) if list_file else None,
              "labeled": labeled, "val": val, "labeled_cases": split.labeled, "unlabeled_cases": split.unlabeled,
              "val_cases": split.val, "cache": str(cache) if cache else None, "config": config.as_dict(),
              "session": describe()}
    defaults = TrainConfig().as_dict()  # what a setting newer than the run's record meant before it existed
    keep_run_record(run_dir, record, write=False, defaults=defaults)  # every process checks the old record ...
    world.barrier()  # ... before rank 0 replaces it
    keep_run_record(run_dir, record, write=world.leader, defaults=defaults)
    return Trainer(config, dataset, split, run_dir, sam, device, tensorboard, world)


def with_classes(config: TrainConfig, label_values: tuple[int, ...]) -> TrainConfig:
    """The config with a student of as many classes as the data has (background and each label value; a binary data
    set leaves the config as it is, so its runs stay bit-identical). SemiSAM's SAM term is binary for now."""
    if tuple(label_values) == (1,):
        return config
    if tuple(label_values) != tuple(range(1, len(label_values) + 1)):
        raise UserError(f"label values {list(label_values)} are not 1..{len(label_values)} (nnU-Net's consecutive "
                        "labels); renumber them in the label files and dataset.json")
    if METHODS[config.method].needs_sam:
        raise UserError(f"--method {config.method} prompts SAM for one foreground; this data set has "
                        f"{len(label_values)} labels: train it with sup, mt or uamt (pseudo-label it per class with `pseudo-label`)")
    return replace(config, student_kwargs={**config.student_kwargs, "n_classes": len(label_values) + 1})


def _check_cache_covers(store, dataset, split, config: TrainConfig) -> None:
    """Every unlabelled slice the run can draw must be cached, as far as the student's geometry needs it (2D: all
    of them; 3D patches skip uncached slices by design)."""
    geometry = student_geometry(config.as_dict())
    for case_id in run_unlabelled(split, config.unlabelled_cases):
        wanted = every_kth(dataset.num_slices(case_id), config.unlabelled_every)
        missing = geometry.uncached(store.slices(case_id), wanted)
        if missing:
            raise UserError(f"cache lacks {len(missing)} slices of unlabelled case {case_id}; run `semisam-fast "
                            f"embed --every {config.unlabelled_every}` over the unlabelled cases first")
