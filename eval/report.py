"""Figures, one self-contained HTML page and summary.json for one or several runs."""
from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from data_gen.files import read_json, write_bytes, write_json, write_text

from .analysis import UNCERTAINTY_INDICES, AnalysisConfig, analyze, describe_fit_check, paired_runs  # noqa: E402

log = logging.getLogger(__name__)


def load_run(run: str | Path) -> tuple[pd.DataFrame, dict]:
    run = Path(run)
    table_path = run / "samples.parquet"
    if not table_path.exists():
        raise FileNotFoundError(f"{run} has no samples.parquet; create it with "
                                f"`python -m eval measure --model M --data D --output_dir {run}`")
    info = read_json(run / "run.json") if (run / "run.json").exists() else {}
    return pd.read_parquet(table_path), info


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def plot_curves(results: dict[str, dict], index: str = "entropy", ax=None, target: float | None = None):
    """Binned rates with intervals, the logistic fit, the balance point and its interval, per run; b* if given."""
    ax = ax or plt.gca()
    for k, (name, res) in enumerate(results.items()):
        curve = res["curves"].get(index, {})
        if "bins" not in curve:
            continue
        color = f"C{k}"
        b = {key: np.asarray(v, dtype=float) for key, v in curve["bins"].items()}
        ok = b["n"] > 0
        few = np.asarray(curve["bins"]["few"], dtype=bool)
        err = np.clip(np.vstack([b["rate"] - b["ci_lo"], b["ci_hi"] - b["rate"]]), 0, None)
        ax.errorbar(b["centre"][ok & ~few], b["rate"][ok & ~few], yerr=err[:, ok & ~few], fmt="o", color=color,
                    capsize=3)
        if (ok & few).any():
            ax.plot(b["centre"][ok & few], b["rate"][ok & few], "o", mfc="none", color=color)
        bp = curve["balance_point"]
        xs = np.linspace(-2, 2, 200)
        # one legend entry per run (its fit, named with its balance point); the marks are explained in the caption
        told = (f"{bp['estimate']:+.2f}" + (f" [{bp['ci'][0]:+.2f}, {bp['ci'][1]:+.2f}]" if bp.get("ci") else "")
                if bp.get("crosses") else "no crossing")
        if np.isfinite(bp.get("slope", np.nan)):
            ax.plot(xs, _sigmoid(bp["intercept"] + bp["slope"] * xs), "-", color=color, alpha=0.8,
                    label=f"{name}: balance point {told}")
        if bp.get("crosses"):
            ax.axvline(bp["estimate"], color=color, ls="--", lw=1)
            if bp["ci"]:
                ax.axvspan(*bp["ci"], color=color, alpha=0.12)
        iso = (curve.get("fit_check") or {}).get("isotonic") or {}
        if iso.get("estimate") is not None:
            ax.axvline(iso["estimate"], color=color, ls=(0, (1, 3)), lw=1.5)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    if target is not None:  # drawn over dH_rel = 0 when b* is 0, in its own colour and named at the top
        ax.axvline(target, color="crimson", lw=2, ls="-.", label=f"target b* = {target:+.2f}")
        ax.annotate("b*", (target, 1.0), xytext=(3, -12), textcoords="offset points", color="crimson", fontsize=9)
    ax.set(xlim=(-2.05, 2.05), ylim=(-0.02, 1.02), xlabel=f"relative uncertainty dH_rel ({index})",
           ylabel="P(text-following)", title="Modality-following curve")
    if ax.get_legend_handles_labels()[0]:  # a run with no curve has nothing to name
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over the data
    return ax


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


