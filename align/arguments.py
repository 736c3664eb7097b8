"""The recipe's configuration: the method's own fields (`AlignArguments`) beside `eval.models.ModelArguments`
and transformers' `TrainingArguments`, parsed together by TRL's `TrlParser` from YAML + CLI.

Every value that can be wrong is checked here, before any data is generated or scored.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from transformers import TrainingArguments

from data_gen.defaults import image_size
from data_gen.files import check_output_dir, read_json
from eval.models import ModelArguments

if TYPE_CHECKING:
    from eval.analysis import AnalysisConfig

from .targets import BALANCE_RANGE, resolve_target
from .methods import get_method, supported_methods
from .methods.prompt import PromptConfig
from .methods.steer import SteeringConfig

# Where the recipe's defaults differ from TrainingArguments' (they are the organism's; the 7B configs set theirs)
TRAINING_DEFAULTS = dict(
    output_dir="outputs/align-organism",
    learning_rate=4e-4,  # organism: 1 epoch reaches the fit; 3 epochs moved b*=+0.5 no further (0.749 -> 0.744)
    num_train_epochs=1.0, per_device_train_batch_size=16, per_device_eval_batch_size=32, warmup_steps=0.03,
    lr_scheduler_type="cosine", logging_steps=10, save_steps=50, save_total_limit=2, seed=0, report_to="wandb",
    project="modality-alignment",
)


@dataclass
class LoraArguments:
    """LoRA on the language model only (names as TRL's ModelConfig); every recipe's adapter is one."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | None = field(default=None, metadata={
        "help": "a PEFT regex (re.fullmatch); default: the model family's language-model projections"})


