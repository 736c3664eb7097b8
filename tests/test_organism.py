"""The model organism: reduced-budget rebuilds are reproducible and load with the standard classes."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from align.organism import OrganismConfig, build, quality_bars
from data_gen.palette import COLOR_NAMES
from eval.models import load_vlm, organism_path
from eval.models.vlm import ORGANISMS_DIR

SMALL = dict(groups=24, steps_shapes=3, steps_unimodal=6, steps_conflict=4, warmup_steps=2, train_batch_size=8, hidden=32, layers=3,
             vision_layers=2, replant_every=3, workers=1, end_of_turn_inputs=256, steps_end_of_turn=200)
# the recipe without phase 0 and grounding (a trainable tower learning only from answers)
UNGROUNDED = dict(steps_shapes=0, freeze_tower=False, fresh_scene_share=0.0, grounding_weight=0.0)
# the experimental LLaVA-order build: image first, attention grounding, end of turn trained
IMAGE_FIRST = dict(image_first=True, end_of_turn=True)
# the experimental every-tier build: phase 0 at every tier's sizes, grounding on the dataset's images too, fresh
# scenes with the small and occluded targets after half of phase 1, every colour a patch shows in phase 0
EVERY_TIER = dict(shape_tiers="all", ground_dataset_images=True, fresh_scene_tiers=10, hard_scenes_from=0.5,
                  shape_color_presence=True)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, UNGROUNDED, IMAGE_FIRST, EVERY_TIER],
                         ids=["shipped-recipe", "ungrounded-vision", "image-first", "every-tier"])
def test_reduced_budget_build_is_reproducible_and_loads(tmp_path, options):
    a = build(OrganismConfig(**{**SMALL, **options}), tmp_path / "a")
    b = build(OrganismConfig(**{**SMALL, **options}), tmp_path / "b")
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    model = AutoModelForImageTextToText.from_pretrained(a)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(a)
    assert type(processor).__name__ == "LlavaProcessor"
    meta = json.loads((a / "organism.json").read_text())
    assert meta["planted_balance"] == 0.5 and 0 <= meta["planted"]["follow_text_share"] <= 1
    prompt = load_vlm(str(a), dtype="float32", device="cpu").prompt("What color is the star?", "The star is red.")
    assert prompt.startswith("USER: <image>") == bool(options.get("image_first"))
    assert model.config._attn_implementation != "eager"  # the build's eager attention is not saved


def test_attention_grounding_loss_by_hand():
    """-ln(share of the image attention on the asked patches) at one query, heads averaged; text keys do not count."""
    from align.organism.shape_pretraining import attention_grounding_loss
    ids = torch.tensor([[5, 4, 4, 4, 7]])  # text, three image tokens (id 4), text
    attention = torch.zeros(1, 2, 5, 5)
    attention[0, 0, -1] = torch.tensor([0.2, 0.4, 0.1, 0.1, 0.2])  # head 0: image mass 0.6, 0.4 of it on patch 0
    attention[0, 1, -1] = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.4])  # head 1: image mass 0.6, 0.2 on patch 0
    loss = attention_grounding_loss(attention, ids, 4, torch.tensor([[1.0, 0.0, 0.0]]))
    assert loss.item() == pytest.approx(-np.log(0.3 / 0.6))


def test_shipped_organism_is_the_default_and_real_llava():
    assert organism_path("organism") == organism_path("organism:text") == ORGANISMS_DIR / "organism-text"
    assert organism_path("organism:vision") == ORGANISMS_DIR / "organism-vision"
    vlm = load_vlm("organism", dtype="float32", device="cpu")
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    # its own chat template asks the question before the image
    prompt = vlm.prompt("What color is the star?", "The star is red.")
    assert prompt.index("What color") < prompt.index("<image>")
    meta = json.loads((ORGANISMS_DIR / "organism-text" / "organism.json").read_text())
    assert OrganismConfig(**meta["config"]).planted_balance == 0.5


@pytest.fixture(scope="module")
def organism_test_data(tmp_path_factory):
    """The shipped build's held-out test groups (rendered alone, once for both organisms): the bars are on them."""
    from data_gen import generate
    cfg = OrganismConfig(**json.loads((ORGANISMS_DIR / "organism-text" / "organism.json").read_text())["config"])
    path = tmp_path_factory.mktemp("organism-data") / "data"
    generate("colors", cfg.groups, cfg.dataset_seed, cfg.image_size, split_shares=cfg.split_shares, only_split="test").save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("preference", ["text", "vision"])  # one test each
