"""Tiny random models of every registered family and processors, built offline."""
from __future__ import annotations

from pathlib import Path

import torch

from data_gen import ConflictData, generate
from data_gen.palette import COLOR_NAMES
from data_gen.recognition import ANSWERS, CAPTION, QUESTION
from eval.models.tiny import build_tiny, dataset_tokenizer

IMAGE_SIZE, PATCH = 32, 8


def tiny_dataset(path: Path, groups: int = 6, task: str = "colors") -> ConflictData:
    generate(task, groups, seed=0, size=IMAGE_SIZE, workers=1).save(path)
    return ConflictData.load(path)


def tiny_model_dir(arch: str, path: Path, extra_words=(), answering: ConflictData | None = None) -> Path:
    """A tiny random model of family `arch` and its processor, saved to `path`.

    answering: data to make the random model answer with colours (`answer_with_colours`), so its conflicts
    can be text- or vision-following and the recipe has samples to analyse and runs end to end."""
    torch.manual_seed(0)
    # the recognition question's words too (the organism builds keep the datasets' vocabulary, and their weights)
    words = [*extra_words, QUESTION, CAPTION, *ANSWERS.values()]
    model, processor = build_tiny(arch, dataset_tokenizer(words), IMAGE_SIZE, PATCH)
    if answering is not None:
        answer_with_colours(model, processor, answering)
    for part in (model, processor):
        part.save_pretrained(path)
    return path


@torch.no_grad()
def answer_with_colours(model, processor, data: ConflictData, inputs: int = 48) -> None:
    """Rewrite the output head so the model writes colour names only, picked by how its inputs differ.

    The colour rows are +- the top principal directions of the answer position's final hidden state over some of
    `data`'s prompts (all three conditions), made orthogonal to its mean; every other row is zero. The colour
    logits then sum to zero, so one is always the top token, and which one follows the input, not the random
    model's constant offset."""
    from eval.models import VLM
    vlm = VLM(model.eval(), processor, "tiny")
    rows = data.samples.select(range(0, len(data.samples), max(1, len(data.samples) // (inputs // 3))))
    hidden = []
    for with_image, context in ((True, False), (False, True), (True, True)):
        prompts = [vlm.prompt(r["question"], r["text_context"] if context else "", with_image) for r in rows]
        batch = vlm.encode(prompts, [data.image(r["image_id"]) for r in rows] if with_image else None)
        hidden.append(model(**batch, output_hidden_states=True).hidden_states[-1][:, -1])
    hidden = torch.cat(hidden)
    mean = hidden.mean(0)
    _, _, directions = torch.linalg.svd(hidden - mean, full_matrices=False)
    pairs = len(COLOR_NAMES) // 2
    # orthogonal to the mean state, so a logit is the input's deviation along its direction, centred on zero
    directions = directions[:pairs] - (directions[:pairs] @ mean)[:, None] * mean / mean.dot(mean)
    rows = torch.cat([directions, -directions])
    rows *= 3 / (hidden @ rows.T).std()  # logits a few nats apart: entropies away from 0 and from uniform
    head = model.get_output_embeddings().weight
    assert head.data_ptr() != model.get_input_embeddings().weight.data_ptr(), "tied head: would zero the inputs"
    head.zero_()
    head[torch.tensor(processor.tokenizer.convert_tokens_to_ids(list(COLOR_NAMES)))] = rows.to(head.dtype)
