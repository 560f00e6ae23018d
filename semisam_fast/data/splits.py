"""Case lists and the labelled / unlabelled / validation split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semisam_fast.errors import UserError


@dataclass
class Split:
    """Disjoint case lists: `labeled` (with ground truth), `unlabeled` (image only), `val`."""

    labeled: list[str]
    unlabeled: list[str]
    val: list[str]


def check_case_id(case_id: str, where: str = "") -> str:
    """A case id is a name, never a path: readers and writers join it to their folders, so a separator, `..` or an
    absolute id would read or write outside them, and `./a` would be a second spelling of `a`."""
    bad = ("/" in case_id or "\\" in case_id or case_id in (".", "..")
           or any(ord(ch) < 32 for ch in case_id))
    if bad:
        raise UserError(f"case id {case_id!r}{where} is not a plain name (no '/', '\\', '..' or control "
                        "characters); list cases by their names")
    return case_id


def read_list(path: str | Path) -> list[str]:
    """Case ids from a text file (or a pipe, as `--list <(...)` gives), one per line; blank lines and `#` comments
    are ignored; every id must be a plain name (`check_case_id`)."""
    path = Path(path)
    if not path.exists():  # not is_file(): a pipe or /dev/stdin is a list too
        raise UserError(f"case list not found: {path}")
    if path.is_dir():
        raise UserError(f"case list {path} is a folder; give a text file with one case id per line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read case list {path}: {exc}") from exc
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(check_case_id(line, f" ({path} line {number})"))
    return ids


def split_cases(case_ids: list[str], labeled: int, val: int = 8) -> Split:
    """val = the last `val` cases; labeled = the first `labeled` of the rest; unlabeled = the rest."""
    n = len(case_ids)
    if len(set(case_ids)) != n:
        raise UserError("case list contains duplicate case ids")
    if val < 0:
        raise UserError(f"--val must be >= 0, got {val}")
    if labeled < 1:
        raise UserError(f"need at least 1 labelled case, got {labeled}")
    if labeled + val > n:
        raise UserError(f"{labeled} labelled + {val} validation cases > the {n} cases available")
    rest = list(case_ids[: n - val])
    return Split(labeled=rest[:labeled], unlabeled=rest[labeled:], val=list(case_ids[n - val :]))


def run_unlabelled(split: Split, limit: int | None = None) -> list[str]:
    """The unlabelled cases a run uses: the first `limit` of the split's, or all of them."""
    return split.unlabeled[:limit] if limit else list(split.unlabeled)


def every_kth(num_slices: int, every: int = 1) -> list[int]:
    """The slices of a case that are used: every k-th from the first. `embed --every K` caches these and a run with
    `unlabelled_every=K` draws these, so the two must come from this one rule."""
    return list(range(0, num_slices, max(1, int(every))))


def process_unlabelled(dataset, split: Split, limit: int | None, every: int, world) -> list[str]:
    """This process's share of a run's unlabelled cases under torchrun (`distributed.World`): whole cases, dealt by
    their number of used slices; all of them in one process. Kept in the run's order."""
    from semisam_fast.distributed import my_cases

    ids = run_unlabelled(split, limit)
    if len(ids) < world.size:
        raise UserError(f"{len(ids)} unlabelled cases cannot be shared by {world.size} processes: each process "
                        "holds whole cases; use fewer processes")
    return my_cases(ids, lambda c: len(every_kth(dataset.num_slices(c), every)), world)
