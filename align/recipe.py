"""The alignment loop: measure -> targets -> LoRA training -> re-measure -> report -> W&B -> release.

One loop for every task and method: the task (eval/tasks) says what is measured before and after (its recipe
views), how to score, analyse and report it; the method (align/methods) says how the adapter is trained and on
which examples. A method that aims a balance point gets targets p* from the base's own scores and calibration.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainingArguments

from data_gen import ConflictData
from data_gen import defaults
from data_gen.files import read_json, write_json
from eval.api import Measurement
from eval.models import VLM, ModelArguments, load_from_args
from eval.prepare import generate_once
from eval.processes import holding, processes
from eval.models.steering import STEERING_FILE
from eval.tasks import Task, get_task

from . import tracking
from .arguments import AlignArguments, check_inputs, trainer_arguments
from .checkpoints import chosen_resume, resume_point, training_fingerprint
from .methods import get_method
from .release import push, release
from .targets import calibration_reached, closest_round, next_training_target, resolve_target

log = logging.getLogger(__name__)


def split_shares_of(a) -> dict[str, float]:
    """The run's split shares: its own, or its task's default for arguments that have none (the audio-visual
    recipe)."""
    return getattr(a, "split_shares", None) or defaults.split_shares(a.task)


def check_generated(info: dict, path: Path, a) -> None:
    """Data a re-run finds in OUTPUT_DIR/data is kept, not regenerated: it must have this run's settings."""
    wanted = {"groups": a.groups, "seed": a.dataset_seed, "size": a.image_size,
              "split_shares": split_shares_of(a)}
    differ = [f"{k} {info.get(k)} there, {v} asked" for k, v in wanted.items() if info.get(k) != v]
    if differ:
        raise ValueError(f"{path} was generated with other settings ({'; '.join(differ)}); use another output_dir "
                         f"or delete {path}")


def intervention_fields(folder: Path | None) -> dict:
    """The ModelArguments fields that load what a method released in `folder`: a steering vector, an instruction,
    or (else) an adapter; none for None."""
    from .methods.prompt import INSTRUCTION_FILE, load_instruction
    if folder is None:
        return {"adapter": None}
    if (Path(folder) / STEERING_FILE).exists():
        return {"adapter": None, "steering": str(Path(folder) / STEERING_FILE)}
    if (Path(folder) / INSTRUCTION_FILE).exists():
        return {"adapter": None, "instruction": load_instruction(folder)}
    return {"adapter": str(folder)}


