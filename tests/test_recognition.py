"""Conflict recognition: the data, the attention-imbalance formula, the metrics, and every family end to end."""
import numpy as np
import pandas as pd
import pytest
import torch

from data_gen import generate
from data_gen.recognition import ANSWERS, EVIDENCE
from eval.attention import MODALITIES, capture_attention, context_masks, imbalance_ratio, modality_contributions
from eval.recognition import analyze_recognition, balanced_accuracy, imbalance_change, recognition_rates


@pytest.fixture(scope="module")
def tiny_model_dir_llava(tmp_path_factory):
    from tests.fixtures import tiny_model_dir
    return tiny_model_dir("llava", tmp_path_factory.mktemp("llava") / "model")


@pytest.fixture(scope="module")
def recognition_data(tmp_path_factory):
    from data_gen import ConflictData
    path = tmp_path_factory.mktemp("recognition") / "data"
    generate("recognition", 6, seed=0, size=32, workers=1).save(path)
    return ConflictData.load(path)


def test_every_contradiction_has_a_consistent_twin_in_each_evidence_kind(recognition_data):
    t = recognition_data.samples.to_pandas()
    counts = t.groupby(["evidence", "contradiction"]).size().unstack()
    assert set(counts.index) == set(EVIDENCE) and (counts[True] == counts[False]).all()
    assert t[t.evidence != "image_text"].image_id.isna().all() and t[t.evidence == "image_text"].image_id.notna().all()
    assert (t.answer == t.contradiction.map(ANSWERS)).all()
    # the twin differs from the contradiction only in the colour its statement names, which is the image's
    c = t[t.contradiction].set_index(t[t.contradiction].id.str[:-2])
    s = t[~t.contradiction].set_index(t[~t.contradiction].id.str[:-2]).loc[c.index]
    assert (s.answer_text == s.answer_visual).all() and (c.answer_text != c.answer_visual).all()
    direct = c.text_tier == "direct"
    swapped = [a.replace(f" {x}.", f" {y}.") for a, x, y in zip(c.text_context[direct], c.answer_text[direct],
                                                                 s.answer_text[direct])]
    assert swapped == list(s.text_context[direct])
    # unimodal kinds carry the image's colour in words: a caption, or a plain statement
    caption = t[(t.evidence == "caption_text") & (t.text_tier == "direct")].iloc[0]
    assert caption.text_context.startswith(f"Caption: The {caption.target} is {caption.answer_visual}.")
    # groups never cross splits, and the generator is deterministic
    assert (t.groupby("group").split.nunique() == 1).all()
    again = generate("recognition", 6, seed=0, size=32, workers=1).samples.to_pandas()
    pd.testing.assert_frame_equal(t, again)


def test_recognition_from_attribute_groups():
    t = generate("recognition-attributes", 2, seed=0, size=64, workers=1).samples.to_pandas()
    assert set(t.evidence) == set(EVIDENCE) and "spatial" in set(t.text_tier)


def test_imbalance_on_a_hand_computed_two_head_example():
    # one row, two heads of dimension 2, three keys: key 0 is an image token, key 1 evidence text, key 2 instruction
    weights = torch.tensor([[[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]]])
    values = torch.tensor([[[[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]],
                            [[1.0, 1.0], [3.0, 0.0], [5.0, 5.0]]]])
    w_o = torch.eye(4)  # W_O,0 picks output dims 0-1, W_O,1 dims 2-3
    masks = torch.tensor([[[True, False, False]], [[False, True, False]], [[False, False, True]]])
    u = modality_contributions(weights, values, w_o, masks)[0]
    # vision: head 0 0.5 * (2, 0) -> norm 1; head 1 weight 0 -> 0; mean over heads 0.5
    # text: head 0 0.25 * (0, 4) -> 1; head 1 1.0 * (3, 0) -> 3; mean 2
    # instruction: head 0 0.25 * (1, 1) -> sqrt(2) / 4; head 1 0 -> mean sqrt(2) / 8
    torch.testing.assert_close(u, torch.tensor([0.5, 2.0, np.sqrt(2) / 8], dtype=torch.float32))
    assert imbalance_ratio(u[0], u[1]) == pytest.approx(0.5 / 2.5)
    # W_O mixes heads into the output: a rotation leaves the norms, a scaling scales them
    assert torch.allclose(modality_contributions(weights, values, 3 * w_o, masks)[0], 3 * u)
    assert np.isnan(imbalance_ratio(0.0, 0.0))


