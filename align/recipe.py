"""The alignment loop: measure -> targets -> LoRA training -> re-measure -> report -> W&B -> release."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainingArguments

from data_gen import ConflictData, samples_frame
from data_gen.store import SPLIT_SHARES
from data_gen.recognition import recognition_from
from eval.analysis import alignment_guarantee, analyze, describe_guarantee
from eval.recognition import RecognitionConfig, analyze_recognition, describe, score_recognition
from eval.recognition_report import describe_imbalance_change, write_recognition_report
from eval.report import write_report
from eval.prepare import generate_once
from eval.processes import processes
from eval.scoring import ScoreConfig, score_dataset
from eval.models import VLM, ModelArguments, load_from_args

from . import tracking
from .arguments import AlignArguments, check_inputs, trainer_arguments
from .release import release, push
from .targets import calibration_reached, closest_round, next_training_target, resolve_target

log = logging.getLogger(__name__)


def split_shares_of(a) -> dict[str, float] | None:
    """The run's split shares; None (the default shares) for the AV recipe, whose arguments have none."""
    return getattr(a, "split_shares", None)


def check_generated(info: dict, path: Path, a) -> None:
    """Data a re-run finds in OUTPUT_DIR/data is kept, not regenerated: it must have this run's settings."""
    wanted = {"groups": a.groups, "seed": a.dataset_seed, "size": a.image_size,
              "split_shares": split_shares_of(a) or SPLIT_SHARES}
    found = {"split_shares": SPLIT_SHARES, **info}  # data generated with the default shares does not record them
    differ = [f"{k} {found.get(k)} there, {v} asked" for k, v in wanted.items() if found.get(k) != v]
    if differ:
        raise ValueError(f"{path} was generated with other settings ({'; '.join(differ)}); use another output_dir "
                         f"or delete {path}")


