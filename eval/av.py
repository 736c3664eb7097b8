"""Audio-visual conflict analysis (docs/method.md, "Audio-visual conflicts"): pure functions on the per-sample table.

The table has one row per (clip, condition, asked modality) with the model's answer `pred`; the attention
analysis reads `mass_video` and `mass_audio`, the answer position's attention mass on the video and the audio
tokens per decoder layer (lists, one value per layer).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_gen.av import ASKED

from . import stats

SIDES = {"text": "sound", "vision": "frames"}  # the balance point's sides on misaligned clips


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
    (positive: asking about the frames moves attention toward them), on clips that have both modalities. Cohen's d
    gets an interval that resamples clips' groups (a clip's two questions, and a group's clips, share an effect):
    the group jackknife-t of `stats.clustered_statistic`."""
    both = table[(table.answer_visual != "") & (table.answer_audio != "")]
    share = video_share(both)
    asked = both.asked.to_numpy()
    clusters = (both.group if "group" in both else both.clip_id).to_numpy()
    layers = []
    for layer in range(share.shape[1]):
        column = share[:, layer]

        def d_of(index, column=column):
            values, questions = column[index], asked[index]
            visual, audio = values[questions == "visual"], values[questions == "audio"]
            return stats.cohens_d(visual[~np.isnan(visual)], audio[~np.isnan(audio)])
        visual, audio = column[asked == "visual"], column[asked == "audio"]
        visual, audio = visual[~np.isnan(visual)], audio[~np.isnan(audio)]
        d = stats.clustered_statistic(d_of, clusters)
        layers.append({"layer": layer, "video_share_visual_asked": float(visual.mean()) if len(visual) else None,
                       "video_share_audio_asked": float(audio.mean()) if len(audio) else None,
                       "cohens_d": stats.cohens_d(visual, audio), "cohens_d_ci": d["ci"]})
    return layers


def accuracy_pooled(table: pd.DataFrame) -> list[dict]:
    """Per condition, both asked modalities together (rows that have a target), with group-clustered intervals."""
    cells = []
    for condition, t in table[table.target != ""].groupby("condition", sort=True):
        cells.append({"condition": condition, "accuracy": stats.rate_with_interval(
            (t.pred == t.target).to_numpy(), t.group.to_numpy())})
    return cells


def audio_following_samples(table: pd.DataFrame) -> pd.DataFrame:
    """Misaligned rows answered with one of the two classes, with dH_rel of the sound against the frames.

    H_video is the entropy of the group's frames alone (audio removed, asked visual: the same frames) and H_audio
    that of its sound alone (frames zeroed, asked audio). The latter is the clip's own class at the same audio tier,
    a proxy for the swapped sound (no condition plays it alone). As the image-text analysis keeps conflicts whose
    unimodal answers are both right, only groups whose frames alone and sound alone are answered right are kept.
    dH_rel = 2 (H_audio - H_video) / (H_audio + H_video): the sound plays the text's part of docs/method.md."""
    alone = lambda condition, asked: table[(table.condition == condition) & (table.asked == asked)].set_index("group")
    video, audio = alone("audio_removed", "visual"), alone("frames_zeroed", "audio")
    right = video.index[video.pred == video.target].intersection(audio.index[audio.pred == audio.target])
    rows = table[(table.condition == "misaligned") & table.group.isin(right)].copy()
    rows = rows[(rows.pred == rows.answer_audio) | (rows.pred == rows.answer_visual)]
    rows["follows_audio"] = (rows.pred == rows.answer_audio).astype(float)
    rows["d_rel"] = stats.relative_uncertainty(video.entropy.reindex(rows.group).to_numpy(),
                                               audio.entropy.reindex(rows.group).to_numpy())
    return rows


def av_ability_gate(table: pd.DataFrame) -> dict:
    """The ability gate (eval.analysis.ability_gate) on clips: the frames alone (audio removed, asked about the
    frames) and the sound alone (frames zeroed, asked about the sound), each above a uniform pick of a class."""
    from data_gen.av import CLASSES

    from .analysis import gate_verdict
    alone = {"frames alone": ("audio_removed", "visual"), "sound alone": ("frames_zeroed", "audio")}
    rates = {}
    for name, (condition, asked) in alone.items():
        t = table[(table.condition == condition) & (table.asked == asked) & (table.target != "")]
        rates[name] = stats.rate_with_interval((t.pred == t.target).to_numpy(), t.group.to_numpy())
    return gate_verdict(rates, len(CLASSES))