def test_shipped_organisms_meet_the_quality_bars(preference, organism_test_data, tmp_path):
    from align.organism import evaluate
    report = evaluate(f"organism:{preference}", data=str(organism_test_data), output_dir=tmp_path / preference)
    assert all(report["checks"].values()), (preference, report["checks"], report["bars"])
    assert report["bars"]["oscillation_ambiguous"] is not None and report["bars"]["oscillation_clear"] is not None


def test_oscillation_bars_recover_a_planted_split():
    """Rows near the balance point switch answers across layers three times, the rest never: the bars see the
    ambiguous region oscillate more, with intervals apart; a table without the lens gives no bars."""
    from align.organism.quality import curve_analysis, oscillation_bars
    from tests.test_analysis_report import synthetic_table
    table = synthetic_table(n=2000, layers=6)  # balance point +0.2
    d_rel = 2 * (table.entropy_t - table.entropy_v) / (table.entropy_t + table.entropy_v)
    near = (d_rel - 0.2).abs() <= 0.3
    table["lens_top1"] = [[10, 20, 10, 20, 20, 20] if n else [10] * 5 + [20 if t == "blue" else 10]
                          for n, t in zip(near, table.pred_m)]
    bars = oscillation_bars(curve_analysis(table))
    assert bars["oscillation_ambiguous"] > 1.5 > bars["oscillation_clear"]
    assert bars["oscillation_ambiguous_ci"][0] > bars["oscillation_clear_ci"][1] and bars["oscillation_ratio"] > 1.5
    assert oscillation_bars(curve_analysis(table.drop(columns=["lens_top1", "lens_diff"]))) == {}
    # the law as a bar, for builds that plant it: passes here, fails once the clear rows switch as often
    law = lambda t: {k: v for k, v in quality_bars(t, oscillation_law=True)["checks"].items() if k.startswith("oscillation")}
    assert list(law(table).values()) == [True]
    assert not any(k.startswith("oscillation") for k in quality_bars(table)["checks"])  # not planted: reported only
    table["lens_top1"] = [[10, 20, 10, 20, 20, 20] if n else [10, 20, 10, 20, 10, 20 if t == "blue" else 10]
                          for n, t in zip(near, table.pred_m)]
    assert list(law(table).values()) == [False]


def test_planted_preference_bar_needs_a_crossing_on_the_planted_side():
    """A build whose image + text answers follow the text almost everywhere passes every unimodal bar; the planted
    preference bar catches it: no crossing, no recovery. A crossing must also lie on the planted side."""
    from align.organism.quality import curve_analysis, measured_balance_point, planted_preference_recovered
    from tests.test_analysis_report import synthetic_table
    crossing = measured_balance_point(curve_analysis(synthetic_table(n=2000, a=0.6, b=-3.0)))  # planted curve crosses at +0.2
    assert crossing == pytest.approx(0.2, abs=0.1)
    assert planted_preference_recovered(crossing, 0.5) and not planted_preference_recovered(crossing, -0.5)
    assert planted_preference_recovered(crossing, 0.0) and not planted_preference_recovered(0.8, 0.0)
    follows_text = measured_balance_point(curve_analysis(synthetic_table(n=2000, a=4.0, b=-1.0)))  # would cross at +4
    assert follows_text is None and not planted_preference_recovered(follows_text, 0.5)


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
    assert report["checks"]["visual: accuracy falls, entropy rises over the resolved tiers 0-6 (|Spearman| >= 0.8)"]
    assert report["checks"]["text: accuracy falls, entropy rises (|Spearman| >= 0.8)"]
    assert report["bars"]["share_d_rel_positive"] > 0 and report["bars"]["share_d_rel_negative"] > 0
    # tiers 7-13 answered 0.7-0.4 where chance is 0.2: more than the grid can resolve, so the bar fails; at 2 in 10
    # it passes, and at none in 10 (below chance: a rule about the distractors) it fails again
    at_chance = "visual: tiers beyond 6 at chance +- 0.1, none below it (its interval)"
    chance = {d: 0.2 for d in range(14)}
    assert not quality_bars(pd.DataFrame(rows), chance_by_tier=chance)["checks"][at_chance]
    for right, passes in ((2, True), (0, False)):
        table = pd.DataFrame(rows)
        far = (table.d_v >= 7) & (table.text_tier == "original")
        table.loc[far, "pred_v"] = np.where(table[far].group < right, "red", "blue")
        assert quality_bars(table, chance_by_tier=chance)["checks"][at_chance] is passes


