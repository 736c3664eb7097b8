"""Conflict recognition (docs/method.md, "Conflict recognition and attention imbalance").

`score_recognition` asks the model whether each row's evidence contradicts itself and writes one row per
sample: its yes/no answer, p(yes), the entropy, and for every decoder layer the attention contributions
U_vision, U_text, U_instruction of the answer position with R = U_vision / (U_vision + U_text). The
statistics below read only that table: the recognition rate (contradictions answered "yes") and false-alarm
rate (consistent rows answered "yes") per evidence kind and tier with group-clustered intervals, the balanced
accuracy (mean of the two correct rates, 0.5 for a model that always says "yes"), and R by layer.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_gen import ConflictData, samples_frame
from data_gen.recognition import ANSWERS
from data_gen.files import write_parquet

from . import stats
from .attention import MODALITIES, attention_by_modality, imbalance_ratio
from .scoring import Candidates, forward_answer_position
from .sharded import score_resumably

log = logging.getLogger(__name__)


@dataclass
class RecognitionConfig:
    batch_size: int = 16
    attention: bool = True  # U_m and R per layer (one more forward, eager attention)
    shard_rows: int = 256  # rows per resumable shard


def check_recognition_data(data: ConflictData) -> None:
    missing = {"evidence", "contradiction", "answer"} - set(data.samples.column_names)
    if missing:
        raise ValueError(f"{data.info.get('path', 'the dataset')} is not a recognition dataset (no {sorted(missing)}); "
                         f"make one with `python -m data_gen recognition --output_dir DIR`")


def score_batch(vlm, data: ConflictData, rows: pd.DataFrame, cands: Candidates, cfg: RecognitionConfig) -> pd.DataFrame:
    with_image = rows.image_id.notna().tolist()
    prompts = [vlm.prompt(q, c, img) for q, c, img in zip(rows.question, rows.text_context, with_image)]
    images = [data.image(i) if img else None for i, img in zip(rows.image_id, with_image)]
    images = images if any(with_image) else None
    batch = vlm.encode(prompts, images)  # once: the scores and the attention read the same tensors
    res = forward_answer_position(vlm, prompts, images, cands, lens=False, batch=batch)
    yes, no = cands.index(ANSWERS[True]), cands.index(ANSWERS[False])
    decoded = [vlm.tokenizer.decode([int(t)]).strip() for t in res["top1"]]
    out = pd.DataFrame({
        "id": rows.id.to_numpy(),
        "pred": [cands.answers[a] if a >= 0 else d for a, d in zip(res["answer"], decoded)],
        "p_yes": res["cand_prob"][:, yes], "p_no": res["cand_prob"][:, no], "entropy": res["entropy"]})
    if cfg.attention:
        u = attention_by_modality(vlm, batch, rows.text_context.fillna("").tolist())
        for k, name in enumerate(MODALITIES):
            out[f"u_{name}"] = list(u[..., k])
        out["imbalance"] = list(imbalance_ratio(u[..., 0], u[..., 1]))
    return out


def score_recognition(vlm, data: ConflictData, out: str | Path | None, cfg: RecognitionConfig | None = None) -> pd.DataFrame:
    """Score every row into out/samples.parquet (+ run.json); re-running resumes from the finished shards.
    With `out=None` the table is only returned."""
    check_recognition_data(data)
    cfg = cfg or RecognitionConfig()
    rows = samples_frame(data.samples)
    if rows.empty:
        raise ValueError("the dataset has no rows to score; check the split you selected")
    cands = Candidates.of(vlm, list(ANSWERS.values()))
    # image rows and text-only rows in separate batches: each batch then pads to its own kind's length
    rows = rows.assign(_text_only=rows.image_id.isna()).sort_values(["_text_only", "id"], kind="stable")
    info = {"model": vlm.name, "architecture": vlm.arch, "dataset": data.info.get("path"),
            "dataset_fingerprint": data.fingerprint, "rows": len(rows), "config": asdict(cfg), "num_layers": len(vlm.layers)}
    table = score_resumably(out, rows, info, lambda batch: score_batch(vlm, data, batch, cands, cfg), cfg.batch_size,
                            cfg.shard_rows, "recognition", batch_by="_text_only").drop(columns="_text_only")
    table["said_yes"] = table.pred == ANSWERS[True]
    table["correct"] = table.pred == table.answer
    if out is not None:
        write_parquet(table, Path(out) / "samples.parquet")
    return table


# ---- statistics on the per-sample table ----------------------------------------------------------------------
def balanced_accuracy(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """(P(yes | contradiction) + P(no | consistent)) / 2, with a group-jackknife-t interval (`stats.clustered_statistic`:
    a percentile group bootstrap covers 0.91-0.92 at 15 groups, this 0.95). `n_boot` 0: no interval; `seed` unused
    (the jackknife draws nothing), kept for the callers' signature."""
    said_yes, contradiction = table.said_yes.to_numpy(bool), table.contradiction.to_numpy(bool)

    def value(index) -> float:
        c, s = contradiction[index], said_yes[index]
        if not c.any() or c.all():
            return float("nan")
        return 0.5 * (s[c].mean() + (~s[~c]).mean())

    if n_boot == 0:
        estimate = value(np.arange(len(table)))
        return {"balanced_accuracy": None if np.isnan(estimate) else float(estimate), "ci": None}
    result = stats.clustered_statistic(value, table.group.to_numpy(), bounds=(0.0, 1.0))
    return {"balanced_accuracy": result["estimate"], "ci": result["ci"]}


