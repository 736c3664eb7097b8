"""The alignment recipe end to end on the model organism (small budget), and its pieces."""
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from transformers import TrainingArguments

from align.arguments import TRAINING_DEFAULTS, AlignArguments
from data_gen.cli import parse
from eval.models import ModelArguments, supported_families
from align.targets import (boundary_weights, calibration_reached, closest_round, next_training_target, resolve_target,
                           sample_hard_targets, target_text_probability)
from align.training import retention_examples, soft_target_loss

ROOT = Path(__file__).resolve().parents[1]
# the generators' shares (28 / 4 / 8 of 40 groups): a small run trains on most of its few groups
TRAIN_HEAVY = ["--split_shares", '{"train": 0.7, "validation": 0.1, "test": 0.2}']
SMALL = [*TRAIN_HEAVY, "--groups", "40", "--max_steps", "12", "--save_steps", "6", "--per_device_train_batch_size", "8",
         "--n_boot", "100", "--per_device_eval_batch_size", "64", "--logging_steps", "2", "--dtype", "float32",
         "--calibration_rounds", "0"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """SMALL's 40 groups, rendered once for the runs that do not test generation (`--data` skips it)."""
    from data_gen import generate
    path = tmp_path_factory.mktemp("small-data") / "data"
    generate("colors", 40, 0, 64, split_shares=json.loads(TRAIN_HEAVY[1])).save(path)
    return ["--data", str(path)]


def test_targets_by_hand():
    assert target_text_probability([0.0], 0.0, 0.25) == pytest.approx([0.5])
    assert target_text_probability([-1.0, 1.0], 0.5, 0.5) == pytest.approx([1 / (1 + np.exp(-3)), 1 / (1 + np.exp(1))])
    w = boundary_weights([-1.0, -0.2, 0.3, 2.0], current=-0.5, target=0.5, sigma=0.5, floor=0.2)
    assert w[1] == w[2] == 1.0 and w[0] == pytest.approx(0.2 + 0.8 * np.exp(-0.5)) and w[3] == pytest.approx(0.2 + 0.8 * np.exp(-4.5))
    assert resolve_target(0.4, None, -0.3) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"outside \[-2.0, 2.0\]"):
        resolve_target(0.0, 2.5, None)
    with pytest.raises(ValueError, match="exactly one"):
        resolve_target(0.0, 0.1, 0.2)
    with pytest.raises(ValueError, match="does not cross"):
        resolve_target(None, None, 0.2)
    assert set(np.unique(sample_hard_targets(np.full(100, 0.5)))) == {0.0, 1.0}


def test_calibration_re_aims_by_the_miss():
    # one round: shift by the miss; two: secant through both rounds; always inside [-2, 2]
    assert next_training_target(0.5, [0.5], [0.8]) == pytest.approx(0.2)
    # a model that realizes 1.0 + 0.5 (aim - 1.0): the secant hits b* = 0.5 exactly from two rounds
    realize = lambda aim: 1.0 + 0.5 * (aim - 1.0)
    aim = next_training_target(0.5, [0.5, 0.2], [realize(0.5), realize(0.2)])
    assert realize(aim) == pytest.approx(0.5)
    assert next_training_target(-1.9, [-1.9], [-0.5]) == -2.0
    with pytest.raises(ValueError, match="as many"):
        next_training_target(0.0, [0.1, 0.2], [0.3])


def test_calibration_releases_the_round_nearest_the_target():
    # seed 1 of the precision table at b* = -1: the third round overshot the range and landed farther back
    assert closest_round(-1.0, [-0.762, -0.822, -0.429]) == 1
    assert closest_round(0.0, [0.1, -0.1]) == 1  # a tie goes to the later round
    assert closest_round(0.5, [0.9]) == 0
    with pytest.raises(ValueError, match="no calibration round"):
        closest_round(0.0, [])


def test_calibration_stops_within_tolerance_or_when_the_miss_is_noise():
    assert calibration_reached(0.0, 0.04, None, tolerance=0.05)
    assert calibration_reached(0.0, 0.20, (-0.15, 0.55), tolerance=0.05)  # target inside the interval
    assert not calibration_reached(0.0, 0.20, (-0.15, 0.55), tolerance=0.05, stop_in_interval=False)
    assert not calibration_reached(0.0, -0.35, (-0.71, -0.01), tolerance=0.05)  # a real miss: re-aim
    assert not calibration_reached(0.0, 2.0, None, tolerance=0.05)  # no crossing


