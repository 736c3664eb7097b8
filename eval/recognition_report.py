"""Figures, report.html and summary.json of conflict-recognition runs (one, or before/after)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from data_gen.recognition import EVIDENCE
from data_gen.files import write_bytes, write_json, write_text

from .recognition import analyze_recognition, format_rate, imbalance_change
from .report import _fig_png, load_run, plt

CAPTIONS = {
    "recognition": "Share of contradictions answered 'yes' (solid) and of consistent controls answered 'yes' (hatched, "
                   "false alarms) per evidence kind, with 95% intervals clustered by group. text_text and caption_text "
                   "hold both pieces of evidence in text; image_text splits them across image and text.",
    "imbalance_by_layer": "R = U_vision / (U_vision + U_text) per decoder layer for the answer position on the "
                          "cross-modal rows, mean with 95% intervals; 0.5 is balance, near 0 the image is ignored.",
}


def recognition_figures(results: dict[str, dict]) -> dict[str, bytes]:
    figs = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(results))
    for k, (name, res) in enumerate(results.items()):
        cells = {c["evidence"]: c for c in res["by_evidence"]}
        x = np.arange(len(EVIDENCE)) + k * width
        for key, hatch, alpha in (("recognition", None, 0.9), ("false_alarm", "//", 0.35)):
            rates = [cells[e][key]["rate"] if e in cells and cells[e][key]["rate"] is not None else np.nan
                     for e in EVIDENCE]
            cis = [cells[e][key]["ci"] if e in cells and cells[e][key]["ci"] else (np.nan, np.nan) for e in EVIDENCE]
            err = np.abs(np.array(cis).T - np.array(rates))
            ax.bar(x, rates, width * 0.9, yerr=err, color=f"C{k}", alpha=alpha, hatch=hatch, capsize=3,
                   label=f"{name}: {'recognised' if key == 'recognition' else 'false alarms'}")
    ax.set_xticks(np.arange(len(EVIDENCE)) + width * (len(results) - 1) / 2, EVIDENCE)
    ax.set_ylim(0, 1)
    ax.set_ylabel("answered 'yes'")
    ax.legend(fontsize=7)
    figs["recognition"] = _fig_png(fig)
    with_r = {n: r["imbalance"] for n, r in results.items() if r["imbalance"]}
    if with_r:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k, (name, imb) in enumerate(with_r.items()):
            mean = np.array([c["mean"] if c["mean"] is not None else np.nan for c in imb["imbalance"]])
            ci = np.array([c["ci"] if c["ci"] else (np.nan, np.nan) for c in imb["imbalance"]])
            ax.plot(imb["layers"], mean, "o-", color=f"C{k}", label=name)
            ax.fill_between(imb["layers"], ci[:, 0], ci[:, 1], color=f"C{k}", alpha=0.2)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("R = U_vision / (U_vision + U_text)")
        ax.legend(fontsize=7)
        figs["imbalance_by_layer"] = _fig_png(fig)
    return figs


def write_recognition_report(runs: list[str | Path], out: str | Path, names: list[str] | None = None,
                             results: dict[str, dict] | None = None, n_boot: int = 1000) -> dict:
    """Analyse each recognition run folder (or take `results`, keyed by name) and write the report."""
    names = names or [Path(r).name for r in runs]
    results, tables = dict(results or {}), []
    paired = len(runs) == 2  # before/after: the paired change needs both tables
    for name, run in zip(names, runs):
        table = load_run(run)[0] if paired or name not in results else None
        tables.append(table)
        if name not in results:
            results[name] = analyze_recognition(table, n_boot)
        write_json(Path(run) / "analysis.json", results[name])
    return recognition_report_results({n: results[n] for n in names}, out, tables if paired else None, n_boot)


def recognition_report_results(results: dict[str, dict], out: str | Path, tables: list[pd.DataFrame] | None = None,
                               n_boot: int = 1000) -> dict:
    """Figures, summary.json and report.html in `out` for recognition analyses keyed by run name; with the two
    per-sample tables of a before/after pair, the paired change of the distance from balance too."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(results)
    paired = tables is not None and len(tables) == 2 and len(names) == 2
    figs = recognition_figures(results)
    for key, png in figs.items():
        write_bytes(out / f"{key}.png", png)
    summary = {"runs": results, "imbalance_change": None}
    if paired and all(results[n]["imbalance"] for n in names):
        summary["imbalance_change"] = imbalance_change(*tables, n_boot=n_boot)
    write_json(out / "summary.json", summary)
    write_text(out / "report.html", _html(results, figs, summary.get("imbalance_change"), names))
    return summary


def describe_imbalance_change(change: dict, names: list[str]) -> str:
    interval = f" [{change['ci'][0]:+.3f}, {change['ci'][1]:+.3f}]" if change["ci"] else ""
    return (f"distance from balance, mean over layers of |R - 0.5| on the cross-modal rows: {names[0]} "
            f"{change['before']:.3f} -> {names[1]} {change['after']:.3f}, change {change['change']:+.3f}{interval} "
            f"(paired group bootstrap over {change['n_groups']} groups; negative is toward balance)")


def _html(results: dict[str, dict], figs: dict[str, bytes], change: dict | None = None,
          names: list[str] | None = None) -> str:
    rows = []
    for name, res in results.items():
        for c in res["by_evidence"]:
            ba = c["balanced_accuracy"]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                name, c["evidence"], format_rate(c["recognition"]), format_rate(c["false_alarm"]),
                "–" if ba is None else f"{ba:.3f}" + (f" [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" if c["ci"] else ""))) + "</tr>")
    paragraph = f"<p>{html.escape(describe_imbalance_change(change, names))}</p>" if change else ""
    imgs = "".join(f"<h2>{k.replace('_', ' ')}</h2><img src='data:image/png;base64,{base64.b64encode(v).decode()}'>"
                   f"<p>{html.escape(CAPTIONS.get(k, ''))}</p>" for k, v in figs.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Conflict-recognition report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}img{{max-width:100%}}</style></head>
<body><h1>Conflict-recognition report</h1><table><tr><th>run</th><th>evidence</th><th>recognition [95% CI]</th>
<th>false alarms</th><th>balanced accuracy</th></tr>{''.join(rows)}</table>{paragraph}{imgs}</body></html>"""
