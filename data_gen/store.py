"""Storage of a conflict dataset: a `samples` table that references a shared `images` table.

Text tiers share their group's image, so each image is stored once (``images``) and rows
point to it by ``image_id``. Both are Hugging Face datasets (``save_to_disk``) with a Parquet
export beside them. Splits are by group: no group crosses splits.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from . import blind_readers
from .defaults import SPLIT_SHARES, image_size, split_shares as default_shares
from .files import atomic_path, read_json, write_json, write_text

log = logging.getLogger(__name__)

SAMPLE_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "image_id": datasets.Value("string"),
    "group": datasets.Value("int64"),
    "split": datasets.Value("string"),
    "task": datasets.Value("string"),
    "question": datasets.Value("string"),
    "text_context": datasets.Value("string"),
    "answer_visual": datasets.Value("string"),
    "answer_text": datasets.Value("string"),
    "d_v": datasets.Value("int64"),
    "d_t": datasets.Value("int64"),
    "text_tier": datasets.Value("string"),
    "condition": datasets.Value("string"),
    "target": datasets.Value("string"),
    "knowledge_object": datasets.Value("string"),
    "text_ambiguity": datasets.Value("float64"),
})
IMAGE_FEATURES = datasets.Features({
    "image_id": datasets.Value("string"),
    "image": datasets.Image(),
    "target_box": datasets.Sequence(datasets.Value("int64")),
    "n_distractors": datasets.Value("int64"),
    "occlusion_share": datasets.Value("float64"),
    "target_size": datasets.Value("float64"),
    "target_visible": datasets.Value("float64"),
})


def check_split_shares(shares: dict[str, float]) -> dict[str, float]:
    """Shares of train / validation / test, each > 0 and summing to 1 (an error names what is off)."""
    if set(shares) != set(SPLIT_SHARES) or any(not v > 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        raise ValueError(f"split_shares must give each of {list(SPLIT_SHARES)} a share > 0, summing to 1; got {shares}")
    return {name: float(shares[name]) for name in SPLIT_SHARES}


def assign_splits(groups: list[int], seed: int, shares: dict[str, float] | None = None) -> dict[int, str]:
    """Deterministic split per group, with `shares` (default SPLIT_SHARES)."""
    shares = check_split_shares(shares) if shares else SPLIT_SHARES
    order = np.random.default_rng([seed, 7]).permutation(sorted(set(groups)))
    bounds = np.cumsum([round(s * len(order)) for s in shares.values()])
    names = list(shares)
    return {int(g): names[int(np.searchsorted(bounds, i, side="right"))] if i < bounds[-1] else names[-1]
            for i, g in enumerate(order)}


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


@dataclass
class ConflictData:
    """A conflict dataset: rows (`samples`) and the images they reference (`images`)."""
    samples: datasets.Dataset
    images: datasets.Dataset
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self._image_index = None
        self._decoded: dict[str, Image.Image] = {}

    def split(self, name: str | list[str]) -> "ConflictData":
        return self._with_rows(select_splits(self.samples, name))

    def conflicts(self) -> "ConflictData":
        """Only the conflict rows: all the balance point reads (no baselines or controls: 59 of a group's 103 inputs)."""
        return self._with_rows(self.samples.filter(lambda c: c == "conflict", input_columns="condition"))

    def _with_rows(self, samples: datasets.Dataset) -> "ConflictData":
        """The same images (and their decoded cache) with a subset of the rows."""
        sub = ConflictData(samples, self.images, self.info)
        sub._image_index, sub._decoded = self._image_index, self._decoded
        return sub

    def image(self, image_id: str) -> Image.Image:
        """The decoded image; small canvases are kept decoded since text tiers reuse them."""
        if image_id in self._decoded:
            return self._decoded[image_id]
        if self._image_index is None:
            self._image_index = {k: i for i, k in enumerate(self.images["image_id"])}
        if image_id not in self._image_index:
            raise KeyError(f"image {image_id!r} is not in this dataset's images table")
        im = self.images[self._image_index[image_id]]["image"].convert("RGB")
        if im.width * im.height <= 128 * 128 and len(self._decoded) < 50_000:
            self._decoded[image_id] = im
        return im

    @property
    def fingerprint(self) -> str:
        return self.info.get("fingerprint", "")

    def save(self, out: str | os.PathLike) -> Path:
        return save_tables(out, {"samples": self.samples, "images": self.images}, self.info)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConflictData":
        tables, info = load_tables(path, ("samples", "images"),
                                   f"create one with `python -m data_gen colors --output_dir {path}`")
        return cls(tables["samples"], tables["images"], info)


def select_splits(samples: datasets.Dataset, name: str | list[str]) -> datasets.Dataset:
    """The rows of the named split(s); an unknown name is an error that lists the splits there are."""
    names = [name] if isinstance(name, str) else list(name)
    unknown = set(names) - set(samples.unique("split"))
    if unknown:
        raise ValueError(f"split(s) {sorted(unknown)} not in this dataset; it has {sorted(samples.unique('split'))}")
    return samples.filter(lambda s: s in names, input_columns="split")


def save_tables(out: str | os.PathLike, tables: dict[str, datasets.Dataset], info: dict) -> Path:
    """Each table with `save_to_disk` and as Parquet beside it; info.json gets every file's checksum (checked when
    the dataset loads), the Parquet files' fingerprint, the row counts and the split sizes (of `samples`). The
    folder is written beside `out` and renamed into place: a crash leaves the old dataset or none."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        (tmp / "parquet").mkdir(parents=True)
        digest = hashlib.sha256()
        for name, table in tables.items():
            table.save_to_disk(str(tmp / name))
            table.to_parquet(str(tmp / "parquet" / f"{name}.parquet"))
            digest.update((tmp / "parquet" / f"{name}.parquet").read_bytes())
        info["fingerprint"] = digest.hexdigest()[:16]
        info["checksums"] = checksums(tmp)
        info.update({"rows" if name == "samples" else name: len(table) for name, table in tables.items()})
        info["splits"] = {s: tables["samples"]["split"].count(s) for s in SPLIT_SHARES}
        write_json(tmp / "info.json", info)
        if "blind_readers" in info:
            write_data_report(tmp, info)
    return out


def checksums(folder: Path) -> dict[str, str]:
    """sha256 (16 hex digits) of each data file under `folder`, by its relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ("info.json", "data_report.md"))
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}