def test_retention_keeps_both_modalities_half_each():
    """20 images but 3 text contexts: half the retention rows are still text only (repeated), so training on
    conflicts cannot drift the text-only entropy unopposed; deterministic per seed."""
    rows = [dict(image_id=f"i{i}", question="What color is the star?", text_context=f"The star is {c}.",
                 condition="conflict", top1_v=1, token_visual=1, token_text=2, answer_visual="red", answer_text=c)
            for i in range(20) for c in ("blue", "green", "yellow")]
    table = pd.DataFrame(rows)
    kept = retention_examples(table, n_trained=70, retention_share=0.3, seed=0)
    text = [e for e in kept if e["image_id"] is None]
    assert len(kept) == 30 and len(text) == 15 and {e["context"] for e in text} == {f"The star is {c}." for c in
                                                                                 ("blue", "green", "yellow")}
    images = [e["image_id"] for e in kept if e["image_id"] is not None]
    assert len(images) == len(set(images)) == 15 and all(e["is_conflict"] == 0.0 for e in kept)
    assert kept == retention_examples(table, 70, 0.3, seed=0) != retention_examples(table, 70, 0.3, seed=1)
    # no text-only rows at all (no text answers): every kept row is image only
    no_text = retention_examples(table.assign(token_text=None), 70, 0.3, seed=0)
    assert len(no_text) == 30 and all(e["image_id"] is not None for e in no_text)