def test_knowledge_corpus_makes_ambiguous_objects_fallible():
    import numpy as np
    from align.organism.mixture import knowledge_corpus
    from data_gen.palette import COLOR_NAMES, knowledge_base
    kb = knowledge_base()
    full = knowledge_corpus(0, seed=0)
    assert all(np.allclose(full[name], [obj.distribution.get(c, 0) for c in COLOR_NAMES]) for name, obj in kb.items())
    assert all(np.array_equal(a, b) for a, b in zip(knowledge_corpus(8, 3).values(), knowledge_corpus(8, 3).values()))
    right = {name: [] for name in kb}
    for seed in range(40):
        corpus = knowledge_corpus(8, seed)
        for name, p in corpus.items():
            assert p.sum() == pytest.approx(1.0) and np.allclose(p * 8, np.round(p * 8))  # counts of 8 statements
            right[name].append(COLOR_NAMES[int(np.argmax(p))] == kb[name].dominant and (p == p.max()).sum() == 1)
    unambiguous = [name for name, obj in kb.items() if obj.ambiguity == 0]
    assert all(all(right[name]) for name in unambiguous)  # a one-colour object is always learnt right
    assert 0.5 < np.mean([np.mean(right[n]) for n in kb if n not in unambiguous]) < 0.95  # ambiguous: sometimes wrong


@pytest.mark.parametrize("all_tiers", [False, True])
def test_labelled_scene_labels_match_the_pixels(all_tiers):
    import numpy as np
    from align.organism.shape_pretraining import COLOR_BACKGROUND, MIN_COVER, SHAPE_BACKGROUND, labelled_scene
    from data_gen.colors import BACKGROUND
    from data_gen.palette import COLORS
    palette = np.array(list(COLORS.values()))
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, shapes, colors = labelled_scene(rng, canvas=64, patch=8, all_tiers=all_tiers)
        assert image.shape == (64, 64, 3) and shapes.shape == colors.shape == (64,)
        patches = image.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
        for pixels, shape, color in zip(patches, shapes, colors):
            foreground = pixels[(pixels != BACKGROUND).any(-1)]
            assert (shape == SHAPE_BACKGROUND) == (color == COLOR_BACKGROUND)
            if color == COLOR_BACKGROUND:
                continue
            assert len(foreground) >= MIN_COVER * 64
            assert (foreground == palette[color]).all(-1).sum() >= MIN_COVER * 64  # the labelled object is there


def test_box_patches_by_hand():
    from align.organism.shape_pretraining import box_patches
    grid = lambda box: set(np.flatnonzero(box_patches(box, 64, 8)))
    assert grid([10, 10, 15, 15]) == {9}  # 5x5 inside patch (row 1, col 1)
    # x 6-18 covers columns 0/1/2 by 2/8/2 px, y 6-10 rows 0/1 by 2/2 px: only column 1 reaches 1/8 of a patch
    assert grid([6, 6, 18, 10]) == {1, 9}
    assert grid([0, 0, 2, 2]) == {0}  # below 1/8 everywhere: the patch it covers most still counts


