"""Blind readers: answers a dataset gives away without the evidence it is meant to test (docs/method.md, "Blind readers").

A blind reader answers from something other than the asked evidence: the image without the question (which colour
is rarest, most frequent, on the largest, the most central or the least occluded object), or the text without the
image (recognition's statement alone). Each reader's accuracy on a tier is set beside the chance of a uniform pick
among the answers shown (the colours in the image; yes/no). A reader that beats that chance by more than
`SHORTCUT_MARGIN` on any tier finds a shortcut: the generator is wrong, not the model.

Pure functions over plain values: `scene_readers` reads one rendered scene's label map, `reader_table` averages
per tier, `shortcuts` lists the (tier, reader) cells over the margin.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

SHORTCUT_MARGIN = 0.05
MIN_SCENES = 50  # fewer scenes (or held-out rows) in a tier: too noisy to call a 0.05 excess a shortcut
IMAGE_READERS = ("rarest_color", "most_frequent_color", "largest_object", "most_central_object",
                 "least_occluded_object")


def _plain(value) -> str:
    """A tier as written: 9 rather than 9.0, names as they are."""
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _share_of_best(scores: dict[str, float], answer: str, best=max) -> float:
    """Expected accuracy of answering the key with the best score, ties split evenly."""
    top = best(scores.values())
    winners = [k for k, v in scores.items() if np.isclose(v, top)]
    return (answer in winners) / len(winners)


def scene_readers(top: np.ndarray, full_area: Iterable[int], colors: list[str], answer: str) -> dict[str, float]:
    """Each question-blind image reader's expected accuracy on one scene, and `chance`.

    `top`: the owner of each pixel (-1 background); `full_area`: each object's unoccluded area in pixels
    (object k owns label k); `colors`: each object's colour; `answer`: the asked object's colour. Only what the
    image shows counts: an object hidden entirely is not seen, and colour frequency is the number of visible
    objects of that colour.
    """
    full_area = np.asarray(list(full_area), dtype=float)
    visible = np.bincount(top[top >= 0].ravel(), minlength=len(colors))
    seen = [k for k in range(len(colors)) if visible[k] > 0]
    count: dict[str, float] = {}
    for k in seen:
        count[colors[k]] = count.get(colors[k], 0) + 1
    h, w = top.shape
    ys, xs = np.nonzero(top >= 0)
    owner = top[ys, xs]
    cy = np.bincount(owner, weights=ys, minlength=len(colors))[seen] / visible[seen]
    cx = np.bincount(owner, weights=xs, minlength=len(colors))[seen] / visible[seen]
    distance = np.hypot(cy - (h - 1) / 2, cx - (w - 1) / 2)

    def object_reader(score: np.ndarray) -> float:  # the colour of the best-scoring object, ties split
        best = np.isclose(score, score.max())
        return float(np.mean([colors[seen[i]] == answer for i in np.flatnonzero(best)]))

    return {
        "rarest_color": _share_of_best(count, answer, min),
        "most_frequent_color": _share_of_best(count, answer, max),
        "largest_object": object_reader(visible[seen].astype(float)),
        "most_central_object": object_reader(-distance),
        "least_occluded_object": object_reader(visible[seen] / full_area[seen]),
        "chance": 1 / len(count),
    }


def label_map_readers(labels, colors: list[str]) -> dict[str, float]:
    """`scene_readers` of a rendered scene (a `raster.LabelMap` whose object 0 is the asked one)."""
    return scene_readers(labels.top, [np.count_nonzero(o.crop) for o in labels.objects], colors, colors[0])


def reader_table(rows: pd.DataFrame, by: str = "d_v") -> pd.DataFrame:
    """Per `by` value: each reader's mean accuracy, the mean chance, the scenes, and each reader's excess
    over chance (`<reader>` and `<reader>_excess` columns). `rows`: one row per scene with `by`, the readers'
    columns and `chance`."""
    readers = [c for c in rows.columns if c not in (by, "chance")]
    table = rows.groupby(by)[readers + ["chance"]].mean()
    for r in readers:
        table[f"{r}_excess"] = table[r] - table["chance"]
    table["scenes"] = rows.groupby(by).size()
    return table.reset_index()


def shortcuts(table: pd.DataFrame, by: str = "d_v", margin: float = SHORTCUT_MARGIN) -> list[str]:
    """'reader on d_v=9: 0.912 vs chance 0.204' for each cell of `reader_table` over the margin, in tiers with at
    least MIN_SCENES scenes (smaller ones are too noisy to judge: `summary` lists them)."""
    found = []
    for _, row in table[table["scenes"] >= MIN_SCENES].iterrows():
        for col in (c for c in table.columns if c.endswith("_excess")):
            if row[col] > margin:
                reader = col.removesuffix("_excess")
                found.append(f"{reader} on {by}={_plain(row[by])}: {row[reader]:.3f} vs chance {row['chance']:.3f}")
    return found


def lookup_reader_table(rows: pd.DataFrame, features: dict[str, str], label: str, by: str,
                        train: str = "train", chance: str | None = None) -> pd.DataFrame:
    """Readers that answer from one column each, not from the evidence asked about: for each reader (name ->
    feature column), the label most often seen with the feature's value in the `train` split answers the rows
    of the other splits (ties and unseen values split evenly). Chance is a uniform pick among the labels, or the
    row's value in the `chance` column where the design rules some labels out. One row per `by` value, in
    `reader_table`'s columns."""
    fit, held_out = rows[rows["split"] == train], rows[rows["split"] != train]
    if fit.empty or held_out.empty:
        raise ValueError(f"the lookup readers fit on split {train!r} and test on the others; this table has "
                         f"splits {sorted(rows['split'].unique())}: generate more groups")
    labels = sorted(rows[label].unique())
    out = pd.DataFrame({by: held_out[by].to_numpy(),
                        "chance": held_out[chance].to_numpy() if chance else 1 / len(labels)})
    for reader, feature in features.items():
        counts = fit.groupby([feature, label]).size().unstack(fill_value=0).reindex(columns=labels, fill_value=0)
        majority = {value: [lab for lab, n in zip(labels, c) if n == c.max()] for value, c in counts.iterrows()}
        out[reader] = [(truth in majority.get(value, labels)) / len(majority.get(value, labels))
                       for value, truth in zip(held_out[feature], held_out[label])]
    return reader_table(out, by)


