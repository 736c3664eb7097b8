"""python -m eval {score,measure,report,recognition,recognition-report,av,av-report}: score a model on a conflict dataset and
analyse it.

    python -m eval measure --model organism --data data/colors --output_dir runs/base
    python -m eval measure --model organism --adapter outputs/align-organism/release --data data/colors --output_dir runs/aligned
    python -m eval report --runs runs/base runs/aligned --output_dir reports/compare
    python -m eval recognition --model organism:recognition --data data/recognition --output_dir runs/recognition
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.cli import Command, run_commands
from data_gen.files import check_output_dir, read_json

from .analysis import AnalysisConfig
from .models.arguments import ModelArguments

# the measuring stack (torch, transformers, datasets) is imported by the command that runs, so --help answers at once


@dataclass
class ScoreArguments:
    output_dir: str = field(metadata={"help": "run directory (re-running the same command resumes it)"})
    data: str | None = field(default=None, metadata={
        "help": "a dataset written by `python -m data_gen`; default: --groups fresh groups of --task and "
                "--dataset_seed, generated into OUTPUT_DIR/data"})
    groups: int = field(default=100, metadata={"help": "groups to generate when no --data is given"})
    dataset_seed: int = field(default=0, metadata={
        "aliases": ["--data_seed"], "help": "seed of the generated groups (another seed than training's: all unseen)"})
    image_size: int | None = field(default=None, metadata={
        "help": "pixels of the generated images (default: the task's, 64; av 32)"})
    split: str = field(default="test", metadata={"help": "split(s), comma-separated, or 'all'"})
    task: str = field(default="colors", metadata={
        "help": "a registered task (eval.tasks): colors, attributes, jsonl, recognition, av, ..."})
    report_to: str = field(default="none", metadata={
        "help": "none | wandb: also log the measurement (headline numbers, following curve) as a W&B run"})
    rows: str = field(default="all", metadata={
        "help": "all | conflicts: score only the conflict rows, all the balance point reads (the recipe's eval_rows)"})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "inputs per forward pass"})
    shard_inputs: int = field(default=256, metadata={
        "help": "distinct inputs per resumable shard (about): the most a crash can lose"})
    lens: bool = field(default=True, metadata={"help": "record the logit lens (--no_lens skips it)"})
    share_prefix: bool = field(default=True, metadata={
        "help": "run each image's prefix once for all its prompts where the template puts the image first "
                "(docs/method.md, 'Shared image prefixes'); results equal whole prompts'"})


@dataclass
class ReportArguments:
    runs: list[str] = field(metadata={
        "help": "run directories written by `eval measure` or `eval score` (`eval recognition` for recognition-report)"})
    output_dir: str = field(metadata={"help": "where report.html, the PNGs and summary.json go"})
    names: list[str] | None = field(default=None, metadata={"help": "display names, one per run"})


@dataclass
class FollowingReportArguments(ReportArguments):
    """ReportArguments of runs with a following curve: two runs of the same conflicts are also compared as a pair."""
    target: float | None = field(default=None, metadata={
        "help": "the balance point the second run aimed at: the report states whether it lies inside the realized "
                "point's interval"})


@dataclass
class RecognitionArguments:
    data: str = field(metadata={"help": "a dataset written by `python -m data_gen recognition`"})
    output_dir: str = field(metadata={"help": "run directory: samples.parquet, analysis.json, figures, report.html"})
    split: str = field(default="test", metadata={"help": "split(s), comma-separated, or 'all'"})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    attention: bool = field(default=True, metadata={
        "help": "attention imbalance R per layer (one more forward with eager attention; --no_attention skips it)"})
    n_boot: int = field(default=1000, metadata={"help": "group-bootstrap resamples of the balanced accuracy (0: none)"})


@dataclass
class AVArguments:
    data: str = field(metadata={"help": "a dataset written by `python -m data_gen av`"})
    output_dir: str = field(metadata={"help": "run directory: samples.parquet, analysis.json"})
    split: str = field(default="test", metadata={"help": "split(s), comma-separated, or 'all'"})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "rows per forward pass"})
    attention: bool = field(default=True, metadata={
        "help": "attention mass on frames and sound per layer (one more forward, eager attention; --no_attention skips it)"})


@dataclass
class RecognitionReportArguments(ReportArguments):
    """ReportArguments over runs written by `eval recognition`."""
    n_boot: int = field(default=1000, metadata={"help": "group-bootstrap resamples of the balanced accuracy (0: none)"})


def load_split(path: str, split: str, kind: type | None = None):
    """A saved dataset (`kind`: ConflictData, the default, or AVData), restricted to `split` (comma-separated, or
    'all')."""
    from data_gen import ConflictData
    kind = kind or ConflictData
    data = kind.load(path)
    return data if split == "all" else data.split(split.split(","))


def data_of(args: ScoreArguments):
    """--data, or --groups groups of the task from the data cache (rendered by the first command that asks), in
    --split, with only the conflict rows under --rows conflicts."""
    from .prepare import cached_dataset
    from .tasks import get_task
    task = get_task(args.task)
    data = load_split(args.data, args.split, task.dataset) if args.data else \
        cached_dataset(task, args.groups, args.dataset_seed, args.image_size)
    if not args.data and args.split != "all":
        data = data.split(args.split.split(","))
    return data.conflicts() if args.rows == "conflicts" else data


def check_score_inputs(model: ModelArguments, args: ScoreArguments) -> None:
    """Everything `score` and `measure` are given, checked before any data is generated or the model loads."""
    from .models.vlm import check_model_args
    from .tasks import get_task
    task = get_task(args.task)
    if args.report_to not in ("none", "wandb"):
        raise ValueError(f"--report_to must be none or wandb, got {args.report_to!r}")
    if args.rows not in ("all", "conflicts"):
        raise ValueError(f"--rows must be all or conflicts, got {args.rows!r}")
    if args.rows == "conflicts" and not task.has_balance_point:
        raise ValueError(f"--rows conflicts keeps the rows a balance point reads; the {args.task} task has none: "
                         f"use --rows all")
    if args.per_device_eval_batch_size < 1:
        raise ValueError(f"--per_device_eval_batch_size must be >= 1, got {args.per_device_eval_batch_size}")
    check_output_dir(args.output_dir)
    if (Path(args.output_dir) / "run.json").exists():  # a run to resume: its record must be whole
        read_json(Path(args.output_dir) / "run.json", f"delete {args.output_dir} (or use another --output_dir) to "
                                                      f"score it again")
    check_model_args(model)
    if args.data:
        data = get_task(args.task).load(args.data)  # its files against their checksums
        if args.split != "all":
            data.split(args.split.split(","))  # a split it does not have is named with the ones it has


def score(model: ModelArguments, args: ScoreArguments, seed: int | None = None):
    from .models import load_from_args
    from .processes import holding
    from .tasks import get_task
    task = get_task(args.task)
    check_score_inputs(model, args)
    with holding(args.output_dir):
        data = data_of(args)
        task.check(data)
        return task.score(load_from_args(model), data, args.output_dir, args.per_device_eval_batch_size,
                          lens=args.lens, shard_inputs=args.shard_inputs, share_prefix=args.share_prefix, seed=seed)


def print_headline(res: dict, out: Path | None = None) -> None:
    from .tasks import get_task
    print(get_task("colors").describe(res))
    if out:
        print(f"analysis written to {out}")


def run_score(model: ModelArguments, args: ScoreArguments) -> int:
    table = score(model, args)
    if table is not None:  # None on the non-main processes under accelerate
        print(f"{len(table)} sample rows -> {Path(args.output_dir) / 'samples.parquet'}")
    return 0


def run_measure(model: ModelArguments, args: ScoreArguments, analysis: AnalysisConfig) -> int:
    from .api import measure
    from .processes import holding
    from .tasks import get_task
    task = get_task(args.task)
    options = dict(lens=args.lens, shard_inputs=args.shard_inputs, share_prefix=args.share_prefix) \
        if task.has_balance_point else {}
    check_score_inputs(model, args)
    with holding(args.output_dir):
        result = measure(model, data_of(args), task=args.task, split="all",
                         batch_size=args.per_device_eval_batch_size, analysis=analysis, output_dir=args.output_dir,
                         name=Path(args.output_dir).name, **options)
    if result is None:
        return 0
    if args.report_to == "wandb":
        from .tracking import log_measurement
        log_measurement(result, {"model": vars(model), "measure": vars(args), "analysis": vars(analysis)},
                        Path(args.output_dir).name)
    print(f"{len(result.samples)} sample rows -> {Path(args.output_dir) / 'samples.parquet'}")
    print(task.describe(result.analysis))
    print(f"analysis written to {Path(args.output_dir) / 'analysis.json'}")
    return 0


def run_report(args: FollowingReportArguments, analysis: AnalysisConfig) -> int:
    from .report import write_report
    summary = write_report(args.runs, args.output_dir, analysis, args.names, target=args.target)
    if summary.get("paired"):
        print(summary["paired"]["description"])
    for w in summary["warnings"]:
        print(f"warning: {w}")
    print(f"report: {Path(args.output_dir) / 'report.html'}")
    return 0


def run_recognition(model: ModelArguments, args: RecognitionArguments) -> int:
    return measure_and_report(model, args, "recognition", AnalysisConfig(n_boot=args.n_boot))


def run_av(model: ModelArguments, args: AVArguments) -> int:
    return measure_and_report(model, args, "av")


def measure_and_report(model: ModelArguments, args, task: str, analysis: AnalysisConfig | None = None) -> int:
    """`task`'s measurement of args.data, its report in the run folder beside the table, and its console lines."""
    from .api import measure
    from .tasks import get_task
    out = Path(args.output_dir)
    result = measure(model, args.data, task=task, split=args.split, batch_size=args.per_device_eval_batch_size,
                     analysis=analysis, output_dir=out, name=out.name, attention=args.attention)
    result.report(out)
    print(get_task(task).describe(result.analysis))
    print(f"{len(result.samples)} rows -> {out / 'samples.parquet'}; report {out / 'report.html'}")
    return 0


