"""Weights & Biases: before/after curves in one chart, headline numbers, report figures."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _flat(prefix: str, headline: dict) -> dict:
    bp = headline["balance_point"] or {}
    out = {f"{prefix}/balance_point": bp.get("estimate"), f"{prefix}/crosses": bp.get("crosses"),
           f"{prefix}/tfr": headline["tfr"], f"{prefix}/vfr": headline["vfr"], f"{prefix}/n": headline["n_analysed"],
           f"{prefix}/monotonicity": headline["monotonicity"],
           f"{prefix}/unimodal_accuracy_visual": headline["unimodal_accuracy"]["visual"],
           f"{prefix}/unimodal_accuracy_text": headline["unimodal_accuracy"]["text"]}
    if bp.get("ci"):
        out[f"{prefix}/balance_point_ci_low"], out[f"{prefix}/balance_point_ci_high"] = bp["ci"]
    for region in ("ambiguous", "clear"):
        osc = headline.get(f"oscillation_{region}") or {}
        out[f"{prefix}/oscillation_{region}"] = osc.get("mean")
    return out


def log_to_wandb(result: dict, base: dict, aligned: dict, report_dir: Path, cfg) -> None:
    import wandb
    run = wandb.run or wandb.init(project=cfg.wandb_project, name=cfg.run_name, config=result["config"])
    table = wandb.Table(columns=["model", "d_rel", "text_following_rate", "n"])
    for name, res in (("before", base), ("after", aligned)):
        bins = res["curves"]["entropy"]["bins"]
        for x, rate, n in zip(bins["centre"], bins["rate"], bins["n"]):
            if n:
                table.add_data(name, x, rate, n)
    run.log({"following_curve": wandb.plot.line(table, "d_rel", "text_following_rate", stroke="model",
                                                title="P(text-following) vs dH_rel, before and after"),
             "following_curve_table": table})
    summary = {"balance_point/target": result["target_balance_point"],
               **_flat("before", result["base"]), **_flat("after", result["aligned"])}
    for i, r in enumerate(result.get("calibration") or []):
        summary[f"calibration/round_{i}/trained_at"] = r["trained_at"]
        summary[f"calibration/round_{i}/realized"] = r["realized"]
    for key, value in summary.items():
        run.summary[key] = value
    run.log({f"report/{png.stem}": wandb.Image(str(png)) for png in sorted(Path(report_dir).glob("*.png"))})
    log.info("logged to W&B run %s (%s)", run.name, run.dir)
    run.finish()