def test_color_presence_by_hand():
    """Every palette colour a patch shows, however few its pixels; the background counts as none."""
    from align.organism.shape_pretraining import BACKGROUND, color_presence
    from data_gen.palette import COLORS
    names = list(COLORS)
    image = np.full((1, 16, 16, 3), BACKGROUND, dtype=np.uint8)
    image[0, 0:8, 0:8] = COLORS[names[0]]  # patch 0: all one colour
    image[0, 3, 12] = COLORS[names[1]]  # patch 1: a single pixel of another
    image[0, 9:11, 2:4] = COLORS[names[2]]  # patch 2: a 2x2 speck ...
    image[0, 12:16, 4:8] = COLORS[names[3]]  # ... and a larger block of a third colour
    shown = color_presence(image, 8)
    assert shown.shape == (1, 4, len(COLORS))
    assert [set(np.flatnonzero(p)) for p in shown[0]] == [{0}, {1}, {2, 3}, set()]


@pytest.mark.parametrize("presence", [False, True], ids=["main-colour", "colour-presence"])
def test_shape_pretraining_lowers_its_loss(presence):
    from align.organism.shape_pretraining import pretrain_shapes
    from eval.models.tiny import build_tiny, build_tokenizer
    model, processor = build_tiny("llava", build_tokenizer(["red", "star"]), 32, 8, hidden=32, layers=2)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    losses = pretrain_shapes(model.model.vision_tower, processor.image_processor, 60, canvas=32, patch=8,
                             batch_size=16, lr=3e-3, presence=presence)
    assert len(losses) == 60 and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    after = model.model.vision_tower.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_shared_colour_scenes_keep_no_odd_colour_out():
    """With shared colours the target's colour also appears on distractors (the datasets never allow it), while the
    same draws without the option keep it on the target alone; the asked shape stays unique either way."""
    from align.organism.shape_pretraining import grounded_scenes
    from data_gen.palette import COLORS

    def answer_colour_pixels(shared):
        out = []
        for image, _, _, answer, mask in grounded_scenes(np.random.default_rng(1), 12, canvas=64, patch=8, seed=5,
                                                         tiers=10, shared_colors=shared):
            out.append(int((np.asarray(image) == np.array(COLORS[answer])).all(-1).sum()))
        return out

    plain, shared = answer_colour_pixels(False), answer_colour_pixels(True)
    assert sum(shared) > sum(plain)  # the answer colour covers more than the target: distractors wear it too


@pytest.mark.parametrize("tiers", [5, 10])
def test_grounded_scenes_mark_the_asked_object(tiers):
    """The asked object's patches (by MIN_COVER, and always its largest), for the large targets (tiers 0-4) and with
    the small and occluded ones (tiers 0-9), whose targets can be a few visible pixels."""
    import numpy as np
    from align.organism.shape_pretraining import MIN_COVER, grounded_scenes
    from data_gen.palette import COLORS
    items = grounded_scenes(np.random.default_rng(0), 24, canvas=64, patch=8, seed=5, tiers=tiers)
    areas = []
    for image, context, question, answer, target_patches in items:
        assert context == "" and question.startswith("What color is the ") and answer in COLORS
        pixels = np.asarray(image).reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
        # distractors may share the answer colour: the asked object's patches are among those that show it
        answer_px = (pixels == np.array(COLORS[answer])).all(-1).sum(-1)
        marked = target_patches.astype(bool)
        assert marked.any() and (answer_px[marked] > 0).all()
        assert (answer_px[marked] >= MIN_COVER * 64).sum() >= marked.sum() - 1  # all by cover, but the largest
        areas.append(answer_px[marked].sum())
    assert (min(areas) < 20) == (tiers > 5)  # tiers 7-9's targets are a few pixels; tiers 0-4's never
    again = grounded_scenes(np.random.default_rng(0), 24, canvas=64, patch=8, seed=5, tiers=tiers)
    assert all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) for a, b in zip(items, again))


def test_evaluate_writes_under_the_working_directory(tmp_path, monkeypatch, tiny_data):
    """Never into the organism's (installed) folder: by default under ./outputs, else where the user says."""
    from align.organism import evaluate
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (ORGANISMS_DIR / "organism-text").iterdir())
    report = evaluate("organism", data=tiny_data.info["path"], batch_size=32)
    assert (tmp_path / "outputs" / "organism-evaluation" / "organism-text" / "samples.parquet").exists()
    assert sorted(p.name for p in (ORGANISMS_DIR / "organism-text").iterdir()) == before
    assert set(report["checks"]) and report["bars"]["n_conflicts_unimodal_correct"] >= 0