def recognition_rates(table: pd.DataFrame, by: tuple[str, ...] = ("evidence",), n_boot: int = 1000) -> list[dict]:
    """Per cell of `by`: recognition rate (contradictions answered yes), false-alarm rate (consistent rows
    answered yes), balanced accuracy; intervals clustered by group."""
    cells = []
    for key, t in table.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        c = t[t.contradiction]
        s = t[~t.contradiction]
        cells.append({**dict(zip(by, key)), "recognition": stats.rate_with_interval(c.said_yes, c.group),
                      "false_alarm": stats.rate_with_interval(s.said_yes, s.group), **balanced_accuracy(t, n_boot)})
    return cells


def distance_from_balance(table: pd.DataFrame) -> pd.Series:
    """Per cross-modal row, the mean over decoder layers of |R - 0.5|: 0 is balanced attention in every layer,
    0.5 one modality alone. Indexed by row id, so two runs on the same rows pair up."""
    cross = table[table.evidence == "image_text"]
    r = np.stack(cross.imbalance.to_numpy())
    return pd.Series(np.nanmean(np.abs(r - 0.5), axis=1), index=cross.id.to_numpy())


def imbalance_change(before: pd.DataFrame, after: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """after - before of the mean distance from balance (mean |R - 0.5| over layers), on the cross-modal rows both
    runs scored, with a paired group-bootstrap interval: negative means attention moved toward balance."""
    d0, d1 = distance_from_balance(before), distance_from_balance(after)
    shared = d0.index.intersection(d1.index)
    if shared.empty:
        raise ValueError("the two recognition tables share no cross-modal rows; score both runs on the same data")
    groups = before.set_index("id").loc[shared, "group"].to_numpy()
    change = stats.cluster_mean_interval((d1[shared] - d0[shared]).to_numpy(), groups, n_boot, seed)
    return {"before": float(d0[shared].mean()), "after": float(d1[shared].mean()), "change": change["mean"],
            "ci": change["ci"], "n": change["n"], "n_groups": change["n_groups"]}


def imbalance_by_layer(table: pd.DataFrame, n_boot: int = 1000) -> dict:
    """Mean R and U_m per layer over the cross-modal rows (the only ones with image tokens), with intervals, and
    the distance from balance (mean |R - 0.5| over layers) with a group-bootstrap interval."""
    cross = table[table.evidence == "image_text"]
    if "imbalance" not in table or cross.empty:
        return {}
    r = np.stack(cross.imbalance.to_numpy())
    out = {"layers": list(range(r.shape[1])), "imbalance": [stats.mean_interval(r[:, k]) for k in range(r.shape[1])],
           "distance_from_balance": stats.cluster_mean_interval(distance_from_balance(cross).to_numpy(),
                                                                cross.group.to_numpy(), n_boot)}
    for name in MODALITIES:
        out[f"u_{name}"] = np.stack(cross[f"u_{name}"].to_numpy()).mean(0).tolist()
    return out


def analyze_recognition(table: pd.DataFrame, n_boot: int = 1000) -> dict:
    """Every headline number of a recognition run, JSON-ready."""
    by_kind = recognition_rates(table, ("evidence",), n_boot)
    unimodal = table[table.evidence != "image_text"]
    cross = table[table.evidence == "image_text"]
    return {"counts": {"rows": len(table), **table.evidence.value_counts().to_dict(),
                       "other_answers": int((~table.pred.isin(list(ANSWERS.values()))).sum())},
            "by_evidence": by_kind,
            "unimodal": recognition_rates(unimodal.assign(kind="unimodal"), ("kind",), n_boot)[0] if len(unimodal) else None,
            "cross_modal": recognition_rates(cross.assign(kind="cross_modal"), ("kind",), n_boot)[0] if len(cross) else None,
            "by_text_tier": recognition_rates(table, ("evidence", "text_tier"), 0),
            "by_visual_tier": recognition_rates(cross, ("d_v",), 0) if len(cross) else [],
            "imbalance": imbalance_by_layer(table, n_boot),
            "mean_entropy": float(table.entropy.mean())}


def describe(res: dict) -> str:
    """One line per evidence kind, as the CLI prints it."""
    lines = []
    for cell in res["by_evidence"]:
        r, f = cell["recognition"], cell["false_alarm"]
        ba = cell["balanced_accuracy"]
        lines.append(f"{cell['evidence']:<13} recognition {format_rate(r)}  false alarms {format_rate(f)}  "
                     f"balanced accuracy {'n/a' if ba is None else f'{ba:.3f}'}")
    imb = res["imbalance"]
    if imb:
        means = [c["mean"] for c in imb["imbalance"]]
        lines.append("R = U_vision / (U_vision + U_text) by layer (cross-modal rows): "
                     + " ".join("n/a" if m is None else f"{m:.2f}" for m in means))
        if imb.get("distance_from_balance"):
            lines.append(f"distance from balance, mean |R - 0.5| over layers: {format_mean(imb['distance_from_balance'])}")
    return "\n".join(lines)


def format_mean(cell: dict) -> str:
    """A mean cell as every report writes it: mean [95% CI]."""
    if cell["mean"] is None:
        return "n/a"
    return f"{cell['mean']:.3f}" + (f" [{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}]" if cell.get("ci") else "")


def format_rate(cell: dict) -> str:
    """A rate cell as every report writes it: rate [95% CI] (n=...)."""
    if cell["rate"] is None:
        return "n/a"
    return f"{cell['rate']:.3f} [{cell['ci'][0]:.3f}, {cell['ci'][1]:.3f}] (n={cell['n']})"
