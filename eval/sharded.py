"""Resumable row-by-row scoring: shards written atomically, a re-run goes on from the finished ones."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm
from data_gen.files import read_json, write_json, write_parquet


def check_same_run(out: Path, info: dict, keys=None) -> None:
    """A folder's finished shards resume only a run of the same `keys` of `info` (default all): the model, the
    data, the settings; another run there is an error naming the first difference."""
    if not (out / "run.json").exists():
        return
    old = read_json(out / "run.json", f"delete {out} (or use another --output_dir) to score it again")
    for key in keys or info:
        if old.get(key) != info.get(key):
            raise ValueError(f"{out} holds a run with a different {key} ({old.get(key)!r} vs {info.get(key)!r}); "
                             f"use a new --output_dir or delete {out}")


def score_resumably(out: Path | None, rows: pd.DataFrame, info: dict, score_batch: Callable[[pd.DataFrame], pd.DataFrame],
                    batch_size: int, shard_rows: int, desc: str, batch_by: str | None = None) -> pd.DataFrame:
    """`rows` merged (by id) with `score_batch`'s columns, scored in batches of `batch_size` (rows of one
    `batch_by` value per batch, so each pads to its own kind) and shards of `shard_rows` under out/shards.
    Finished shards are resumed only if out/run.json matches `info` (the model, the data, the settings).
    With `out=None` nothing is written and nothing resumes."""
    if out is None:
        parts = []
        with tqdm(total=len(rows), desc=desc, unit="row") as bar:
            for _, kind in (rows.groupby(batch_by, sort=False) if batch_by else [(None, rows)]):
                for i in range(0, len(kind), batch_size):
                    parts.append(score_batch(kind.iloc[i:i + batch_size]))
                    bar.update(len(parts[-1]))
        return rows.merge(pd.concat(parts), on="id", validate="one_to_one")
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    check_same_run(out, info)
    write_json(out / "run.json", info)
    shards = [rows.iloc[k:k + shard_rows] for k in range(0, len(rows), shard_rows)]
    with tqdm(total=len(rows), desc=desc, unit="row") as bar:
        for k, shard in enumerate(shards):
            path = out / "shards" / f"shard-{k:05d}.parquet"
            if path.exists():
                bar.update(len(shard))
                continue
            parts = []
            for _, kind in (shard.groupby(batch_by, sort=False) if batch_by else [(None, shard)]):
                for i in range(0, len(kind), batch_size):
                    parts.append(score_batch(kind.iloc[i:i + batch_size]))
                    bar.update(len(parts[-1]))
            write_parquet(pd.concat(parts), path)
    scored = pd.concat(pd.read_parquet(out / "shards" / f"shard-{k:05d}.parquet") for k in range(len(shards)))
    return rows.merge(scored, on="id", validate="one_to_one")
