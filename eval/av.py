"""Audio-visual conflict analysis (docs/method.md, "Audio-visual conflicts"): pure functions on the per-sample table.

The table has one row per (clip, condition, asked modality) with the model's answer `pred`; the attention
analysis reads `mass_video` and `mass_audio`, the answer position's attention mass on the video and the audio
tokens per decoder layer (lists, one value per layer).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats


def accuracy_by_condition(table: pd.DataFrame) -> list[dict]:
    """Per condition x asked modality, with group-clustered 95 % intervals:
    - `accuracy`: the answer is the asked modality's class (rows that have one);
    - `other_modality`: the answer is the other modality's class where the two differ (misaligned clips, and
      the rows whose asked modality is absent): how often the model answers from the wrong evidence;
    - `misleading`: the answer is the misleading caption's class (misleading_text rows)."""
    cells = []
    for (condition, asked), t in table.groupby(["condition", "asked"], sort=True):
        has_target = (t.target != "").to_numpy()
        other = (t.answer_audio if asked == "visual" else t.answer_visual).to_numpy()
        differs = (other != "") & (other != t.target.to_numpy())
        pred, groups = t.pred.to_numpy(), t.group.to_numpy()
        cell = {"condition": condition, "asked": asked,
                "accuracy": stats.rate_with_interval((pred == t.target.to_numpy())[has_target], groups[has_target]),
                "other_modality": stats.rate_with_interval((pred == other)[differs], groups[differs])}
        misleading = (t.misleading_class != "").to_numpy()
        if misleading.any():
            cell["misleading"] = stats.rate_with_interval((pred == t.misleading_class.to_numpy())[misleading],
                                                          groups[misleading])
        cells.append(cell)
    return cells


def video_share(table: pd.DataFrame) -> np.ndarray:
    """(rows, layers): attention mass on video tokens over the mass on video and audio tokens (NaN without both)."""
    video = np.stack([np.asarray(m, dtype=float) for m in table.mass_video])
    audio = np.stack([np.asarray(m, dtype=float) for m in table.mass_audio])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(video + audio > 0, video / (video + audio), np.nan)


def attention_effect_by_layer(table: pd.DataFrame) -> list[dict]:
    """Per decoder layer: mean video share for visual- and audio-asked prompts and Cohen's d between them
    (positive: asking about the frames moves attention toward them), on clips that have both modalities."""
    both = table[(table.answer_visual != "") & (table.answer_audio != "")]
    share = video_share(both)
    asked = both.asked.to_numpy()
    layers = []
    for layer in range(share.shape[1]):
        visual, audio = share[asked == "visual", layer], share[asked == "audio", layer]
        visual, audio = visual[~np.isnan(visual)], audio[~np.isnan(audio)]
        layers.append({"layer": layer, "video_share_visual_asked": float(visual.mean()) if len(visual) else None,
                       "video_share_audio_asked": float(audio.mean()) if len(audio) else None,
                       "cohens_d": stats.cohens_d(visual, audio)})
    return layers


def accuracy_pooled(table: pd.DataFrame) -> list[dict]:
    """Per condition, both asked modalities together (rows that have a target), with group-clustered intervals."""
    cells = []
    for condition, t in table[table.target != ""].groupby("condition", sort=True):
        cells.append({"condition": condition, "accuracy": stats.rate_with_interval(
            (t.pred == t.target).to_numpy(), t.group.to_numpy())})
    return cells


def analyze_av(table: pd.DataFrame) -> dict:
    """Everything `eval av` and the asked-modality recipe report from a scored AV table."""
    return {"accuracy": accuracy_by_condition(table), "by_condition": accuracy_pooled(table),
            "attention": attention_effect_by_layer(table) if "mass_video" in table else None}


def describe_av(res: dict) -> str:
    """The analysis as lines of text: accuracy per condition x asked modality, pooled per condition, d per layer."""
    from .recognition import format_rate
    lines = []
    for cell in res["accuracy"]:
        acc = cell["accuracy"]
        lines.append(f"{cell['condition']:<16} asked {cell['asked']:<6} accuracy "
                     + (format_rate(acc) if acc["n"] else "-  (no target)")
                     + f"  answers the other modality {format_rate(cell['other_modality'])}")
    lines += [f"{c['condition']:<16} both asked   accuracy {format_rate(c['accuracy'])}" for c in res["by_condition"]]
    for layer in res["attention"] or []:
        lines.append(f"layer {layer['layer']}: video share visual-asked {layer['video_share_visual_asked']:.3f} vs "
                     f"audio-asked {layer['video_share_audio_asked']:.3f}, Cohen's d {layer['cohens_d']:+.2f}")
    return "\n".join(lines)
