"""Tier properties are measured back from the rendered masks and pixels, not taken from parameters."""
import json

import numpy as np
import pytest
from PIL import Image

from data_gen import ConflictData, generate, samples_frame
from data_gen.attributes import PAIRS, render_attribute_scene
from data_gen.attributes import sample_group as sample_attribute_group
from data_gen.colors import render_color_scene, sample_group
from data_gen.palette import COLORS, knowledge_base
from data_gen.tiers import ATTRIBUTE_TIERS, COLOR_TIERS
from data_gen.user_import import ImportRowError, import_jsonl
from data_gen.__main__ import main as data_gen_main

GROUPS = range(6)


@pytest.mark.parametrize("canvas", [224, 64])
@pytest.mark.parametrize("tier", COLOR_TIERS, ids=lambda t: f"v{t.d_v}")
def test_color_tier_properties_measured_on_masks(tier, canvas):
    for group in GROUPS:
        g = sample_group(group, seed=3)
        scene = render_color_scene(g, tier, canvas, seed=3)
        lm = scene.labels
        pixels = np.asarray(scene.image)
        distractors = lm.objects[1:]
        assert len(distractors) == tier.distractors
        assert all(d.crop.any() for d in distractors)
        # occlusion share: distractors whose mask shares a pixel with the target's mask
        target_mask = lm.objects[0].full((canvas, canvas))
        overlap = [bool((d.full((canvas, canvas)) & target_mask).any()) for d in distractors]
        if tier.distractors:
            assert abs(np.mean(overlap) - tier.occlusion_rate) <= 0.10
        # target size: bounding box side of the rendered target mask, within the tier's band
        ys, xs = np.nonzero(target_mask)
        side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        lo, hi = tier.size_px(canvas)
        assert lo - 1.5 <= side <= hi + 1.5, (side, lo, hi)
        # the target stays visible in its own colour
        visible = lm.top == 0
        assert visible.sum() >= 0.5 * target_mask.sum()
        assert (pixels[visible] == COLORS[g.color_visual]).all()
        # answer colours never appear on distractor pixels
        distractor_pixels = pixels[lm.top >= 1]
        for answer in (g.color_visual, g.color_text):
            assert not (distractor_pixels == COLORS[answer]).all(axis=1).any()
        # image-irrelevant control: its shape is never drawn (target shape differs, distractor shapes exclude it)
        assert g.absent_shape not in g.distractor_shapes and g.absent_shape != g.shape


@pytest.mark.parametrize("tier", ATTRIBUTE_TIERS, ids=lambda t: f"v{t.d_v}")
def test_attribute_tier_properties(tier):
    for group in GROUPS:
        g = sample_attribute_group(group, seed=1)
        scene = render_attribute_scene(g, tier, 128, seed=1)
        n = len(scene.labels.objects)
        assert tier.objects[0] <= n <= tier.objects[1]
        assert scene.pairs.count(g.target) == 1 and g.absent not in scene.pairs
        assert all(p in PAIRS for p in scene.pairs)
        x0, y0, x1, y1 = scene.labels.objects[0].bbox()
        assert tier.size_band[0] * 128 - 1.5 <= max(x1 - x0, y1 - y0) <= tier.size_band[1] * 128 + 1.5
        assert all(c not in (g.color_visual, g.color_text) for c in scene.colors[1:])
        assert scene.labels.visible.tolist() == [o.crop.sum() for o in scene.labels.objects]  # nothing hidden


def test_metal_has_specular_highlight_rubber_does_not():
    from data_gen.attributes import solid_sprite
    for solid in ("sphere", "cube", "cylinder"):
        metal, rubber = solid_sprite(solid, "metal", 40)[1], solid_sprite(solid, "rubber", 40)[1]
        assert metal.max() > 1.0 >= rubber.max()


