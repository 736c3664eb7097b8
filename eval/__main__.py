"""python -m eval {score,measure,report,recognition,recognition-report,av,av-report}: score a model on a conflict dataset and
analyse it.

    python -m eval measure --model organism --data data/colors --output_dir runs/base
    python -m eval measure --model organism --adapter outputs/align-organism/release --data data/colors --output_dir runs/aligned
    python -m eval report --runs runs/base runs/aligned --output_dir reports/compare
    python -m eval recognition --model organism:recognition --data data/recognition --output_dir runs/recognition
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_gen import ConflictData
from data_gen.av import AVData
from data_gen.cli import Command, run_commands
from .models import ModelArguments, load_from_args

from .analysis import AnalysisConfig
from .api import measure
from .av import analyze_av, describe_av
from .av_report import write_av_report
from .av_scoring import AVScoreConfig, score_av
from .recognition import RecognitionConfig, analyze_recognition, describe, score_recognition
from .recognition_report import describe_imbalance_change, write_recognition_report
from .report import load_run, write_report
from .scoring import ScoreConfig, generate_once, score_dataset


@dataclass
class ScoreArguments:
    output_dir: str = field(metadata={"help": "run directory (re-running the same command resumes it)"})
    data: str | None = field(default=None, metadata={
        "help": "a dataset written by `python -m data_gen`; default: --groups fresh colour groups of --dataset_seed, "
                "generated into OUTPUT_DIR/data"})
    groups: int = field(default=100, metadata={"help": "colour groups to generate when no --data is given"})
    dataset_seed: int = field(default=0, metadata={
        "aliases": ["--data_seed"], "help": "seed of the generated groups (another seed than training's: all unseen)"})
    image_size: int = field(default=64, metadata={"help": "pixels of the generated images"})
    split: str = field(default="test", metadata={"help": "split(s), comma-separated, or 'all'"})
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


def load_split(path: str, split: str, kind: type = ConflictData):
    """A saved dataset (`kind`: ConflictData or AVData), restricted to `split` (comma-separated, or 'all')."""
    data = kind.load(path)
    return data if split == "all" else data.split(split.split(","))


def score(model: ModelArguments, args: ScoreArguments, seed: int | None = None):
    data = load_split(args.data or str(generate_once(Path(args.output_dir) / "data", args.groups, args.dataset_seed,
                                                     args.image_size)), args.split)
    if "evidence" in data.samples.column_names:
        raise ValueError(f"{args.data} is a conflict-recognition dataset; measure it with "
                         f"`python -m eval recognition --data {args.data} ...`")
    config = ScoreConfig(batch_size=args.per_device_eval_batch_size, shard_inputs=args.shard_inputs, lens=args.lens,
                         share_prefix=args.share_prefix)
    return score_dataset(load_from_args(model), data, args.output_dir, config, seed=seed)


def print_headline(res: dict, out: Path | None = None) -> None:
    bp = res["balance_point"]
    f = res["following"]
    print(f"balance point: {bp['description']}")
    if f["tfr"] is not None:
        mono = res["monotonicity"]
        print(f"TFR {f['tfr']:.3f} [{f['tfr_ci'][0]:.3f}, {f['tfr_ci'][1]:.3f}]   VFR {f['vfr']:.3f}   "
              f"analysed {res['counts']['analysed']} conflicts, {f['n']} text- or vision-following   "
              f"monotonicity (Spearman) {'n/a' if mono is None or mono != mono else f'{mono:+.2f}'}")
    osc = res.get("oscillation")
    if osc and osc["ambiguous"]["mean"] is not None and osc["clear"]["mean"] is not None:
        print(f"oscillation: ambiguous {osc['ambiguous']['mean']:.2f} (n={osc['ambiguous']['n']}), "
              f"clear {osc['clear']['mean']:.2f} (n={osc['clear']['n']})")
    if out:
        print(f"analysis written to {out}")


def run_score(model: ModelArguments, args: ScoreArguments) -> int:
    table = score(model, args)
    if table is not None:  # None on the non-main processes under accelerate
        print(f"{len(table)} sample rows -> {Path(args.output_dir) / 'samples.parquet'}")
    return 0


def run_measure(model: ModelArguments, args: ScoreArguments, analysis: AnalysisConfig) -> int:
    data = args.data or generate_once(Path(args.output_dir) / "data", args.groups, args.dataset_seed, args.image_size)
    result = measure(load_from_args(model), data, split=args.split, batch_size=args.per_device_eval_batch_size,
                     lens=args.lens, analysis=analysis, output_dir=args.output_dir, shard_inputs=args.shard_inputs,
                     share_prefix=args.share_prefix)
    if result is None:
        return 0
    print(f"{len(result.samples)} sample rows -> {Path(args.output_dir) / 'samples.parquet'}")
    print_headline(result.analysis, Path(args.output_dir) / "analysis.json")
    return 0


def run_report(args: ReportArguments, analysis: AnalysisConfig) -> int:
    summary = write_report(args.runs, args.output_dir, analysis, args.names)
    for w in summary["warnings"]:
        print(f"warning: {w}")
    print(f"report: {Path(args.output_dir) / 'report.html'}")
    return 0


def run_recognition(model: ModelArguments, args: RecognitionArguments) -> int:
    data = load_split(args.data, args.split)
    table = score_recognition(load_from_args(model), data, args.output_dir,
                              RecognitionConfig(batch_size=args.per_device_eval_batch_size, attention=args.attention))
    res = analyze_recognition(table, args.n_boot)
    write_recognition_report([args.output_dir], args.output_dir, [Path(args.output_dir).name],
                             {Path(args.output_dir).name: res})
    print(describe(res))
    print(f"{len(table)} rows -> {Path(args.output_dir) / 'samples.parquet'}; report {Path(args.output_dir) / 'report.html'}")
    return 0


def run_av(model: ModelArguments, args: AVArguments) -> int:
    data = load_split(args.data, args.split, AVData)
    table = score_av(load_from_args(model), data, args.output_dir,
                     AVScoreConfig(batch_size=args.per_device_eval_batch_size, attention=args.attention))
    res = analyze_av(table)
    (Path(args.output_dir) / "analysis.json").write_text(json.dumps(res, indent=2, default=float))
    write_av_report({Path(args.output_dir).name: res}, args.output_dir)  # av.png, summary.json, report.html
    print(describe_av(res))
    print(f"{len(table)} rows -> {Path(args.output_dir) / 'samples.parquet'}; report {Path(args.output_dir) / 'report.html'}")
    return 0


def run_recognition_report(args: RecognitionReportArguments) -> int:
    summary = write_recognition_report(args.runs, args.output_dir, args.names, n_boot=args.n_boot)
    for name, res in summary["runs"].items():
        print(f"{name}:\n{describe(res)}")
    if summary.get("imbalance_change"):
        print(describe_imbalance_change(summary["imbalance_change"], list(summary["runs"])))
    print(f"report: {Path(args.output_dir) / 'report.html'}")
    return 0


def run_av_report(args: ReportArguments) -> int:
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
    "report": Command("figures, report.html and summary.json for one or more runs", [ReportArguments, AnalysisConfig],
                      run_report),
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
