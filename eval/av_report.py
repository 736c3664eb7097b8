"""Audio-visual report (`eval av`, `recipes/align_omni.py`): accuracy per condition x asked modality and Cohen's d per
layer, for one run or several side by side (before / after alignment); av.png, summary.json and report.html."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from data_gen.av import ASKED, CONDITIONS
from data_gen.files import write_bytes, write_json, write_text

from .av import describe_following
from .recognition import format_rate
from .report import _fig_png, plt

CAPTION = ("Accuracy against the asked modality's class per condition, one panel per asked modality, one bar per run "
           "(95% intervals clustered by group; no bar: that modality is absent, no target). Last panel: Cohen's d of "
           "the answer position's video share of attention (frames / (frames + sound)) between visual- and "
           "audio-asked prompts, per decoder layer; positive: the question steers attention to the asked modality.")
MODALITY = {"visual": "the frames", "audio": "the sound"}
FOLLOWING = ("P(the answer is the sound's class) against dH_rel = 2 (H_sound - H_frames) / (H_sound + H_frames), the "
             "entropies of the group's sound alone and frames alone (eval/av.py: audio_following_samples), with the "
             "balance point where it crosses 0.5.")


def av_figure(results: dict[str, dict]) -> bytes:
    """One bar panel per asked modality (runs side by side), and Cohen's d by layer when attention was measured."""
    with_attention = any(res.get("attention") for res in results.values())
    panels = len(ASKED) + with_attention
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    x, width = np.arange(len(CONDITIONS)), 0.8 / len(results)
    for ax, asked in zip(axes[0], ASKED):
        for k, (name, res) in enumerate(results.items()):
            cells = {c["condition"]: c["accuracy"] for c in res["accuracy"] if c["asked"] == asked}
            acc = [cells.get(c, {}) for c in CONDITIONS]
            rate = np.array([a["rate"] if a.get("rate") is not None else np.nan for a in acc])
            ci = np.array([a["ci"] if a.get("ci") else (np.nan, np.nan) for a in acc])
            ax.bar(x + k * width, rate, width * 0.9, yerr=np.abs(ci.T - rate), capsize=3, color=f"C{k}", label=name)
        ax.set_xticks(x + width * (len(results) - 1) / 2, [c.replace("_", "\n") for c in CONDITIONS], fontsize=8)
        ax.set(ylim=(0, 1.05), ylabel="accuracy (asked modality's class)", title=f"asked about {MODALITY[asked]}")
    if with_attention:
        ax = axes[0][-1]
        for k, (name, res) in enumerate(results.items()):
            layers = res.get("attention") or []
            ax.plot([l["layer"] for l in layers], [l["cohens_d"] for l in layers], "o-", color=f"C{k}", label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="decoder layer", ylabel="Cohen's d, video share: visual- vs audio-asked")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0][0].get_legend_handles_labels()  # one legend for every panel, above them
    fig.legend(handles, labels, loc="upper center", ncol=len(results), fontsize=9, bbox_to_anchor=(0.5, 1.06))
    return _fig_png(fig)


def write_av_report(results: dict[str, dict], out: str | Path) -> dict:
    """av.png, summary.json and a self-contained report.html in `out` for the named analyses (`eval.av.analyze_av`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = av_figure(results)
    write_bytes(out / "av.png", png)
    summary = {"runs": results}
    write_json(out / "summary.json", summary)
    write_text(out / "report.html", _html(results, png))
    return summary


def _html(results: dict[str, dict], png: bytes) -> str:
    names = list(results)
    cells = {(name, c["condition"], c["asked"]): c for name, res in results.items() for c in res["accuracy"]}
    rows = []
    for condition in CONDITIONS:
        for asked in ASKED:
            found = [cells.get((name, condition, asked)) for name in names]
            if not any(found):
                continue
            acc = [format_rate(c["accuracy"]) if c and c["accuracy"]["n"] else "– (no target)" for c in found]
            rows.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in (condition, asked, *acc)) + "</tr>")
    layers = []
    for name, res in results.items():
        for l in res.get("attention") or []:
            layers.append(f"<tr><td>{html.escape(name)}</td><td>{l['layer']}</td><td>{l['video_share_visual_asked']:.3f}"
                          f"</td><td>{l['video_share_audio_asked']:.3f}</td><td>{l['cohens_d']:+.2f}</td></tr>")
    following = [f"<tr><td>{html.escape(name)}</td><td>{q.replace('_', ' ')}</td><td>{c['n']}</td>"
                 f"<td>{c['audio_following_rate']:.3f}</td><td>{html.escape(describe_following(c))}</td></tr>"
                 for name, res in results.items() for q, c in (res.get("audio_following") or {}).items() if c]
    head = "".join(f"<th>{html.escape(n)}: accuracy [95% CI]</th>" for n in names)
    attention = ("<h2>Attention on frames vs sound, per decoder layer</h2><table><tr><th>run</th><th>layer</th>"
                 "<th>video share, visual-asked</th><th>video share, audio-asked</th><th>Cohen's d</th></tr>"
                 f"{''.join(layers)}</table>") if layers else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Audio-visual conflict report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}img{{max-width:100%}}</style></head>
<body><h1>Audio-visual conflict report</h1><table><tr><th>condition</th><th>asked</th>{head}</tr>{''.join(rows)}</table>
<img src='data:image/png;base64,{base64.b64encode(png).decode()}'><p>{html.escape(CAPTION)}</p>{attention}
<h2>Sound vs frames on misaligned clips</h2><p>{html.escape(FOLLOWING)}</p><table><tr><th>run</th><th>questions</th>
<th>n</th><th>answers the sound</th><th>balance point on dH_rel(sound vs frames)</th></tr>{''.join(following)}</table>
</body></html>"""