def test_text_tiers_and_knowledge_base():
    data = generate("colors", 4, seed=5, size=64, workers=1)
    rows = data.samples.to_list()
    by_tier = {r["text_tier"]: r for r in rows if r["image_id"] == rows[0]["image_id"]}
    g = sample_group(rows[0]["group"], 5)
    assert by_tier["direct"]["text_context"] == f"The {g.shape} is {g.color_text}."
    assert by_tier["original"]["text_context"] == "" and by_tier["original"]["answer_text"] is None
    kobj = knowledge_base()[by_tier["indirect_knowledge"]["knowledge_object"]]
    assert kobj.dominant == g.color_text
    assert by_tier["indirect_knowledge"]["text_ambiguity"] == pytest.approx(kobj.ambiguity)
    assert by_tier["image_irrelevant"]["answer_visual"] is None
    assert g.shape not in by_tier["text_irrelevant"]["text_context"]
    assert {r["d_t"] for r in rows if r["condition"] == "conflict"} == {0, 1, 2}
    # the knowledge base has both unambiguous and graded ambiguous objects for every colour
    amb = [o.ambiguity for o in knowledge_base().values()]
    assert min(amb) == 0 and max(amb) > 1.0


def test_images_shared_across_text_tiers_and_deterministic(tmp_path):
    a = generate("colors", 6, seed=11, size=64, workers=2)
    b = generate("colors", 6, seed=11, size=64, workers=1)
    assert len(a.images) == 6 * len(COLOR_TIERS)  # one image per (group, visual tier), not per text tier
    assert len(a.samples) == len(a.images) * 6
    assert set(a.samples["image_id"]) == set(a.images["image_id"])
    assert [im["bytes"] for im in a.images.cast_column("image", a.images.features["image"].__class__(decode=False))["image"]] == \
           [im["bytes"] for im in b.images.cast_column("image", b.images.features["image"].__class__(decode=False))["image"]]
    c = generate("colors", 6, seed=12, size=64, workers=1)
    assert np.asarray(c.image("c00000-v05")).tobytes() != np.asarray(a.image("c00000-v05")).tobytes()
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    loaded = ConflictData.load(tmp_path / "a")
    assert loaded.samples.to_list() == a.samples.to_list()
    assert (tmp_path / "a" / "parquet" / "samples.parquet").exists()


def test_split_is_by_group_and_disjoint():
    data = generate("attributes", 30, seed=2, size=64, workers=1)
    groups = {s: set(data.split(s).samples["group"]) for s in ("train", "validation", "test")}
    assert groups["train"] and groups["validation"] and groups["test"]
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]
    assert set().union(*groups.values()) == set(range(30))
    with pytest.raises(ValueError, match="not in this dataset"):
        data.split("dev")
    # rendering one split's groups alone gives that split's rows and images, byte for byte
    test_only = generate("attributes", 30, seed=2, size=64, workers=1, only_split="test")
    full = data.split("test")
    assert test_only.samples.to_list() == full.samples.to_list() and test_only.info["only_split"] == "test"
    assert len(test_only.images) < len(data.images) and all(
        np.array_equal(np.asarray(test_only.image(i)), np.asarray(data.image(i))) for i in set(full.samples["image_id"]))
    with pytest.raises(ValueError, match="only_split='dev' has no groups"):
        generate("attributes", 30, seed=2, size=64, workers=1, only_split="dev")
    # a split's table as pandas: the same rows as to_pandas, in one Arrow chunk per column (fast .iloc)
    frame = samples_frame(full.samples)
    assert frame.equals(full.samples.to_pandas().reset_index(drop=True))
    assert full.samples.with_format("arrow")[:].column(0).num_chunks > 1


def test_split_shares_set_each_splits_groups_from_the_command_line(tmp_path, capsys):
    shares = '{"train": 0.2, "validation": 0.4, "test": 0.4}'
    assert data_gen_main(["attributes", "--output_dir", str(tmp_path / "d"), "--groups", "10", "--image_size", "64",
                          "--workers", "1", "--split_shares", shares]) == 0
    data = ConflictData.load(tmp_path / "d")
    groups = {s: len(set(data.split(s).samples["group"])) for s in ("train", "validation", "test")}
    assert groups == {"train": 2, "validation": 4, "test": 4}
    assert data.info["split_shares"] == {"train": 0.2, "validation": 0.4, "test": 0.4}
    # the default shares leave the dataset as before (nothing recorded, the same splits)
    assert "split_shares" not in generate("attributes", 10, seed=2, size=64, workers=1).info
    for bad in ('{"train": 0.5, "test": 0.5}', '{"train": 0.7, "validation": 0.2, "test": 0.2}',
                '{"train": 1.0, "validation": 0.0, "test": 0.0}'):
        assert data_gen_main(["attributes", "--output_dir", str(tmp_path / "e"), "--groups", "10", "--image_size", "64",
                              "--split_shares", bad]) == 2
        assert "split_shares must give each of ['train', 'validation', 'test'] a share > 0" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def _write_user_data(tmp_path, lines):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "car.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    path = tmp_path / "conflicts.jsonl"
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return path