def summary(table: pd.DataFrame, by: str) -> dict:
    """What info.json keeps: the table's rows and the shortcuts found (an empty list when there are none)."""
    return {"by": by, "margin": SHORTCUT_MARGIN, "tiers": table.round(4).to_dict("records"),
            "shortcuts": shortcuts(table, by),
            "too_few_scenes": [_plain(v) for v in table.loc[table["scenes"] < MIN_SCENES, by]]}


def lookup_summary(rows: pd.DataFrame, features: dict[str, str], label: str, by: str, chance: str | None = None) -> dict:
    """`summary` of `lookup_reader_table`; a dataset too small to hold out groups (one split only) gets no table,
    and says why in `skipped`."""
    try:
        return summary(lookup_reader_table(rows, features, label, by, chance=chance), by)
    except ValueError as e:
        return {"by": by, "margin": SHORTCUT_MARGIN, "tiers": [], "shortcuts": [], "skipped": str(e)}


def report_lines(readers: dict) -> list[str]:
    """Markdown of an info.json's `blind_readers` entry: a table per tier and the verdict."""
    if not readers["tiers"]:
        return [f"Not measured: {readers.get('skipped', 'no rows')}."]
    table = pd.DataFrame(readers["tiers"])
    names = [c for c in table.columns if c not in (readers["by"], "chance", "scenes") and not c.endswith("_excess")]
    lines = [f"| {readers['by']} | chance | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for _, row in table.iterrows():
        lines.append(f"| {_plain(row[readers['by']])} | {row['chance']:.3f} | "
                     + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    found = readers["shortcuts"]
    lines.append("")
    lines.append(f"Shortcuts (a reader over chance by more than {readers['margin']}): " + ("; ".join(found) if found else "none."))
    if readers.get("too_few_scenes"):
        lines.append(f"Not judged (fewer than {MIN_SCENES} scenes): {readers['by']} = {', '.join(readers['too_few_scenes'])}.")
    return lines