class Recipe:
    """One alignment run: the three configs, its output folder and the processes it runs on."""

    def __init__(self, align: AlignArguments, model: ModelArguments, training: TrainingArguments):
        self.align, self.model_args, self.training = align, model, training
        self.out = Path(training.output_dir)
        self.state = processes()

    # the recipe's dataset kind and how to render it when no data is given (generate_once's default: colours)
    dataset = ConflictData
    render = None

    # ---- pieces
    def prepare_data(self) -> ConflictData:
        a = self.align
        path = Path(a.data) if a.data else generate_once(self.out / "data", a.groups, a.dataset_seed, a.image_size,
                                                          self.render, split_shares_of(a))
        data = self.dataset.load(path)
        if not a.data:
            check_generated(data.info, path, a)
        missing = set(a.split_roles.values()) - set(data.samples.unique("split"))
        if missing:
            raise ValueError(f"{path} has no {sorted(missing)} split(s) (it has {sorted(data.samples.unique('split'))}); "
                             f"set {' / '.join(f'{role}_split' for role in a.split_roles)} to splits it has")
        return data

    def prepare_recognition(self, data: ConflictData) -> ConflictData:
        """Recognition data derived from the colour data (its groups, splits and images), so one dataset serves
        the mixed instances and the colour retention examples."""
        path = self.out / "recognition"
        if self.state.is_main and not (path / "info.json").exists():
            recognition_from(data).save(path)
        self.state.wait()
        return ConflictData.load(path)

    def measure_recognition(self, vlm: VLM, data: ConflictData, name: str) -> dict | None:
        """Recognition rates and attention imbalance (main process; the others wait)."""
        result = None
        if self.state.is_main:
            table = score_recognition(vlm, data, self.out / "runs" / name,
                                      RecognitionConfig(batch_size=self.training.per_device_eval_batch_size))
            result = analyze_recognition(table, self.align.n_boot)
            log.info("recognition (%s):\n%s", name, describe(result))
        self.state.wait()
        return result

    def train_mixed(self, base: VLM, recognition: ConflictData, train_table: pd.DataFrame) -> tuple[dict, list, Path]:
        """Task recognition (method mixed): one training on modality-mixed recognition instances (no calibration:
        there is no balance point to aim at)."""
        from .training import mixed_examples
        rows = samples_frame(recognition.split(self.align.train_split).samples)
        examples, stats = mixed_examples(rows, train_table, base, self.align.retention_share, self.training.seed)
        log.info("training on modality-mixed instances: %s", stats)
        if self.state.is_main:  # scores of an earlier adapter would be resumed as this one's
            for stale in ("aligned", "aligned_recognition"):
                shutil.rmtree(self.out / "runs" / stale, ignore_errors=True)
        self.state.wait()
        return stats, [], self.train_adapter(base, recognition, examples, self.out / "checkpoints")

    def load(self, adapter: Path | None = None) -> VLM:
        args = dataclasses.replace(self.model_args, adapter=str(adapter) if adapter else None)
        return load_from_args(args, device=str(self.state.device))

    def measure(self, vlm: VLM, data: ConflictData, name: str, lens: bool = True) -> pd.DataFrame:
        """Score on every process, then hand every process the merged table."""
        out = self.out / "runs" / name
        score_dataset(vlm, data, out, ScoreConfig(batch_size=self.training.per_device_eval_batch_size, lens=lens),
                      seed=self.training.seed)
        self.state.wait()
        return pd.read_parquet(out / "samples.parquet")

    def collator(self, base: VLM, data: ConflictData, dtype: torch.dtype):
        """What turns examples into the soft loss's batches (with the retention rows apart for distillation)."""
        from .training import AlignmentCollator
        return AlignmentCollator(base, data, dtype, reference_inputs=self.align.retention == "distill")

    def train_adapter(self, base: VLM, data: ConflictData, examples: list[dict], checkpoints: Path) -> Path:
        """LoRA on the language model, trained by the registered method (align/methods/). Returns the adapter
        folder."""
        from peft import LoraConfig
        from transformers import set_seed
        from .methods import get_method
        a = self.align
        method = get_method(a.method)
        lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                          target_modules=a.lora_target_modules or base.lora_target_modules, task_type="CAUSAL_LM")
        set_seed(self.training.seed)  # the LoRA init draws from the global RNG: same seed, same adapter
        dtype = next(base.model.parameters()).dtype
        args = method.config(trainer_arguments(self.training, dtype, checkpoints), a)
        trainer = method.build_trainer(base.model, lora, args, examples, base, data, self.collator(base, data, dtype))
        try:
            trainer.train(resume_from_checkpoint=self.training.resume_from_checkpoint)
        except torch.OutOfMemoryError as e:
            raise RuntimeError(
                f"out of memory while training ({e}). Lower per_device_train_batch_size (now "
                f"{args.per_device_train_batch_size}) and raise gradient_accumulation_steps, set "
                f"activation_checkpointing: true, or launch with recipes/accelerate_configs/zero3.yaml") from e
        adapter = self.out / "adapter"
        trainer.save_model(str(adapter))  # the work copy; the release holds only what a consumer loads
        return adapter

    def train_to_target(self, base: VLM, data: ConflictData, train_table: pd.DataFrame, target: float,
                        current: float) -> tuple[dict, list[dict], Path]:
        """Train the adapter at b*; with calibration rounds, re-aim the training target by the realized miss on
        the calibration groups and retrain from the base, so the released adapter lands on b*.

        Finished rounds are recorded in calibration.json (each round's adapter in calibration/round-K): a re-run in
        the same output_dir goes on from there. The round nearest b* on the calibration groups is released.
        """
        from .training import build_examples
        a, state = self.align, self.state
        record = self.out / "calibration.json"
        adapter = self.out / "adapter"
        rounds = []
        if record.exists():
            saved = json.loads(record.read_text())
            if saved.get("target") == target:
                rounds = saved["rounds"]
        stats = rounds[-1]["training_examples"] if rounds else {}
        while True:
            if rounds and (len(rounds) > a.calibration_rounds or calibration_reached(
                    target, rounds[-1]["realized"], rounds[-1].get("ci"), a.calibration_tolerance,
                    a.calibration_stop_in_interval)):
                return self.release_round(target, rounds)
            aim = target if not rounds else next_training_target(
                target, [r["trained_at"] for r in rounds], [r["realized"] for r in rounds])
            examples, stats = build_examples(train_table, aim, current, a.tau, a.boundary_sigma, a.boundary_floor,
                                             a.retention_share, a.hard_targets, self.training.seed, a.analysis)
            log.info("training at b = %+.3f (round %d): %s", aim, len(rounds), stats)
            model = base if not rounds else self.load()
            if state.is_main:  # scores of an earlier adapter would be resumed as this one's
                for stale in (self.out / "runs" / "aligned", self.out / "runs" / f"calibration-{len(rounds)}"):
                    shutil.rmtree(stale, ignore_errors=True)
            state.wait()
            checkpoints = self.out / "checkpoints" / (f"round-{len(rounds)}" if a.calibration_rounds else "")
            adapter = self.train_adapter(model, data, examples, checkpoints)
            state.wait()
            if not a.calibration_rounds:
                return stats, [], adapter
            # the balance point reads only the conflict rows: baselines and controls would be scored for nothing
            check = analyze(self.measure(self.load(adapter), data.split(a.calibration_split).conflicts(),
                                         f"calibration-{len(rounds)}", lens=False), a.analysis)["balance_point"]
            realized = check["estimate"] if check["estimate"] is not None else (2.0 if check["leans"] == "text" else -2.0)
            if state.is_main:  # kept, so the nearest round can be released when a later one lands farther
                kept = self.out / "calibration" / f"round-{len(rounds)}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(adapter, kept)
            rounds.append({"trained_at": aim, "realized": realized, "ci": check["ci"],
                           "description": check["description"], "training_examples": stats})
            log.info("calibration round %d: trained at %+.3f -> %s on the %s groups (target %+.2f)", len(rounds) - 1,
                     aim, check["description"], a.calibration_split, target)
            if state.is_main:
                record.write_text(json.dumps({"target": target, "rounds": rounds}, indent=2, default=float))
            state.wait()

    def release_round(self, target: float, rounds: list[dict]) -> tuple[dict, list[dict], Path]:
        """Make the calibration round nearest b* the adapter the recipe measures and releases; marks it `released`."""
        best = closest_round(target, [r["realized"] for r in rounds])
        for k, r in enumerate(rounds):
            r["released"] = k == best
        adapter, kept = self.out / "adapter", self.out / "calibration" / f"round-{best}"
        if best != len(rounds) - 1 and self.state.is_main:
            if not kept.exists():
                raise FileNotFoundError(f"{kept} is missing: calibration round {best} is nearest b* = {target:+.2f} "
                                        f"but its adapter was not kept (an output_dir from an older version); "
                                        f"re-run in a fresh --output_dir")
            shutil.rmtree(adapter, ignore_errors=True)
            shutil.copytree(kept, adapter)
        if best != len(rounds) - 1:
            log.info("releasing calibration round %d (%s), nearest b* = %+.2f", best, rounds[best]["description"],
                     target)
        self.state.wait()
        return rounds[best]["training_examples"], rounds, adapter

    # ---- the loop
    def run(self) -> dict | None:
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        run = tracking.start_run(self.align, self.model_args, self.training) if self.state.is_main else None
        try:
            result = self._run(run, t0)
        except BaseException:
            tracking.finish(run, failed=True)
            raise
        tracking.finish(run)
        return result

    def _run(self, run, t0: float) -> dict | None:
        a, state, out = self.align, self.state, self.out
        data = self.prepare_data()
        recognition = self.prepare_recognition(data) if a.task == "recognition" else None
        base = self.load()
        test, train = data.split(a.eval_split), data.split(a.train_split)
        if a.eval_rows == "conflicts":  # the analysis reads nothing else (docs/method.md, "Calibration")
            test = test.conflicts()

        log.info("1/5 measuring the base model on the %s groups", a.eval_split)
        base_table = self.measure(base, test, "base")
        base_result = analyze(base_table, a.analysis)
        tracking.log_measurement(run, "before", base_result)
        if recognition:
            base_recognition = self.measure_recognition(base, recognition.split(a.eval_split), "base_recognition")
            tracking.log_recognition(run, "before", base_recognition)
        current = base_result["balance_point"]["estimate"]
        target = resolve_target(current, a.target_balance_point, a.balance_shift)
        if current is None:  # a curve that never crosses: start the boundary at the edge it leans to
            current = 2.0 if base_result["balance_point"]["leans"] == "text" else -2.0

        log.info("2/5 scoring the %s groups for targets (b* = %+.2f, measured %s)", a.train_split, target,
                 base_result["balance_point"]["description"])
        # targets and retention read only conflict rows (and their unimodal answers): the rest is never used
        train_table = self.measure(base, train.conflicts(), "base_train", lens=False)

        log.info("3/5 LoRA training")
        if recognition:
            example_stats, calibration, adapter = self.train_mixed(base, recognition, train_table)
        else:
            example_stats, calibration, adapter = self.train_to_target(base, data, train_table, target, current)

        log.info("4/5 re-measuring the adapted model with the same code")
        aligned = self.load(adapter)
        after_table = self.measure(aligned, test, "aligned")
        if recognition:
            after_recognition = self.measure_recognition(aligned, recognition.split(a.eval_split), "aligned_recognition")
        if not state.is_main:
            return None
        log.info("5/5 report, tracking and release")
        after_result = analyze(after_table, a.analysis)
        tracking.log_measurement(run, "after", after_result)
        summary = write_report([out / "runs" / "base", out / "runs" / "aligned"], out / "report", a.analysis,
                               ["base", "aligned"], results={"base": base_result, "aligned": after_result}, target=target)
        result = {"target_balance_point": target, "base": summary["runs"]["base"], "aligned": summary["runs"]["aligned"],
                  "training_examples": example_stats, "calibration": calibration,
                  "seconds": round(time.time() - t0, 1), "config": self.config_record(),
                  "warnings": summary["warnings"]}
        if not recognition:
            guarantee = alignment_guarantee(base_table, after_table, after_result, target, a.analysis)
            result["guarantee"] = {**guarantee, "description": describe_guarantee(guarantee)}
        if recognition:
            report = write_recognition_report([out / "runs" / "base_recognition", out / "runs" / "aligned_recognition"],
                                              out / "report" / "recognition", ["base", "aligned"],
                                              {"base": base_recognition, "aligned": after_recognition}, a.n_boot)
            change = report.get("imbalance_change")
            if change:
                log.info(describe_imbalance_change(change, ["base", "aligned"]))
            result["recognition"] = {"base": base_recognition, "aligned": after_recognition, "imbalance_change": change}
            tracking.log_recognition(run, "after", after_recognition)
            tracking.log_summary(run, change and {"change/imbalance_distance": change["change"]})
        (out / "alignment.json").write_text(json.dumps(result, indent=2, default=float))
        bundle = release(out, adapter, result, self.align, self.model_args, self.training)
        tracking.log_result(run, result, base_result, after_result, bundle)
        if self.training.push_to_hub:
            push(bundle, self.training.hub_model_id, private=self.training.hub_private_repo)
        result["release"] = str(bundle)
        return result

    def config_record(self) -> dict:
        """What the run was configured with: the method's and the model's settings and the training settings
        the user can change (as TrainingArguments writes them, tokens hidden)."""
        return {"align": asdict(self.align), "model": asdict(self.model_args), "training": self.training.to_dict()}


def run_alignment(align: AlignArguments, model: ModelArguments, training: TrainingArguments) -> dict | None:
    check_inputs(align, model, training)
    return Recipe(align, model, training).run()