GOOD = {"id": "1", "image": "car.png", "question": "What color is the car?", "text_context": "The car is blue.",
        "answer_visual": "red", "answer_text": "blue"}


def test_user_import_good_rows_and_mc2_aliases(tmp_path):
    mc2 = {"id": "2", "image_id": "car.png", "question": "Q?", "context": "ctx", "answer_vision": "red",
           "answer_text": "green", "split": "test"}
    data = import_jsonl(_write_user_data(tmp_path, [GOOD, mc2]))
    assert data.samples["answer_visual"] == ["red", "red"]
    assert data.samples["text_context"] == ["The car is blue.", "ctx"]
    assert data.samples["split"][1] == "test"
    assert len(data.images) == 1  # the shared image is stored once
    assert data.image("car.png").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("bad, reason, needle", [
    ({k: v for k, v in GOOD.items() if k not in ("answer_text", "id")} | {"id": "2"}, "missing_field", "missing field(s) ['answer_text']"),
    ({**GOOD, "id": "2", "image": "broken.png"}, "unreadable_image", "cannot read image 'broken.png'"),
    ({**GOOD, "id": "2", "image": "nowhere.png"}, "unreadable_image", "cannot read image 'nowhere.png'"),
    ({**GOOD, "id": "2", "answer_text": "Red "}, "same_answers", "a conflict needs two different answers"),
    ("{not json", "bad_json", "not valid JSON"),
    (GOOD, "duplicate_id", "appears twice"),
])
def test_user_import_errors_name_file_line_and_fix(tmp_path, bad, reason, needle):
    path = _write_user_data(tmp_path, [GOOD, bad])
    with pytest.raises(ImportRowError) as e:
        import_jsonl(path)
    assert f"{path}:2:" in str(e.value) and needle in str(e.value) and e.value.reason == reason
    data = import_jsonl(path, skip_invalid=True)
    assert len(data.samples) == 1 and data.info["skipped"] == {reason: 1}


def test_cli_import_error_exit_code_and_message(tmp_path, capsys):
    path = _write_user_data(tmp_path, [{**GOOD, "answer_text": "red"}])
    assert data_gen_main(["import", "--jsonl", str(path), "--output_dir", str(tmp_path / "out")]) == 2
    assert "conflicts.jsonl:1" in capsys.readouterr().err
    assert data_gen_main(["import", "--jsonl", str(path), "--output-dir", str(tmp_path / "out"), "--skip-invalid"]) == 2  # nothing left


def test_cli_generate_and_contact_sheet(tmp_path):
    assert data_gen_main(["attributes", "--output_dir", str(tmp_path / "d"), "--groups", "3", "--image_size", "64", "--workers", "1"]) == 0
    assert len(ConflictData.load(tmp_path / "d").images) == 3 * len(ATTRIBUTE_TIERS)
    assert data_gen_main(["sheet", "--task", "colors", "--output_dir", str(tmp_path / "sheet.png"), "--image-size", "64"]) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] >= 7 * 64


