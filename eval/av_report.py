"""The figure of an audio-visual run (`eval av`): accuracy per condition x asked modality, and Cohen's d per layer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_gen.av import ASKED, CONDITIONS

from .report import _fig_png, plt

CAPTION = ("Left: accuracy against the asked modality's class per condition (bars: asked about the frames / the sound; "
           "95% intervals clustered by group; missing bar: that modality is absent, no target). Right: Cohen's d of "
           "the answer position's video share of attention (frames / (frames + sound)) between visual- and "
           "audio-asked prompts, per decoder layer; positive: the question steers attention to the asked modality.")


def write_av_figure(res: dict, out: str | Path) -> Path:
    cells = {(c["condition"], c["asked"]): c["accuracy"] for c in res["accuracy"]}
    panels = 2 if res.get("attention") else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax, x, width = axes[0][0], np.arange(len(CONDITIONS)), 0.4
    for k, asked in enumerate(ASKED):
        acc = [cells.get((c, asked), {}) for c in CONDITIONS]
        rate = np.array([a["rate"] if a.get("rate") is not None else np.nan for a in acc])
        ci = np.array([a["ci"] if a.get("ci") else (np.nan, np.nan) for a in acc])
        ax.bar(x + k * width, rate, width * 0.9, yerr=np.abs(ci.T - rate), capsize=3, color=f"C{k}",
               label=f"asked about the {'frames' if asked == 'visual' else 'sound'}")
    ax.set_xticks(x + width / 2, [c.replace("_", "\n") for c in CONDITIONS], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (asked modality's class)")
    ax.legend(fontsize=8)
    if panels == 2:
        layers = res["attention"]
        axes[0][1].plot([l["layer"] for l in layers], [l["cohens_d"] for l in layers], "o-")
        axes[0][1].axhline(0, color="grey", lw=0.8)
        axes[0][1].set_xticks([l["layer"] for l in layers])
        axes[0][1].set_xlabel("decoder layer")
        axes[0][1].set_ylabel("Cohen's d, video share: visual- vs audio-asked")
    path = Path(out) / "av.png"
    path.write_bytes(_fig_png(fig))
    return path