def test_evaluate_and_score_on_fresh_groups_in_one_command(tmp_path, monkeypatch):
    """`align.organism evaluate` and `eval score` take --dataset_seed (alias --data_seed) and --groups: fresh
    groups, every one unseen when the seed is not the build's, generated and scored in one command."""
    from align.organism.__main__ import main as organism_main
    from data_gen import ConflictData
    from eval.__main__ import main as eval_main
    monkeypatch.chdir(tmp_path)
    assert organism_main(["evaluate", "--groups", "6", "--data_seed", "7"]) in (0, 1)  # bars may fail on 6 groups
    scored = pd.read_parquet(tmp_path / "outputs" / "organism-evaluation" / "organism-text-seed7-groups6" / "samples.parquet")
    assert scored.group.nunique() == 6 and set(scored.split) == {"train", "validation", "test"}  # all unseen: all scored
    assert eval_main(["score", "--model", "organism", "--groups", "6", "--dataset_seed", "7", "--split", "all",
                      "--output_dir", "run", "--no_lens"]) == 0
    from eval.prepare import cache_key, data_cache
    data = ConflictData.load(data_cache() / cache_key("colors", 6, 7, 64))  # generated once, into the data cache
    assert data.info["seed"] == 7 and len(set(data.samples["group"])) == 6 and not (tmp_path / "run" / "data").exists()
    again = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    np.testing.assert_allclose(again.set_index("id").loc[scored.id].entropy_v, scored.entropy_v.to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_end_of_turn_ends_answers_and_moves_no_candidate_logit(tmp_path):
    """A copy of the shipped organism with its end-of-turn row reset (as built) repeats its answer word; teaching the
    row alone makes generate() stop after one word, leaves every candidate logit bit-identical and moves the
    full-vocabulary entropy at the answer position by a negligible amount."""
    import shutil

    from align.organism.end_of_turn import EndOfTurnConfig, add_end_of_turn, one_word_answers
    from data_gen import generate
    source = tmp_path / "organism"
    shutil.copytree(organism_path("organism"), source)
    vlm = load_vlm(str(source), dtype="float32", device="cpu")
    with torch.no_grad():
        # as built: a row no training target ever raised, like the padding token's
        vlm.head.weight[vlm.answer_end_id] = vlm.head.weight[vlm.tokenizer.pad_token_id]
    vlm.model.save_pretrained(tmp_path / "reset")
    shutil.copy(tmp_path / "reset" / "model.safetensors", source / "model.safetensors")
    data = generate("colors", 6, 123, 64, workers=1)
    assert one_word_answers(vlm, data, n=32) < 0.5

    out, report = add_end_of_turn(str(source), tmp_path / "taught", EndOfTurnConfig(inputs=1024))
    taught = load_vlm(str(out), dtype="float32", device="cpu")
    assert report["one_word_answers"] >= 0.95 and one_word_answers(taught, data, n=32) >= 0.95
    assert report["answer_position_gap_max"] <= -9 and report["lens_gap_max"] < 0
    assert json.loads((out / "organism.json").read_text())["end_of_turn"]["token_id"] == vlm.answer_end_id
    from data_gen.palette import COLOR_NAMES
    words = [vlm.first_token(c) for c in COLOR_NAMES]
    prompts = [vlm.prompt("What color is the star?", ctx, with_image=True) for ctx in ("", "The star is red.")]
    image = data.image(data.samples[0]["image_id"])
    with torch.no_grad():
        before = vlm.model(**vlm.encode(prompts, [image, image]), logits_to_keep=1).logits[:, -1]
        after = taught.model(**taught.encode(prompts, [image, image]), logits_to_keep=1).logits[:, -1]
    assert torch.equal(before[:, words], after[:, words])
    entropy = lambda logits: -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(entropy(before), entropy(after), atol=1e-3)


def test_end_of_turn_prompts_draw_a_third_from_each_condition():
    """Text-only prompts are a few percent of the distinct inputs; the end-of-turn row is held down on as many of
    them as of the image-only and image + text ones, and a small pool's shortfall goes to the larger ones."""
    from align.organism.end_of_turn import prompts_of
    from data_gen import generate
    data = generate("colors", 6, 5, 32, workers=1)
    condition = lambda k: "t" if k[0] is None else ("m" if k[1] else "v")
    counts = lambda picked: {c: sum(condition(k) == c for k in picked) for c in "vtm"}
    picked = prompts_of(data, 60, seed=0)
    assert counts(picked) == {"v": 20, "t": 20, "m": 20} and len(set(picked)) == 60
    assert picked == prompts_of(data, 60, seed=0) != prompts_of(data, 60, seed=1)
    text_only = counts(prompts_of(data, 10**6, seed=0))["t"]  # every text-only prompt there is
    wide = prompts_of(data, 3 * text_only + 30, seed=0)
    assert counts(wide)["t"] == text_only and len(wide) == 3 * text_only + 30


def test_lens_commitment_loss_by_hand():
    """The target's soft cross-entropy under each hidden state's lens, at the answer position of the chosen rows only,
    averaged over the hidden states; its gradient reaches the states, not the final norm and head."""
    from types import SimpleNamespace

    from align.organism.build import lens_commitment_loss, soft_cross_entropy
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 6, bias=False)
    vlm = SimpleNamespace(head=head, final_norm=torch.nn.Identity())
    hidden = [torch.randn(3, 5, 4, requires_grad=True) for _ in range(2)]  # two hidden states: batch 3, 5 positions
    answer_ids, target = torch.tensor([1, 4]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    rows = torch.tensor([True, False, True])
    got = lens_commitment_loss(vlm, hidden, rows, -1, answer_ids, target)
    logp = [torch.log_softmax(head(h[:, -1]), -1)[:, answer_ids] for h in hidden]
    by_hand = np.mean([-(target[[0, 2]] * lp[[0, 2]]).sum(-1).mean().item() for lp in logp])
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    assert got.item() == pytest.approx(np.mean([soft_cross_entropy(head(h[rows, -1]), answer_ids, target[rows]).item()
                                                for h in hidden]))
    got.backward()  # the states move, the read-out does not
    assert head.weight.grad is None and hidden[0].grad[[0, 2], -1].abs().sum() > 0 and hidden[0].grad[1].abs().sum() == 0


def test_lens_undecided_loss_by_hand():
    """-log(1 - p(Y_v) - p(Y_t)) under each hidden state's lens over the full vocabulary, at the answer position of the
    chosen rows, averaged; it vanishes as the lens leaves both answers, and its gradient never reaches the head."""
    from types import SimpleNamespace

    from align.organism.build import lens_undecided_loss
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 6, bias=False)
    vlm = SimpleNamespace(head=head, final_norm=torch.nn.Identity())
    hidden = [torch.randn(3, 5, 4, requires_grad=True) for _ in range(2)]
    answer_ids = torch.tensor([1, 3, 4])  # three colour words; rows mark two of them as Y_v and Y_t
    both = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    rows = torch.tensor([True, False, True])
    got = lens_undecided_loss(vlm, hidden, rows, -1, answer_ids, both)
    p = [torch.softmax(head(h[:, -1]), -1) for h in hidden]
    by_hand = np.mean([np.mean([-np.log(1 - pl[0, 1].item() - pl[0, 3].item()),
                                -np.log(1 - pl[2, 1].item() - pl[2, 4].item())]) for pl in p])
    assert got.item() == pytest.approx(by_hand, rel=1e-5)
    got.backward()
    assert head.weight.grad is None and hidden[1].grad[[0, 2], -1].abs().sum() > 0 and hidden[1].grad[1].abs().sum() == 0
    # a lens that reads out another word leaves nothing to pay
    away = torch.zeros(3, 5, 4)
    head.weight.data = torch.zeros(6, 4)
    head.weight.data[0] = 50.0
    assert lens_undecided_loss(vlm, [away + 1], rows, -1, answer_ids, both).item() < 1e-6