CAPTIONS = {
    "following_curve": "P(text-following) against relative uncertainty dH_rel = 2 (H_t - H_v) / (H_t + H_v), entropy "
                       "index; one colour per run (legend: its balance point and 95% interval). Dots: binned rates "
                       "with 95% intervals over groups (hollow: bins with few samples); lines: logistic fits; dashed: "
                       "balance points, shaded: their 95% intervals; sparse dots: the crossings of monotone (isotonic) "
                       "fits; grey: P = 0.5 and, dotted, equal uncertainty (dH_rel = 0); red dash-dot: the target "
                       "balance point b*, when there is one.",
    "curves_by_index": "The same curve with each uncertainty index on the x-axis (entropy, 1 - max p, 1 - top-2 "
                       "margin, entropy over the candidate answers).",
    "oscillation": "Mean number of switches between the visual and the textual answer across decoder layers (logit "
                   "lens), in the ambiguous region (|dH_rel - balance point| <= width) and the clear region, with "
                   "95% intervals.",
    "lens_heatmap": "Mean logit(Y_t) - logit(Y_v) per decoder layer (rows) and dH_rel bin (columns, equal width over "
                    "[-2, 2]); one colour scale for all runs: red prefers the text's answer, blue the image's.",
    "difficulty": "Unimodal accuracy (solid, left axis) and mean entropy in nats (dashed, right axis) by visual tier (image only) and text "
                  "tier (text only).",
    "tfr_cells": "Text-following rate per (visual tier, text tier) cell; one colour scale (0 to 1) for all runs.",
}


def figures(results: dict[str, dict], target: float | None = None) -> dict[str, bytes]:
    figs = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_curves(results, "entropy", ax, target)
    figs["following_curve"] = _fig_png(fig)

    fig, axes = plt.subplots(1, len(UNCERTAINTY_INDICES), figsize=(4 * len(UNCERTAINTY_INDICES), 3.4))
    for ax, index in zip(axes, UNCERTAINTY_INDICES):
        plot_curves(results, index, ax)
        ax.set_title(index, fontsize=9)
        ax.get_legend().remove() if ax.get_legend() else None
    figs["curves_by_index"] = _fig_png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    width = 0.8 / max(1, len(results))
    for k, (name, res) in enumerate(results.items()):
        osc = res.get("oscillation")
        if not osc:
            continue
        for j, region in enumerate(("ambiguous", "clear")):
            m = osc[region]
            if m["mean"] is None:
                continue
            lo, hi = m["ci"]
            ax.bar(j + k * width, m["mean"], width, color=f"C{k}", label=name if j == 0 else None,
                   yerr=[[m["mean"] - lo], [hi - m["mean"]]] if np.isfinite(lo) else None, capsize=3)
    ax.set_xticks([0.4 - width / 2 + width * len(results) / 2 - 0.4 + i for i in range(2)], ["ambiguous", "clear"])
    ax.set(ylabel="mean oscillation count", title="Logit-lens oscillation")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    figs["oscillation"] = _fig_png(fig)

    heat = [(n, r["oscillation"]["heatmap"]) for n, r in results.items() if r.get("oscillation") and r["oscillation"]["heatmap"]]
    if heat:
        fig, axes = plt.subplots(1, len(heat), figsize=(5 * len(heat), 3.6), squeeze=False)
        grids = [np.array([[np.nan if v is None else v for v in row] for row in h["mean_logit_diff"]]) for _, h in heat]
        lim = max(float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0 for m in grids) or 1.0  # one scale
        for ax, (name, h), m in zip(axes[0], heat, grids):
            im = ax.imshow(m, aspect="auto", origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim)
            e = h["edges"]
            ax.set_xticks(range(len(e) - 1), [f"{(a + b) / 2:+.1f}" for a, b in zip(e, e[1:])], fontsize=7)
            ax.set_yticks(range(m.shape[0]), [str(k + 1) for k in range(m.shape[0])])
            ax.set(xlabel="dH_rel bin", ylabel="decoder layer", title=f"{name}: logit(Y_t) - logit(Y_v)")
            fig.colorbar(im, ax=ax)
        figs["lens_heatmap"] = _fig_png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"wspace": 0.5})
    twin = {ax: ax.twinx() for ax in axes}  # accuracy and entropy on their own labelled scales
    for k, (name, res) in enumerate(results.items()):
        for ax, side, key in ((axes[0], "visual", "d_v"), (axes[1], "text", "d_t")):
            recs = res["difficulty"].get(side)
            if not recs:
                continue
            x = [r[key] for r in recs]
            ax.plot(x, [r["accuracy"] for r in recs], "o-", color=f"C{k}", label=name)
            twin[ax].plot(x, [r["entropy"] for r in recs], "s--", color=f"C{k}", alpha=0.6)
            ax.set(xlabel=key, ylabel="accuracy (solid)", ylim=(-0.02, 1.02),
                   title=f"{side} difficulty ({'image' if side == 'visual' else 'text'} only)")
            twin[ax].set(ylabel="mean entropy, nats (dashed)")
    axes[0].legend(fontsize=7)
    figs["difficulty"] = _fig_png(fig)

    cells = [(n, r["tfr_cells"]) for n, r in results.items() if r.get("tfr_cells")]
    if cells:
        fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 3), squeeze=False)
        for ax, (name, cs) in zip(axes[0], cells):
            dv = sorted({c["d_v"] for c in cs})
            dt = sorted({c["d_t"] for c in cs})
            m = np.full((len(dt), len(dv)), np.nan)
            for c in cs:
                if c["tfr"] is not None:
                    m[dt.index(c["d_t"]), dv.index(c["d_v"])] = c["tfr"]
            im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(dv)), dv)
            ax.set_yticks(range(len(dt)), dt)
            ax.set(xlabel="d_v", ylabel="d_t", title=f"{name}: TFR per (d_v, d_t)")
            fig.colorbar(im, ax=ax)
        figs["tfr_cells"] = _fig_png(fig)
    return figs


