"""python -m align.organism {build,recognition,av,end-of-turn,evaluate}: build a model organism, or check its quality
bars."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from data_gen.cli import Command, run_commands
from eval.models import ModelArguments

from . import __doc__ as PACKAGE_DOC
from .config import AVOrganismConfig, EndOfTurnConfig, OrganismConfig, RecognitionOrganismConfig

# each command imports its builder when it runs: --help loads only the configurations


@dataclass
class BuildArguments:
    output_dir: str = field(metadata={"help": "where the organism is written (model, processor, organism.json)"})


@dataclass
class EvaluateArguments:
    data: str | None = field(default=None, metadata={
        "help": "a saved dataset whose test split to score (default: regenerate the organism's own test groups)"})
    output_dir: str | None = field(default=None, metadata={
        "help": "where the scores go (default: outputs/organism-evaluation/NAME under the working directory)"})
    per_device_eval_batch_size: int = 64
    groups: int | None = field(default=None, metadata={"help": "colour groups to generate (default: the build's)"})
    dataset_seed: int | None = field(default=None, metadata={
        "aliases": ["--data_seed"],
        "help": "seed of the generated groups (default: the build's, whose test split is held out; another seed: "
                "every group is unseen, all are scored)"})


@dataclass
class EndOfTurnArguments:
    output_dir: str | None = field(default=None, metadata={
        "help": "where the taught organism is written (default: over the model's own folder)"})


def run_build(args: BuildArguments, cfg: OrganismConfig) -> int:
    from .build import build
    print(f"organism written to {build(cfg, args.output_dir)}")
    return 0


def run_recognition(args: BuildArguments, cfg: RecognitionOrganismConfig) -> int:
    from .recognition import build_recognition
    print(f"recognition organism written to {build_recognition(cfg, args.output_dir)}")
    return 0


def run_av(args: BuildArguments, cfg: AVOrganismConfig) -> int:
    from .av import build_av
    print(f"AV organism written to {build_av(cfg, args.output_dir)}")
    return 0


def run_end_of_turn(model: ModelArguments, args: EndOfTurnArguments, cfg: EndOfTurnConfig) -> int:
    from .end_of_turn import add_end_of_turn
    out, report = add_end_of_turn(model.model_name_or_path, args.output_dir, cfg)
    print(f"end of turn: {report['one_word_answers']:.1%} of greedy answers are one word and the end of turn "
          f"(written to {out})")
    return 0


def run_evaluate(model: ModelArguments, args: EvaluateArguments) -> int:
    from eval.models import family_for
    from eval.models.vlm import check_model

    from .av import evaluate_av
    from .quality import evaluate, print_quality
    if family_for(check_model(model.model_name_or_path)).reads_audio:  # the AV organism: fresh clips, its own bars
        report = evaluate_av(model.model_name_or_path, args.groups or 200,
                             7 if args.dataset_seed is None else args.dataset_seed, args.output_dir,
                             args.per_device_eval_batch_size)
        for name, ok in report["checks"].items():
            print(f"[{'PASS' if ok else 'FAIL'}] {name}")
        return 0 if all(report["checks"].values()) else 1
    report = evaluate(model.model_name_or_path, args.data, args.output_dir, args.per_device_eval_batch_size,
                      args.groups, args.dataset_seed)
    return 0 if print_quality(report) else 1


COMMANDS = {
    "build": Command("train an organism from scratch (10 to 12 minutes on 2 cores)", [BuildArguments, OrganismConfig],
                     run_build),
    "recognition": Command("teach an organism to recognise contradictions in unimodal contexts only (minutes)",
                           [BuildArguments, RecognitionOrganismConfig], run_recognition),
    "av": Command("train the audio-visual organism (a tiny Qwen2.5-Omni thinker) from scratch (minutes)",
                  [BuildArguments, AVOrganismConfig], run_av),
    "end-of-turn": Command("teach a built organism to end its answer after one word, its scores unchanged (a minute)",
                           [ModelArguments, EndOfTurnArguments, EndOfTurnConfig], run_end_of_turn),
    "evaluate": Command("score an organism's held-out test groups and print its quality bars",
                        [ModelArguments, EvaluateArguments], run_evaluate),
}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_commands(prog or "python -m align.organism", PACKAGE_DOC, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