# files this process checked, by (path, size, modification time): a dataset loaded twice (the input checks, then
# the run) is hashed once
_VERIFIED: set[tuple] = set()


def file_state(folder: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file())


def check_integrity(path: Path, info: dict, hint: str) -> None:
    """The files are the ones info.json recorded (each file's checksum; the Parquet fingerprint for datasets saved
    before checksums were): a truncated or altered file is named."""
    state = file_state(path)
    if state in _VERIFIED:
        return
    verify_files(path, info, hint)
    _VERIFIED.add(state)


def verify_files(path: Path, info: dict, hint: str) -> None:
    damaged = f"; it was changed or truncated after it was saved: regenerate the dataset ({hint})"
    if "checksums" in info:
        for name, expected in info["checksums"].items():
            file = path / name
            if not file.is_file():
                raise ValueError(f"{file} is missing{damaged}")
            if hashlib.sha256(file.read_bytes()).hexdigest()[:16] != expected:
                raise ValueError(f"{file} does not match its checksum in {path / 'info.json'}{damaged}")
    elif info.get("fingerprint") and (path / "parquet").is_dir():
        digest = hashlib.sha256()
        parts = sorted((path / "parquet").glob("*.parquet"), key=lambda p: ("samples", "images", "clips").index(p.stem)
                       if p.stem in ("samples", "images", "clips") else 9)
        for part in parts:
            digest.update(part.read_bytes())
        if digest.hexdigest()[:16] != info["fingerprint"]:
            raise ValueError(f"{path / 'parquet'} does not match the fingerprint in {path / 'info.json'}{damaged}")


def write_data_report(out: Path, info: dict) -> Path:
    """`data_report.md`: what the dataset holds and what its blind readers score beside chance, per tier."""
    lines = [f"# Data report: {info.get('task', 'dataset')} ({info.get('rows')} rows, {info.get('groups')} groups, "
             f"seed {info.get('seed')}, fingerprint {info.get('fingerprint')})", "",
             "## Blind readers", "",
             "Accuracy of readers that answer without the evidence the task asks about, beside a uniform pick "
             "among the answers shown (docs/method.md, \"Blind readers\").", "",
             *blind_readers.report_lines(info["blind_readers"])]
    path = out / "data_report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def samples_frame(samples: datasets.Dataset) -> pd.DataFrame:
    """A dataset's rows as a pandas table with one Arrow chunk per column. `Dataset.to_pandas()` of a split or
    filter gives one chunk per row, which makes every `.iloc` a ~0.1 s take (10-20 % of scoring time)."""
    return samples.with_format("arrow")[:].combine_chunks().to_pandas()


