"""Measure a model from Python: `measure(...)` returns a `Measurement`; the `measure` command wraps it.

    from eval import measure
    base = measure("organism", groups=60, dataset_seed=7)
    print(base)                      # balance point with its interval, TFR/VFR, analysed conflicts
    base.curve                       # binned P(text-following) against dH_rel, with Wilson intervals
    base.samples                     # the per-sample table every number is computed from
    base.report("reports/base")      # figures, report.html, summary.json

Nothing is written to disk unless `output_dir` (or `report(dir)`) is given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data_gen.files import check_output_dir, read_json, write_text

from .analysis import AnalysisConfig
from .models import VLM, ModelArguments, load_from_args, load_vlm
from .models.vlm import check_model_args
from .prepare import cached_dataset
from .processes import holding
from .report import unimodal_accuracy
from .tasks import Task, get_task


@dataclass
class Measurement:
    """One model's measurement: the analysis (`analysis`, as analysis.json holds it) and the per-sample table it was
    computed from (`samples`)."""
    name: str
    analysis: dict
    samples: pd.DataFrame = field(repr=False)
    info: dict = field(default_factory=dict, repr=False)
    task: str = "colors"

    @property
    def balance_point(self) -> dict:
        """estimate, ci (95 %), leans, direction, description; estimate is None when the curve never crosses 0.5."""
        return self.analysis.get("balance_point") or {}

    @property
    def ability_gate(self) -> str | None:
        """None where the model answers each modality alone above chance; else the one line saying which modality
        fails, its accuracy and chance (then there is no balance point unless it was forced)."""
        return (self.analysis.get("ability") or {}).get("line")

    @property
    def tfr(self) -> float | None:
        return self.analysis.get("following", {}).get("tfr")

    @property
    def vfr(self) -> float | None:
        return self.analysis.get("following", {}).get("vfr")

    @property
    def curve(self) -> pd.DataFrame:
        """The following curve of the main uncertainty index: one row per dH_rel bin (centre, rate, its interval, n)."""
        if "curves" not in self.analysis:
            raise ValueError(f"the {self.task} task has no following curve")
        return pd.DataFrame(self.analysis["curves"][self.analysis["config"]["index"]].get("bins", {}))

    @property
    def oscillation(self) -> dict | None:
        """Mean logit-lens oscillation count in the ambiguous and the clear region, with intervals."""
        return self.analysis.get("oscillation")

    @property
    def accuracy(self) -> dict:
        """Image-only and text-only accuracy over all tiers."""
        return unimodal_accuracy(self.analysis) if "difficulty" in self.analysis else {}

    @property
    def accuracy_by_tier(self) -> pd.DataFrame:
        """Accuracy and mean entropy per visual tier (image only) and text tier (text only)."""
        frames = [pd.DataFrame(rows).assign(modality=side).rename(columns={"d_v": "tier", "d_t": "tier"})
                  for side, rows in self.analysis.get("difficulty", {}).items() if rows]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def to_pandas(self) -> pd.DataFrame:
        return self.samples

    def report(self, output_dir: str | Path, *others: "Measurement", target: float | None = None) -> Path:
        """figures, report.html and summary.json in `output_dir` for this measurement (and `others` beside it)."""
        runs = (self, *others)
        if len({m.task for m in runs}) > 1:
            raise ValueError(f"one report holds one task's runs; got {sorted({m.task for m in runs})}")
        get_task(self.task).report({m.name: m for m in runs}, output_dir, target)
        return Path(output_dir) / "report.html"

    def __str__(self) -> str:
        if not get_task(self.task).has_balance_point:
            return f"{self.name} ({self.task}):\n{get_task(self.task).describe(self.analysis)}"
        f, acc = self.analysis["following"], self.accuracy
        tfr = "n/a" if f["tfr"] is None else f"{f['tfr']:.3f} [{f['tfr_ci'][0]:.3f}, {f['tfr_ci'][1]:.3f}]"
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
        return (f"{self.name}: balance point {self.balance_point.get('description', 'n/a')}; TFR {tfr}; "
                f"image-only / text-only accuracy {pct(acc['visual'])} / {pct(acc['text'])}; "
                f"{self.analysis['counts']['analysed']} conflicts analysed")


def measure(model: str | Path | VLM | ModelArguments = "organism", data: str | Path | Any = None, adapter: str | Path | None = None, *,
            task: str = "colors", groups: int = 100, dataset_seed: int = 0, image_size: int | None = None,
            split: str = "test", rows: str = "all",
            batch_size: int = 32, analysis: AnalysisConfig | None = None, output_dir: str | Path | None = None,
            name: str | None = None, device: str | None = None, dtype: str = "auto",
            steering: str | Path | None = None, instruction: str | None = None,
            **score_options) -> Measurement | None:
    """Score a model on a task's data and analyse it.

    model: a shipped organism name, a hub id, a local path, the commands' ModelArguments, or an already loaded VLM
    (with the last two, `adapter` must be None).
    data: a dataset folder (`modality-align data ...`), a dataset object, or None for `groups` groups of `task` from
    `dataset_seed` at `image_size` px (default: the task's), rendered once into the data cache (eval/prepare.py).
    rows: 'all', or 'conflicts' for only the rows a balance point reads.
    task: a registered task (eval.tasks.supported_tasks(): colors, attributes, jsonl, recognition, av, ...).
    split: the split(s) scored, comma-separated, or 'all'.
    steering: a steering vector (steering.safetensors or its folder, eval/models/steering.py) added to the image + text
    prompts; instruction: text put before the question of the image + text prompts.
    output_dir: where samples.parquet, run.json and analysis.json go (and where a re-run resumes); None keeps
    everything in memory.
    score_options: the task's scoring options (colours: lens, shard_inputs, share_prefix; recognition and av:
    attention).
    Under `accelerate launch` every process scores its shards and only the main one returns the Measurement.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = get_task(task)
    if rows not in ("all", "conflicts") or (rows == "conflicts" and not spec.has_balance_point):
        raise ValueError(f"rows={rows!r}: use 'all', or 'conflicts' on a task with a balance point")
    given = {k: v for k, v in (("adapter", adapter), ("steering", steering), ("instruction", instruction)) if v}
    if isinstance(model, (VLM, ModelArguments)) and given:
        raise ValueError(f"{' and '.join(given)} apply to a model named here: pass the model's name or path, not a "
                         f"loaded VLM or ModelArguments (which has its own)")
    if steering is not None and not spec.has_balance_point:
        raise ValueError(f"steering acts on the image + text prompts of a task with a balance point; the {task} task "
                         f"scores other prompts")
    if output_dir is not None:
        check_output_dir(output_dir)
    if isinstance(model, (str, Path)):  # a bad name, adapter or vector fails before any data is rendered
        check_model_args(ModelArguments(model_name_or_path=str(model), adapter=None if adapter is None else str(adapter),
                                        steering=None if steering is None else str(steering)))
    elif isinstance(model, ModelArguments):
        check_model_args(model)
    with holding(output_dir):
        dataset = load_data(spec, data, groups, dataset_seed, image_size, split)  # bad data fails before the model loads
        if rows == "conflicts":
            dataset = dataset.conflicts()
        spec.check(dataset)
        if isinstance(model, VLM):
            vlm = model
        elif isinstance(model, ModelArguments):
            vlm = load_from_args(model, device=device)
        else:
            vlm = load_vlm(str(model), dtype=dtype, device=device, adapter=None if adapter is None else str(adapter),
                           steering=None if steering is None else str(steering), instruction=instruction)
        seed = (analysis or AnalysisConfig()).seed
        table = spec.score(vlm, dataset, output_dir, batch_size, seed=seed, **score_options)
        if table is None:  # a process other than the main one under `accelerate launch`: the main one analyses
            return None
        text = json.dumps(spec.analyze(table, analysis), indent=2, default=float)
        result = json.loads(text)  # as analysis.json reads back
        info = {"model": vlm.name, "adapter": None if adapter is None else str(adapter),
                "steering": None if steering is None else str(steering), "instruction": instruction,
                "dataset_fingerprint": getattr(dataset, "fingerprint", None)}
        if output_dir is not None:
            info = {**read_json(Path(output_dir) / "run.json"), "path": str(output_dir)}
            write_text(Path(output_dir) / "analysis.json", text)
        return Measurement(name or vlm.name, result, table, info, task)


def load_data(task: Task, data: str | Path | Any, groups: int, dataset_seed: int, image_size: int | None, split: str):
    """The rows to score: a saved or given dataset, or generated groups of `task` (from the data cache);
    restricted to `split`."""
    if data is None:
        dataset = cached_dataset(task, groups, dataset_seed, image_size)
    elif isinstance(data, (str, Path)):
        dataset = task.load(data)
    else:
        dataset = data
    return dataset if split == "all" else dataset.split(split.split(","))
