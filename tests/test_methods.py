"""Every way to move a model's modality preference (soft, hard, dpo, blind_sft, steer, steer_uncertainty, prompt,
and mixed on the recognition task): each runs through the recipe, moves the model the way it is asked, and saves and
reloads."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from align.steering import next_strength, preference_direction, separation_auc
from eval.models.steering import STEERING_FILE, Steering, uncertainty_window

ROOT = Path(__file__).resolve().parents[1]
SHARES = '{"train": 0.5, "validation": 0.25, "test": 0.25}'
# the recipe's settings for every method here (through `align(...)`, in this process: a subprocess per method spent
# ~6 s importing torch and transformers again)
RUN = dict(split_shares=json.loads(SHARES), groups=40, n_boot=100, per_device_eval_batch_size=64, dtype="float32",
           max_steps=12, per_device_train_batch_size=8, calibration_rounds=0, steer_rounds=3)


@pytest.fixture(scope="module")
def method_data(tmp_path_factory):
    from data_gen import generate
    path = tmp_path_factory.mktemp("methods") / "data"
    generate("colors", 40, 0, 64, split_shares=json.loads(SHARES)).save(path)
    return path


def test_uncertainty_window_is_one_between_the_points_and_falls_off_outside():
    w = uncertainty_window([-1.0, 0.0, 0.3, 0.5, 1.0], current=0.5, target=0.0, sigma=0.5)
    np.testing.assert_allclose(w[1:4], 1.0)
    np.testing.assert_allclose(w[0], np.exp(-0.5 * 4))  # 1.0 below the window's low end, sigma 0.5
    np.testing.assert_allclose(w[4], np.exp(-0.5))
    s = Steering(torch.ones(4), 0, 2.0, "uncertainty", current=0.5, target=0.0, sigma=0.5)
    # dH_rel 0, inside the window -> alpha; dH_rel 1.0 -> alpha exp(-0.5)
    np.testing.assert_allclose(s.strengths([0.0, 1.0]), [2.0, 2.0 * np.exp(-0.5)])
    assert s.extra_passes == 2 and Steering(torch.ones(4), 0, 2.0).extra_passes == 0


def test_preference_direction_finds_the_separating_layer_and_never_defaults_to_the_last():
    rng = np.random.default_rng(0)
    n, dim = 400, 8
    y = rng.uniform(size=n) < 0.5
    hidden = rng.normal(size=(n, 4, dim))
    planted = np.zeros(dim)
    planted[2] = 1.5
    hidden[:, 1] += np.outer(y, planted)
    hidden[:, 3] += np.outer(y, 3 * planted)  # the last layer separates best, but is a fixed logit bias there
    groups = np.arange(n) // 10
    direction, layer, aucs = preference_direction(hidden, y, groups)
    assert layer == 1 and aucs[3] > aucs[1] > 0.8 > max(aucs[0], aucs[2])
    assert abs(direction[2] - 1.5) < 0.3 and np.abs(np.delete(direction, 2)).max() < 0.4
    assert preference_direction(hidden, y, groups, layer=3)[1] == 3
    with pytest.raises(ValueError, match="both kinds"):
        preference_direction(hidden, np.ones(n, bool), groups)
    assert separation_auc(np.array([3.0, 2.0, 1.0]), np.array([True, True, False])) == 1.0


def test_next_strength_takes_secant_steps_and_backs_off_a_broken_model():
    # balance point linear in alpha (b = 0.5 + 0.25 alpha): one secant step from two points lands on target
    assert next_strength(-0.5, [0.0, -1.0], [0.5, 0.25], limit=16) == pytest.approx(-4.0)
    assert next_strength(-0.5, [0.0, -1.0], [0.5, 0.6], limit=16) == -2.0  # moved the wrong way: doubled
    assert next_strength(-0.5, [0.0, -2.0, -8.0], [0.5, 0.4, None], limit=16) == -5.0  # no curve at -8: halfway back
    assert next_strength(-0.5, [0.0, -1.0], [0.5, 0.49], limit=16) == -4.0  # a tiny slope: at most 4x the last
    assert next_strength(-0.5, [0.0, -8.0], [0.5, 0.4], limit=10) == -10.0


def test_steering_file_round_trips_and_measure_applies_it(method_data, tmp_path):
    from eval import measure
    from eval.models import load_vlm
    vlm = load_vlm("organism", dtype="float32")
    torch.manual_seed(0)
    steering = Steering(torch.randn(vlm.model.config.text_config.hidden_size), 1, 2.5)
    file = steering.save(tmp_path / "vec", base="organism")
    assert file.name == STEERING_FILE
    again = Steering.load(tmp_path / "vec")
    assert torch.equal(again.direction, steering.direction) and (again.layer, again.alpha) == (1, 2.5)
    kw = dict(data=method_data, split="test", batch_size=64)
    plain = measure(vlm, **kw).samples
    by_file = measure("organism", steering=file, dtype="float32", **kw)
    by_hand = measure(dataclasses.replace(vlm, steering=steering), **kw).samples
    np.testing.assert_allclose(by_file.samples.entropy_m, by_hand.entropy_m, atol=1e-5)
    assert "steering" in by_file.info["model"]
    # only the image + text prompts are steered: unimodal entropies are the base's
    np.testing.assert_allclose(by_file.samples.entropy_v, plain.entropy_v, atol=1e-5)
    assert np.abs(by_file.samples.entropy_m - plain.entropy_m).max() > 1e-3
    zero = measure(dataclasses.replace(vlm, steering=steering.with_alpha(0.0)), **kw).samples
    np.testing.assert_allclose(zero.entropy_m, plain.entropy_m, atol=1e-5)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        Steering.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="task with a balance point"):
        measure("organism", task="recognition", steering=file)


def run_method(method: str, target: float, data: Path, out: Path) -> dict:
    from align import align
    return align("organism", target, method, output_dir=out, data=str(data), **RUN).result


def paired_shift(out: Path) -> float:
    """Mean change of text-following over the test conflicts (a paired view for a curve that does not cross)."""
    before, after = (pd.read_parquet(out / "runs" / r / "samples.parquet").set_index("id") for r in ("base", "aligned"))
    conflicts = before.index[before.condition == "conflict"]
    follows = lambda t: (t.loc[conflicts].pred_m == t.loc[conflicts].answer_text).astype(float)
    return float(follows(after).mean() - follows(before).mean())


# the organism leans text; the trained methods and the prompt are asked toward the image, steering toward the text
# (on this organism the direction moves text-following up, and barely down: docs/results.md, "Every method")
@pytest.mark.slow
@pytest.mark.parametrize("method, target, released", [
    ("soft", -0.5, "adapter_model.safetensors"), ("hard", -0.5, "adapter_model.safetensors"),
    ("dpo", -0.5, "adapter_model.safetensors"),
    ("blind_sft", -0.5, "adapter_model.safetensors"), ("steer", 1.5, STEERING_FILE),
    ("steer_uncertainty", 1.5, STEERING_FILE), ("prompt", -0.5, "instruction.json")])
def test_every_method_moves_the_balance_point_the_asked_way_and_reloads(method, target, released, method_data,
                                                                       tmp_path):
    from eval import measure
    result = run_method(method, target, method_data, tmp_path)
    shift = (result.get("guarantee") or {}).get("shift")
    shift = paired_shift(tmp_path) if shift is None else shift
    assert np.sign(shift) == np.sign(target - result["base"]["balance_point"]["estimate"]) and abs(shift) > 0.02
    assert (tmp_path / "release" / released).exists()
    card = (tmp_path / "release" / "README.md").read_text()
    assert f"Method\n`{method}`" in card or f"`{method}`" in card
    # what was released, loaded again through measure, gives the recipe's own "after" table
    options = {"adapter": tmp_path / "release"} if released.startswith("adapter") else (
        {"steering": tmp_path / "release" / STEERING_FILE} if method.startswith("steer") else
        {"instruction": json.loads((tmp_path / "release" / released).read_text())["instruction"]})
    again = measure("organism", data=method_data, split="test", batch_size=64, dtype="float32", **options).samples
    after = pd.read_parquet(tmp_path / "runs" / "aligned" / "samples.parquet").set_index("id")
    again = again[again.id.isin(after.index)]  # the recipe scores the conflicts only
    after = after.loc[again.id]
    assert len(again) > 100
    np.testing.assert_allclose(again.entropy_m.to_numpy(), after.entropy_m.to_numpy(), atol=1e-4)
    if method.startswith("steer"):
        assert result["training_examples"]["extra_forward_passes"] == (2 if method == "steer_uncertainty" else 0)
        assert result["calibration"] and all("alpha" in r for r in result["calibration"])
    if method == "blind_sft":  # one share for every conflict: the mean of p*
        assert 0 < result["training_examples"]["mean_p_text"] < 0.5


@pytest.mark.slow
def test_mixed_moves_cross_modal_recognition_up_and_reloads(tmp_path):
    """`mixed` is asked to recognise image-text contradictions, which the recognition organism never does: after
    training it does on some, unimodal recognition stays, and the released adapter gives the recipe's own table."""
    from eval import measure
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "recipes/align_llava.py", "--config", "recipes/configs/organism-mixed.yaml",
                          "--groups", "30", "--max_steps", "60", "--n_boot", "100", "--report_to", "none",
                          "--dtype", "float32", "--per_device_eval_batch_size", "64", "--output_dir", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    assert res.returncode == 0, res.stderr[-3000:]
    recognition = json.loads((out / "alignment.json").read_text())["recognition"]
    rate = lambda run, kind: recognition[run][kind]["recognition"]["rate"]
    assert rate("base", "cross_modal") < 0.05 and rate("aligned", "cross_modal") > 0.1
    assert recognition["aligned"]["cross_modal"]["recognition"]["ci"][0] > rate("base", "cross_modal")
    assert rate("aligned", "unimodal") > rate("base", "unimodal") - 0.1
    assert (out / "release" / "adapter_model.safetensors").exists()
    again = measure("organism:recognition", task="recognition", data=out / "recognition", adapter=out / "release",
                    split="test", batch_size=64, dtype="float32").samples.set_index("id")
    after = pd.read_parquet(out / "runs" / "aligned_recognition" / "samples.parquet").set_index("id")
    assert len(after) > 100 and set(after.index) <= set(again.index)
    np.testing.assert_allclose(again.loc[after.index, "p_yes"], after.p_yes, atol=1e-4)


