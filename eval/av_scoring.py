"""Score audio-visual conflict rows (data_gen/av.py) into a per-sample table; `eval/av.py` analyses it.

Per row: the model's answer among the class names (whole answers, as everywhere), the probability of the target
class, the answer entropy, and per decoder layer the answer position's attention mass on the frames' tokens and
on the sound's tokens (eager attention, averaged over heads). Resumable like the other scorers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_gen import samples_frame
from data_gen.av import CLASSES, AVData
from data_gen.files import write_parquet

from .attention import capture_attention
from .scoring import Candidates, forward_answer_position
from .sharded import score_resumably


@dataclass
class AVScoreConfig:
    batch_size: int = 8
    attention: bool = True  # attention mass per layer (one more forward, eager attention)
    shard_rows: int = 256


@torch.no_grad()
def attention_mass(vlm, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows, layers) attention mass of the answer position on image (frame) tokens and on audio tokens."""
    ids = batch["input_ids"]
    video = (ids == vlm.image_token_id).float()
    audio = (ids == vlm.tokenizer.audio_token_id).float()
    layers = [weights.float().mean(1) for weights, _, _ in capture_attention(vlm, batch)]  # (rows, keys) each
    mass = lambda mask: np.stack([(w * mask).sum(-1).cpu().numpy() for w in layers], axis=1)
    return mass(video), mass(audio)


def score_av_batch(vlm, data: AVData, rows: pd.DataFrame, cands: Candidates, cfg: AVScoreConfig) -> pd.DataFrame:
    clips = [data.clip(c) for c in rows.clip_id]
    prompts = [vlm.av_prompt(r.question, len(frames), audio is not None, r.caption, r.appendix)
               for r, (frames, audio) in zip(rows.itertuples(), clips)]
    batch = vlm.av_inputs(prompts, [f for f, _ in clips], [a for _, a in clips], next(vlm.model.parameters()).dtype)
    batch = {k: v.to(vlm.device) for k, v in batch.items()}
    res = forward_answer_position(vlm, prompts, None, cands, lens=False, batch=batch)
    decoded = [vlm.tokenizer.decode([int(t)]).strip() for t in res["top1"]]
    target = [cands.index(t) if t else -1 for t in rows.target]
    out = pd.DataFrame({
        "id": rows.id.to_numpy(),
        "pred": [cands.answers[a] if a >= 0 else d for a, d in zip(res["answer"], decoded)],
        "p_target": [float(res["cand_prob"][i, t]) if t >= 0 else np.nan for i, t in enumerate(target)],
        "entropy": res["entropy"]})
    if cfg.attention:
        video, audio = attention_mass(vlm, batch)
        out["mass_video"], out["mass_audio"] = list(video), list(audio)
    return out


def score_av(vlm, data: AVData, out: str | Path | None, cfg: AVScoreConfig | None = None) -> pd.DataFrame:
    """Score every row into out/samples.parquet (+ run.json); re-running resumes from the finished shards.
    With `out=None` the table is only returned."""
    cfg = cfg or AVScoreConfig()
    rows = samples_frame(data.samples)
    if rows.empty:
        raise ValueError("the dataset has no rows to score; check the split you selected")
    cands = Candidates.of(vlm, list(CLASSES))
    # rows with sound and rows without in separate batches: each pads to its own kind's length
    rows = rows.assign(_silent=rows.condition == "audio_removed").sort_values(["_silent", "id"], kind="stable")
    info = {"model": vlm.name, "architecture": vlm.arch, "dataset": data.info.get("path"),
            "dataset_fingerprint": data.info.get("fingerprint"), "rows": len(rows), "config": asdict(cfg),
            "num_layers": len(vlm.layers)}
    table = score_resumably(out, rows, info, lambda batch: score_av_batch(vlm, data, batch, cands, cfg),
                            cfg.batch_size, cfg.shard_rows, "av", batch_by="_silent").drop(columns="_silent")
    table["correct"] = (table.pred == table.target) & (table.target != "")
    if out is not None:
        write_parquet(table, Path(out) / "samples.parquet")
    return table
