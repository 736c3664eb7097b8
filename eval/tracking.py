"""Weights & Biases for a measurement: `eval measure --report_to wandb` opens a run of its own with the
measurement's headline numbers and its following curve; the recipe's run (align/tracking.py) uses the same pieces.
Without an API key the run is recorded offline (`wandb sync` later)."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
PROJECT = "modality-alignment"


def open_run(project: str, name: str, config: dict, job_type: str):
    import wandb
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"  # no login here: record locally, `wandb sync` later
        log.info("W&B: no API key, logging offline under ./wandb (sync later with `wandb sync`)")
    os.environ.setdefault("WANDB_PROJECT", project)
    run = wandb.init(project=project, name=name, config=config, job_type=job_type)
    log.info("W&B run %s (%s)", run.name, run.dir)
    return run


def log_summary(run, values: dict | None) -> None:
    """Flat headline numbers into the run summary (nothing without a run or values)."""
    if run is None or not values:
        return
    for key, value in values.items():
        run.summary[key] = value


def curve_table(analysis: dict, name: str):
    """A following curve's bins as a W&B table: model, dH_rel, rate, n."""
    import wandb
    table = wandb.Table(columns=["model", "d_rel", "text_following_rate", "n"])
    bins = analysis["curves"]["entropy"]["bins"]
    for x, rate, n in zip(bins["centre"], bins["rate"], bins["n"]):
        if n:
            table.add_data(name, x, rate, n)
    return table


def log_measurement(measurement, config: dict, name: str) -> None:
    """One measurement as a W&B run: its config, its task's headline numbers under measure/, and a following
    curve's bins as a table and a line chart."""
    import wandb
    from .tasks import get_task
    run = open_run(os.environ.get("WANDB_PROJECT", PROJECT), name, config, "measure")
    try:
        log_summary(run, get_task(measurement.task).summary("measure", measurement.analysis))
        if "curves" in measurement.analysis:
            table = curve_table(measurement.analysis, name)
            run.log({"measure/following_curve_bins": table,
                     "measure/following_curve": wandb.plot.line(table, "d_rel", "text_following_rate",
                                                                stroke="model", title="P(text-following) vs dH_rel")})
    finally:
        run.finish()