class Recipe:
    """One alignment run: the three configs, its output folder, its task and method, the processes it runs on."""

    def __init__(self, align: AlignArguments, model: ModelArguments, training: TrainingArguments):
        self.align, self.model_args, self.training = align, model, training
        self.out = Path(training.output_dir)
        self.state = processes()
        self.task, self.method = get_task(align.task), get_method(align.method)
        self.primary = get_task(self.task.views[0])  # the task whose data is generated; the others derive from it
        self.prompt_example = None
        self.wandb_run = None  # the open W&B run, on the main process

    # ---- data
    def prepare_data(self):
        a = self.align
        render = lambda groups, seed, size, split_shares=None: self.primary.generate(groups, seed, size, split_shares)
        path = Path(a.data) if a.data else generate_once(self.out / "data", a.groups, a.dataset_seed, a.image_size,
                                                          render, split_shares_of(a))
        data = self.primary.load(path)
        if not a.data:
            check_generated(data.info, path, a)
        missing = set(a.split_roles.values()) - set(data.samples.unique("split"))
        if missing:
            raise ValueError(f"{path} has no {sorted(missing)} split(s) (it has {sorted(data.samples.unique('split'))}); "
                             f"set {' / '.join(f'{role}_split' for role in a.split_roles)} to splits it has")
        return data

    def prepare_views(self) -> dict:
        """Each recipe view's dataset: the primary one, and the others derived from it once into OUTPUT_DIR/VIEW."""
        data = self.prepare_data()
        views = {self.primary.name: data}
        for name in self.task.views[1:]:
            task, path = get_task(name), self.out / name
            if self.state.is_main and not (path / "info.json").exists():
                task.derive(data).save(path)
            self.state.wait()
            views[name] = task.load(path)
        return views

    # ---- measurement
    def run_name(self, view: str, name: str) -> str:
        """The primary view's runs are runs/NAME; another view's runs/NAME_VIEW."""
        return name if view == self.primary.name else f"{name}_{view}"

    def score_table(self, task: Task, vlm: VLM, data, name: str, lens: bool = True) -> pd.DataFrame | None:
        """Score `data` into runs/NAME. Tasks that score in parallel hand every process the merged table; the others
        score on the main process (None elsewhere)."""
        out = self.out / "runs" / name
        mine = task.parallel_scoring or self.state.is_main
        if mine:
            task.score(vlm, data, out, self.training.per_device_eval_batch_size, lens=lens, seed=self.training.seed)
        self.state.wait()
        return pd.read_parquet(out / "samples.parquet") if mine else None

    def measure_task(self, task: Task, vlm: VLM, data, name: str, lens: bool = True) -> Measurement | None:
        """`score_table`, analysed, where the table is."""
        table = self.score_table(task, vlm, data, name, lens)
        if table is None:
            return None
        out = self.out / "runs" / name
        info = {**read_json(out / "run.json"), "path": str(out)}
        return Measurement(name, task.analyze(table, self.analysis_config), table, info, task.name)

    @property
    def analysis_config(self):
        return getattr(self.align, "analysis", None)

    def measure_views(self, vlm: VLM, views: dict, name: str) -> dict[str, Measurement | None]:
        """Every recipe view measured on the eval groups (only the rows the analysis reads, where the run says so)."""
        measured = {}
        for view, data in views.items():
            task = get_task(view)
            rows = data.split(self.align.eval_split)
            if task.has_balance_point and getattr(self.align, "eval_rows", "all") == "conflicts":
                rows = rows.conflicts()  # the analysis reads nothing else (docs/method.md, "Calibration")
            measured[view] = self.measure_task(task, vlm, rows, self.run_name(view, name))
            if measured[view] is not None:
                log.info("%s (%s):\n%s", view, name, task.describe(measured[view].analysis))
        return measured

    def train_table(self, base: VLM, data) -> pd.DataFrame:
        """The base's scores on the training groups' conflicts, on every process: targets and retention read
        nothing else."""
        return self.score_table(self.primary, base, data.split(self.align.train_split).conflicts(), "base_train",
                                lens=False)

    # ---- training
    def collator(self, base: VLM, data, dtype: torch.dtype):
        return self.method.collator(base, data, dtype, self.align)

    def train(self, base: VLM, views: dict, before: dict, target: float | None) -> tuple[dict, list[dict], Path]:
        """The adapter: toward b* with targets and calibration when the method aims a balance point, else one
        training on the method's own examples. Returns (example counts, calibration rounds, adapter folder)."""
        data = views[self.primary.name]
        if self.method.intervention != "adapter":
            if self.state.is_main:  # scores of an earlier run's intervention would be resumed as this one's
                for view in views:
                    shutil.rmtree(self.out / "runs" / self.run_name(view, "aligned"), ignore_errors=True)
            self.state.wait()
            return self.method.fit(self, base, views, before, target)
        if self.method.aims_balance_point:
            analysis = before[self.primary.name].analysis
            current = analysis["balance_point"]["estimate"]
            if current is None:  # a curve that never crosses: start the boundary at the edge it leans to
                current = 2.0 if analysis["balance_point"]["side"] == "text" else -2.0
            log.info("2/5 scoring the %s groups for targets (b* = %+.2f, measured %s)", self.align.train_split,
                     target, analysis["balance_point"]["description"])
            train_table = self.train_table(base, data)
            log.info("3/5 LoRA training")
            return self.train_to_target(base, data, train_table, target, current)
        log.info("2/5 building the %s examples", self.method.name)
        examples, stats, examples_data = self.method.training_examples(self, base, views)
        log.info("3/5 LoRA training on %s", stats)
        if self.state.is_main:  # scores of an earlier adapter would be resumed as this one's
            for view in views:
                shutil.rmtree(self.out / "runs" / self.run_name(view, "aligned"), ignore_errors=True)
        self.state.wait()
        return stats, [], self.train_adapter(base, examples_data, examples, self.out / "checkpoints")

    def load(self, adapter: Path | None = None) -> VLM:
        """The base, with what a method released in `adapter` (an adapter, a steering vector or an instruction)."""
        args = dataclasses.replace(self.model_args, **intervention_fields(adapter))
        return load_from_args(args, device=str(self.state.device))

    def train_adapter(self, base: VLM, data: ConflictData, examples: list[dict], checkpoints: Path) -> Path:
        """LoRA on the language model, trained by the registered method (align/methods/). Returns the adapter
        folder."""
        from peft import LoraConfig
        from transformers import set_seed
        a, method = self.align, self.method
        lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                          target_modules=a.lora_target_modules or base.lora_target_modules, task_type="CAUSAL_LM")
        set_seed(self.training.seed)  # the LoRA init draws from the global RNG: same seed, same adapter
        dtype = next(base.model.parameters()).dtype
        args = method.config(trainer_arguments(self.training, dtype, checkpoints), a)
        fingerprint = training_fingerprint(examples, {**args.to_dict(), "lora": lora.to_dict(), "method": method.name,
                                                      "model": self.model_args.model_name_or_path})
        if self.state.is_main:  # where this training resumes, chosen once for every process
            resume_point(checkpoints, fingerprint, self.training.resume_from_checkpoint)
        self.state.wait()
        resume = chosen_resume(checkpoints)
        trainer = method.build_trainer(base.model, lora, args, examples, base, data, self.collator(base, data, dtype))
        if self.wandb_run is not None:
            trainer.add_callback(tracking.RoundLogger(self.wandb_run, checkpoints.name if
                                                      checkpoints.name.startswith("round-") else "training"))
        try:
            trainer.train(resume_from_checkpoint=resume)
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
                                             a.retention_share, a.hard_targets, self.training.seed, a.analysis,
                                             a.blind_targets)
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
            check = self.measure_task(self.primary, self.load(adapter), data.split(a.calibration_split).conflicts(),
                                      f"calibration-{len(rounds)}", lens=False).analysis["balance_point"]
            realized = check["estimate"] if check["estimate"] is not None else (2.0 if check["side"] == "text" else -2.0)
            if state.is_main:  # kept, so the nearest round can be released when a later one lands farther
                kept = self.out / "calibration" / f"round-{len(rounds)}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(adapter, kept)
            rounds.append({"trained_at": aim, "realized": realized, "ci": check["ci"],
                           "description": check["description"], "training_examples": stats})
            log.info("calibration round %d: trained at %+.3f -> %s on the %s groups (target %+.2f)", len(rounds) - 1,
                     aim, check["description"], a.calibration_split, target)
            if state.is_main:
                write_json(record, {"target": target, "rounds": rounds})
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
        with holding(self.out):
            return self.run_held()

    def run_held(self) -> dict | None:
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
        self.wandb_run = run
        views = self.prepare_views()
        tracking.use_dataset(run, views[self.primary.name])
        base = self.load()
        self.prompt_example = prompt_example(base, views[self.primary.name].split(a.eval_split))

        log.info("1/5 measuring the base model on the %s groups", a.eval_split)
        before = self.measure_views(base, views, "base")
        tracking.log_views(run, "before", before)
        target = None
        if self.primary.has_balance_point:
            bp = before[self.primary.name].analysis["balance_point"]
            target = resolve_target(bp["estimate"], a.target_balance_point, a.balance_shift)

        example_stats, calibration, adapter = self.train(base, views, before, target)

        log.info("4/5 re-measuring the adapted model with the same code")
        after = self.measure_views(self.load(adapter), views, "aligned")
        if not state.is_main:
            return None
        log.info("5/5 report, tracking and release")
        tracking.log_views(run, "after", after)
        result = self.result(before, after, target, example_stats, calibration, t0)
        write_json(out / "alignment.json", result)
        bundle = release(out, adapter, result, self.align, self.model_args, self.training)
        tracking.log_result(run, result, before, after, bundle)
        if self.training.push_to_hub:
            push(bundle, self.training.hub_model_id, private=self.training.hub_private_repo)
        result["release"] = str(bundle)
        return result

    def result(self, before: dict, after: dict, target: float | None, example_stats: dict, calibration: list,
               t0: float) -> dict:
        """Each view's report (the primary one in OUTPUT_DIR/report, the others in report/VIEW) and what the run
        shows: before and after, the task's paired comparison (the guarantee when the method aimed at b*)."""
        result = {} if target is None else {"target_balance_point": target}
        for view in self.task.views:
            task = get_task(view)
            runs = {"base": before[view], "aligned": after[view]}
            for m in runs.values():
                write_json(Path(m.info["path"]) / "analysis.json", m.analysis)
            folder = self.out / "report" if view == self.primary.name else self.out / "report" / view
            summary = task.report(runs, folder, target, self.analysis_config)
            section = {"base": summary["runs"]["base"], "aligned": summary["runs"]["aligned"],
                       **{k: v for k, v in summary.items() if k not in ("runs", "warnings")}}
            if view == self.primary.name:
                result.update(section, training_examples=example_stats, calibration=calibration,
                              seconds=round(time.time() - t0, 1), config=self.config_record(),
                              warnings=summary.get("warnings", []))
                aimed = target if self.method.aims_balance_point else None
                result.update(task.compare(before[view], after[view], aimed, self.analysis_config,
                                           summary.get("paired")))
            else:
                result[view] = section
        return result

    def config_record(self) -> dict:
        """What the run was configured with: the method's and the model's settings and the training settings
        the user can change (as TrainingArguments writes them, tokens hidden)."""
        return {"align": asdict(self.align), "model": asdict(self.model_args), "training": self.training.to_dict(),
                "method": self.method.name, "command": started_with(), "prompt_example": self.prompt_example}


STARTED_WITH = "MODALITY_ALIGN_COMMAND"  # a recipe that launched itself passes its own command line down


def started_with() -> str:
    """The command line the user started this run with, as a shell would take it back."""
    if os.environ.get(STARTED_WITH):
        return os.environ[STARTED_WITH]
    program = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else Path(sys.argv[0]).name
    return shlex.join(["python", program, *sys.argv[1:]] if program.endswith(".py") else [program, *sys.argv[1:]])


def prompt_example(vlm: VLM, data) -> dict | None:
    """One real image + text prompt of the run's data, as the model is given it (the model card shows it)."""
    if not hasattr(data, "samples") or not {"question", "text_context"} <= set(data.samples.column_names):
        return None
    rows = data.samples.filter(lambda c: bool(c), input_columns="text_context").select(range(1))
    if not len(rows):
        return None
    row = rows[0]
    return {"question": row["question"], "text": row["text_context"], "image": "<image>",
            "prompt": vlm.prompt(row["question"], row["text_context"], with_image=True)}


def run_alignment(align: AlignArguments, model: ModelArguments, training: TrainingArguments) -> dict | None:
    check_inputs(align, model, training)
    return Recipe(align, model, training).run()