def test_paraphrase_rewrites_every_wording_with_known_words(method_data):
    from data_gen import ConflictData
    from data_gen.paraphrase import paraphrase_statement, paraphrased
    from eval.models import load_vlm
    data = ConflictData.load(method_data)
    held_out = paraphrased(data)
    assert held_out.samples["id"] == data.samples["id"] and held_out.samples["answer_text"] == data.samples["answer_text"]
    pairs = list(zip(data.samples["text_context"], held_out.samples["text_context"]))
    assert all(new != old for old, new in pairs if old) and all(not new for old, new in pairs if not old)
    assert not set(held_out.samples["question"]) & set(data.samples["question"])
    assert paraphrase_statement("The star's color is the same as a cup. The cup is red.") == \
        "The cup is red. The star is the same color as the cup."
    assert paraphrase_statement("The circle is orange.") == "There is an orange circle."
    tokenizer = load_vlm("organism").tokenizer
    texts = [f"{q} {c or ''}" for q, c in zip(held_out.samples["question"], held_out.samples["text_context"])]
    assert not any(tokenizer.unk_token_id in ids for ids in tokenizer(texts)["input_ids"])
    with pytest.raises(ValueError, match="no held-out wording"):
        paraphrase_statement("A sentence of another task.")


@pytest.mark.slow
def test_compare_methods_writes_every_column_for_every_method(tmp_path):
    """The comparison end to end on a few groups: every method and target has a row with the issue's columns, the
    files and the W&B run exist, and each release's card carries its row."""
    config = tmp_path / "compare.yaml"
    config.write_text(f"""model_name_or_path: organism
methods: [hard, steer_uncertainty, prompt]
targets: [0.5]
fresh_seed: 31
fresh_groups: 16
control_groups: 10
paraphrase_groups: 10
attribute_groups: 40
mixed_config: none
groups: 40
split_shares: {SHARES}
n_boot: 100
max_steps: 6
per_device_train_batch_size: 8
per_device_eval_batch_size: 64
calibration_rounds: 0
steer_rounds: 2
dtype: float32
output_dir: {tmp_path / 'out'}
report_to: wandb
""")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "recipes/compare_methods.py", "--config", str(config)], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [(r["method"], r["target"]) for r in rows] == [(m, 0.5) for m in ("hard", "steer_uncertainty", "prompt")]
    for r in rows:
        assert r["realized"]["estimate"] is not None and r["realized"]["low"] <= r["realized"]["estimate"] <= r["realized"]["high"]
        assert r["miss"] == pytest.approx(r["realized"]["estimate"] - r["target"])
        assert r["slope_ratio"]["estimate"] > 0 and r["slope_ratio"]["low"] is not None
        assert set(r["accuracy_change"]) == {"image_only", "text_only", "no_conflict", "text_irrelevant",
                                             "image_irrelevant"}
        assert r["transfer"]["paraphrase_after"]["estimate"] is not None
        assert r["transfer"]["attributes"] == "fails the gate"  # the organism reads attributes at chance
        assert "Compared with every other method" in (out / r["method"] / f"b{r['target']:+.2f}" / "release" /
                                                      "README.md").read_text()
    by = {(r["method"], r["target"]): r for r in rows}
    # no training touches the unimodal answers of a training-free method; the LoRA adapter may
    assert by[("prompt", 0.5)]["accuracy_change"]["image_only"]["estimate"] == 0
    assert by[("steer_uncertainty", 0.5)]["extra_inference"].startswith("2 forward passes")
    assert by[("hard", 0.5)]["trainable_parameters"] > by[("steer_uncertainty", 0.5)]["trainable_parameters"] > 0
    assert len(pd.read_csv(out / "comparison.csv")) == 3 and (out / "comparison.png").stat().st_size > 10_000
    assert "realized [95%]" in res.stdout and "fails the gate" in res.stdout
    # an offline run writes no summary file: its keys and values are plain strings in the run's records
    runs = {f.parent.name: f.read_bytes() for f in tmp_path.rglob("offline-run-*/run-*.wandb")}
    assert len(runs) == 4  # the comparison's run, and one per method and target with that row's columns
    assert sum(b"compare/prompt/b+0.50/realized_estimate" in r for r in runs.values()) == 1
    per_method = [r for r in runs.values() if b"slope_ratio_estimate" in r and b"compare/" not in r]
    assert len(per_method) == 3 and all(b"accuracy_change_image_irrelevant_estimate" in r for r in per_method)
