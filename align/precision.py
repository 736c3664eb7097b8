"""The precision table: does the recipe land where it is aimed, on data it never saw?

For every target b* and every training data seed, one alignment run (the recipe, unchanged), then the adapter's
realized balance point on the groups of a *fresh* data seed that no run trained, calibrated or was tested on.
A run passes when |realized - b*| <= `tolerance` and its image-only and text-only accuracy on the fresh groups stay
within `accuracy_tolerance` of the base's (docs/method.md, "Precision on fresh data").

Work that does not depend on the target is done once: each seed's data and its base scores (copied into every run
of that seed, where the scoring engine resumes from them), the fresh groups and the base's scores on them. A run
that finished (its `alignment.json` and fresh scores exist) is read back, so a re-run after a crash goes on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import TrainingArguments

from data_gen import ConflictData
from data_gen.files import write_json, write_text
from eval.analysis import alignment_guarantee, analyze
from eval.report import unimodal_accuracy
from eval.prepare import generate_once
from eval.processes import holding, processes
from eval.scoring import ScoreConfig, score_dataset

from . import tracking
from .arguments import AlignArguments, PrecisionArguments, check_inputs
from .recipe import Recipe

log = logging.getLogger(__name__)

TARGET_INDEPENDENT_RUNS = ("base", "base_train")  # the recipe's base scores: the same for every target of a seed


def run_dir(out: Path, seed: int, target: float) -> Path:
    return out / f"seed-{seed}" / f"b{target:+.2f}"


def precision_row(seed: int, target: float, guarantee: dict, base_accuracy: dict, accuracy: dict,
                  seconds: float | None, p: PrecisionArguments) -> dict:
    """One run's line of the table: where it landed on the fresh groups, and what it cost the unimodal answers."""
    realized, ci, shift_ci = guarantee["realized"], guarantee["realized_ci"], guarantee["shift_ci"]
    drops = {side: base_accuracy[side] - accuracy[side] for side in ("visual", "text")
             if base_accuracy[side] is not None and accuracy[side] is not None}
    return {"data_seed": seed, "target": target, "realized": realized,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "miss": guarantee["miss"], "lands": realized is not None and abs(realized - target) <= p.tolerance,
            "target_in_interval": guarantee["target_in_interval"],
            "shift": guarantee["shift"], "shift_ci_low": shift_ci[0] if shift_ci else None,
            "shift_ci_high": shift_ci[1] if shift_ci else None,
            "accuracy_visual_base": base_accuracy["visual"], "accuracy_visual": accuracy["visual"],
            "accuracy_text_base": base_accuracy["text"], "accuracy_text": accuracy["text"],
            "accuracy_kept": len(drops) == 2 and max(drops.values()) <= p.accuracy_tolerance,
            "seconds": seconds}


def precision_summary(rows: list[dict], p: PrecisionArguments) -> dict:
    """How many runs landed within the tolerance, kept their unimodal accuracy, and held b* in their interval."""
    table = pd.DataFrame(rows)
    realized = table.realized.astype(float)
    return {"runs": len(table), "tolerance": p.tolerance, "accuracy_tolerance": p.accuracy_tolerance,
            "landed": int(table.lands.sum()), "accuracy_kept": int(table.accuracy_kept.sum()),
            "target_in_interval": int(table.target_in_interval.sum()),
            "mean_abs_miss": float(np.nanmean(np.abs(realized - table.target))) if realized.notna().any() else None,
            "mean_half_width": float(np.nanmean((table.ci_high.astype(float) - table.ci_low.astype(float)) / 2))
            if table.ci_low.notna().any() else None,
            "fresh_seed": p.fresh_seed, "fresh_groups": p.fresh_groups}


