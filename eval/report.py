"""Figures, one self-contained HTML page and summary.json for one or several runs."""
from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .analysis import UNCERTAINTY_INDICES, AnalysisConfig, analyze  # noqa: E402

log = logging.getLogger(__name__)


def load_run(run: str | Path) -> tuple[pd.DataFrame, dict]:
    run = Path(run)
    table_path = run / "samples.parquet"
    if not table_path.exists():
        raise FileNotFoundError(f"{run} has no samples.parquet; create it with "
                                f"`python -m eval measure --model M --data D --output_dir {run}`")
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    return pd.read_parquet(table_path), info


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def plot_curves(results: dict[str, dict], index: str = "entropy", ax=None):
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
                    capsize=3, label=f"{name} (binned, Wilson 95%)")
        if (ok & few).any():
            ax.plot(b["centre"][ok & few], b["rate"][ok & few], "o", mfc="none", color=color, label=f"{name}: bins with few samples")
        bp = curve["balance_point"]
        xs = np.linspace(-2, 2, 200)
        if np.isfinite(bp["slope"]):
            ax.plot(xs, _sigmoid(bp["intercept"] + bp["slope"] * xs), "-", color=color, alpha=0.8)
        if bp["crosses"]:
            ax.axvline(bp["estimate"], color=color, ls="--", lw=1)
            if bp["ci"]:
                ax.axvspan(*bp["ci"], color=color, alpha=0.12)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set(xlim=(-2.05, 2.05), ylim=(-0.02, 1.02), xlabel=f"relative uncertainty dH_rel ({index})",
           ylabel="P(text-following)", title="Modality-following curve")
    ax.legend(fontsize=7, loc="upper right")
    return ax


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figures(results: dict[str, dict]) -> dict[str, bytes]:
    figs = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_curves(results, "entropy", ax)
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
    ax.legend(fontsize=7)
    figs["oscillation"] = _fig_png(fig)

    heat = [(n, r["oscillation"]["heatmap"]) for n, r in results.items() if r.get("oscillation") and r["oscillation"]["heatmap"]]
    if heat:
        fig, axes = plt.subplots(1, len(heat), figsize=(5 * len(heat), 3.6), squeeze=False)
        for ax, (name, h) in zip(axes[0], heat):
            m = np.array([[np.nan if v is None else v for v in row] for row in h["mean_logit_diff"]])
            lim = np.nanmax(np.abs(m)) or 1
            im = ax.imshow(m, aspect="auto", origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim)
            e = h["edges"]
            ax.set_xticks(range(len(e) - 1), [f"{(a + b) / 2:+.1f}" for a, b in zip(e, e[1:])], fontsize=7)
            ax.set_yticks(range(m.shape[0]), [str(k + 1) for k in range(m.shape[0])])
            ax.set(xlabel="dH_rel bin", ylabel="decoder layer", title=f"{name}: logit(Y_t) - logit(Y_v)")
            fig.colorbar(im, ax=ax)
        figs["lens_heatmap"] = _fig_png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, (name, res) in enumerate(results.items()):
        for ax, side, key in ((axes[0], "visual", "d_v"), (axes[1], "text", "d_t")):
            recs = res["difficulty"].get(side)
            if not recs:
                continue
            x = [r[key] for r in recs]
            ax.plot(x, [r["accuracy"] for r in recs], "o-", color=f"C{k}", label=f"{name} accuracy")
            ax.plot(x, [r["entropy"] for r in recs], "s--", color=f"C{k}", alpha=0.6, label=f"{name} entropy (nats)")
            ax.set(xlabel=key, title=f"{side} difficulty ({'image' if side == 'visual' else 'text'} only)")
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
        "unimodal_accuracy": unimodal_accuracy(res),
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
                 names: list[str] | None = None, results: dict[str, dict] | None = None) -> dict:
    """Analyse each run (or take `results` already computed, keyed by name) and write the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = names or [Path(r).name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    results, infos, warnings = dict(results or {}), {}, []
    for name, run in zip(names, runs):
        table, info = load_run(run)
        infos[name] = info
        if name not in results:
            results[name] = analyze(table, cfg)
        (Path(run) / "analysis.json").write_text(json.dumps(results[name], indent=2, default=float))
    prints = {n: i.get("dataset_fingerprint") for n, i in infos.items()}
    if len(set(prints.values())) > 1:
        warnings.append(f"runs were scored on different datasets {prints}: curves are not directly comparable")
        log.warning(warnings[-1])
    for name, res in results.items():
        for bad in [n for n, c in res["curves"].items() if "error" in c]:
            warnings.append(f"{name}: no curve for index {bad}: {res['curves'][bad]['error']}")
        direction = (res["balance_point"] or {}).get("direction")
        if direction in ("rising", "flat"):
            warnings.append(f"{name}: the following curve is {direction} in dH_rel, not falling as modality following "
                            f"predicts; its balance point does not mean 'leans' in the usual sense")
        few = sum(res["curves"][res["config"]["index"]]["bins"]["few"])
        if few:
            warnings.append(f"{name}: {few} bin(s) hold fewer than {res['config']['min_bin_count']} samples (hollow markers)")
    figs = figures(results)
    for key, png in figs.items():
        (out / f"{key}.png").write_bytes(png)
    summary = {"runs": {n: {"path": str(r), "model": infos[n].get("model"), **headline(results[n])}
                        for n, r in zip(names, runs)}, "warnings": warnings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.html").write_text(_html(summary, figs))
    return summary


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
            s["n_analysed"])) + "</tr>")
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in summary["warnings"])
    imgs = "".join(f"<h2>{k.replace('_', ' ')}</h2><img src='data:image/png;base64,{base64.b64encode(v).decode()}'>"
                   for k, v in figs.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Modality-following report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}img{{max-width:100%}}.warn{{color:#a40}}</style></head>
<body><h1>Modality-following report</h1>
<table><tr><th>run</th><th>model</th><th>balance point [95% CI]</th><th>TFR</th><th>VFR</th>
<th>oscillation, ambiguous</th><th>oscillation, clear</th><th>image-only acc.</th><th>text-only acc.</th><th>n</th></tr>
{''.join(rows)}</table>{f'<ul class="warn">{warn}</ul>' if warn else ''}{imgs}</body></html>"""
