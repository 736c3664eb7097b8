"""Align a model from Python: `align(...)` runs the recipe and returns an `AlignmentRun`.

    from align import align
    run = align("organism", target_balance_point=0.0, output_dir="outputs/notebook")
    print(run.guarantee)             # realized balance point, target inside its interval?, paired shift
    run.before, run.after            # Measurements on the held-out groups, read by the same code as `measure`
    run.release                      # the adapter + model card + report folder to load or push

Keyword options are the recipe's flags (`modality-align align --help`): the method's (AlignArguments), the
model's (ModelArguments) and transformers' TrainingArguments, routed by name.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_gen.files import read_json
from eval.api import Measurement
from eval.models import ModelArguments

from .arguments import TRAINING_DEFAULTS, AlignArguments


@dataclass
class AlignmentRun:
    """A finished alignment run: `result` is its alignment.json; `release` the bundle a consumer loads."""
    result: dict
    output_dir: Path
    release: Path

    @property
    def guarantee(self) -> str:
        """The line the run guarantees (realized balance point, target in its interval, paired shift)."""
        g = self.result.get("guarantee")
        return g["description"] if g else "no balance-point guarantee for this task"

    @property
    def target_balance_point(self) -> float:
        return self.result["target_balance_point"]

    def _measurement(self, name: str) -> Measurement:
        run = self.output_dir / "runs" / name
        return Measurement(name, json.loads((run / "analysis.json").read_text()),
                           pd.read_parquet(run / "samples.parquet"), read_json(run / "run.json"))

    @property
    def before(self) -> Measurement:
        return self._measurement("base")

    @property
    def after(self) -> Measurement:
        return self._measurement("aligned")

    def __str__(self) -> str:
        b, a = self.result["base"]["balance_point"], self.result["aligned"]["balance_point"]
        return (f"balance point: {b['description']} -> {a['description']} (target {self.target_balance_point:+.2f})\n"
                f"{self.guarantee}\nrelease: {self.release}")


def split_options(options: dict) -> tuple[dict, dict, dict]:
    """Route keyword options to AlignArguments, ModelArguments and TrainingArguments by field name."""
    from transformers import TrainingArguments
    owners = [AlignArguments, ModelArguments, TrainingArguments]
    routed: list[dict] = [{}, {}, {}]
    for key, value in options.items():
        owner = next((k for k, cls in enumerate(owners) if key in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            raise ValueError(f"unknown option {key!r}; options are the flags of `modality-align align --help`")
        routed[owner][key] = value
    return routed[0], routed[1], routed[2]


def align(model: str = "organism", target_balance_point: float | None = 0.0, method: str = "soft", *,
          output_dir: str | Path, report_to: str = "none", **options) -> AlignmentRun | None:
    """Move `model`'s balance point to `target_balance_point` with `method` ('soft', 'hard', 'blind_sft', 'dpo';
    'steer', 'steer_uncertainty', 'prompt' train nothing; 'mixed' trains conflict recognition), measured before and
    after on held-out groups. Everything goes to `output_dir`; the release
    bundle (adapter, model card, report) is `run.release`. Under `accelerate launch` only the main process returns
    the run."""
    from transformers import TrainingArguments

    from .recipe import run_alignment
    align_opts, model_opts, training_opts = split_options(options)
    if "balance_shift" in align_opts:
        target_balance_point = None
    align_args = AlignArguments(target_balance_point=target_balance_point, method=method, **align_opts)
    model_args = ModelArguments(model_name_or_path=model, **model_opts)
    training = TrainingArguments(**{**TRAINING_DEFAULTS, "output_dir": str(output_dir), "report_to": report_to,
                                    **training_opts})
    result = run_alignment(align_args, model_args, training)
    if result is None:
        return None
    return AlignmentRun(result, Path(output_dir), Path(result["release"]))