def test_soft_target_loss_matches_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    logp = torch.log_softmax(logits, -1)
    loss = soft_target_loss(logits, token_text=torch.tensor([0, 0]), token_visual=torch.tensor([1, 1]),
                            p_text=torch.tensor([0.7, 0.0]), weight=torch.tensor([2.0, 1.0]),
                            is_conflict=torch.tensor([1.0, 0.0]), answer_token=torch.tensor([0, 1]))
    expected = (-2.0 * (0.7 * logp[0, 0] + 0.3 * logp[0, 1]) - logp[1, 1]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # distilled retention: cross-entropy to the reference distribution on the unimodal row only
    reference = torch.tensor([[9.0, 9.0, 9.0], [1.0, 0.0, 2.0]])
    loss = soft_target_loss(logits, token_text=torch.tensor([0, 0]), token_visual=torch.tensor([1, 1]),
                            p_text=torch.tensor([0.7, 0.0]), weight=torch.tensor([2.0, 1.0]),
                            is_conflict=torch.tensor([1.0, 0.0]), answer_token=torch.tensor([0, 1]),
                            retention_weight=0.5, reference_logits=reference)
    ref = torch.softmax(reference[1], -1)
    expected = (-2.0 * (0.7 * logp[0, 0] + 0.3 * logp[0, 1]) - 0.5 * (ref * logp[1]).sum()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_trl_variants_train_the_measured_token(tiny_model, tiny_data):
    """hard (SFTTrainer) and dpo (DPOTrainer) batches put the scored answer token where the loss reads it."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
    from eval.models import load_vlm
    from align.training import trl_dataset
    vlm = load_vlm(str(tiny_model), dtype="float32")
    rows = tiny_data.split("train").samples.to_pandas()
    conflict = rows[rows.condition == "conflict"].iloc[:2]
    examples = [{"question": r.question, "context": r.text_context, "image_id": r.image_id, "p_text": p,
                 "is_conflict": 1.0, "answer": r.answer_text, "other": r.answer_visual}
                for r, p in zip(conflict.itertuples(), (0.9, 0.2))]
    examples.append({"question": conflict.question.iloc[0], "context": conflict.text_context.iloc[0],
                     "image_id": None, "p_text": 0.0, "is_conflict": 0.0, "answer": conflict.answer_text.iloc[0],
                     "other": conflict.answer_visual.iloc[0]})
    wanted = [conflict.answer_text.iloc[0], conflict.answer_visual.iloc[1], conflict.answer_text.iloc[0]]

    sft = trl_dataset(examples, vlm, tiny_data, "hard")
    batch = DataCollatorForVisionLanguageModeling(vlm.processor, completion_only_loss=True)([dict(r) for r in sft])
    for row, answer in enumerate(wanted):
        trained = batch["labels"][row][batch["labels"][row] != -100]
        assert trained[0] == vlm.first_token(answer)
    assert "pixel_values" in batch and len(sft) == 3

    dpo = trl_dataset(examples, vlm, tiny_data, "dpo")  # the text-only row rejects the conflicting image answer
    assert [r["chosen"] for r in dpo] == wanted
    assert [r["rejected"] for r in dpo] == [conflict.answer_visual.iloc[0], conflict.answer_text.iloc[1],
                                            conflict.answer_visual.iloc[0]]
    batch = DataCollatorForVisionPreference(vlm.processor)([dict(r) for r in dpo])
    for row, answer in enumerate(wanted + [r["rejected"] for r in dpo]):
        first = int(batch["completion_mask"][row].nonzero()[0])
        assert batch["input_ids"][row, first] == vlm.first_token(answer)


def parse_recipe(argv):
    return parse([AlignArguments, ModelArguments, TrainingArguments], argv, "recipe", None, TRAINING_DEFAULTS)


def test_config_yaml_and_cli_overrides(tmp_path):
    """YAML keys are the flags; the command line wins; method, model and training fields come from one parser."""
    (tmp_path / "c.yaml").write_text("tau: 0.5\nlora_r: 8\nlearning_rate: 1.0e-3\nmodel_name_or_path: organism:vision\n")
    align, model, training = parse_recipe(["--config", str(tmp_path / "c.yaml"), "--lora_r", "4",
                                           "--balance_shift", "0.2", "--activation_checkpointing"])
    assert (align.tau, align.lora_r, align.balance_shift, align.target_balance_point) == (0.5, 4, 0.2, None)
    assert (model.model_name_or_path, training.learning_rate, training.activation_checkpointing) == \
           ("organism:vision", 1e-3, True)
    assert parse_recipe([])[2].learning_rate == TRAINING_DEFAULTS["learning_rate"]  # recipe defaults, not HF's
    assert parse_recipe([])[0].target_balance_point == 0.0
    assert parse_recipe(["--target_balance_point=-0.5"])[0].target_balance_point == -0.5
    assert parse_recipe(["--target-balance-point", "-0.5"])[0].target_balance_point == -0.5
    with pytest.raises(ValueError, match="lora_rank"):
        parse_recipe(["--lora_rank", "4"])
    shipped = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
    assert len(shipped) >= 7
    from align.compare import CompareArguments
    from align.precision import PrecisionArguments
    own = {"-precision": [PrecisionArguments], "-compare": [CompareArguments]}  # their scripts' own flags
    for config in shipped:  # every shipped config parses with its command's flags: no stale or misspelled key
        extra = next((v for k, v in own.items() if config.stem.endswith(k)), [])
        parse([*extra, AlignArguments, ModelArguments, TrainingArguments], ["--config", str(config)], "recipe", None,
              TRAINING_DEFAULTS)


@pytest.mark.parametrize("args, needle", [
    (["--target_balance_point", "3"], "outside [-2.0, 2.0]"),
    (["--loss_type", "ppo"], "'ppo' is not available"),
    (["--calibration_rounds", "1", "--calibration_split", "test"], "overfits the report"),
    (["--tau", "0"], "tau must be > 0"),
    (["--boundary_sigma", "-1"], "boundary_sigma must be > 0"),
    (["--n_boot", "5"], "n_boot must be >= 100"),
    (["--model", "./no-such-model"], "no such directory"),
    (["--model", "organism:sideways"], "not a shipped organism"),
    (["--model", "nobody/no-such-model"], "model 'nobody/no-such-model' is not a local folder"),
    (["--data", "/no/such/data"], "not a saved dataset"),
    (["--push_to_hub"], "needs hub_model_id"),
    (["--bogus", "1"], "not used by the HfArgumentParser: ['--bogus', '1']"),
    (["--eval_rows", "some"], "eval_rows must be conflicts or all"),
    (["--split_shares", '{"train": 0.9}'], "split_shares must give each"),
])
def test_recipe_fails_before_any_work(args, needle, tmp_path, capsys):
    """Bad values stop the recipe with one clear line and exit 2, before any data is generated or scored (the
    script's main in this process: a subprocess per case cost ~10 s of imports; the next test runs one)."""
    main = runpy.run_path(str(ROOT / "recipes" / "align_llava.py"))["main"]
    assert main(["--output_dir", str(tmp_path / "out"), *args]) == 2
    stderr = capsys.readouterr().err
    assert needle in stderr and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr[-2000:]
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "runs").exists()


def test_recipe_script_exits_2_on_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "recipes/align_llava.py", "--output_dir", str(tmp_path / "out"),
                          "--target_balance_point", "3"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "outside [-2.0, 2.0]" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_rerun_refuses_data_generated_with_other_settings(tmp_path):
    """OUTPUT_DIR/data is kept across re-runs, so a run asking for other groups or split shares says so instead of
    silently reading the old ones."""
    from align.recipe import check_generated
    shares = {"train": 0.2, "validation": 0.4, "test": 0.4}
    (tmp_path / "c.yaml").write_text("groups: 20\nsplit_shares:\n  train: 0.2\n  validation: 0.4\n  test: 0.4\n")
    align = parse_recipe(["--config", str(tmp_path / "c.yaml")])[0]
    assert align.split_shares == shares
    info = {"groups": 20, "seed": 0, "size": 64}  # saved without its shares recorded
    with pytest.raises(ValueError, match=r"split_shares None there, \{'train': 0.2.* asked\); use another"):
        check_generated(info, tmp_path, align)
    check_generated({**info, "split_shares": shares}, tmp_path, align)
    with pytest.raises(ValueError, match="groups 30 there, 20 asked"):
        check_generated({**info, "groups": 30, "split_shares": shares}, tmp_path, align)
    with pytest.raises(ValueError, match="split_shares must give each"):
        parse_recipe(["--split_shares", '{"train": 0.5, "test": 0.5}'])


def test_deepspeed_config_mismatch_fails_before_scoring(tmp_path):
    """The 1.6 config sets gradient_accumulation_steps 2; a DeepSpeed config pinning 1 used to fail after scoring."""
    (tmp_path / "ds.yaml").write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n"
        "  gradient_accumulation_steps: 1\nnum_machines: 1\nnum_processes: 1\nmixed_precision: 'no'\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "ds.yaml"),
           "recipes/align_llava.py", "--output_dir", str(tmp_path / "out"), "--gradient_accumulation_steps", "2",
           "--dtype", "float32", "--report_to", "none"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "gradient_accumulation_steps=1 vs hf gradient_accumulation_steps=2" in res.stderr
    assert not (tmp_path / "out" / "data").exists()
    # the shipped configs leave those keys to the training config
    for name in ("zero2", "zero2-cpu", "zero3"):
        text = (ROOT / "recipes" / "accelerate_configs" / f"{name}.yaml").read_text()
        assert "gradient_accumulation_steps" not in text.split("deepspeed_config:")[1].split("num_machines")[0]


def _wandb_records(wandb_dir: Path) -> bytes:
    """The raw transaction logs of the offline runs: keys and values are stored as plain UTF-8 strings
    inside the protobuf records (an offline run writes no wandb-summary.json)."""
    return b"".join(f.read_bytes() for f in wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_recipe_zero2_two_processes_end_to_end(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}  # CPU ranks
    # the recipe launches itself after checking its inputs (`--launch`), as the README shows
    cmd = [sys.executable, "recipes/align_llava.py", "--launch", "recipes/accelerate_configs/zero2-cpu.yaml",
           "--output_dir", str(out), *SMALL,
           "--calibration_rounds", "1", "--calibration_tolerance", "0", "--calibration_stop_in_interval", "false"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    # the release holds only what a consumer loads: no pickle, no optimizer checkpoints
    release = out / "release"
    assert sorted(p.name for p in release.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                         "alignment.json", "following_curve.png", "report"]
    assert (release / "report" / "report.html").exists() and (release / "report" / "summary.json").exists()
    assert not list(release.rglob("*.bin")) and not list(release.rglob("*.pt")) and not list(release.rglob("checkpoint*"))
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in release.rglob("*") if f.is_file())  # readable by everyone
    adapter_config = json.loads((release / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "organism"  # a name, never an absolute local path
    from huggingface_hub import ModelCard
    card = ModelCard.load(release / "README.md")
    assert card.data.library_name == "peft" and "modality-alignment" in card.data.tags
    assert card.data.base_model is None  # the organism has no hub id; a hub base is named (test_release_names_the_base)
    # what a Hub user acts on: a license, the prompt format with a real example, the command, no raw dicts
    assert card.data.license == "other" and "## Prompt format" in card.text and "<image>" in card.text
    example = json.loads((release / "alignment.json").read_text())["config"]["prompt_example"]
    assert example["question"] in card.text and example["prompt"].strip() in card.text
    assert "## Reproduce" in card.text and "align_llava.py" in card.text and "--launch" in card.text
    assert "{'" not in card.text
    assert "balance point" in card.text and "PeftModel.from_pretrained" in card.text and "from align" not in card.text
    result = json.loads((release / "alignment.json").read_text())
    assert result["target_balance_point"] == 0.0 and result["config"]["align"]["tau"] == 0.25
    # one calibration round re-aimed the training target by the miss measured on the validation groups
    rounds = result["calibration"]
    assert len(rounds) == 2 and rounds[0]["trained_at"] == 0.0
    assert rounds[1]["trained_at"] == pytest.approx(next_training_target(0.0, [0.0], [rounds[0]["realized"]]))
    assert (out / "runs" / "calibration-1" / "samples.parquet").exists()
    # the round nearest b* on the validation groups is the adapter measured and released
    best = closest_round(0.0, [r["realized"] for r in rounds])
    assert [r["released"] for r in rounds] == [k == best for k in range(2)]
    kept = out / "calibration" / f"round-{best}" / "adapter_model.safetensors"
    assert kept.read_bytes() == (release / "adapter_model.safetensors").read_bytes()
    # calibration, targets and (by default, eval_rows: conflicts) the test groups score only what the analysis reads
    for name in ("calibration-1", "base_train", "base", "aligned"):
        assert set(pd.read_parquet(out / "runs" / name / "samples.parquet").condition) == {"conflict"}, name
    # what the run guarantees: the realized point's interval, whether b* is in it, the paired shift
    g = result["guarantee"]
    assert g["realized"] == pytest.approx(result["aligned"]["balance_point"]["estimate"])
    if g["realized_ci"]:
        assert g["target_in_interval"] == (g["realized_ci"][0] <= 0.0 <= g["realized_ci"][1])
    assert g["description"] in res.stdout and "paired bootstrap" in g["description"]
    assert "What this run guarantees" in card.text
    # one W&B (offline) run, opened by the recipe: named, with the method's settings, the measurements, training,
    # the figures and the adapter artifact
    runs = list(tmp_path.glob("wandb/offline-run-*"))
    assert len(runs) == 1
    records = _wandb_records(tmp_path)
    for key in (b"balance_point/target", b"before/balance_point", b"after/balance_point_ci_low", b"before/tfr",
                b"after/vfr", b"after/unimodal_accuracy_visual", b"after/oscillation_ambiguous", b"following_curve",
                b"train/loss", b"target_balance_point", b"boundary_sigma", b"calibration_rounds", b"lora_r",
                b"modality-alignment", b"organism-b+0.00-soft-r16", b"adapter-", b"guarantee/realized"):
        assert key in records, key
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/**/*.png"))
    # the before/after chart with intervals, balance points and b*: a custom chart and its HTML page
    assert b"following_chart_table" in records and b"following-curve" in records
    (page,) = tmp_path.glob("wandb/offline-run-*/files/media/html/**/*.html")
    assert '"kind": "target"' in page.read_text() and page.read_text().count('"kind": "balance_point"') == 2
    # each calibration round's training on its own step axis; the run's config keeps the user's output_dir
    for key in (b"round-0/train/loss", b"round-1/train/loss", b"round-0/step", b"round-1/step", b"round-1/round"):
        assert key in records, key
    assert b"train/global_step" not in records
    # lineage: the dataset (offline: named in the config and the adapter's metadata) and the adapter artifact
    fingerprint = json.loads((out / "data" / "info.json").read_text())["fingerprint"]
    assert f"data-colors-{fingerprint}".encode() in records and b"adapter-" in records
    output_dirs = set(re.findall(rb'output_dir.{1,4}?"([^"]+)"', records))
    assert output_dirs == {str(out).encode()}, output_dirs
    from safetensors.torch import load_file
    lora_b = [v for k, v in load_file(release / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # training moved the adapter
    # a user measures the released adapter with the same code: the scores measured after training
    measured = subprocess.run([sys.executable, "-m", "eval", "measure", "--model", "organism", "--adapter", str(release),
                               "--data", str(out / "data"), "--output_dir", str(tmp_path / "user"), "--dtype", "float32",
                               "--n_boot", "100"], capture_output=True, text=True, cwd=ROOT)
    assert measured.returncode == 0, measured.stderr[-3000:]
    after = pd.read_parquet(out / "runs" / "aligned" / "samples.parquet")
    again = pd.read_parquet(tmp_path / "user" / "samples.parquet").set_index("id").loc[after.id]  # + the controls
    np.testing.assert_allclose(again.entropy_m, after.entropy_m, atol=1e-4)
    assert (again.top1_m.to_numpy() == after.top1_m.to_numpy()).all()
    assert json.loads((tmp_path / "user" / "run.json").read_text())["model"] == f"organism+{release}"


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["hard", "dpo"])
def test_recipe_trl_variants_train_an_adapter(loss_type, small_data, tmp_path):
    res = subprocess.run([sys.executable, "recipes/align_llava.py", *SMALL, *small_data, "--max_steps", "4", "--report_to", "none",
                          "--loss_type", loss_type, "--output_dir", str(tmp_path), "--eval_rows", "all"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    assert res.returncode == 0, res.stderr[-3000:]
    # eval_rows all: the test tables are complete (baselines and controls too); the targets still read conflicts
    assert set(pd.read_parquet(tmp_path / "runs" / "base" / "samples.parquet").condition) == {
        "conflict", "no_conflict", "text_irrelevant", "image_irrelevant"}
    assert set(pd.read_parquet(tmp_path / "runs" / "base_train" / "samples.parquet").condition) == {"conflict"}
    from safetensors.torch import load_file
    lora_b = [v for k, v in load_file(tmp_path / "release" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert json.loads((tmp_path / "alignment.json").read_text())["config"]["align"]["method"] == loss_type


@pytest.mark.slow
@pytest.mark.parametrize("arch", supported_families())
def test_recipe_end_to_end_on_every_family(arch, answering_data, tmp_path):
    """Measure, targets, LoRA steps, re-measure, report and release on a tiny random model of each family whose
    head answers with colours (a random head answers nothing the analysis can read)."""
    from safetensors.torch import load_file
    from align.recipe import run_alignment
    from eval.models import family_for
    from tests.fixtures import tiny_model_dir
    model = tiny_model_dir(arch, tmp_path / "model", answering=answering_data)
    result = run_alignment(*parse_recipe([
        "--model", str(model), "--data", answering_data.info["path"], "--output_dir", str(tmp_path / "out"),
        "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "4", "--n_boot", "0",
        "--per_device_eval_batch_size", "16", "--dtype", "float32", "--calibration_rounds", "0",
        "--report_to", "none", "--unimodal_correct", "false"]))
    release = Path(result["release"])
    assert (release / "report" / "report.html").exists() and (release / "README.md").exists()
    assert json.loads((release / "adapter_config.json").read_text())["target_modules"] == family_for(arch).lora_target_modules
    lora_b = [v for k, v in load_file(release / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # two steps moved the adapter
    assert result["training_examples"]["conflict_examples"] > 0
    assert result["aligned"]["n_analysed"] == result["base"]["n_analysed"] > 20  # the same conflicts, before and after


@pytest.mark.slow
def test_mixed_recipe_measures_recognition_before_and_after(answering_data, tmp_path, monkeypatch):
    """Task recognition, method mixed: recognition data beside the colour data, trained on image+text instances with the soft
    loss, measured before and after with recognition rates and R per layer, reported, carded and released."""
    from huggingface_hub import ModelCard
    from align.recipe import run_alignment
    from align.training import SoftTargetTrainer
    from tests.fixtures import tiny_model_dir
    losses = []
    real_loss = SoftTargetTrainer.compute_loss
    monkeypatch.setattr(SoftTargetTrainer, "compute_loss",
                        lambda self, *args, **kwargs: losses.append(1) or real_loss(self, *args, **kwargs))
    model = tiny_model_dir("llava", tmp_path / "model", answering=answering_data)
    out = tmp_path / "out"
    result = run_alignment(*parse_recipe([
        "--model", str(model), *TRAIN_HEAVY, "--groups", "12", "--image_size", "32", "--output_dir", str(out),
        "--task", "recognition", "--method", "mixed",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--n_boot", "0", "--per_device_eval_batch_size", "32",
        "--dtype", "float32", "--report_to", "none", "--unimodal_correct", "false"]))
    recognition = result["recognition"]
    for run in ("base", "aligned"):
        kinds = {c["evidence"] for c in recognition[run]["by_evidence"]}
        assert kinds == {"text_text", "caption_text", "image_text"}
        assert len(recognition[run]["imbalance"]["imbalance"]) == 2  # R for each decoder layer
    assert result["training_examples"]["mixed_examples"] > 0 and result["calibration"] == []
    assert len(losses) >= 2  # trained by SoftTargetTrainer (the soft loss), not a TRL trainer
    stored = json.loads((out / "alignment.json").read_text())
    assert stored["recognition"]["aligned"]["cross_modal"]["recognition"]["n"] > 0
    release = Path(result["release"])
    assert (release / "report" / "recognition" / "imbalance_by_layer.png").exists()
    card = ModelCard.load(release / "README.md").text
    assert "conflict recognition across modalities" in card and "recognition, cross-modal" in card
    change = stored["recognition"]["imbalance_change"]  # paired: the same cross-modal rows before and after
    assert change["n"] == recognition["base"]["imbalance"]["imbalance"][0]["n"]
    assert change["change"] == pytest.approx(change["after"] - change["before"])
    assert "distance from balance" in card
    # the colour data and the recognition data share their images, so the retention rows found theirs
    assert (out / "recognition" / "info.json").exists()
    assert result["training_examples"]["retention_examples"] > 0


# a real interruption at a deterministic point: the run SIGKILLs itself right after writing the checkpoint of step
# KILL_STEP in calibration round KILL_ROUND (polling from the test raced the run's end on fast machines)
KILL_HOOK = """import os, signal
import transformers
_save = transformers.Trainer._save_checkpoint
def _save_then_die(self, *args, **kwargs):
    _save(self, *args, **kwargs)
    if (self.state.global_step == int(os.environ["KILL_STEP"])
            and self.args.output_dir.endswith("round-" + os.environ["KILL_ROUND"])):
        os.kill(os.getpid(), signal.SIGKILL)
transformers.Trainer._save_checkpoint = _save_then_die
"""
CALIBRATED = [*SMALL[:-2], "--calibration_rounds", "1", "--calibration_stop_in_interval", "false",
              "--calibration_tolerance", "0",
              "--target_balance_point", "0.0", "--report_to", "none"]


def released_state(out: Path) -> tuple[bytes, dict]:
    """The adapter's bytes and alignment.json without what may differ between runs (time, the resume flag and the
    command line, the folder's name)."""
    result = json.loads((out / "alignment.json").read_text().replace(str(out), "OUTPUT_DIR"))
    result.pop("seconds")
    result["config"]["training"].pop("resume_from_checkpoint")
    result["config"].pop("command")
    return (out / "release" / "adapter_model.safetensors").read_bytes(), result


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    full = subprocess.run([sys.executable, "recipes/align_llava.py", *CALIBRATED, *small_data, "--output_dir", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    assert full.returncode == 0, full.stderr[-3000:]
    assert len(json.loads((out / "alignment.json").read_text())["calibration"]) == 2
    return released_state(out)


@pytest.mark.slow
@pytest.mark.parametrize("round_", [0, 1])
def test_killed_in_a_calibration_round_resumes_to_the_uninterrupted_result(round_, uninterrupted, small_data,
                                                                           tmp_path):
    """kill -9 right after a checkpoint of round 0 or 1, then re-run the same command, with and without
    --resume_from_checkpoint: training resumes in the round it stopped in, from that round's checkpoint, and the
    released adapter and alignment.json equal an uninterrupted run's, byte for byte."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "recipes/align_llava.py", *CALIBRATED, *small_data]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    killed = tmp_path / "killed"
    res = subprocess.run(command + ["--output_dir", str(killed)], cwd=ROOT, capture_output=True, text=True,
                         env={**env, "KILL_STEP": "6", "KILL_ROUND": str(round_),
                              "PYTHONPATH": os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])})
    assert res.returncode == -9, res.stderr[-3000:]
    checkpoint = killed / "checkpoints" / f"round-{round_}" / "checkpoint-6"
    assert checkpoint.exists() and not (killed / "release").exists()
    for flag in ([], ["--resume_from_checkpoint"]):
        out = tmp_path / f"resumed{len(flag)}" / "out"  # named as the uninterrupted run's folder: reports show it
        shutil.copytree(killed, out)
        resumed_from = str(out / "checkpoints" / f"round-{round_}" / "checkpoint-6")
        res = subprocess.run(command + ["--output_dir", str(out)] + flag + ([resumed_from] if flag else []),
                             capture_output=True, text=True, cwd=ROOT, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"resuming this training from {resumed_from}" in res.stderr
        assert res.stderr.count("resuming this training") == 1  # its own round only; the other starts at 0
        adapter, result = released_state(out)
        assert result == uninterrupted[1]
        assert adapter == uninterrupted[0]


def test_resume_from_checkpoint_outside_the_run_is_refused_before_any_work(small_data, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "checkpoint-6"
    elsewhere.mkdir(parents=True)
    res = subprocess.run([sys.executable, "recipes/align_llava.py", *CALIBRATED, *small_data, "--output_dir",
                          str(tmp_path / "out"), "--resume_from_checkpoint", str(elsewhere)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr[-2000:]
    assert "resume_from_checkpoint" in res.stderr and not (tmp_path / "out").exists()


def test_card_license_comes_from_the_base_and_counts_read_as_words(tmp_path):
    from huggingface_hub import ModelCard, ModelCardData
    from align.release import base_license, in_words
    base = tmp_path / "my-llava"
    base.mkdir()
    ModelCard(f"---\n{ModelCardData(license='apache-2.0').to_yaml()}\n---\n# a base").save(base / "README.md")
    assert base_license(str(base)) == "apache-2.0"
    assert base_license(str(tmp_path)) == base_license("organism") == base_license("nobody/not-cached") == "other"
    assert in_words({"conflict_examples": 120, "mean_p_text": 0.3125}) == "conflict examples 120, mean p text 0.312"


def test_release_names_the_base_by_hub_id_or_relative_name():
    from align.release import base_model_id, base_reference, load_snippet
    assert base_reference("llava-hf/llava-1.5-7b-hf") == base_model_id("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    assert base_reference("organism:vision") == "organism:vision" and base_model_id("organism:vision") is None
    assert base_reference("/home/me/checkpoints/my-llava/") == "my-llava" and base_model_id("/home/me/my-llava") is None
    snippet = load_snippet("llava-hf/llava-1.5-7b-hf", "me/adapter")
    assert 'base = "llava-hf/llava-1.5-7b-hf"' in snippet and "PeftModel.from_pretrained" in snippet
    assert "import align" not in snippet and "from eval.models" not in snippet.split("```bash")[0]
    for organism, folder in [("organism", "organism-text"), ("organism:vision", "organism-vision"),
                             ("organism:recognition", "organism-recognition")]:
        assert f'base = "path/to/{folder}"' in load_snippet(organism, None)
        assert f"(eval/models/organisms/{folder})" in load_snippet(organism, None)


@pytest.mark.parametrize("mixed_precision, consistent", [("bf16", True), ("no", False)])
def test_shipped_7b_configs_agree_with_the_gpu_deepspeed_config(mixed_precision, consistent):
    """LLaVA-1.6's config (bf16, gradient accumulation 2) against zero2.yaml's settings (bf16, accumulation left to
    the training config): consistent; against a float32 launch config: the mismatch is named before any work."""
    code = ("import torch; from tests.test_recipe import parse_recipe; "
            "from align.arguments import check_deepspeed, trainer_arguments; "
            "_, _, t = parse_recipe(['--config', 'recipes/configs/llava-1.6-mistral-7b.yaml']); "
            "check_deepspeed(trainer_arguments(t, torch.bfloat16, '/tmp/unused'))")
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
           "ACCELERATE_MIXED_PRECISION": mixed_precision}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert (res.returncode == 0) == consistent, res.stderr[-2000:]
    if not consistent:
        assert "bf16.enabled=False vs hf bf16" in res.stderr


def test_push_uploads_the_release_folder_in_one_commit(tmp_path, monkeypatch):
    import huggingface_hub
    from align.release import push
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            calls.append(("upload_folder", folder_path, repo_id))

        def upload_file(self, *args, **kwargs):
            calls.append(("upload_file",))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    push(tmp_path, "me/llava-balance-0")
    assert calls == [("create_repo", "me/llava-balance-0"), ("upload_folder", str(tmp_path), "me/llava-balance-0")]


def test_distillation_reference_runs_on_the_retention_rows_only(tiny_model, tiny_data, tmp_path):
    """The base's reference distribution is computed for the unimodal (retention) rows alone, and the loss is the
    one a reference over the whole batch gives."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments
    from eval.models import load_vlm
    from align.training import TARGET_KEYS, AlignmentCollator, SoftTargetTrainer
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    torch.manual_seed(0)
    model = get_peft_model(vlm.model, LoraConfig(r=4, target_modules=vlm.lora_target_modules, init_lora_weights=False))
    rows = tiny_data.split("train").samples.to_pandas().query("condition == 'conflict'").iloc[:3]
    first = lambda a: vlm.first_token(a)
    example = lambda r, image, context, conflict: {
        "question": r.question, "context": context, "image_id": image, "token_text": first(r.answer_text),
        "token_visual": first(r.answer_visual), "p_text": 0.7, "weight": 1.0, "is_conflict": float(conflict),
        "answer_token": first(r.answer_text if context else r.answer_visual)}
    r = list(rows.itertuples())
    examples = [example(r[0], r[0].image_id, r[0].text_context, True), example(r[1], None, r[1].text_context, False),
                example(r[2], r[2].image_id, r[2].text_context, True), example(r[2], r[2].image_id, "", False)]
    batch = AlignmentCollator(vlm, tiny_data, reference_inputs=True)(examples)
    assert batch["reference_inputs"]["input_ids"].shape[0] == 2
    seen = []
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, a, _o: seen.append(a[0].shape[0]))
    trainer = SoftTargetTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                                retention_weight=0.5)
    loss = trainer.compute_loss(model, dict(batch))
    handle.remove()
    assert sorted(seen) == [2, 4]  # the adapted batch, and the reference on the two retention rows
    inputs = {k: v for k, v in batch.items() if k not in TARGET_KEYS and k != "reference_inputs"}
    with torch.no_grad():
        with model.disable_adapter():
            reference = model(**inputs, logits_to_keep=1).logits[:, -1]
        expected = soft_target_loss(model(**inputs, logits_to_keep=1).logits[:, -1],
                                    **{k: batch[k] for k in TARGET_KEYS}, retention_weight=0.5,
                                    reference_logits=reference)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
