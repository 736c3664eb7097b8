"""The recipe's configuration: the method's own fields (`AlignArguments`) beside `models.ModelArguments`
and transformers' `TrainingArguments`, parsed together by TRL's `TrlParser` from YAML + CLI.

Every value that can be wrong is checked here, before any data is generated or scored.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

from transformers import TrainingArguments

from eval.analysis import AnalysisConfig
from models import ModelArguments
from models.vlm import check_model, resolve_dtype

from .targets import BALANCE_RANGE, resolve_target
from .training import LOSS_TYPES, RETENTION_MODES

# Where the recipe's defaults differ from TrainingArguments' (they are the organism's; the 7B configs set theirs)
TRAINING_DEFAULTS = dict(
    output_dir="outputs/align-organism",
    learning_rate=4e-4,  # organism: 1 epoch reaches the fit; 3 epochs moved b*=+0.5 no further (0.749 -> 0.744)
    num_train_epochs=1.0, per_device_train_batch_size=16, per_device_eval_batch_size=32, warmup_steps=0.03,
    lr_scheduler_type="cosine", logging_steps=10, save_steps=50, save_total_limit=2, seed=0, report_to="wandb",
    project="modality-alignment",
)


@dataclass
class AlignArguments:
    """The method's own settings (docs/method.md, "Alignment")."""
    # data
    data: str | None = field(default=None, metadata={
        "help": "a saved dataset; by default `groups` colour groups are generated into OUTPUT_DIR/data"})
    groups: int = field(default=400, metadata={
        "help": "colour groups to generate (70 percent train: enough conflicts near the balance points)"})
    dataset_seed: int = field(default=0, metadata={"help": "seed of the generated groups and splits"})
    image_size: int = field(default=64, metadata={"help": "canvas side of the generated images, px"})
    train_split: str = field(default="train", metadata={"help": "groups the targets are computed and trained on"})
    eval_split: str = field(default="test", metadata={"help": "groups the before/after result is reported on"})
    # target
    target_balance_point: float | None = field(default=None, metadata={
        "help": "b*, the balance point to reach (0 when neither it nor balance_shift is set)"})
    balance_shift: float | None = field(default=None, metadata={"help": "or: b* = measured balance point + this"})
    tau: float = field(default=0.25, metadata={"help": "temperature of p*(x) = sigmoid((b* - dH_rel) / tau), > 0"})
    loss_type: str = field(default="soft", metadata={
        "help": "soft (SoftTargetTrainer) | hard (TRL SFTTrainer on answers drawn from p*) | dpo (TRL DPOTrainer) | "
                "mixed (modality-mixed recognition instances: image + text to reconcile; measures recognition too)"})
    dpo_beta: float = field(default=0.1, metadata={"help": "beta of loss_type dpo"})
    boundary_sigma: float = field(default=0.5, metadata={
        "help": "width of the boundary weights' fall-off outside [current, target], > 0"})
    boundary_floor: float = field(default=0.2, metadata={"help": "smallest weight of a sample far from the boundary"})
    retention_share: float = field(default=0.3, metadata={"help": "share of unimodal retention examples, in [0, 1)"})
    retention_weight: float = 1.0
    retention: str = field(default="distill", metadata={
        "help": "distill: keep the base's unimodal answer distributions | answer: train the unimodal answers"})
    # closed-loop calibration: measure the realized balance point on the calibration groups and retrain with
    # the training target re-aimed by the miss (targets.next_training_target) until the round is on target
    calibration_rounds: int = field(default=2, metadata={
        "help": "re-aims after the first training (0: none); the second is a secant step"})
    calibration_split: str = field(default="validation", metadata={"help": "groups calibration measures on"})
    calibration_tolerance: float = 0.05
    # a miss inside the round's interval is noise: stop there (the organism at b*=0: round 0 measured
    # +0.20 [-0.15, +0.55] on validation and lands at -0.04 on test; re-aimed by that miss, -0.42, then -0.18)
    calibration_stop_in_interval: bool = field(default=True, metadata={
        "help": "stop calibrating when b* lies inside the round's confidence interval"})
    # LoRA on the language model only (names as TRL's ModelConfig)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | None = field(default=None, metadata={
        "help": "a PEFT regex (re.fullmatch); default: the model family's language-model projections"})
    # measurement
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of the balance point (>= 100; 0: none)"})
    unimodal_correct: bool = field(default=True, metadata={
        "help": "analyse only conflicts whose image-only and text-only answers are both right (false: all; for "
                "models too weak to pass that filter, where the curve then mixes in what the model cannot see)"})

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r} is not available; use one of {LOSS_TYPES}")
        if self.retention not in RETENTION_MODES:
            raise ValueError(f"retention must be one of {RETENTION_MODES}, got {self.retention!r}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0 (the width of the target curve), got {self.tau}")
        if self.boundary_sigma <= 0:
            raise ValueError(f"boundary_sigma must be > 0, got {self.boundary_sigma}")
        if not 0 <= self.boundary_floor <= 1:
            raise ValueError(f"boundary_floor must be in [0, 1], got {self.boundary_floor}")
        if not 0 <= self.retention_share < 1:
            raise ValueError(f"retention_share must be in [0, 1), got {self.retention_share}")
        if self.calibration_rounds < 0:
            raise ValueError(f"calibration_rounds must be >= 0, got {self.calibration_rounds}")
        if self.calibration_rounds and self.calibration_split == self.eval_split:
            raise ValueError(f"calibration_split and eval_split are both {self.eval_split!r}: calibrating on the "
                             f"groups the result is reported on overfits the report; use calibration_split: validation")
        if self.train_split == self.eval_split:
            raise ValueError(f"train_split and eval_split are both {self.eval_split!r}; report on held-out groups")
        if self.groups < 10:
            raise ValueError(f"groups must be >= 10 (each split needs groups), got {self.groups}")
        if self.target_balance_point is None and self.balance_shift is None:
            self.target_balance_point = 0.0
        if self.target_balance_point is not None:
            resolve_target(0.0, self.target_balance_point, self.balance_shift)  # range and exclusivity
        elif abs(self.balance_shift) > BALANCE_RANGE[1] - BALANCE_RANGE[0]:
            raise ValueError(f"balance_shift {self.balance_shift:+.2f} would leave {list(BALANCE_RANGE)}, the range of "
                             f"dH_rel; choose a shift of at most 4 in size")
        self.analysis  # builds an AnalysisConfig, which checks n_boot

    @property
    def analysis(self) -> AnalysisConfig:
        return AnalysisConfig(n_boot=self.n_boot, unimodal_correct=self.unimodal_correct)