def run_recognition_report(args: RecognitionReportArguments) -> int:
    from .recognition import describe
    from .recognition_report import describe_imbalance_change, write_recognition_report
    summary = write_recognition_report(args.runs, args.output_dir, args.names, n_boot=args.n_boot)
    for name, res in summary["runs"].items():
        print(f"{name}:\n{describe(res)}")
    if summary.get("imbalance_change"):
        print(describe_imbalance_change(summary["imbalance_change"], list(summary["runs"])))
    print(f"report: {Path(args.output_dir) / 'report.html'}")
    return 0


def run_av_report(args: ReportArguments) -> int:
    from .av import analyze_av, describe_av
    from .av_report import write_av_report
    from .report import load_run
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise ValueError(f"{len(names)} names for {len(args.runs)} runs; give one name per run")
    results = {name: analyze_av(load_run(run)[0]) for name, run in zip(names, args.runs)}
    write_av_report(results, args.output_dir)
    for name, res in results.items():
        print(f"{name}:\n{describe_av(res)}")
    print(f"report: {Path(args.output_dir) / 'report.html'}")
    return 0


COMMANDS = {
    "score": Command("score a dataset into a per-sample table", [ModelArguments, ScoreArguments], run_score),
    "measure": Command("score a dataset and analyse it (balance point, TFR/VFR, oscillation)",
                       [ModelArguments, ScoreArguments, AnalysisConfig], run_measure),
    "report": Command("figures, report.html and summary.json for one or more runs; two runs of the same conflicts "
                      "also as a pair (the shift, and the guarantee given --target)",
                      [FollowingReportArguments, AnalysisConfig], run_report),
    "recognition": Command("ask whether the evidence contradicts itself; recognition by evidence kind and "
                           "attention imbalance R by layer", [ModelArguments, RecognitionArguments], run_recognition),
    "av": Command("audio-visual conflicts: accuracy per condition x asked modality, attention mass on frames vs "
                  "sound per layer (Cohen's d)", [ModelArguments, AVArguments], run_av),
    "recognition-report": Command("figures, report.html and summary.json for recognition runs (e.g. before/after)",
                                  [RecognitionReportArguments], run_recognition_report),
    "av-report": Command("av.png, report.html and summary.json for audio-visual runs side by side (e.g. before/after)",
                         [ReportArguments], run_av_report),
}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_commands(prog or "python -m eval", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
