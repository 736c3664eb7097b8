"""Weights & Biases: one run per alignment, opened by the recipe before the base measurement.

The run's config is the recipe's (method, model, training settings) and its name says what was
run. Each training (each calibration round) logs under its own prefix and step axis (`RoundLogger`, a Trainer
callback), so rounds never overlap and nothing rewrites the run's config. Before/after
measurements, the curves, the report's figures and the released adapter (a model artifact) all
land in the same run. Without an API key the run is recorded offline (`wandb sync` later).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from transformers import TrainerCallback

from eval import tracking as eval_tracking
from eval.tracking import curve_table, following_chart, log_summary

log = logging.getLogger(__name__)


def run_name(align, model) -> str:
    model_name = Path(model.model_name_or_path.rstrip("/")).name.replace(":", "-")
    return f"{model_name}-{align.run_label}-{align.method}-r{align.lora_r}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(align, model, training):
    """Open the run (main process), or None when W&B is not among `report_to`."""
    if "wandb" not in (training.report_to or []):
        return None
    name = training.run_name or run_name(align, model)
    training.run_name = name
    config = {**asdict(align), **asdict(model), "output_dir": training.output_dir}
    written = training.to_dict()  # enums as their values, tokens hidden
    config.update({k: written[k] for k in (
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
        "warmup_steps", "lr_scheduler_type", "weight_decay", "activation_checkpointing", "seed")})
    return open_run(training, name, config, "alignment")


def open_run(training, name: str, config: dict, job_type: str):
    return eval_tracking.open_run(training.project, name, config, job_type)


class RoundLogger(TrainerCallback):
    """Logs one training's numbers under LABEL/train/ (LABEL: round-K, or training) against its own step axis
    LABEL/step, with the round number as a metric of its own."""

    def __init__(self, run, label: str):
        self.run, self.label = run, label
        self.round = int(label.split("-")[1]) if label.startswith("round-") else 0
        run.define_metric(f"{label}/step")
        run.define_metric(f"{label}/*", step_metric=f"{label}/step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {f"{self.label}/train/{k}": v for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.run.log({**numbers, f"{self.label}/step": state.global_step, f"{self.label}/round": self.round})


def log_table_run(training, kind: str, result: dict, rows, summary: dict) -> None:
    """A table command's result as a W&B run of its own (each alignment run of it has its own too): the rows as a
    table, its figure, and `summary` under KIND/."""
    if "wandb" not in (training.report_to or []):
        return
    import wandb
    run = open_run(training, training.run_name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}", result["config"], kind)
    run.log({f"{kind}/table": wandb.Table(dataframe=rows), f"{kind}/plot": wandb.Image(result["figure"])})
    for key, value in summary.items():
        run.summary[f"{kind}/{key}"] = value
    run.finish()


def log_precision(training, result: dict) -> None:
    """The precision table: its rows, the target-vs-realized plot, and the counts in the summary."""
    import pandas as pd
    log_table_run(training, "precision", result, pd.DataFrame(result["rows"]), result["summary"])


def flat_row(r: dict) -> dict:
    """A table row as one CSV line: nested cells become column_estimate / _low / _high."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}_{k}" if prefix else k, v)
        else:
            out[prefix] = value
    walk("", r)
    return out


def log_method_row(training, row: dict, config: dict) -> None:
    """One method's columns of the comparison as that method's own W&B run (job type compare-method): the same
    columns as its model card and the comparison table, flat, in the summary."""
    if "wandb" not in (training.report_to or []):
        return
    name = row["method"] if row["target"] is None else f"{row['method']}-b{row['target']:+.2f}"
    run = open_run(training, f"{training.run_name or 'compare'}-{name}", config, "compare-method")
    for key, value in flat_row(row).items():
        run.summary[key] = value
    run.finish()


def log_comparison(training, result: dict) -> None:
    """The method comparison: one row per method and target (every column, flat), the curves' figure, and each
    row's headline numbers as METHOD/bT/... in the summary."""
    import pandas as pd
    rows = [flat_row(r) for r in result["rows"]]
    summary = {}
    for r in rows:
        key = r["method"] if r["target"] is None else f"{r['method']}/b{r['target']:+.2f}"
        for column in ("realized_estimate", "miss", "lands", "slope_ratio_estimate", "accuracy_change_image_only_estimate",
                       "accuracy_change_text_only_estimate", "accuracy_change_no_conflict_estimate", "seconds"):
            if r.get(column) is not None:
                summary[f"{key}/{column}"] = r[column]
    log_table_run(training, "compare", result, pd.DataFrame(rows).astype(str), summary)


def log_views(run, prefix: str, measured: dict) -> None:
    """Each measured view's headline numbers (its task's summary) as soon as they exist, and a following curve's
    bins as a table."""
    if run is None:
        return
    from eval.tasks import get_task
    for view, m in measured.items():
        if m is None:
            continue
        log_summary(run, get_task(m.task).summary(prefix, m.analysis))
        if "curves" in m.analysis:
            run.log({f"{prefix}/following_curve_bins": curve_table(m.analysis, prefix)})