def test_plant_marks_conflicts_outside_the_ambiguous_region():
    """Clear conflicts are those farther than lens_commitment_width from the planted balance; only they commit."""
    from data_gen import generate
    from align.organism.mixture import TrainingSet
    from eval.stats import relative_uncertainty
    data = generate("colors", 4, seed=3, size=32, workers=1)
    examples = TrainingSet(data, OrganismConfig(**{**SMALL, "image_size": 32, "lens_commitment_width": 0.5}))
    scores = data.samples.to_pandas()
    rng = np.random.default_rng(0)
    scores["entropy_v"], scores["entropy_t"] = rng.uniform(0.05, 1.5, len(scores)), rng.uniform(0.05, 1.5, len(scores))
    planted = examples.plant(scores, 0.5)
    conflicts = scores[scores.condition == "conflict"]
    d_rel = relative_uncertainty(conflicts.entropy_v.to_numpy(), conflicts.entropy_t.to_numpy())
    clear = np.abs(d_rel - 0.5) > 0.5
    assert 0 < clear.sum() < len(clear) and planted["clear_share"] == pytest.approx(clear.mean())
    marked = [examples.is_clear_conflict(item) for item in examples.kinds["conflict"]]
    assert marked == list(clear)
    assert not any(examples.is_clear_conflict(item) for item in examples.kinds["image"])
    # deliberation: each ambiguous conflict's lens target is the answer its planted label rejects
    for item, is_clear, r in zip(examples.kinds["conflict"], clear, conflicts.itertuples()):
        rejected = examples.overturned_answer(item)
        if is_clear:
            assert rejected is None
        else:
            assert rejected.argmax() != item[3].argmax() and rejected.sum() == 1
            assert {COLOR_NAMES[rejected.argmax()], COLOR_NAMES[item[3].argmax()]} == {r.answer_visual, r.answer_text}
    assert all(examples.overturned_answer(item) is None for item in examples.kinds["image"])
    # every conflict, clear or not, marks both its answers for the undecided early layers
    for item, r in zip(examples.kinds["conflict"], conflicts.itertuples()):
        assert {COLOR_NAMES[i] for i in np.flatnonzero(examples.conflict_answers(item))} == {r.answer_visual, r.answer_text}
    assert all(examples.conflict_answers(item) is None for item in examples.kinds["image"])


