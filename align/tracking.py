"""Weights & Biases: one run per alignment, opened by the recipe before the base measurement.

The run's config is the recipe's (method, model, training settings) and its name says what was
run; the Trainer's W&B callback finds the run open and logs training into it. Before/after
measurements, the curves, the report's figures and the released adapter (a model artifact) all
land in the same run. Without an API key the run is recorded offline (`wandb sync` later).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

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
    import wandb
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"  # no login here: record locally, `wandb sync` later
        log.info("W&B: no API key, logging offline under ./wandb (sync later with `wandb sync`)")
    os.environ.setdefault("WANDB_PROJECT", training.project)  # the Trainer's callback reads it
    run = wandb.init(project=training.project, name=name, config=config, job_type=job_type)
    log.info("W&B run %s (%s)", run.name, run.dir)
    return run


def log_precision(training, result: dict) -> None:
    """The precision table as a W&B run of its own (each alignment run of it has its own too): the rows as a
    table, the target-vs-realized plot, and the counts in the summary."""
    if "wandb" not in (training.report_to or []):
        return
    import pandas as pd
    import wandb
    run = open_run(training, training.run_name or f"precision-{time.strftime('%Y%m%d-%H%M%S')}", result["config"],
                   "precision")
    run.log({"precision/table": wandb.Table(dataframe=pd.DataFrame(result["rows"])),
             "precision/plot": wandb.Image(result["figure"])})
    for key, value in result["summary"].items():
        run.summary[f"precision/{key}"] = value
    run.finish()


def _flat(prefix: str, headline: dict) -> dict:
    bp = headline["balance_point"] or {}
    out = {f"{prefix}/balance_point": bp.get("estimate"), f"{prefix}/crosses": bp.get("crosses"),
           f"{prefix}/curve_direction": bp.get("direction"), f"{prefix}/leans": bp.get("leans"),
           f"{prefix}/tfr": headline["tfr"], f"{prefix}/vfr": headline["vfr"], f"{prefix}/n_analysed": headline["n_analysed"],
           f"{prefix}/n_following": headline["n_following"],
           f"{prefix}/monotonicity": headline["monotonicity"],
           f"{prefix}/unimodal_accuracy_visual": headline["unimodal_accuracy"]["visual"],
           f"{prefix}/unimodal_accuracy_text": headline["unimodal_accuracy"]["text"]}
    if bp.get("ci"):
        out[f"{prefix}/balance_point_ci_low"], out[f"{prefix}/balance_point_ci_high"] = bp["ci"]
    for region in ("ambiguous", "clear"):
        osc = headline.get(f"oscillation_{region}") or {}
        out[f"{prefix}/oscillation_{region}"] = osc.get("mean")
    return out


def log_measurement(run, prefix: str, analysis: dict) -> None:
    """A measurement's headline numbers into the run summary, as soon as they exist."""
    if run is None:
        return
    from eval.report import headline
    for key, value in _flat(prefix, headline(analysis)).items():
        run.summary[key] = value
    run.log({f"{prefix}/following_curve_bins": _curve_table(analysis, prefix)})


def recognition_summary(prefix: str, analysis: dict) -> dict:
    """Recognition headline numbers, flat: per evidence kind, unimodal vs cross-modal, and R per layer."""
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


def log_summary(run, values: dict | None) -> None:
    """Flat headline numbers into the run summary (nothing without a run or values)."""
    if run is None or not values:
        return
    for key, value in values.items():
        run.summary[key] = value


def log_recognition(run, prefix: str, analysis: dict | None) -> None:
    log_summary(run, analysis and recognition_summary(prefix, analysis))


def _curve_table(analysis: dict, name: str):
    import wandb
    table = wandb.Table(columns=["model", "d_rel", "text_following_rate", "n"])
    bins = analysis["curves"]["entropy"]["bins"]
    for x, rate, n in zip(bins["centre"], bins["rate"], bins["n"]):
        if n:
            table.add_data(name, x, rate, n)
    return table


