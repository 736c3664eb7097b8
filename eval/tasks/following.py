"""Modality following on image + text conflicts: the measurement the colour, attribute and imported tasks share.

Scores image only, text only and image + text at the answer position (entropy, lens), analyses the following curve,
its balance point, TFR/VFR, oscillation and accuracy by tier (eval/analysis.py), reports them (eval/report.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analysis import (AnalysisConfig, alignment_guarantee, analyze, describe_fit_check, describe_guarantee,
                        paired_runs)
from ..report import headline, report_results
from ..scoring import ScoreConfig, score_dataset
from . import Task


class ModalityFollowing(Task):
    has_balance_point = True
    parallel_scoring = True

    def check(self, data) -> None:
        if "evidence" in data.samples.column_names:
            path = data.info.get("path", "DATA")
            raise ValueError(f"{path} is a conflict-recognition dataset; measure it with `python -m eval recognition "
                             f"--data {path} ...` (modality-align recognition; task='recognition' in measure())")

    def score(self, vlm, data, out, batch_size: int, lens: bool = True, shard_inputs: int = 256,
              share_prefix: bool = True, seed: int | None = None) -> pd.DataFrame | None:
        config = ScoreConfig(batch_size=batch_size, lens=lens, shard_inputs=shard_inputs, share_prefix=share_prefix)
        return score_dataset(vlm, data, out, config, seed=seed)

    def analyze(self, table: pd.DataFrame, config: AnalysisConfig | None = None) -> dict:
        return analyze(table, config)

    def describe(self, result: dict) -> str:
        bp, f = result["balance_point"], result["following"]
        lines = [f"balance point: {bp['description']}"]
        if f["tfr"] is not None:
            mono = result["monotonicity"]
            lines.append(f"TFR {f['tfr']:.3f} [{f['tfr_ci'][0]:.3f}, {f['tfr_ci'][1]:.3f}]   VFR {f['vfr']:.3f}   "
                         f"analysed {result['counts']['analysed']} conflicts, {f['n']} text- or vision-following   "
                         f"monotonicity (Spearman) {'n/a' if mono is None or mono != mono else f'{mono:+.2f}'}")
        if result.get("fit_check"):
            lines.append(describe_fit_check(result["fit_check"]))
        osc = result.get("oscillation")
        if osc and osc["ambiguous"]["mean"] is not None and osc["clear"]["mean"] is not None:
            lines.append(f"oscillation: ambiguous {osc['ambiguous']['mean']:.2f} (n={osc['ambiguous']['n']}), "
                         f"clear {osc['clear']['mean']:.2f} (n={osc['clear']['n']})")
        return "\n".join(lines)

    def report(self, runs: dict, out: str | Path, target: float | None = None, config=None) -> dict:
        """The runs side by side; two runs are also compared as a pair (eval.analysis.paired_runs)."""
        paired = None
        if len(runs) == 2:
            (first, a), (second, b) = runs.items()
            prints = [m.info.get("dataset_fingerprint") for m in (a, b)]
            paired = paired_runs(a.samples, b.samples, b.analysis, target, config or AnalysisConfig(), (first, second),
                                 same_data=None in prints or prints[0] == prints[1])
        return report_results({n: r.analysis for n, r in runs.items()}, out, {n: r.info for n, r in runs.items()},
                              target, paired)

    def summary(self, prefix: str, analysis: dict) -> dict:
        h = headline(analysis)
        bp = h["balance_point"] or {}
        out = {f"{prefix}/balance_point": bp.get("estimate"), f"{prefix}/crosses": bp.get("crosses"),
               f"{prefix}/curve_direction": bp.get("direction"), f"{prefix}/leans": bp.get("leans"),
               f"{prefix}/tfr": h["tfr"], f"{prefix}/vfr": h["vfr"], f"{prefix}/n_analysed": h["n_analysed"],
               f"{prefix}/n_following": h["n_following"], f"{prefix}/monotonicity": h["monotonicity"],
               f"{prefix}/unimodal_accuracy_visual": h["unimodal_accuracy"]["visual"],
               f"{prefix}/unimodal_accuracy_text": h["unimodal_accuracy"]["text"]}
        if bp.get("ci"):
            out[f"{prefix}/balance_point_ci_low"], out[f"{prefix}/balance_point_ci_high"] = bp["ci"]
        if h.get("ability"):
            out[f"{prefix}/ability_gate_passed"] = h["ability"]["passed"]
        fit = h.get("fit_check") or {}
        if fit:
            out[f"{prefix}/isotonic_balance_point"] = fit["isotonic"]["estimate"]
            out[f"{prefix}/fit_p_value"] = (fit["goodness_of_fit"] or {}).get("p_value")
            out[f"{prefix}/fit_disagrees"] = fit["disagrees"]
        for region in ("ambiguous", "clear"):
            out[f"{prefix}/oscillation_{region}"] = (h.get(f"oscillation_{region}") or {}).get("mean")
        return out

    def compare(self, before, after, target: float | None = None, config: AnalysisConfig | None = None,
                paired: dict | None = None) -> dict:
        """With a target: the run's guarantee (realized balance point, target in its interval, paired shift); the
        report's when it computed it for this target (one group bootstrap, not two)."""
        if target is None:
            return {}
        guarantee = (paired or {}).get("guarantee")
        if guarantee is None or guarantee["target"] != target:
            guarantee = alignment_guarantee(before.samples, after.samples, after.analysis, target,
                                            config or AnalysisConfig())
        return {"guarantee": {**guarantee, "description": describe_guarantee(guarantee)}}
