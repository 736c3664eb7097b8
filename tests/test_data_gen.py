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
        # the text's colour never appears in the image (the image's colour may, on distractors)
        assert not (pixels == COLORS[g.color_text]).all(axis=-1).any()
        assert g.color_visual in g.distractor_colors and g.color_text not in g.distractor_colors
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
        assert scene.colors[0] == g.color_visual and g.color_text not in scene.colors
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
    # the default shares are the task's, recorded like given ones
    assert generate("attributes", 10, seed=2, size=64, workers=1).info["split_shares"] == {
        "train": 0.2, "validation": 0.35, "test": 0.45}
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


def test_target_patch_share_on_a_hand_made_owner_map():
    from data_gen.readability import target_patch_share
    owners = np.full((4, 4), -1)
    owners[0, :2] = 0  # the target fills half of patch 0
    owners[1, 0] = 0  # and a quarter of patch 1
    assert target_patch_share(owners) == 0.5


def test_tier_readability_at_the_organism_grid(capsys):
    """At 64 px with 8-px patches the small targets (tiers 7-13) own a fraction of a patch the large ones (0-6) do
    not: the signal docs/organism-builds.md explains the organism's image-only ladder by."""
    from data_gen.readability import tier_readability
    table = tier_readability(64, 8, groups=12, seed=5).set_index("d_v")
    assert len(table) == len(COLOR_TIERS)
    assert table.target_patch_share.loc[:6].min() > 2 * table.target_patch_share.loc[7:].max()
    assert table.rarest_color.loc[0] == table.chance.loc[0] == 1.0  # one object: its colour is the only one shown
    with pytest.raises(ValueError, match="multiple of patch"):
        tier_readability(64, 7)
    assert data_gen_main(["readability", "--image_size", "64", "--patch", "8", "--groups", "2"]) == 0
    assert "target_patch_share" in capsys.readouterr().out


@pytest.fixture(scope="module")
def default_colors():
    """The colour task at its default canvas (data_gen/defaults.py), enough groups that a 0.05 excess is not noise."""
    return generate("colors", 400, seed=0, workers=2)


def test_no_blind_reader_beats_chance_at_the_generators_defaults(default_colors, tmp_path):
    """Question-blind readers of the image (colours, attributes), image-blind readers of recognition's statement and
    readers of an audio-visual clip that ignore the asked modality: none beats a uniform pick by more than 0.05 on
    any tier, and the verdict is written to info.json and data_report.md."""
    from data_gen.av import generate_av
    from data_gen.blind_readers import IMAGE_READERS, SHORTCUT_MARGIN
    from data_gen.recognition import recognition_from
    datasets_ = {"colors": default_colors, "attributes": generate("attributes", 400, seed=0, workers=2),
                 "recognition": recognition_from(default_colors), "av": generate_av(600, seed=0)}
    for task, data in datasets_.items():
        readers = data.info["blind_readers"]
        assert readers["shortcuts"] == [], (task, readers["shortcuts"])
        excess = [v for row in readers["tiers"] for k, v in row.items() if k.endswith("_excess")]
        assert max(excess) <= SHORTCUT_MARGIN and len(excess) >= 3
    tiers = {row["d_v"]: row for row in default_colors.info["blind_readers"]["tiers"]}
    assert set(tiers) == set(range(len(COLOR_TIERS))) and all(r in tiers[9] for r in IMAGE_READERS)
    assert tiers[13]["chance"] == pytest.approx(1 / 5, abs=0.01)  # five colours shown: all but the text's
    tiny_av = generate_av(1, seed=0).info["blind_readers"]
    assert tiny_av["tiers"] == [] and "generate more groups" in tiny_av["skipped"]  # one split: nothing held out
    small = generate("colors", 3, seed=1, size=64, workers=1)
    small.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "info.json").read_text())["blind_readers"]["by"] == "d_v"
    report = (tmp_path / "c" / "data_report.md").read_text()
    assert "| d_v | chance | rarest_color |" in report and "Shortcuts" in report


def test_the_old_colour_rule_fails_the_blind_readers():
    """The negative case: with both answer colours kept off the distractors, the target's colour is the one drawn
    once, and the rarest-colour reader answers the crowded tiers without reading the question."""
    import dataclasses

    import pandas as pd

    from data_gen.blind_readers import label_map_readers, reader_table, shortcuts
    from data_gen.palette import COLOR_NAMES
    rows = []
    for group in range(60):
        g = sample_group(group, 0)
        old = dataclasses.replace(g, distractor_colors=tuple(c for c in COLOR_NAMES if c not in (g.color_visual, g.color_text)))
        for tier in COLOR_TIERS[9:]:
            scene = render_color_scene(old, tier, 64, 0)
            rows.append({"d_v": tier.d_v, **label_map_readers(scene.labels, scene.colors)})
    table = reader_table(pd.DataFrame(rows)).set_index("d_v")
    assert (table.rarest_color > 0.85).all() and (table.chance < 0.21).all()
    found = shortcuts(table.reset_index())
    assert {f"rarest_color on d_v={d}" for d in range(9, 14)} <= {f.split(":")[0] for f in found}


def test_blind_readers_of_a_hand_made_scene():
    """Three objects: the target (red, object 0) is central and the largest; blue is shown twice; green is half
    hidden. Each reader's expected accuracy, ties split evenly, and chance = 1 / colours shown."""
    from data_gen.blind_readers import scene_readers
    top = np.full((9, 9), -1)
    top[3:6, 3:6] = 0  # 9 px, centred
    top[0, 0:2] = 1  # blue, 2 px
    top[8, 7:9] = 2  # green, 2 px of 4
    top[0, 7:9] = 3  # blue, 2 px
    readers = scene_readers(top, [9, 2, 4, 2], ["red", "blue", "green", "blue"], "red")
    assert readers["chance"] == pytest.approx(1 / 3)
    assert readers["rarest_color"] == 0.5  # red and green once each
    assert readers["most_frequent_color"] == 0.0  # blue
    assert readers["largest_object"] == readers["most_central_object"] == 1.0
    assert readers["least_occluded_object"] == pytest.approx(1 / 3)  # red, blue, blue fully shown


def test_every_command_generates_a_task_with_its_one_default_size_and_shares(tmp_path):
    """data_gen, measure's data cache and the recipes resolve a task's image side and split shares alike, so the
    dataset one command generates is the one another would."""
    from align.arguments import AlignArguments, AVAlignArguments
    from data_gen import defaults
    from eval.prepare import cached_dataset
    from eval.tasks import get_task
    for task in ("colors", "attributes"):
        wanted = {"size": defaults.image_size(task), "split_shares": defaults.split_shares(task)}
        assert data_gen_main([task, "--output_dir", str(tmp_path / task), "--groups", "10", "--workers", "1"]) == 0
        made = {"data_gen": ConflictData.load(tmp_path / task).info,
                "measure": cached_dataset(get_task(task), 10, 0).info}
        for command, info in made.items():
            assert {k: info[k] for k in wanted} == wanted, (task, command)
        recipe = AlignArguments(task=task, groups=10)
        assert {"size": recipe.image_size, "split_shares": recipe.split_shares} == wanted
        assert ConflictData.load(tmp_path / task).fingerprint == made["measure"]["fingerprint"]
    av = AVAlignArguments()
    assert av.image_size == defaults.image_size("av") == get_task("av").image_size == 32
    assert get_task("av").split_shares == defaults.split_shares("av") != defaults.split_shares("colors")
