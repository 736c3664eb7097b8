"""Conflict recognition (DESIGN section 8): does the model say its evidence contradicts itself, by where it sits?"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_gen import generate
from data_gen.recognition import recognition_from

from ..recognition import RecognitionConfig, analyze_recognition, check_recognition_data, describe, score_recognition
from ..recognition_report import recognition_report_results
from . import Task, register_task


@register_task
class Recognition(Task):
    name = "recognition"
    help = "is the evidence contradictory? recognition by evidence kind and attention imbalance R per layer"
    recipe_config = "recipes/configs/organism-mixed.yaml"
    # the recipe trains recognition and watches the colour balance point it must not move
    recipe_views = ("colors", "recognition")

    def derive(self, data):
        return recognition_from(data)

    def generate(self, groups: int, seed: int = 0, size: int | None = None, split_shares: dict | None = None):
        return generate("recognition", groups, seed, size, split_shares=split_shares)

    def check(self, data) -> None:
        check_recognition_data(data)

    def score(self, vlm, data, out, batch_size: int, attention: bool = True, **_) -> pd.DataFrame:
        return score_recognition(vlm, data, out, RecognitionConfig(batch_size=batch_size, attention=attention))

    def analyze(self, table: pd.DataFrame, config=None) -> dict:
        return analyze_recognition(table, getattr(config, "n_boot", 1000))

    def describe(self, result: dict) -> str:
        return describe(result)

    def report(self, runs: dict, out: str | Path, target: float | None = None, config=None) -> dict:
        tables = [r.samples for r in runs.values()]
        return recognition_report_results({n: r.analysis for n, r in runs.items()}, out,
                                          tables if len(tables) == 2 else None, getattr(config, "n_boot", 1000))

    def summary(self, prefix: str, analysis: dict) -> dict:
        """Per evidence kind, unimodal vs cross-modal, and R per layer."""
        out = {}
        for cell in analysis["by_evidence"]:
            key = f"{prefix}/recognition/{cell['evidence']}"
            out[key], out[f"{key}_false_alarm"] = cell["recognition"]["rate"], cell["false_alarm"]["rate"]
            out[f"{key}_balanced_accuracy"] = cell["balanced_accuracy"]
        for kind in ("unimodal", "cross_modal"):
            if analysis.get(kind):
                out[f"{prefix}/recognition/{kind}"] = analysis[kind]["recognition"]["rate"]
                out[f"{prefix}/recognition/{kind}_balanced_accuracy"] = analysis[kind]["balanced_accuracy"]
        for layer, cell in enumerate((analysis.get("imbalance") or {}).get("imbalance", [])):
            out[f"{prefix}/imbalance_R/layer_{layer}"] = cell["mean"]
        return out