def log_result(run, result: dict, before: dict, after: dict, release_dir: Path) -> None:
    """The before/after following curves in one chart, the guarantee or the change, calibration rounds, the report's
    figures, and the adapter artifact."""
    if run is None:
        return
    import wandb
    summary, media = {}, report_images(release_dir)
    curves = [(name, m.analysis) for name, measured in (("before", before), ("after", after))
              for m in measured.values() if m is not None and "curves" in m.analysis]
    if curves:
        table = wandb.Table(columns=["model", "d_rel", "text_following_rate", "n"])
        for name, analysis in curves:
            for row in curve_table(analysis, name).data:
                table.add_data(*row)
        media["following_curve"] = wandb.plot.line(table, "d_rel", "text_following_rate", stroke="model",
                                                   title="P(text-following) vs dH_rel, before and after")
        media.update(following_chart(run, curves, result.get("target_balance_point"),
                                     "P(text-following) vs dH_rel, before and after, with b*"))
    metadata = {"base_model": result["config"]["model"]["model_name_or_path"], "method": result["config"]["method"],
                "dataset": dict(run.config.get("dataset") or {})}
    if "target_balance_point" in result:
        summary["balance_point/target"] = result["target_balance_point"]
        metadata["target_balance_point"] = float(result["target_balance_point"])
        for when, run_key in (("before", "base"), ("after", "aligned")):  # numbers, so W&B can sort and plot them
            bp = result[run_key]["balance_point"]
            metadata[f"{when}_balance_point"] = bp.get("estimate")
            metadata[f"{when}_balance_point_ci"] = bp.get("ci")
    guarantee = result.get("guarantee") or {}
    if guarantee:
        metadata["guarantee"] = {k: guarantee.get(k) for k in ("realized", "realized_ci", "target_in_interval", "miss",
                                                             "shift", "shift_ci", "groups")}
    for key in ("realized", "target_in_interval", "miss", "shift"):
        if guarantee.get(key) is not None:
            summary[f"guarantee/{key}"] = guarantee[key]
    for key in ("realized_ci", "shift_ci"):
        if guarantee.get(key):
            summary[f"guarantee/{key}_low"], summary[f"guarantee/{key}_high"] = guarantee[key]
    for i, r in enumerate(result.get("calibration") or []):
        knob = "alpha" if "alpha" in r else "trained_at"  # steering calibrates its strength, training its aim
        summary[f"calibration/round_{i}/{knob}"] = r[knob]
        summary[f"calibration/round_{i}/realized"] = r["realized"]
    if result.get("change"):
        summary.update({f"change/accuracy/{c['condition']}": c["change"] for c in result["change"]})
        metadata["change"] = {c["condition"]: c["change"] for c in result["change"]}
    for section in result.values():
        if isinstance(section, dict) and section.get("imbalance_change"):
            summary["change/imbalance_distance"] = section["imbalance_change"]["change"]
    log_summary(run, summary)
    run.log(media)
    log_adapter(run, release_dir, metadata)


def report_images(release_dir: Path) -> dict:
    """The release's report figures as W&B images, keyed report/NAME."""
    import wandb
    return {f"report/{png.stem}": wandb.Image(str(png)) for png in sorted((release_dir / "report").rglob("*.png"))}


def use_dataset(run, data) -> None:
    """The run's dataset in the run's config (`dataset`: name, settings, fingerprint) and, online, as a dataset
    artifact the run uses (a reference to its folder, nothing copied), so W&B's lineage reads data -> run ->
    adapter. W&B cannot record an artifact's use offline; `dataset` in the config and the adapter's metadata
    name it there."""
    if run is None or not data.info.get("path"):
        return
    import wandb
    info = {k: v for k, v in data.info.items() if k in ("task", "groups", "seed", "size", "fingerprint", "rows",
                                                        "splits", "split_shares")}
    name = f"data-{info.get('task', 'data')}-{data.info.get('fingerprint', 'unknown')}"
    run.config.update({"dataset": {"artifact": name, **info}}, allow_val_change=True)
    if run.offline:
        return
    artifact = wandb.Artifact(name, type="dataset", metadata=info)
    artifact.add_reference(Path(data.info["path"]).resolve().as_uri())
    run.use_artifact(artifact)


def log_adapter(run, release_dir: Path, metadata: dict) -> None:
    """The release folder as a model artifact of the run."""
    import wandb
    artifact = wandb.Artifact(f"adapter-{run.id}", type="model", metadata=metadata)
    artifact.add_dir(str(release_dir))
    run.log_artifact(artifact)


def finish(run, failed: bool = False) -> None:
    if run is not None:
        run.finish(exit_code=1 if failed else 0)
