"""Weights & Biases for a measurement: `eval measure --report_to wandb` opens a run of its own with the
measurement's headline numbers and its following curve; the recipe's run (align/tracking.py) uses the same pieces.
Without an API key the run is recorded offline (`wandb sync` later)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

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


CHART_SPEC = Path(__file__).with_name("charts") / "following_curve.vl.json"
CHART_COLUMNS = ["model", "kind", "d_rel", "rate", "rate_low", "rate_high", "d_rel_low", "d_rel_high", "n", "label"]


def chart_rows(curves: list[tuple[str, dict]], target: float | None = None, points: int = 41) -> list[dict]:
    """The following chart's data, one row per mark: each run's bins (rate and interval), its fitted curve, its
    balance point with interval, and the target b* (kind: bin, fit, balance_point, target)."""
    rows = []
    blank = dict.fromkeys(CHART_COLUMNS)
    for name, analysis in curves:
        curve = analysis["curves"]["entropy"]
        bins, bp = curve["bins"], curve["balance_point"]
        for x, rate, low, high, n in zip(bins["centre"], bins["rate"], bins["ci_lo"], bins["ci_hi"], bins["n"]):
            if n:
                rows.append({**blank, "model": name, "kind": "bin", "d_rel": x, "rate": rate, "rate_low": low,
                             "rate_high": high, "n": n})
        if bp.get("slope") is not None and bp.get("x_range"):
            lo, hi = bp["x_range"]
            for x in np.linspace(lo, hi, points):
                rows.append({**blank, "model": name, "kind": "fit", "d_rel": float(x),
                             "rate": float(1 / (1 + np.exp(-(bp["intercept"] + bp["slope"] * x))))})
        if bp.get("estimate") is not None:
            low, high = bp.get("ci") or (None, None)
            rows.append({**blank, "model": name, "kind": "balance_point", "d_rel": bp["estimate"], "d_rel_low": low,
                         "d_rel_high": high, "label": f"{name}: {bp.get('description', '')}"})
    if target is not None:
        rows.append({**blank, "model": "target", "kind": "target", "d_rel": float(target), "label": f"b* {target:+.2f}"})
    return rows


def chart_spec(title: str, data: list[dict] | None = None) -> dict:
    """The following chart's Vega-Lite spec with its W&B placeholders filled: field names, the title, and (for a
    page of its own) `data` inline instead of W&B's logged table."""
    text = CHART_SPEC.read_text().replace("${string:title}", title)
    for column in CHART_COLUMNS:
        text = text.replace("${field:" + column + "}", column)
    spec = json.loads(text)
    if data is not None:
        spec["data"] = {"values": data}
    return spec


def chart_html(spec: dict) -> str:
    """A page that draws `spec` with vega-embed (loaded by the browser that shows it, as W&B's HTML panel does)."""
    return ("<html><head><script src='https://cdn.jsdelivr.net/npm/vega@5'></script>"
            "<script src='https://cdn.jsdelivr.net/npm/vega-lite@5'></script>"
            "<script src='https://cdn.jsdelivr.net/npm/vega-embed@6'></script></head><body><div id='chart'></div>"
            f"<script>vegaEmbed('#chart', {json.dumps(spec)});</script></body></html>")


def following_chart(run, curves: list[tuple[str, dict]], target: float | None, title: str) -> dict:
    """What a run logs of its following curves: the chart as a W&B custom chart (the Vega-Lite preset
    `eval/charts/following_curve.vl.json`, created once in the W&B project; its id from
    $MODALITY_ALIGN_WANDB_CHART, default ENTITY/following-curve), whose table W&B keeps as `following_chart_table`,
    and the same chart as an HTML panel, which needs no preset."""
    import wandb
    rows = chart_rows(curves, target)
    table = wandb.Table(columns=CHART_COLUMNS, data=[[r[c] for c in CHART_COLUMNS] for r in rows])
    preset = os.environ.get("MODALITY_ALIGN_WANDB_CHART") or f"{getattr(run, 'entity', '') or 'modality-alignment'}/following-curve"
    return {"following_chart": wandb.plot_table(preset, table, {c: c for c in CHART_COLUMNS}, {"title": title}),
            "following_chart_html": wandb.Html(chart_html(chart_spec(title, rows)))}


def log_measurement(measurement, config: dict, name: str) -> None:
    """One measurement as a W&B run: its config, its task's headline numbers under measure/, a following curve's
    bins as a line chart (W&B keeps its table as `following_curve_table`), and the chart with intervals and the
    balance point (`following_chart`)."""
    import wandb
    from .tasks import get_task
    run = open_run(os.environ.get("WANDB_PROJECT", PROJECT), name, config, "measure")
    try:
        log_summary(run, get_task(measurement.task).summary("measure", measurement.analysis))
        if "curves" in measurement.analysis:
            table = curve_table(measurement.analysis, name)
            chart = following_chart(run, [(name, measurement.analysis)], None, "P(text-following) vs dH_rel")
            run.log({"measure/following_curve": wandb.plot.line(table, "d_rel", "text_following_rate",
                                                                stroke="model", title="P(text-following) vs dH_rel"),
                     **{f"measure/{key}": value for key, value in chart.items()}})
    finally:
        run.finish()
