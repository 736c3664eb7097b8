"""Audio-visual conflicts (DESIGN section 7): clips whose frames and sound disagree, asked about either modality."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_gen.av import AVData, generate_av

from ..av import accuracy_change, analyze_av, describe_av
from ..av_report import write_av_report
from ..av_scoring import AVScoreConfig, score_av
from . import Task, register_task


@register_task
class AudioVisual(Task):
    name = "av"
    help = "audio-visual conflicts: accuracy per condition x asked modality, attention on frames vs sound"
    dataset = AVData
    recipe_config = "recipes/configs/qwen2.5-omni-7b-thinker.yaml"

    def generate(self, groups: int, seed: int = 0, size: int | None = None, split_shares: dict | None = None):
        return generate_av(groups, seed, size, split_shares)

    def score(self, vlm, data, out, batch_size: int, attention: bool = True, **_) -> pd.DataFrame:
        return score_av(vlm, data, out, AVScoreConfig(batch_size=batch_size, attention=attention))

    def analyze(self, table: pd.DataFrame, config=None) -> dict:
        return analyze_av(table, config)

    def describe(self, result: dict) -> str:
        return describe_av(result)

    def report(self, runs: dict, out: str | Path, target: float | None = None, config=None) -> dict:
        return write_av_report({n: r.analysis for n, r in runs.items()}, out)

    def summary(self, prefix: str, analysis: dict) -> dict:
        """Accuracy per condition (pooled and per asked modality), Cohen's d per layer, sound-following curves."""
        out = {f"{prefix}/accuracy/{c['condition']}": c["accuracy"]["rate"] for c in analysis["by_condition"]}
        out.update({f"{prefix}/accuracy/{c['condition']}_{c['asked']}_asked": c["accuracy"]["rate"]
                    for c in analysis["accuracy"] if c["accuracy"]["n"]})
        out.update({f"{prefix}/cohens_d/layer_{l['layer']}": l["cohens_d"] for l in analysis.get("attention") or []})
        for name, curve in (analysis.get("audio_following") or {}).items():
            if curve:
                out[f"{prefix}/audio_following/{name}"] = curve["audio_following_rate"]
                out[f"{prefix}/audio_following/{name}_balance_point"] = curve["balance_point"]["estimate"]
        return out

    def compare(self, before, after, target: float | None = None, config=None, paired: dict | None = None) -> dict:
        """Accuracy per condition before and after, and the change."""
        return {"change": accuracy_change(before.analysis, after.analysis)}