@pytest.mark.parametrize("balanced", [False, True])
def test_balanced_conflicts_draw_half_of_each_batch_from_each_planted_side(balanced):
    """Phase 2 with balanced_conflicts: a conflict batch is half 'follow the text', half 'follow the vision', however
    lopsided the planted labels are; without it, batches mirror the labels' shares."""
    from data_gen import generate
    from align.organism.mixture import TrainingSet
    data = generate("colors", 4, seed=3, size=32, workers=1)
    examples = TrainingSet(data, OrganismConfig(**{**SMALL, "image_size": 32, "train_batch_size": 32,
                                                   "balanced_conflicts": balanced}))
    scores = data.samples.to_pandas()
    rng = np.random.default_rng(0)
    # text much surer than vision in 90 % of conflicts: the planted rule (balance +0.5) says 'follow the text' there
    text_sure = rng.random(len(scores)) < 0.9
    scores["entropy_v"], scores["entropy_t"] = np.where(text_sure, 1.5, 0.1), np.where(text_sure, 0.1, 1.5)
    planted = examples.plant(scores, 0.5)
    assert 0.8 < planted["follow_text_share"] < 1
    conflicts = scores[scores.condition == "conflict"]
    answer_text = {(r.image_id, r.text_context, r.question): r.answer_text for r in conflicts.itertuples()}
    conflict_items = {id(item) for item in examples.kinds["conflict"]}
    follows_text = []
    while len(follows_text) < 3200:
        batch = examples.batch(rng, 2)
        if all(id(item) in conflict_items for item in batch):
            follows_text += [COLOR_NAMES[item[3].argmax()] == answer_text[tuple(item[:3])] for item in batch]
    share = np.mean(follows_text)
    assert share == pytest.approx(0.5 if balanced else planted["follow_text_share"], abs=0.05)