def describe_summary(s: dict) -> str:
    return (f"{s['landed']} of {s['runs']} runs landed within ±{s['tolerance']:.2f} of b*, "
            f"{s['accuracy_kept']} of {s['runs']} kept image-only and text-only accuracy within "
            f"{100 * s['accuracy_tolerance']:.0f} points, b* inside the realized interval in {s['target_in_interval']}; "
            f"mean |miss| {s['mean_abs_miss']:.3f}, mean interval half-width {s['mean_half_width']:.3f} "
            f"({s['fresh_groups']} fresh groups of seed {s['fresh_seed']})")


def format_table(rows: list[dict]) -> str:
    def interval(r):
        return f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" if r["ci_low"] is not None else "(none)"
    lines = ["seed   b*     realized  95% interval     miss    lands  acc image/text: base -> after"]
    for r in rows:
        realized = f"{r['realized']:+.3f}" if r["realized"] is not None else "  none"
        miss = f"{r['miss']:+.3f}" if r["miss"] is not None else "   -  "
        lines.append(f"{r['data_seed']:<5}  {r['target']:+.2f}  {realized}    {interval(r):<15}  {miss}  "
                     f"{'yes' if r['lands'] else 'NO ':<5}  {r['accuracy_visual_base']:.3f}/{r['accuracy_text_base']:.3f}"
                     f" -> {r['accuracy_visual']:.3f}/{r['accuracy_text']:.3f}{'' if r['accuracy_kept'] else '  (dropped)'}")
    return "\n".join(lines)