@dataclass
class AlignArguments(LoraArguments, SteeringConfig, PromptConfig):
    """The method's own settings (docs/method.md, "Alignment"), with the training-free methods' (steer, prompt)."""
    data_command = "colors"  # the data_gen command that writes this recipe's datasets
    # data
    data: str | None = field(default=None, metadata={
        "help": "a saved dataset; by default `groups` colour groups are generated into OUTPUT_DIR/data"})
    groups: int = field(default=1000, metadata={
        "help": "colour groups to generate (split by split_shares)"})
    dataset_seed: int = field(default=0, metadata={"help": "seed of the generated groups and splits"})
    image_size: int | None = field(default=None, metadata={
        "help": "canvas side of the generated images, px (default: the task's, data_gen/defaults.py)"})
    split_shares: dict | None = field(default=None, metadata={
        "help": "each split's share of the generated groups, JSON (default: the task's, data_gen/defaults.py). A "
                "balance point's interval narrows with the square root of the groups: the default 1,000 colour groups "
                "give 350 validation and 450 test groups, which measure the aligned organism's to about +-0.07"})
    train_split: str = field(default="train", metadata={"help": "groups the targets are computed and trained on"})
    eval_split: str = field(default="test", metadata={"help": "groups the before/after result is reported on"})
    eval_rows: str = field(default="conflicts", metadata={
        "help": "rows scored on those groups: conflicts (all the report and the guarantee read; 59 of 103 inputs a "
                "group) or all (also the no-conflict baselines and the controls, for a complete per-sample table)"})
    # target
    target_balance_point: float | None = field(default=None, metadata={
        "help": "b*, the balance point to reach (0 when neither it nor balance_shift is set)"})
    balance_shift: float | None = field(default=None, metadata={"help": "or: b* = measured balance point + this"})
    tau: float = field(default=0.25, metadata={"help": "temperature of p*(x) = sigmoid((b* - dH_rel) / tau), > 0"})
    task: str = field(default="colors", metadata={
        "help": "what the run measures and trains (eval/tasks): colors | attributes | jsonl (balance point) | "
                "recognition (conflict recognition, beside the colour balance point)"})
    method: str = field(default="soft", metadata={
        "aliases": ["--loss_type"],
        "help": "how the preference is moved (align/methods): soft (SoftTargetTrainer) | hard (TRL SFTTrainer on "
                "answers drawn from p*) | blind_sft (SFT on one share of text labels, whatever the uncertainty) | dpo "
                "(TRL DPOTrainer) | mixed (modality-mixed instances; task recognition) | steer | steer_uncertainty (a "
                "steering vector, no training) | prompt (an instruction, no training)"})
    dpo_beta: float = field(default=0.1, metadata={"help": "beta of method dpo"})
    boundary_sigma: float = field(default=0.5, metadata={
        "help": "width of the boundary weights' fall-off outside [current, target], > 0"})
    boundary_floor: float = field(default=0.2, metadata={"help": "smallest weight of a sample far from the boundary"})
    retention_share: float = field(default=0.3, metadata={
        "help": "share of unimodal retention examples (half image only, half text only), in [0, 1)"})
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
    # measurement
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of the balance point (>= 100; 0: none)"})
    unimodal_correct: bool = field(default=True, metadata={
        "help": "analyse only conflicts whose image-only and text-only answers are both right (false: all; for "
                "models too weak to pass that filter, where the curve then mixes in what the model cannot see)"})

    def __post_init__(self):
        from eval.tasks import get_task
        method, task = get_method(self.method), get_task(self.task)  # each names the choices when unknown
        self.image_size = self.image_size or task.image_size
        from data_gen.store import check_split_shares  # here: data_gen.store imports datasets (slow for --help)
        self.split_shares = check_split_shares(self.split_shares or task.split_shares)
        if self.task == "av":
            raise ValueError("the av task is aligned by `modality-align align-av` (recipes/align_omni.py), whose "
                             "flags name the conditions to train on")
        if method.tasks is not None and self.task not in method.tasks:
            raise ValueError(f"method {self.method!r} trains the {' / '.join(method.tasks)} task, not {self.task!r}; "
                             f"set task: {method.tasks[0]}")
        if method.tasks is None and not task.has_balance_point:
            trains = [m for m in supported_methods() if self.task in (get_method(m).tasks or ())]
            raise ValueError(f"task {self.task!r} has no balance point for method {self.method!r} to aim at; use "
                             f"method: {' or '.join(trains) or 'one that trains it'}")
        if self.steer_max_alpha <= 0:
            raise ValueError(f"steer_max_alpha must be > 0, got {self.steer_max_alpha}")
        if self.steer_rounds < 1:
            raise ValueError(f"steer_rounds must be >= 1, got {self.steer_rounds}")
        if self.steer_layer is not None and self.steer_layer < 0:
            raise ValueError(f"steer_layer must be >= 0 (a decoder layer), got {self.steer_layer}")
        from .training import RETENTION_MODES  # here, as the other imports of checks: align.training loads the Trainer
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
        if self.eval_rows not in ("conflicts", "all"):
            raise ValueError(f"eval_rows must be conflicts or all, got {self.eval_rows!r}")
        if self.target_balance_point is None and self.balance_shift is None:
            self.target_balance_point = 0.0
        if self.target_balance_point is not None:
            resolve_target(0.0, self.target_balance_point, self.balance_shift)  # range and exclusivity
        elif abs(self.balance_shift) > BALANCE_RANGE[1] - BALANCE_RANGE[0]:
            raise ValueError(f"balance_shift {self.balance_shift:+.2f} would leave {list(BALANCE_RANGE)}, the range of "
                             f"dH_rel; choose a shift of at most 4 in size")
        self.analysis  # builds an AnalysisConfig, which checks n_boot

    @property
    def split_roles(self) -> dict[str, str]:
        """The splits the run reads, by role (train, eval, and calibration when it calibrates)."""
        roles = {"train": self.train_split, "eval": self.eval_split}
        return roles | ({"calibration": self.calibration_split} if self.calibration_rounds else {})

    @property
    def run_label(self) -> str:
        """What the run aims at, for its name: the balance point, the shift, or the task without a balance point."""
        if self.task == "recognition":
            return "recognition"
        return (f"b{self.target_balance_point:+.2f}" if self.target_balance_point is not None
                else f"shift{self.balance_shift:+.2f}")

    @property
    def hard_targets(self) -> bool:
        """The method trains answers drawn from p* (or from its mean, blind_sft), not the distribution."""
        return get_method(self.method).examples in ("hard", "blind")

    @property
    def blind_targets(self) -> bool:
        """Every conflict gets the same chance of the text's label, whatever its uncertainty (blind_sft)."""
        return get_method(self.method).examples == "blind"

    @property
    def analysis(self) -> AnalysisConfig:
        from eval.analysis import AnalysisConfig
        return AnalysisConfig(n_boot=self.n_boot, unimodal_correct=self.unimodal_correct)


