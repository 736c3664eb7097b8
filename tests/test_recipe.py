"""The alignment recipe end to end on the model organism (small budget), and its pieces."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from align.config import parse_config
from align.recipe import AlignConfig
from align.targets import (boundary_weights, calibration_reached, next_training_target, resolve_target,
                           sample_hard_targets, target_text_probability)
from align.training import soft_target_loss

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--data_groups", "40", "--max_steps", "12", "--save_steps", "6", "--per_device_train_batch_size", "8",
         "--n_boot", "100", "--eval_batch_size", "64", "--logging_steps", "2", "--dtype", "float32",
         "--calibration_rounds", "0"]


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


def test_calibration_stops_within_tolerance_or_when_the_miss_is_noise():
    assert calibration_reached(0.0, 0.04, None, tolerance=0.05)
    assert calibration_reached(0.0, 0.20, (-0.15, 0.55), tolerance=0.05)  # target inside the interval
    assert not calibration_reached(0.0, 0.20, (-0.15, 0.55), tolerance=0.05, stop_in_interval=False)
    assert not calibration_reached(0.0, -0.35, (-0.71, -0.01), tolerance=0.05)  # a real miss: re-aim
    assert not calibration_reached(0.0, 2.0, None, tolerance=0.05)  # no crossing


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
    from align.models import load_vlm
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


def test_config_yaml_and_cli_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("tau: 0.5\nlora_r: 8\ntarget_balance_point: 0.3\n")
    cfg = parse_config(AlignConfig, ["--config", str(tmp_path / "c.yaml"), "--lora_r", "4", "--balance_shift", "0.2",
                                     "--target_balance_point", "none", "--gradient_checkpointing"])
    assert (cfg.tau, cfg.lora_r, cfg.balance_shift, cfg.target_balance_point, cfg.gradient_checkpointing) == \
           (0.5, 4, 0.2, None, True)
    assert parse_config(AlignConfig, ["--target_balance_point=-0.5"]).target_balance_point == -0.5
    assert parse_config(AlignConfig, ["--target-balance-point", "-0.5"]).target_balance_point == -0.5
    with pytest.raises(ValueError, match="unknown option --lora_rank"):
        parse_config(AlignConfig, ["--lora_rank", "4"])
    for name in ("organism", "llava-1.5-7b", "llava-1.6-mistral-7b"):
        parse_config(AlignConfig, ["--config", str(ROOT / "recipes" / "configs" / f"{name}.yaml")]).validate()


@pytest.mark.parametrize("args, needle", [
    (["--target_balance_point", "3"], "outside [-2.0, 2.0]"),
    (["--loss_type", "ppo"], "'ppo' is not available"),
    (["--calibration_rounds", "1", "--calibration_split", "test"], "overfits the report"),
    (["--bogus", "1"], "unknown option --bogus"),
])
def test_recipe_helpful_failures(args, needle, tmp_path):
    res = subprocess.run([sys.executable, "recipes/align_llava.py", "--output_dir", str(tmp_path), *args],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and needle in res.stderr


def _wandb_records(wandb_dir: Path) -> bytes:
    """The raw transaction logs of the offline runs: keys and values are stored as plain UTF-8 strings
    inside the protobuf records (an offline run writes no wandb-summary.json)."""
    return b"".join(f.read_bytes() for f in wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_recipe_zero2_two_processes_end_to_end(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--config_file",
           "recipes/accelerate_configs/zero2.yaml", "recipes/align_llava.py", "--output_dir", str(out), *SMALL,
           "--calibration_rounds", "1", "--calibration_tolerance", "0", "--calibration_stop_in_interval", "false"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "following_curve.png",
                 "alignment.json", "report/report.html", "report/summary.json"):
        assert (out / name).exists(), name
    card = (out / "README.md").read_text()
    assert "balance point" in card and "PeftModel.from_pretrained" in card and "target" in card
    result = json.loads((out / "alignment.json").read_text())
    assert result["target_balance_point"] == 0.0
    # one calibration round re-aimed the training target by the miss measured on the validation groups
    rounds = result["calibration"]
    assert len(rounds) == 2 and rounds[0]["trained_at"] == 0.0
    assert rounds[1]["trained_at"] == pytest.approx(next_training_target(0.0, [0.0], [rounds[0]["realized"]]))
    assert (out / "runs" / "calibration-1" / "samples.parquet").exists()
    # W&B (offline) recorded the headline numbers and the figures
    records = _wandb_records(tmp_path)
    for key in (b"balance_point/target", b"before/balance_point", b"after/balance_point_ci_low", b"before/tfr",
                b"after/vfr", b"after/unimodal_accuracy_visual", b"after/oscillation_ambiguous", b"following_curve",
                b"train/loss"):
        assert key in records, key
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/**/*.png"))
    # the released adapter, reloaded with PEFT in a fresh process, gives the scores measured after training
    from peft import PeftModel
    from align.models import VLM, load_vlm
    from data_gen import ConflictData
    from eval.scoring import ScoreConfig, score_dataset
    base = load_vlm("organism", dtype="float32", device="cpu")
    from safetensors.torch import load_file
    lora_b = [v for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # training moved the adapter
    vlm = VLM(PeftModel.from_pretrained(base.model, str(out)).eval(), base.processor, "reloaded")
    test = ConflictData.load(out / "data").split("test")
    again = score_dataset(vlm, test, tmp_path / "reloaded", ScoreConfig(batch_size=64))
    after = pd.read_parquet(out / "runs" / "aligned" / "samples.parquet")
    np.testing.assert_allclose(again.entropy_m, after.entropy_m, atol=1e-4)
    assert (again.top1_m == after.top1_m).all()


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["hard", "dpo"])
def test_recipe_trl_variants_train_an_adapter(loss_type, tmp_path):
    res = subprocess.run([sys.executable, "recipes/align_llava.py", *SMALL, "--max_steps", "4", "--report_to", "none",
                          "--loss_type", loss_type, "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    assert res.returncode == 0, res.stderr[-3000:]
    from safetensors.torch import load_file
    lora_b = [v for k, v in load_file(tmp_path / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert json.loads((tmp_path / "alignment.json").read_text())["config"]["loss_type"] == loss_type


@pytest.mark.slow
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    base = [sys.executable, "recipes/align_llava.py", *SMALL, "--report_to", "none"]
    full = subprocess.run(base + ["--output_dir", str(tmp_path / "full")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    # a real interruption at a deterministic point: the run SIGKILLs itself right after its step-6 checkpoint is
    # written (polling from here raced the run's end on fast machines)
    part = tmp_path / "part"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "import transformers\n"
        "_save = transformers.Trainer._save_checkpoint\n"
        "def _save_then_die(self, *args, **kwargs):\n"
        "    _save(self, *args, **kwargs)\n"
        "    if self.state.global_step == 6:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "transformers.Trainer._save_checkpoint = _save_then_die\n")
    killed = subprocess.run(base + ["--output_dir", str(part)], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])})
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = part / "checkpoints" / "checkpoint-6"
    assert ckpt.exists() and not (part / "adapter_model.safetensors").exists()
    resumed = subprocess.run(base + ["--output_dir", str(part), "--resume_from_checkpoint", str(ckpt)],
                             capture_output=True, text=True, cwd=ROOT, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / "full" / "adapter_model.safetensors"), load_file(part / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)
    ra = json.loads((tmp_path / "full" / "alignment.json").read_text())["aligned"]
    rb = json.loads((part / "alignment.json").read_text())["aligned"]
    assert ra["tfr"] == pytest.approx(rb["tfr"], abs=0.02)