def headline(res: dict) -> dict:
    """The numbers a reader wants first, each with its interval."""
    osc = res.get("oscillation") or {}
    return {
        "balance_point": res["balance_point"],
        "tfr": res["following"]["tfr"], "tfr_ci": res["following"]["tfr_ci"],
        "vfr": res["following"]["vfr"], "vfr_ci": res["following"]["vfr_ci"],
        "n_analysed": res["counts"]["analysed"], "n_following": res["following"]["n"],
        "monotonicity": res["monotonicity"], "direction": (res["balance_point"] or {}).get("direction"),
        "oscillation_ambiguous": osc.get("ambiguous"), "oscillation_clear": osc.get("clear"),
        "unimodal_accuracy": unimodal_accuracy(res), "ability": res.get("ability"), "fit_check": res.get("fit_check"),
    }


def unimodal_accuracy(res: dict) -> dict:
    out = {}
    for side in ("visual", "text"):
        recs = res["difficulty"].get(side) or []
        n = sum(r["n"] for r in recs)
        out[side] = sum(r["accuracy"] * r["n"] for r in recs) / n if n else None
    return out


def _fmt_ci(v, ci):
    return "–" if v is None else (f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))


def write_report(runs: list[str | Path], out: str | Path, cfg: AnalysisConfig | None = None,
                 names: list[str] | None = None, results: dict[str, dict] | None = None,
                 target: float | None = None) -> dict:
    """Analyse each run folder (or take `results` already computed, keyed by name) and write the report;
    `target` (a balance point aimed at) is drawn on the curve."""
    names = names or [Path(r).name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    results, infos, tables = dict(results or {}), {}, {}
    for name, run in zip(names, runs):
        tables[name], info = load_run(run)
        infos[name] = {"path": str(run), **info}
        if name not in results:
            results[name] = analyze(tables[name], cfg)
        write_json(Path(run) / "analysis.json", results[name])
    paired = None
    if len(names) == 2:  # before and after: the paired shift (and the guarantee, given the target) where they pair
        prints = [infos[n].get("dataset_fingerprint") for n in names]
        paired = paired_runs(tables[names[0]], tables[names[1]], results[names[1]], target, cfg or AnalysisConfig(),
                             (names[0], names[1]), same_data=None in prints or prints[0] == prints[1])
    return report_results({n: results[n] for n in names}, out, infos, target, paired)


def report_results(results: dict[str, dict], out: str | Path, infos: dict[str, dict] | None = None,
                   target: float | None = None, paired: dict | None = None) -> dict:
    """figures, report.html and summary.json in `out` for analyses keyed by run name; `infos` (per name: its
    run.json, with `path`) name the model and the dataset each was scored on."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    infos = {name: (infos or {}).get(name, {}) for name in results}
    warnings = []
    prints = {n: i.get("dataset_fingerprint") for n, i in infos.items()}
    if len(set(prints.values())) > 1:
        warnings.append(f"runs were scored on different datasets {prints}: curves are not directly comparable")
        log.warning(warnings[-1])
    for name, res in results.items():
        gate = res.get("ability") or {}
        if gate.get("line"):
            warnings.append(f"{name}: {gate['line']}" + ("; the balance point was forced past the gate (--force)"
                                                         if res["config"].get("force") else "; no balance point"))
        for bad in [n for n, c in res["curves"].items() if "error" in c]:
            warnings.append(f"{name}: no curve for index {bad}: {res['curves'][bad]['error']}")
        direction = (res["balance_point"] or {}).get("direction")
        if direction in ("rising", "flat"):
            warnings.append(f"{name}: the following curve is {direction} in dH_rel, not falling as modality following "
                            f"predicts; its balance point does not mean 'leans' in the usual sense")
        if (res.get("fit_check") or {}).get("disagrees"):
            warnings.append(f"{name}: the logistic and the isotonic (model-free) balance points disagree beyond their "
                            f"intervals: the logistic curve does not describe this run's rates")
        few = sum(res["curves"][res["config"]["index"]]["bins"]["few"])
        if few:
            warnings.append(f"{name}: {few} bin(s) hold fewer than {res['config']['min_bin_count']} samples (hollow markers)")
    figs = figures(results, target)
    for key, png in figs.items():
        write_bytes(out / f"{key}.png", png)
    summary = {"runs": {n: {"path": infos[n].get("path"), "model": display_model(infos[n].get("model")),
                            **headline(results[n])}
                        for n in results}, "warnings": warnings, **({"paired": paired} if paired else {})}
    write_json(out / "summary.json", summary)
    write_text(out / "report.html", _html(summary, figs))
    return summary


def display_model(name: str | None) -> str | None:
    """A run's model as a reader knows it: `base+/work/outputs/align-x/adapter` -> `base + align-x` (the run's
    release name: the folder it was made in), not a workspace path the bundle does not hold."""
    if not name or "+" not in name:
        return name
    base, *parts = name.split("+")
    shown = []
    for part in parts:
        kind, _, value = part.partition(":") if part.startswith(("steering:", "instruction:")) else ("", "", part)
        path = Path(value)
        while path.name in ("adapter", "release", "steering.safetensors") and path.parent.name:
            path = path.parent  # up to the folder the run was made in
        shown.append(f"{kind} {path.name}".strip() if kind != "instruction" else part)
    return " + ".join([base, *shown])


def _html(summary: dict, figs: dict[str, bytes]) -> str:
    rows = []
    for name, s in summary["runs"].items():
        bp = s["balance_point"] or {}
        osc_a, osc_c = s["oscillation_ambiguous"] or {}, s["oscillation_clear"] or {}
        acc = s["unimodal_accuracy"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            name, s.get("model"), bp.get("description", "–"), _fmt_ci(s["tfr"], s["tfr_ci"]), _fmt_ci(s["vfr"], s["vfr_ci"]),
            _fmt_ci(osc_a.get("mean"), osc_a.get("ci")), _fmt_ci(osc_c.get("mean"), osc_c.get("ci")),
            "–" if acc["visual"] is None else f"{acc['visual']:.3f}", "–" if acc["text"] is None else f"{acc['text']:.3f}",
            f"{s['n_analysed']} / {s['n_following']}", describe_fit_check(s.get("fit_check")).removeprefix("fit check: "))) + "</tr>")
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in summary["warnings"])
    result_line = (f"<p class='result'><b>{html.escape(summary['paired']['description'])}</b></p>"
                   if summary.get("paired") else "")
    imgs = "".join(f"<h2>{k.replace('_', ' ')}</h2><img src='data:image/png;base64,{base64.b64encode(v).decode()}'>"
                   f"<p class='caption'>{html.escape(CAPTIONS.get(k, ''))}</p>"
                   for k, v in figs.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Modality-following report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}img{{max-width:100%}}.warn{{color:#a40}}</style></head>
<body><h1>Modality-following report</h1>{result_line}
<table><tr><th>run</th><th>model</th><th>balance point [95% CI]</th><th>TFR</th><th>VFR</th>
<th>oscillation, ambiguous</th><th>oscillation, clear</th><th>image-only acc.</th><th>text-only acc.</th>
<th>conflicts analysed / text- or vision-following</th><th>fit check: grouped goodness of fit; isotonic balance point</th></tr>
{''.join(rows)}</table><p class="caption">Analysed: conflicts whose image-only and text-only answers are both right
(unless the filter is off); TFR, VFR and the curve count the text- or vision-following ones among them.</p>{f'<ul class="warn">{warn}</ul>' if warn else ''}{imgs}</body></html>"""