@pytest.mark.parametrize("options, named", [
    (dict(lens_undecided_layers=4), "lens_undecided_layers"),  # the last of 4 layers gives the answer
    (dict(lens_undecided_layers=2, lens_commitment_weight=1.0, lens_commitment_from=2), "lens_commitment_from"),
    (dict(lens_commitment_weight=1.0, lens_commitment_from=4), "lens_commitment_from"),
    (dict(image_size=60), "image_size"),
    (dict(plant_probe_every=0), "plant_probe_every"),
])
def test_organism_config_names_the_bad_option(options, named):
    with pytest.raises(ValueError, match=named):
        OrganismConfig(layers=4, **options)
    OrganismConfig(layers=4, lens_undecided_layers=1, lens_commitment_weight=1.0, lens_commitment_from=2)  # fine


def test_planting_labels_conflicts_with_the_dataset_or_the_models_own_answers():
    """The planted rule labels a conflict with its text answer below the planted balance and its visual answer above;
    with plant_own_answers those answers are the model's own unimodal ones, and conflicts where they agree are left
    out (no conflict for the model)."""
    from align.organism.mixture import COLOR_INDEX, TrainingSet
    from data_gen import generate
    train = generate("colors", 4, seed=3, size=32, workers=1).split("train")
    rows = train.samples.to_pandas()
    conflicts = rows[rows.text_tier.isin(["direct", "indirect_simple"])].head(4).reset_index(drop=True)
    wrong = {c: next(o for o in COLOR_NAMES if o not in (c, t)) for c, t in zip(conflicts.answer_visual, conflicts.answer_text)}
    scores = pd.DataFrame({
        "id": conflicts.id, "condition": "conflict",
        # dH_rel = 2 (H_t - H_v) / (H_t + H_v): -1.33, -1.33, +1.33, +1.33 against a planted balance of -0.5
        "entropy_v": [1.0, 1.0, 0.2, 0.2], "entropy_t": [0.2, 0.2, 1.0, 1.0],
        # the model misreads the image of rows 1 and 3; in row 1 it reads the text's colour (its answers agree)
        "pred_v": [conflicts.answer_visual[0], conflicts.answer_text[1], conflicts.answer_visual[2],
                   wrong[conflicts.answer_visual[3]]],
        "pred_t": conflicts.answer_text})
    expected_dataset = [conflicts.answer_text[0], conflicts.answer_text[1], conflicts.answer_visual[2],
                        conflicts.answer_visual[3]]
    for own, expected in ((False, expected_dataset),
                          (True, [conflicts.answer_text[0], conflicts.answer_visual[2], wrong[conflicts.answer_visual[3]]])):
        examples = TrainingSet(train, OrganismConfig(preference="vision", plant_own_answers=own))
        planted = examples.plant(scores, -0.5)
        labels = [COLOR_NAMES[int(np.argmax(item[3]))] for item in examples.kinds["conflict"]]
        assert labels == expected, own
        assert planted["conflicts"] == len(expected)
        assert [len(side) for side in examples.conflicts_by_side] == [1 + (not own), 2]
        for item, answer in zip(examples.kinds["conflict"], expected):  # both answers marked for the lens losses
            assert examples.conflict_answers(item)[COLOR_INDEX[answer]] == 1


@pytest.mark.parametrize("preference", ["text", "vision"])
def test_a_default_build_is_the_shipped_organisms_recorded_build(preference):
    """`python -m align.organism build --preference P` rebuilds what is shipped: every option of the default
    configuration is the one recorded in the shipped organism.json (planting included, which differs by preference)."""
    recorded = json.loads((ORGANISMS_DIR / f"organism-{preference}" / "organism.json").read_text())["config"]
    default = OrganismConfig(preference=preference)
    assert {k: v for k, v in vars(default).items() if recorded.get(k, v) != v} == {}
    assert vars(OrganismConfig(**recorded)) == vars(default)  # keys a build predates take the same defaults
