"""The command-line runner every entry point uses: `prog COMMAND [--config file.yaml] [--flag value ...]`.

Each command is parsed by TRL's `TrlParser` over its dataclasses, so `--help` lists every flag with
its default, dashes and underscores are both accepted, and a YAML file given with `--config` sets
the same keys as the flags (the command line wins). It lives in `data_gen`, the bottom layer, so
that every layer above can use it. Errors in the input are one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

USAGE_ERRORS = (ValueError, OSError)  # bad input: a value, a path, a hub id


@dataclass
class Command:
    help: str
    dataclasses: Sequence[type]
    run: Callable[..., int | None]  # called with one instance per dataclass, in order


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The default after every flag that has one, unless its help states it; the description (a module docstring)
    keeps its lines."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or text.startswith("the same as --") or action.default is None:
            return text
        return super()._get_help_string(action)


# a dataclass's flags under their own heading, after the command's own (the Trainer's 100+ flags last)
HEADINGS = {"TrainingArguments": "training (transformers TrainingArguments, passed to the Trainer)"}


def parse(dataclass_types: Sequence[type], argv: list[str] | None, prog: str, description: str | None = None,
          defaults: dict | None = None) -> tuple:
    """One instance per dataclass from `[--config FILE.yaml] [--flag value ...]`; `defaults` override the fields'."""
    from trl import TrlParser
    parser = TrlParser(list(dataclass_types), prog=prog, description=description, formatter_class=HelpFormatter)
    for action in parser._actions:  # dict fields are registered with type=dict, which cannot read a string
        if action.type is dict:  # (transformers#48030): read them as JSON
            action.type = json_object
        elif getattr(action.type, "__name__", None) == "dict":  # `dict | None`: TRL's wrapper that reads none/null
            action.type = optional_json_object
        if any(o.startswith("--no_") for o in action.option_strings) and action.const is False:
            action.help = f"the same as --{action.dest} false"
    for dtype in dataclass_types:
        if dtype.__name__ in HEADINGS:
            group_under(parser, {f.name for f in dataclasses.fields(dtype)}, HEADINGS[dtype.__name__])
    parser.set_defaults(**(defaults or {}))
    return parser.parse_args_and_config(argv)


def group_under(parser: argparse.ArgumentParser, dests: set[str], heading: str) -> None:
    """Move the flags of `dests` out of the default group into a group of their own (shown last in --help)."""
    group = parser.add_argument_group(heading)
    for container in parser._action_groups:
        if container is group:
            continue
        moved = [a for a in container._group_actions if a.dest in dests]
        container._group_actions[:] = [a for a in container._group_actions if a.dest not in dests]
        group._group_actions.extend(moved)


def optional_json_object(text: str) -> dict | None:
    return None if text.lower() in ("none", "null") else json_object(text)


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}): {text!r}; write e.g. '{{\"key\": 0.5}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def run_commands(prog: str, description: str, commands: dict[str, Command], argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"usage: {prog} {{{','.join(commands)}}} [--help] [--config FILE.yaml] [--flag value ...]", "",
                 description.strip(), "", "commands:"]
        width = max(map(len, commands)) + 2
        lines += [f"  {name:<{width}}{c.help}" for name, c in commands.items()]
        if argv and argv[0] not in ("-h", "--help"):
            print("\n".join(lines[:1]) + f"\nerror: unknown command {argv[0]!r}; choose one of {list(commands)}",
                  file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    command = commands[name]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        parsed = parse(command.dataclasses, rest, f"{prog} {name}", command.help)
        return command.run(*parsed) or 0
    except USAGE_ERRORS as e:
        return usage_error(e)


def usage_error(e: Exception) -> int:
    """One line on stderr (no traceback) and exit code 2: the input was wrong, not the program. Under a launcher
    every process finds the same error; only the first one prints it."""
    if int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0) == 0:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