def planted(n_groups=40, recognition=0.8, false_alarm=0.1, kind="image_text", seed=0):
    """A table whose model recognises `recognition` of contradictions and says yes on `false_alarm` of controls."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for contradiction in (True, False):
            for _ in range(5):
                yes = rng.random() < (recognition if contradiction else false_alarm)
                rows.append({"group": g, "evidence": kind, "contradiction": contradiction, "said_yes": yes,
                             "pred": "yes" if yes else "no", "text_tier": "direct", "d_v": 0, "entropy": 0.1})
    return pd.DataFrame(rows)


def test_recognition_metrics_on_planted_tables():
    t = planted(recognition=0.8, false_alarm=0.1)
    cell = recognition_rates(t, n_boot=300)[0]
    assert cell["recognition"]["rate"] == pytest.approx(t[t.contradiction].said_yes.mean())
    assert abs(cell["recognition"]["rate"] - 0.8) < 0.06 and abs(cell["false_alarm"]["rate"] - 0.1) < 0.06
    lo, hi = cell["recognition"]["ci"]
    assert lo < cell["recognition"]["rate"] < hi
    assert cell["balanced_accuracy"] == pytest.approx(0.5 * (cell["recognition"]["rate"] + 1 - cell["false_alarm"]["rate"]))
    # a model that always says "yes" recognises every contradiction, and is at chance
    always = planted(recognition=1.0, false_alarm=1.0)
    assert balanced_accuracy(always, n_boot=0)["balanced_accuracy"] == 0.5
    assert recognition_rates(always, n_boot=0)[0]["recognition"]["rate"] == 1.0
    assert balanced_accuracy(planted(recognition=1.0, false_alarm=0.0), n_boot=0)["balanced_accuracy"] == 1.0
    # unimodal vs cross-modal gap, as the analysis reports it
    both = pd.concat([planted(recognition=0.9, false_alarm=0.05, kind="text_text"),
                      planted(recognition=0.1, false_alarm=0.05, kind="image_text", seed=1)])
    res = analyze_recognition(both, n_boot=200)
    assert res["unimodal"]["recognition"]["ci"][0] > res["cross_modal"]["recognition"]["ci"][1]
    # intervals are clustered: a group whose samples agree counts as one, not five
    clustered = recognition_rates(planted(n_groups=40, recognition=0.5), n_boot=0)[0]["recognition"]["ci"]
    agree = planted(n_groups=40, recognition=0.5)
    agree.loc[agree.contradiction, "said_yes"] = agree[agree.contradiction].group % 2 == 0
    wide = recognition_rates(agree, n_boot=0)[0]["recognition"]["ci"]
    assert wide[1] - wide[0] > 1.5 * (clustered[1] - clustered[0])


def with_imbalance(table: pd.DataFrame, r_by_layer, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """`table` with row ids and a planted R per decoder layer (plus noise) on every row."""
    rng = np.random.default_rng(seed)
    r = np.clip(np.asarray(r_by_layer) + noise * rng.standard_normal((len(table), len(r_by_layer))), 0, 1)
    u = {f"u_{m}": list(np.ones_like(r)) for m in MODALITIES}  # what the report averages beside R
    return table.assign(id=[f"row{i}" for i in range(len(table))], imbalance=list(r), **u)


def test_distance_from_balance_and_its_paired_change_on_planted_tables():
    base = planted(n_groups=30)
    before = with_imbalance(base, [0.9, 0.8, 0.2])  # |R - 0.5| = .4 .3 .3: 1/3 on average
    after = with_imbalance(base, [0.6, 0.5, 0.45], seed=1)  # .1 0 .05: 0.05
    cell = analyze_recognition(before, n_boot=300)["imbalance"]["distance_from_balance"]
    assert cell["mean"] == pytest.approx(1 / 3, abs=0.02) and cell["n_groups"] == 30
    assert cell["ci"][0] < cell["mean"] < cell["ci"][1]
    change = imbalance_change(before, after, n_boot=300)
    assert change["before"] == pytest.approx(cell["mean"])
    assert change["change"] == pytest.approx(change["after"] - change["before"])
    assert change["change"] == pytest.approx(0.05 - 1 / 3, abs=0.03) and change["ci"][1] < 0  # toward balance
    same = imbalance_change(before, before, n_boot=300)
    assert same["change"] == 0 and same["ci"] == (0.0, 0.0)  # paired: the same rows drawn for both runs
    # R on the other side of 0.5 by the same amount is as far from balance
    mirrored = before.assign(imbalance=[1 - r for r in before.imbalance])
    assert imbalance_change(before, mirrored, n_boot=0)["change"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="share no cross-modal rows"):
        imbalance_change(before, after.assign(id=after.id + "x"), n_boot=0)


def test_attention_capture_reproduces_each_family_attention_output(tiny_model, recognition_data):
    """sum over heads of W_O,h sum_j alpha v equals the attention module's output at the answer position: the
    hooks read the right weights, values, head layout and grouped-query repeat for every family."""
    from eval.models import load_vlm
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    rows = recognition_data.samples.to_pandas().query("evidence == 'image_text'").iloc[:3]
    batch = vlm.encode([vlm.prompt(q, c) for q, c in zip(rows.question, rows.text_context)],
                       [recognition_data.image(i) for i in rows.image_id])
    outputs = []
    handles = [a.register_forward_hook(lambda _m, _a, out: outputs.append(out[0][:, -1])) for a in vlm.attention_modules]
    try:
        with torch.no_grad():
            layers = capture_attention(vlm, batch)
    finally:
        for h in handles:
            h.remove()
    for (weights, values, w_o), output, attention in zip(layers, outputs, vlm.attention_modules):
        heads, d = values.shape[1], values.shape[-1]
        mixed = torch.einsum("bhk,bhkd->bhd", weights, values).reshape(len(rows), heads * d)
        bias = attention.o_proj.bias
        torch.testing.assert_close(mixed @ w_o.T + (0 if bias is None else bias), output, atol=1e-5, rtol=1e-4)
    masks = context_masks(vlm, batch, list(rows.text_context))
    assert masks[0].any(1).all() and masks[1].any(1).all()  # image tokens and the evidence found in every row
    assert not (masks[0] & masks[1]).any() and ((masks.sum(0) > 0) == batch["attention_mask"].bool()).all()


def test_recognition_runs_on_every_family(tiny_model, recognition_data, tmp_path):
    from eval.__main__ import main
    assert main(["recognition", "--model", str(tiny_model), "--data", recognition_data.info["path"], "--split", "all",
                 "--output_dir", str(tmp_path / "run"), "--n_boot", "0", "--dtype", "float32"]) == 0
    t = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert len(t) == len(recognition_data.samples) and t.pred.notna().all()
    cross = t[t.evidence == "image_text"]
    r = np.stack(cross.imbalance)
    assert r.shape[1] == 2 and np.isfinite(r).all() and ((r >= 0) & (r <= 1)).all()
    assert (np.stack(t[t.evidence != "image_text"].u_vision) == 0).all()  # no image, no vision contribution
    for name in ("report.html", "recognition.png", "imbalance_by_layer.png", "summary.json"):
        assert (tmp_path / "run" / name).exists()


def test_shipped_recognition_organism_recognises_within_a_modality_not_across(tmp_path):
    """On groups it never saw (another seed): unimodal contradictions recognised, cross-modal ones missed."""
    from data_gen import ConflictData
    from eval.recognition import RecognitionConfig, score_recognition
    from eval.models import load_vlm
    generate("recognition", 8, seed=11, size=64, workers=1).save(tmp_path / "data")
    data = ConflictData.load(tmp_path / "data")
    table = score_recognition(load_vlm("organism:recognition", dtype="float32", device="cpu"), data,
                              tmp_path / "run", RecognitionConfig(batch_size=64, attention=False))
    res = analyze_recognition(table, n_boot=0)
    assert res["unimodal"]["recognition"]["ci"][0] > res["cross_modal"]["recognition"]["ci"][1]
    assert res["unimodal"]["balanced_accuracy"] > 0.9


def test_recognition_batches_show_unrelated_images_only_when_given():
    from PIL import Image
    from align.organism.recognition import RecognitionOrganismConfig, recognition_batch
    from eval.models import load_vlm
    vlm = load_vlm("organism", dtype="float32", device="cpu")
    rows = pd.DataFrame({"question": ["Is there a contradiction?"] * 3, "text_context": ["The star is red."] * 3,
                         "answer": ["yes", "no", "yes"]})
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    ids = {"yes": 7, "no": 8}
    prompts, labels, shown = recognition_batch(rows, np.random.default_rng(0), 5, vlm, ids, images)
    assert len(shown) == 5 and all(any(im is s for s in images) for im in shown)
    assert all(p.count("<image>") == 1 for p in prompts) and set(labels.tolist()) <= {7, 8}
    prompts, _, shown = recognition_batch(rows, np.random.default_rng(0), 5, vlm, ids, None)
    assert shown is None and not any("<image>" in p for p in prompts)
    with pytest.raises(ValueError, match="irrelevant_image_share"):
        RecognitionOrganismConfig(irrelevant_image_share=1.5)


@pytest.mark.slow
def test_recognition_organism_builder_extends_the_vocabulary_and_keeps_old_ids(tmp_path):
    from align.organism.recognition import RecognitionOrganismConfig, build_recognition
    from eval.models import load_vlm
    out = build_recognition(RecognitionOrganismConfig(groups=10, steps=4, train_batch_size=4), tmp_path / "org")
    built, base = load_vlm(str(out), dtype="float32", device="cpu"), load_vlm("organism", dtype="float32", device="cpu")
    assert {"yes", "no", "contradiction"} <= set(built.tokenizer.get_vocab())
    assert all(built.tokenizer.get_vocab()[w] == i for w, i in base.tokenizer.get_vocab().items())
    assert built.model.get_output_embeddings().weight.shape[0] == len(built.tokenizer)
    # the tower and projector were frozen: identical to the starting organism's
    for name, p in base.model.named_parameters():
        if "vision_tower" in name or "multi_modal_projector" in name:
            assert torch.equal(p, dict(built.model.named_parameters())[name]), name


def test_each_kind_of_dataset_is_refused_by_the_other_command(recognition_data, tiny_data, tmp_path, capsys):
    from eval.__main__ import main
    assert main(["measure", "--model", "organism", "--data", recognition_data.info["path"],
                 "--output_dir", str(tmp_path / "a")]) == 2
    assert "python -m eval recognition" in capsys.readouterr().err
    assert main(["recognition", "--model", "organism", "--data", tiny_data.info["path"],
                 "--output_dir", str(tmp_path / "b")]) == 2
    assert "python -m data_gen recognition" in capsys.readouterr().err


def test_a_recognition_run_resumes_only_itself(tiny_model_dir_llava, recognition_data, tmp_path):
    from eval.recognition import RecognitionConfig, score_recognition
    from eval.models import load_vlm
    vlm = load_vlm(str(tiny_model_dir_llava), dtype="float32", device="cpu")
    data = recognition_data.split("test")
    first = score_recognition(vlm, data, tmp_path / "run", RecognitionConfig(attention=False, shard_rows=64))
    (tmp_path / "run" / "samples.parquet").unlink()
    shards = sorted((tmp_path / "run" / "shards").glob("*.parquet"))
    shards[-1].unlink()  # as if killed during the last shard
    again = score_recognition(vlm, data, tmp_path / "run", RecognitionConfig(attention=False, shard_rows=64))
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ValueError, match="different config"):
        score_recognition(vlm, data, tmp_path / "run", RecognitionConfig(attention=True, shard_rows=64))
