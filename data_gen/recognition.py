"""Conflict-recognition datasets (docs/method.md, "Conflict recognition"), built from the colour and attribute groups.

Each group's contradiction, the image's colour against a statement of another colour, is placed three ways:
- `text_text`: both pieces of evidence as statements ("The star is red. The star is blue.");
- `caption_text`: a caption of the image as text, then the statement ("Caption: The star is red. ...");
- `image_text`: the image itself, then the statement: the evidence is split across modalities.
The first two are unimodal (all text, no image); the third is cross-modal. Every contradiction has a consistent
control of the same kind and tiers, its statement naming the image's colour, so a model that always answers
"yes" scores no better than chance. The statement keeps the text tiers of the base task (direct, indirect,
knowledge, spatial); the cross-modal rows keep the visual tiers. Unimodal rows have no image, so one per text
tier and group. `recognition_from` derives it from a generated colour or attribute dataset, sharing its images.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import attributes, colors
from .palette import objects_with_dominant

QUESTION = "Is there a contradiction? Answer yes or no."
ANSWERS = {True: "yes", False: "no"}
EVIDENCE = ("text_text", "caption_text", "image_text")  # where the two pieces of evidence sit
UNIMODAL_EVIDENCE = ("text_text", "caption_text")
CAPTION = "Caption:"
# base task: (sample_group, rows of one image)
BASE_TASKS = {
    "colors": (colors.sample_group, colors.color_rows),
    "attributes": (attributes.sample_group, attributes.attribute_rows),
}


def consistent_group(g, seed: int):
    """The group with its text stating the image's colour (knowledge objects of that colour): the controls."""
    rng = np.random.default_rng([seed, g.group, 21])
    objects = objects_with_dominant(g.color_visual)
    return replace(g, color_text=g.color_visual, knowledge_object=objects[rng.integers(len(objects))].name)


def recognition_rows(task: str, contradicting: list[dict], consistent: list[dict]) -> list[dict]:
    """Rows of the three evidence kinds from the base task's conflict rows and their consistent twins."""
    twins = {(r["image_id"], r["text_tier"]): r for r in consistent if r["condition"] == "conflict"}
    caption = {r["image_id"]: r["text_context"] for r in consistent if r["text_tier"] == "direct"}
    rows, unimodal_done = [], set()
    for conflict in (r for r in contradicting if r["condition"] == "conflict"):
        twin = twins[conflict["image_id"], conflict["text_tier"]]
        image_statement = caption[conflict["image_id"]]  # "The star is red.": the image's colour, in words
        for contradiction, row in ((True, conflict), (False, twin)):
            common = dict(group=row["group"], task=f"recognition-{task}", question=QUESTION, contradiction=contradiction,
                          answer=ANSWERS[contradiction], answer_visual=conflict["answer_visual"],
                          answer_text=row["answer_text"], d_t=row["d_t"], text_tier=row["text_tier"],
                          target=row["target"], knowledge_object=row["knowledge_object"],
                          text_ambiguity=row["text_ambiguity"])
            tag = "c" if contradiction else "s"
            rows.append({**common, "id": f"{row['image_id']}-{row['text_tier']}-image_text-{tag}", "evidence": "image_text",
                         "image_id": row["image_id"], "d_v": row["d_v"], "text_context": row["text_context"]})
            if (row["group"], row["text_tier"], contradiction) in unimodal_done:
                continue  # no image: one unimodal row per group, text tier and label
            unimodal_done.add((row["group"], row["text_tier"], contradiction))
            for kind, first in (("text_text", image_statement), ("caption_text", f"{CAPTION} {image_statement}")):
                rows.append({**common, "id": f"g{row['group']:05d}-{row['text_tier']}-{kind}-{tag}", "evidence": kind,
                             "image_id": None, "d_v": None, "text_context": f"{first} {row['text_context']}"})
    return rows


def recognition_from(base):
    """The recognition dataset (a ConflictData) of a generated colour or attribute ConflictData: its groups, splits
    and images (the images table is shared, nothing is rendered again)."""
    import datasets
    task, seed = base.info.get("task"), base.info.get("seed")
    if task not in BASE_TASKS or seed is None:
        raise ValueError(f"{base.info.get('path', 'the dataset')} is not a generated colour or attribute dataset "
                         f"(task {task!r}); recognition data is built from `python -m data_gen colors` output")
    sample_group, image_rows = BASE_TASKS[task]
    by_group: dict[int, list[dict]] = {}
    for row in base.samples.to_list():
        by_group.setdefault(row["group"], []).append(row)
    rows = []
    for group, contradicting in by_group.items():
        same = consistent_group(sample_group(group, seed), seed)
        tiers = dict.fromkeys((r["image_id"], r["d_v"]) for r in contradicting)
        consistent = [r for image_id, d_v in tiers for r in image_rows(same, d_v, image_id)]
        split = contradicting[0]["split"]
        rows += [{**r, "split": split} for r in recognition_rows(task, contradicting, consistent)]
    # the base rows' columns, less `condition`, plus the evidence kind, whether it contradicts itself, yes/no
    features = datasets.Features({**{k: v for k, v in base.samples.features.items() if k != "condition"},
                                  "evidence": datasets.Value("string"), "contradiction": datasets.Value("bool"),
                                  "answer": datasets.Value("string")})
    samples = datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in features}, features=features)
    info = {k: v for k, v in base.info.items() if k in ("groups", "seed", "size")}
    return type(base)(samples, base.images, {**info, "task": "recognition" if task == "colors" else f"recognition-{task}",
                                             "blind_readers": statement_readers(samples.to_pandas())})


def statement_readers(rows) -> dict:
    """Image-blind readers of the cross-modal rows: is there a contradiction, from the statement alone (its whole
    text, the colour it names, its object, the asked shape)? The statement is not meant to tell: a contradicting
    and a consistent row differ only in the image."""
    from .blind_readers import lookup_summary
    cross = rows[rows["evidence"] == "image_text"].fillna({"knowledge_object": ""})
    features = {"statement": "text_context", "named_color": "answer_text", "knowledge_object": "knowledge_object",
                "asked_shape": "target"}
    return lookup_summary(cross, features, "answer", "text_tier")