def check_inputs(align: AlignArguments, model: ModelArguments, training: TrainingArguments) -> str:
    """What the dataclasses cannot see alone: paths, names, and the launch configuration. Returns the model's
    family name."""
    from eval.models.vlm import check_model_args, resolve_dtype  # here: it imports transformers' models (slow for --help)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(training, name)}")
    check_output_dir(training.output_dir)
    out = Path(training.output_dir)
    for record in [out / "calibration.json", *out.glob("runs/*/run.json")]:  # what a re-run resumes from
        if record.exists():
            read_json(record, f"delete {record if record.name == 'calibration.json' else record.parent} (that part "
                              f"is redone) or use another --output_dir")
    family = check_model_args(model)
    if align.data:
        if not os.path.isdir(os.path.join(align.data, "samples")):
            raise FileNotFoundError(f"data {align.data!r} is not a saved dataset (no samples/ folder); create one with "
                                    f"`python -m data_gen {align.data_command} --output_dir {align.data}` or leave data "
                                    f"unset")
        from eval.tasks import get_task
        get_task(get_task(align.task).views[0]).load(align.data)  # its files against their checksums
    check_resume(training.resume_from_checkpoint, training.output_dir)
    if training.push_to_hub and not training.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id (e.g. your-name/llava-balance-0)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    check_deepspeed(trainer_arguments(training, resolve_dtype(model.dtype, device), training.output_dir))
    return family


def check_resume(asked: str | None, output_dir: str) -> None:
    """--resume_from_checkpoint names a checkpoint of this run's own trainings (OUTPUT_DIR/checkpoints/...)."""
    if not asked:
        return
    own = Path(output_dir).resolve() / "checkpoints"
    path = Path(asked).resolve()
    if not path.is_dir() or own not in path.parents or not path.name.startswith("checkpoint-"):
        raise ValueError(f"--resume_from_checkpoint {asked} is not a checkpoint of this run (one of "
                         f"{own}/[round-K/]checkpoint-N); leave it out: a re-run of the same command resumes from "
                         f"the newest complete checkpoint of the training it stopped in")


def trainer_arguments(training: TrainingArguments, dtype: torch.dtype, checkpoints: str | os.PathLike) -> TrainingArguments:
    """The arguments the Trainer gets: the user's, with what the recipe owns (where checkpoints go, the model's
    precision, our collator's columns; the release is pushed by the recipe, not by the Trainer)."""
    checkpointing = training.activation_checkpointing
    # the recipe logs each training to W&B itself (tracking.RoundLogger): the Trainer's own callback would put
    # every round on one step axis that resets, and rewrite the run's config with this round's folder
    report_to = [r for r in (training.report_to or []) if r != "wandb"] or ["none"]
    return dataclasses.replace(
        training, output_dir=str(checkpoints), push_to_hub=False, bf16=training.bf16 or dtype == torch.bfloat16,
        report_to=report_to,
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


# the asked-modality recipe's defaults (recipes/align_omni.py), the AV organism's; the 7B config sets its own
AV_TRAINING_DEFAULTS = {**TRAINING_DEFAULTS, "output_dir": "outputs/align-omni-organism", "learning_rate": 2e-3,
                        "num_train_epochs": 5.0, "per_device_eval_batch_size": 16}


@dataclass
class AVAlignArguments(LoraArguments):
    """Asked-modality alignment (docs/method.md, "Audio-visual conflicts"): train the answer to be the class of the
    modality the question asks about, on every condition that has one. The 7B config uses MMA-Bench's modality
    alignment tuning (LoRA r 8 on q/v, lr 1e-4); the AV organism's defaults adapt every decoder projection
    (docs/results.md, "Audio-visual conflicts")."""
    data: str | None = field(default=None, metadata={
        "help": "a saved AV dataset (`python -m data_gen av`); by default `groups` groups are generated into "
                "OUTPUT_DIR/data"})
    groups: int = field(default=300, metadata={
        "help": "AV groups to generate (split by the task's default shares, data_gen/defaults.py)"})
    dataset_seed: int = field(default=0, metadata={"help": "seed of the generated groups and splits"})
    image_size: int | None = field(default=None, metadata={
        "help": "frame side of the generated clips, px (default: data_gen/defaults.py's)"})
    train_split: str = field(default="train", metadata={"help": "groups the adapter is trained on"})
    eval_split: str = field(default="test", metadata={"help": "groups the before/after result is reported on"})
    train_conditions: str = field(default="aligned,misaligned,misleading_text,long_context,audio_removed,frames_zeroed",
                                  metadata={"help": "conditions trained on, comma-separated (rows whose asked "
                                                    "modality is absent have no target and are never trained)"})
    data_command = "av"
    # the alignment loop reads these: the task measured and the method that trains (every row an answer to train)
    task = "av"
    method = "asked"
    retention = "answer"
    retention_weight = 1.0
    run_label = "asked-modality"

    def __post_init__(self):
        from data_gen.av import CONDITIONS
        self.image_size = self.image_size or image_size("av")
        unknown = set(self.conditions) - set(CONDITIONS)
        if unknown or not self.conditions:
            raise ValueError(f"train_conditions {self.train_conditions!r}: use a comma-separated subset of {CONDITIONS}")
        if self.train_split == self.eval_split:
            raise ValueError(f"train_split and eval_split are both {self.eval_split!r}; report on held-out groups")
        if self.groups < 10:
            raise ValueError(f"groups must be >= 10 (each split needs groups), got {self.groups}")

    @property
    def split_roles(self) -> dict[str, str]:
        return {"train": self.train_split, "eval": self.eval_split}

    @property
    def conditions(self) -> list[str]:
        return [c.strip() for c in self.train_conditions.split(",") if c.strip()]


# The commands that run the recipe many times take these beside the recipe's own flags
@dataclass
class PrecisionArguments:
    targets: list[float] = field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0], metadata={
        "help": "target balance points b*"})
    data_seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "training data seeds: one run per target and seed"})
    fresh_seed: int = field(default=7, metadata={"help": "data seed of the groups every adapter is measured on "
                                                         "(must differ from every training seed)"})
    fresh_groups: int = field(default=200, metadata={"help": "groups of the fresh seed, all scored"})
    tolerance: float = field(default=0.15, metadata={"help": "a run lands when |realized - b*| <= this"})
    accuracy_tolerance: float = field(default=0.02, metadata={
        "help": "unimodal accuracy (image only, text only) on the fresh groups may fall by at most this"})

    def __post_init__(self):
        if self.fresh_seed in self.data_seeds:
            raise ValueError(f"fresh_seed {self.fresh_seed} is also a training seed (data_seeds {self.data_seeds}); "
                             f"pick a fresh_seed no run trains on")
        if not self.targets or not self.data_seeds:
            raise ValueError("targets and data_seeds each need at least one value")
        if self.fresh_groups < 10:
            raise ValueError(f"fresh_groups must be >= 10, got {self.fresh_groups}")
        if self.tolerance <= 0 or self.accuracy_tolerance < 0:
            raise ValueError(f"tolerance must be > 0 and accuracy_tolerance >= 0, got {self.tolerance}, "
                             f"{self.accuracy_tolerance}")