def plot_precision(rows: list[dict], tolerance: float, path: Path) -> Path:
    """Target vs realized balance point with intervals, the identity line and the tolerance band."""
    from eval.report import plt
    fig, ax = plt.subplots(figsize=(5.5, 5))
    targets = sorted({r["target"] for r in rows})
    lo, hi = min(targets) - 0.5, max(targets) + 0.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="realized = b*")
    ax.fill_between([lo, hi], [lo - tolerance, hi - tolerance], [lo + tolerance, hi + tolerance], color="0.85",
                    label=f"±{tolerance:.2f}")
    seeds = sorted({r["data_seed"] for r in rows})
    for k, seed in enumerate(seeds):
        mine = [r for r in rows if r["data_seed"] == seed and r["realized"] is not None]
        offset = (k - (len(seeds) - 1) / 2) * 0.04  # side by side, so the intervals do not hide each other
        x = np.array([r["target"] for r in mine]) + offset
        y = np.array([r["realized"] for r in mine])
        err = np.array([[r["realized"] - r["ci_low"], r["ci_high"] - r["realized"]] if r["ci_low"] is not None
                        else [0, 0] for r in mine]).T.reshape(2, -1)
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=f"data seed {seed}")
    ax.set(xlabel="target balance point b*", ylabel="realized balance point (fresh groups)", xlim=(lo, hi),
           title="Where the recipe lands")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class PrecisionRuns:
    """The runs of the table, over the recipe; every target-independent piece computed once."""

    def __init__(self, precision: PrecisionArguments, align: AlignArguments, model, training: TrainingArguments):
        self.p, self.align, self.model, self.training = precision, align, model, training
        self.out = Path(training.output_dir)
        self.state = processes()
        self.score_config = ScoreConfig(batch_size=training.per_device_eval_batch_size, lens=False)

    def score(self, vlm, data: ConflictData, out: Path) -> pd.DataFrame:
        score_dataset(vlm, data, out, self.score_config, seed=self.training.seed)
        self.state.wait()
        return pd.read_parquet(out / "samples.parquet")

    def recipe(self, seed: int, target: float, data: Path) -> Recipe:
        align = dataclasses.replace(self.align, data=str(data), dataset_seed=seed, target_balance_point=target,
                                    balance_shift=None)
        name = self.training.run_name and f"{self.training.run_name}-seed{seed}-b{target:+.2f}"
        training = dataclasses.replace(self.training, output_dir=str(run_dir(self.out, seed, target)), run_name=name)
        return Recipe(align, self.model, training)

    def reuse_base_scores(self, seed: int, target: float) -> None:
        """Copy the seed's base scores from an earlier run of it, so this run's recipe resumes instead of re-scoring:
        any other target's finished scores under OUTPUT_DIR/seed-S, also one an earlier command's --targets ran."""
        dst = run_dir(self.out, seed, target) / "runs"
        for name in TARGET_INDEPENDENT_RUNS:
            finished = sorted(dst.parent.parent.glob(f"b*/runs/{name}/samples.parquet"))
            if self.state.is_main and finished and not (dst / name).exists():
                shutil.copytree(finished[0].parent, dst / name)
        self.state.wait()

    def run(self) -> dict | None:
        p, out = self.p, self.out
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        fresh = ConflictData.load(generate_once(out / "fresh" / "data", p.fresh_groups, p.fresh_seed,
                                                self.align.image_size))
        if self.align.eval_rows == "conflicts":
            fresh = fresh.conflicts()
        log.info("scoring the base on the %d fresh groups of seed %d", p.fresh_groups, p.fresh_seed)
        base_fresh = self.score(Recipe(self.align, self.model, self.training).load(), fresh, out / "fresh" / "base")
        base_accuracy = unimodal_accuracy(analyze(base_fresh, self.align.analysis))
        rows = []
        for seed in p.data_seeds:
            data = generate_once(out / f"seed-{seed}" / "data", self.align.groups, seed, self.align.image_size,
                                 split_shares=self.align.split_shares)
            for target in p.targets:
                rows.append(self.run_one(seed, target, data, fresh, base_fresh, base_accuracy))
                if self.state.is_main:
                    log.info("seed %d, b* %+.2f: realized %s, miss %s", seed, target, rows[-1]["realized"],
                             rows[-1]["miss"])
        if not self.state.is_main:
            return None
        summary = precision_summary(rows, p) | {"seconds": round(time.time() - t0, 1)}
        result = {"summary": summary, "rows": rows, "config": {"precision": dataclasses.asdict(p),
                                                                "align": dataclasses.asdict(self.align)}}
        write_json(out / "precision.json", result)
        write_text(out / "precision.csv", pd.DataFrame(rows).to_csv(index=False))
        result["figure"] = str(plot_precision(rows, p.tolerance, out / "precision.png"))
        tracking.log_precision(self.training, result)
        return result

    def run_one(self, seed: int, target: float, data: Path, fresh: ConflictData, base_fresh: pd.DataFrame,
                base_accuracy: dict) -> dict:
        recipe = self.recipe(seed, target, data)
        record = recipe.out / "alignment.json"
        seconds = None
        if not record.exists():  # (re)trained: fresh scores of an earlier adapter would be resumed as this one's
            if self.state.is_main:
                shutil.rmtree(recipe.out / "fresh", ignore_errors=True)
            self.reuse_base_scores(seed, target)
            t0 = time.time()
            recipe.run()
            seconds = round(time.time() - t0, 1)
        adapter = recipe.out / "release"
        after = self.score(recipe.load(adapter), fresh, recipe.out / "fresh")
        if not self.state.is_main:
            return {}
        after_result = analyze(after, self.align.analysis)
        guarantee = alignment_guarantee(base_fresh, after, after_result, target, self.align.analysis)
        seconds = seconds if seconds is not None else json.loads(record.read_text()).get("seconds")
        return precision_row(seed, target, guarantee, base_accuracy, unimodal_accuracy(after_result), seconds, self.p)


def run_precision(precision: PrecisionArguments, align: AlignArguments, model, training: TrainingArguments) -> dict | None:
    check_inputs(align, model, training)
    if align.data:
        raise ValueError("the precision table generates each seed's data itself; leave data unset")
    if align.balance_shift is not None:
        raise ValueError("the precision table aims at the balance points in --targets; leave balance_shift unset")
    with holding(training.output_dir):
        return PrecisionRuns(precision, align, model, training).run()