def test_av_clips_conditions_targets_and_determinism(tmp_path):
    """Six conditions x two asked modalities per group; the asked modality's class is the target and is absent
    where that modality is; misaligned audio is another class; sounds are class-specific; deterministic."""
    import numpy as np
    from data_gen.av import (CLASSES, CONDITIONS, SAMPLING_RATE, AVData, class_sound, generate_av, noisy_sound)
    data = generate_av(12, seed=3, size=32)
    rows = data.samples.to_pandas()
    assert len(rows) == 12 * len(CONDITIONS) * 2 and rows.groupby("group").split.nunique().max() == 1
    by = rows.set_index(["group", "condition", "asked"])
    for g in range(12):
        v = by.loc[(g, "aligned", "visual")]
        assert v.target == v.answer_visual == by.loc[(g, "aligned", "audio")].target != ""
        mis = by.loc[(g, "misaligned", "audio")]
        assert mis.answer_audio != mis.answer_visual == v.answer_visual and mis.target == mis.answer_audio
        assert by.loc[(g, "audio_removed", "audio")].target == "" and by.loc[(g, "frames_zeroed", "visual")].target == ""
        lead = by.loc[(g, "misleading_text", "visual")]
        assert lead.misleading_class not in ("", lead.answer_visual) and lead.misleading_class in lead.caption
        assert by.loc[(g, "long_context", "audio")].appendix and not v.caption and not v.appendix
    frames, audio = data.clip(by.loc[(0, "aligned", "visual")].clip_id)
    assert len(frames) == 4 and frames[0].size == (32, 32) and audio.shape == (SAMPLING_RATE,)
    assert data.clip(by.loc[(0, "audio_removed", "visual")].clip_id)[1] is None
    zeroed, _ = data.clip(by.loc[(0, "frames_zeroed", "audio")].clip_id)
    assert all(not np.asarray(f).any() for f in zeroed)
    # sounds differ by class: spectral centroids far apart; noise grows with the audio tier
    rng = np.random.default_rng(0)
    centroid = lambda w: float((np.fft.rfftfreq(len(w), 1 / SAMPLING_RATE) * np.abs(np.fft.rfft(w)) ** 2).sum()
                               / (np.abs(np.fft.rfft(w)) ** 2).sum())
    centroids = sorted(centroid(class_sound(c, rng)) for c in CLASSES)
    assert min(np.diff(centroids)) > 50
    clean = class_sound("bell", np.random.default_rng(1)) * 0.1
    errors = [np.sqrt(np.mean((noisy_sound("bell", d, np.random.default_rng(1)) - clean) ** 2)) for d in range(5)]
    assert errors == sorted(errors)
    data.save(tmp_path / "av")
    generate_av(12, seed=3, size=32).save(tmp_path / "av2")  # the same groups again: the same bytes
    assert AVData.load(tmp_path / "av").info["fingerprint"] == AVData.load(tmp_path / "av2").info["fingerprint"]
    assert AVData.load(tmp_path / "av").split("test").samples["split"] == ["test"] * 36


def test_scene_readability_on_a_hand_made_owner_map():
    """Target (object 0, red) fills half of patch 0; blue shows in three patches, green in two: the rarest colour is
    red alone; with red as common as green the reader splits the tie."""
    from data_gen.readability import scene_readability
    owners = np.full((4, 4), -1)
    owners[0, :2] = 0
    owners[1, :] = 1
    owners[2, :2], owners[3, :2] = 2, 2
    owners[2, 2:], owners[3, 3] = 1, 1
    share, rarest = scene_readability(owners, ["red", "blue", "green"])
    assert share == 0.5 and rarest == 1.0
    owners[3, 2] = 0  # red now in two patches, as green
    assert scene_readability(owners, ["red", "blue", "green"])[1] == 0.5


def test_tier_readability_at_the_organism_grid(capsys):
    """At 64 px with 8-px patches the small targets (tiers 7-13) own a fraction of a patch the large ones (0-6) do
    not, and counting colours answers the crowded tiers (9-13) better than the sparse small ones (7-8): the signals
    docs/organism-builds.md explains the organism's image-only ladder by."""
    from data_gen.readability import tier_readability
    table = tier_readability(64, 8, groups=12, seed=5).set_index("d_v")
    assert len(table) == len(COLOR_TIERS)
    assert table.target_patch_share.loc[:6].min() > 2 * table.target_patch_share.loc[7:].max()
    assert table.rarest_color_accuracy.loc[0] == 1.0  # one object: its colour is the only one shown
    assert table.rarest_color_accuracy.loc[9:].mean() > table.rarest_color_accuracy.loc[7:8].mean() + 0.2
    with pytest.raises(ValueError, match="multiple of patch"):
        tier_readability(64, 7)
    assert data_gen_main(["readability", "--image_size", "64", "--patch", "8", "--groups", "2"]) == 0
    assert "rarest_color_accuracy" in capsys.readouterr().out