def log_result(run, result: dict, base: dict, aligned: dict, release_dir: Path) -> None:
    """The before/after curve in one chart, the report's figures, calibration rounds, and the adapter artifact."""
    if run is None:
        return
    import wandb
    table = wandb.Table(columns=["model", "d_rel", "text_following_rate", "n"])
    for name, analysis in (("before", base), ("after", aligned)):
        for row in _curve_table(analysis, name).data:
            table.add_data(*row)
    summary = {"balance_point/target": result["target_balance_point"],
               **_flat("before", result["base"]), **_flat("after", result["aligned"])}
    guarantee = result.get("guarantee") or {}
    for key in ("realized", "target_in_interval", "miss", "shift"):
        if guarantee.get(key) is not None:
            summary[f"guarantee/{key}"] = guarantee[key]
    for key in ("realized_ci", "shift_ci"):
        if guarantee.get(key):
            summary[f"guarantee/{key}_low"], summary[f"guarantee/{key}_high"] = guarantee[key]
    for i, r in enumerate(result.get("calibration") or []):
        summary[f"calibration/round_{i}/trained_at"] = r["trained_at"]
        summary[f"calibration/round_{i}/realized"] = r["realized"]
    for key, value in summary.items():
        run.summary[key] = value
    run.log({"following_curve": wandb.plot.line(table, "d_rel", "text_following_rate", stroke="model",
                                                title="P(text-following) vs dH_rel, before and after"),
             "following_curve_table": table,
             **report_images(release_dir)})
    log_adapter(run, release_dir, {
        "target_balance_point": result["target_balance_point"], "base_model": result["config"]["model"]["model_name_or_path"],
        "before": result["base"]["balance_point"]["description"],
        "after": result["aligned"]["balance_point"]["description"]})


def report_images(release_dir: Path) -> dict:
    """The release's report figures as W&B images, keyed report/NAME."""
    import wandb
    return {f"report/{png.stem}": wandb.Image(str(png)) for png in sorted((release_dir / "report").rglob("*.png"))}


def log_adapter(run, release_dir: Path, metadata: dict) -> None:
    """The release folder as a model artifact of the run."""
    import wandb
    artifact = wandb.Artifact(f"adapter-{run.id}", type="model", metadata=metadata)
    artifact.add_dir(str(release_dir))
    run.log_artifact(artifact)


def av_summary(prefix: str, analysis: dict) -> dict:
    """Audio-visual headline numbers, flat: accuracy per condition (pooled and per asked modality), d per layer."""
    out = {f"{prefix}/accuracy/{c['condition']}": c["accuracy"]["rate"] for c in analysis["by_condition"]}
    out.update({f"{prefix}/accuracy/{c['condition']}_{c['asked']}_asked": c["accuracy"]["rate"]
                for c in analysis["accuracy"] if c["accuracy"]["n"]})
    out.update({f"{prefix}/cohens_d/layer_{l['layer']}": l["cohens_d"] for l in analysis.get("attention") or []})
    for name, curve in (analysis.get("audio_following") or {}).items():
        if curve:
            out[f"{prefix}/audio_following/{name}"] = curve["audio_following_rate"]
            out[f"{prefix}/audio_following/{name}_balance_point"] = curve["balance_point"]["estimate"]
    return out


def log_av(run, prefix: str, analysis: dict | None) -> None:
    log_summary(run, analysis and av_summary(prefix, analysis))


def log_av_result(run, result: dict, release_dir: Path) -> None:
    """The change per condition, the report's figure, and the adapter artifact."""
    if run is None:
        return
    log_summary(run, {f"change/accuracy/{c['condition']}": c["change"] for c in result["change"]})
    run.log(report_images(release_dir))
    log_adapter(run, release_dir, {"base_model": result["config"]["model"]["model_name_or_path"],
                                   "change": {c["condition"]: c["change"] for c in result["change"]}})


def finish(run, failed: bool = False) -> None:
    if run is not None:
        run.finish(exit_code=1 if failed else 0)