def audio_following(table: pd.DataFrame, cfg=None) -> dict:
    """P(answers the sound's class) against dH_rel(sound vs frames) on misaligned clips, per asked modality and
    pooled, with the balance point (eval.analysis.following_curve); None where too few rows to fit. Behind the
    ability gate: a model that cannot answer the frames or the sound alone gets no balance point unless forced."""
    from .analysis import AnalysisConfig, apply_gate, following_curve
    cfg = cfg or AnalysisConfig()
    rows = audio_following_samples(table)
    out = {}
    for name, t in (("both", rows), *((f"{asked}_asked", rows[rows.asked == asked]) for asked in ASKED)):
        out[name] = (following_curve(t.d_rel.to_numpy(), t.follows_audio.to_numpy(), cfg, t.group.to_numpy())
                     | {"n": len(t), "audio_following_rate": float(t.follows_audio.mean())}
                     if len(t) >= cfg.min_samples else None)
    apply_gate(av_ability_gate(table), out.values(), cfg.force)
    return out


def analyze_av(table: pd.DataFrame, cfg=None) -> dict:
    """Everything `eval av` and the asked-modality recipe report from a scored AV table (`cfg`: an AnalysisConfig
    for the audio-following curve, e.g. `force`)."""
    return {"accuracy": accuracy_by_condition(table), "by_condition": accuracy_pooled(table),
            "attention": attention_effect_by_layer(table) if "mass_video" in table else None,
            "ability": av_ability_gate(table), "audio_following": audio_following(table, cfg)}


def describe_following(curve: dict) -> str:
    """A sound-vs-frames balance point in words, its sides named (the sound plays the text's part)."""
    bp = curve["balance_point"]
    if bp.get("direction") == "gated" or bp.get("forced_past_gate"):
        return bp["description"]
    return stats.BalancePoint(**{k: bp[k] for k in stats.BalancePoint.__dataclass_fields__}).describe(SIDES)


def describe_av(res: dict) -> str:
    """The analysis as lines of text: accuracy per condition x asked modality, pooled per condition, d per layer."""
    from .recognition import format_rate
    lines = [res["ability"]["line"]] if (res.get("ability") or {}).get("line") else []
    for cell in res["accuracy"]:
        acc = cell["accuracy"]
        lines.append(f"{cell['condition']:<16} asked {cell['asked']:<6} accuracy "
                     + (format_rate(acc) if acc["n"] else "-  (no target)")
                     + (f"  answers the caption {format_rate(cell['misleading'])}" if "misleading" in cell else
                        f"  answers the other modality {format_rate(cell['other_modality'])}"))
    lines += [f"{c['condition']:<16} both asked   accuracy {format_rate(c['accuracy'])}" for c in res["by_condition"]]
    for name, curve in (res.get("audio_following") or {}).items():
        if curve:
            lines.append(f"misaligned, {name.replace('_', ' ')}: answers the sound {curve['audio_following_rate']:.3f} "
                         f"(n={curve['n']}); balance point on dH_rel(sound vs frames): {describe_following(curve)}")
    for layer in res["attention"] or []:
        lines.append(f"layer {layer['layer']}: video share visual-asked {layer['video_share_visual_asked']:.3f} vs "
                     f"audio-asked {layer['video_share_audio_asked']:.3f}, Cohen's d {layer['cohens_d']:+.2f}"
                     + (f" [{layer['cohens_d_ci'][0]:+.2f}, {layer['cohens_d_ci'][1]:+.2f}]" if layer.get("cohens_d_ci") else ""))
    return "\n".join(lines)


def accuracy_change(before: dict, after: dict) -> list[dict]:
    """Per condition (both asked modalities pooled): accuracy before and after, and the change."""
    rates = lambda res: {c["condition"]: c["accuracy"] for c in res["by_condition"]}
    b, a = rates(before), rates(after)
    return [{"condition": c, "before": b[c], "after": a[c], "change": a[c]["rate"] - b[c]["rate"]}
            for c in b if c in a and b[c]["rate"] is not None and a[c]["rate"] is not None]


def describe_change(change: list[dict]) -> str:
    from .recognition import format_rate
    return "\n".join(f"{c['condition']:<16} {format_rate(c['before'])} -> {format_rate(c['after'])} "
                     f"({100 * c['change']:+.1f} points)" for c in change)