def check_inputs(align: AlignArguments, model: ModelArguments, training: TrainingArguments) -> None:
    """What the dataclasses cannot see alone: paths, names, and the launch configuration."""
    check_model(model.model_name_or_path, model.model_revision, model.trust_remote_code)
    if align.data and not os.path.isdir(os.path.join(align.data, "samples")):
        raise FileNotFoundError(f"data {align.data!r} is not a saved dataset (no samples/ folder); create one with "
                                f"`python -m data_gen colors --output_dir {align.data}` or leave data unset")
    if training.push_to_hub and not training.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id (e.g. your-name/llava-balance-0)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    check_deepspeed(trainer_arguments(training, resolve_dtype(model.dtype, device), training.output_dir))


def trainer_arguments(training: TrainingArguments, dtype: torch.dtype, checkpoints: str | os.PathLike) -> TrainingArguments:
    """The arguments the Trainer gets: the user's, with what the recipe owns (where checkpoints go, the model's
    precision, our collator's columns; the release is pushed by the recipe, not by the Trainer)."""
    checkpointing = training.activation_checkpointing
    return dataclasses.replace(
        training, output_dir=str(checkpoints), push_to_hub=False, bf16=training.bf16 or dtype == torch.bfloat16,
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=training.use_cpu or not torch.cuda.is_available(),
        # PEFT + checkpointing needs the reentrant variant (and grads on the inputs, set by the recipe)
        activation_checkpointing_kwargs=training.activation_checkpointing_kwargs or (
            {"use_reentrant": True} if checkpointing else None))


def check_deepspeed(training: TrainingArguments) -> None:
    """Under `accelerate launch` with DeepSpeed, run the Trainer's own consistency check now, not after scoring."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))
    config = HfTrainerDeepSpeedConfig(plugin.deepspeed_config)
    config.trainer_config_process(training)  # records what the Trainer would reject after scoring
    if config.mismatches:
        raise ValueError("the accelerate/DeepSpeed config disagrees with the training config:\n"
                         + "\n".join(config.mismatches) + "\nLeave those keys out of the accelerate config (or set them "
                         "to `auto` in a DeepSpeed JSON) so the training config decides, or make both equal.")