def load_tables(path: str | os.PathLike, names: tuple[str, ...], hint: str) -> tuple[dict, dict]:
    """The named tables of a saved dataset, checked against info.json. Loading writes nothing into the folder: the
    rows are held in memory (filters and maps would otherwise put cache files beside them), the media tables are
    memory-mapped."""
    path = Path(path)
    if not all((path / name).exists() for name in names):
        raise FileNotFoundError(f"{path} is not a conflict dataset (no {'/, '.join(names)}/); {hint}")
    info = read_json(path / "info.json", f"regenerate the dataset ({hint})") if (path / "info.json").exists() else {}
    check_integrity(path, info, hint)
    info["path"] = str(path.resolve())
    tables = {}
    for name in names:
        try:
            tables[name] = datasets.load_from_disk(str(path / name), keep_in_memory=name == "samples")
        except Exception as e:  # pyarrow and datasets raise many kinds; none names the file
            raise ValueError(f"{path / name} cannot be read ({type(e).__name__}: {e}); regenerate the dataset "
                             f"({hint})") from e
    return tables, info


def _render(job):
    fn, args = job
    images, rows = fn(args)
    for im in images:
        im["image"] = {"bytes": png_bytes(im["image"]), "path": None}
    return images, rows


def generate(task: str, groups: int, seed: int = 0, size: int | None = None, workers: int | None = None,
             split_shares: dict[str, float] | None = None, only_split: str | None = None) -> ConflictData:
    """Render `groups` groups of the task with a progress bar: 'colors', 'attributes', or conflict recognition
    derived from either ('recognition' = from colours, 'recognition-attributes'; data_gen/recognition.py).
    `size`: the image side (default the task's, data_gen/defaults.py); `split_shares`: each split's share of the
    groups (default the task's). `only_split`: render only that split's groups, identical to
    `generate(...).split(only_split)` (every group is rendered from its own seed) at a fraction of the time, e.g. a
    build's held-out test groups."""
    from .attributes import render_attribute_group
    from .colors import render_color_group
    if task.startswith("recognition"):
        from .recognition import recognition_from
        base = {"recognition": "colors", "recognition-attributes": "attributes"}.get(task)
        if base is None:
            raise ValueError(f"unknown task {task!r}; use recognition or recognition-attributes")
        return recognition_from(generate(base, groups, seed, size, workers, split_shares, only_split))
    render = {"colors": render_color_group, "attributes": render_attribute_group}
    if task not in render:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(render)} or recognition[-attributes]")
    if groups < 1:
        raise ValueError(f"--groups must be >= 1, got {groups}")
    size = size or image_size(task)
    split_shares = check_split_shares(split_shares or default_shares(task))
    splits = assign_splits(list(range(groups)), seed, split_shares)
    if only_split is not None and only_split not in set(splits.values()):
        raise ValueError(f"only_split={only_split!r} has no groups; use one of {sorted(set(splits.values()))}")
    jobs = [(render[task], (g, seed, size)) for g in range(groups) if only_split in (None, splits[g])]
    workers = workers or min(os.cpu_count() or 1, len(jobs))
    images, rows = [], []
    bar = dict(total=len(jobs), desc=f"rendering {task}", unit="group")
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_render, jobs, chunksize=4), **bar))
    else:
        results = [_render(j) for j in tqdm(jobs, **bar)]
    for ims, rs in results:
        images += ims
        rows += [{**r, "split": splits[r["group"]]} for r in rs]
    image_cols = {k: [im.get(k) for im in images] for k in IMAGE_FEATURES}
    readers = blind_readers.reader_table(pd.DataFrame([im["readers"] for im in images]), "d_v")
    return ConflictData(
        datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in SAMPLE_FEATURES}, features=SAMPLE_FEATURES),
        datasets.Dataset.from_dict(image_cols, features=IMAGE_FEATURES),
        {"task": task, "groups": groups, "seed": seed, "size": size,
         "blind_readers": blind_readers.summary(readers, "d_v"),
         "split_shares": split_shares,
         **({"only_split": only_split} if only_split else {})},
    )