@dataclass
class CompareArguments:
    methods: list[str] = field(default_factory=lambda: ["soft", "hard", "blind_sft", "dpo", "steer",
                                                        "steer_uncertainty", "prompt"], metadata={
        "help": "methods aimed at each target (align/methods)"})
    targets: list[float] = field(default_factory=lambda: [-0.5, 0.5], metadata={"help": "target balance points b*"})
    fresh_seed: int = field(default=31, metadata={"help": "data seed of the groups every result is measured on"})
    fresh_groups: int = field(default=600, metadata={"help": "fresh groups whose conflicts are scored"})
    control_groups: int = field(default=150, metadata={
        "help": "of the fresh groups, how many also have their no-conflict and control rows scored"})
    paraphrase_groups: int = field(default=300, metadata={
        "help": "of the fresh groups, how many have their conflicts measured again in the held-out wording"})
    attribute_groups: int = field(default=60, metadata={
        "help": "fresh attribute groups (transfer to another task, for a model that passes its ability gate)"})
    tolerance: float = field(default=0.15, metadata={"help": "a result lands when |realized - b*| <= this"})
    mixed_config: str | None = field(default="recipes/configs/organism-mixed.yaml", metadata={
        "help": "the recipe config of the mixed (recognition) run, measured against its own base; none: skip it"})

    def __post_init__(self):
        for m in self.methods:
            method = get_method(m)  # names the choices when unknown
            if method.tasks is not None:
                raise ValueError(f"method {m!r} trains the {method.tasks[0]} task; it runs through mixed_config, "
                                 f"not methods")
        if not self.methods or not self.targets:
            raise ValueError("methods and targets each need at least one value")
        for name in ("control_groups", "paraphrase_groups"):
            if not 10 <= getattr(self, name) <= self.fresh_groups:
                raise ValueError(f"{name} must be in [10, fresh_groups], got {getattr(self, name)}")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")
        if self.mixed_config in ("", "none", "None"):
            self.mixed_config = None
