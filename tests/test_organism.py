"""The model organism: reduced-budget rebuilds are reproducible and load with the standard classes."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from align.models import load_vlm
from align.organism import SHIPPED, OrganismConfig, build, organism_path, quality_bars

SMALL = dict(groups=24, steps_unimodal=6, steps_conflict=4, warmup=2, batch_size=8, hidden=32, layers=2, workers=1)


@pytest.mark.slow
def test_reduced_budget_build_is_reproducible_and_loads(tmp_path):
    a = build(OrganismConfig(**SMALL), tmp_path / "a")
    b = build(OrganismConfig(**SMALL), tmp_path / "b")
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    model = AutoModelForImageTextToText.from_pretrained(a)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(a)
    assert type(processor).__name__ == "LlavaProcessor"
    meta = json.loads((a / "organism.json").read_text())
    assert meta["planted_balance"] == 0.5 and 0 <= meta["planted"]["follow_text_share"] <= 1


def test_shipped_organism_is_the_default_and_real_llava():
    assert organism_path("text") == SHIPPED / "organism-text"
    vlm = load_vlm("organism", dtype="float32", device="cpu")
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    # its own chat template asks the question before the image
    prompt = vlm.prompt("What color is the star?", "The star is red.")
    assert prompt.index("What color") < prompt.index("<image>")
    meta = json.loads((SHIPPED / "organism-text" / "organism.json").read_text())
    assert OrganismConfig(**meta["config"]).planted_balance == 0.5
    with pytest.raises(ValueError, match="unknown organism preference"):
        organism_path("sideways")


def test_quality_bars_on_a_hand_made_table():
    import pandas as pd
    rows = []
    for d_v in range(14):
        for g in range(10):
            ok = g < 10 - d_v // 2
            rows.append(dict(id=f"{d_v}-{g}", group=g, d_v=d_v, d_t=-1, text_tier="original", condition="no_conflict",
                             pred_v="red" if ok else "blue", answer_visual="red", entropy_v=0.1 * d_v,
                             pred_t=None, answer_text=None, entropy_t=None))
    for d_t, tier in enumerate(("direct", "indirect_simple", "indirect_knowledge")):
        for g in range(10):
            rows.append(dict(id=f"t{d_t}-{g}", group=g, d_v=0, d_t=d_t, text_tier=tier, condition="conflict",
                             pred_v="red", answer_visual="red", entropy_v=0.5, pred_t="blue" if g >= d_t else "red",
                             answer_text="blue", entropy_t=0.2 + 0.5 * d_t))
    report = quality_bars(pd.DataFrame(rows))
    assert report["checks"]["visual: accuracy falls, entropy rises (|Spearman| >= 0.8)"]
    assert report["checks"]["text: accuracy falls, entropy rises (|Spearman| >= 0.8)"]
    assert report["bars"]["share_d_rel_positive"] > 0 and report["bars"]["share_d_rel_negative"] > 0
