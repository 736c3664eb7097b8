"""Tasks: what a measurement measures, registered by name (`colors`, `attributes`, `jsonl`, `recognition`, `av`).

A task is one unit: its data generator, the conditions it scores (the per-sample table), its analysis of that
table, its console lines, its report section and its default recipe config. `measure(..., task=NAME)`, the
`measure` command and the recipe read a task only through this interface. Adding a task means adding a data
generator to `data_gen/` and one module here that defines a `Task` subclass decorated with `@register_task`
(a task defined elsewhere, e.g. in a notebook or a test, registers the same way).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from data_gen import ConflictData
from data_gen import defaults
from data_gen.registry import Registry

class Task(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    dataset: ClassVar[type] = ConflictData  # what `load` reads and `generate` returns
    # the recipe config that aligns a model on this task (recipes/configs/...), None where no recipe trains it
    recipe_config: ClassVar[str | None] = None
    # the analysis has a following curve and a balance point the recipe can aim at
    has_balance_point: ClassVar[bool] = False
    # the tasks an alignment run on this task measures before and after: the first one's data is generated (or
    # given), the others are derived from it (`derive`); its own name alone by default
    recipe_views: ClassVar[tuple[str, ...] | None] = None
    # every process of an `accelerate launch` scores its share; otherwise the main process scores alone
    parallel_scoring: ClassVar[bool] = False

    @property
    def image_size(self) -> int:
        """The side of generated images every command uses for this task unless told otherwise."""
        return defaults.image_size(self.name if self.name in defaults.TASK_DEFAULTS else "colors")

    @property
    def split_shares(self) -> dict[str, float]:
        """Each split's share of generated groups, for every command unless told otherwise."""
        return defaults.split_shares(self.name if self.name in defaults.TASK_DEFAULTS else "colors")

    @property
    def views(self) -> tuple[str, ...]:
        return self.recipe_views or (self.name,)

    def derive(self, data):
        """This task's data built from another task's dataset (its groups, splits and images)."""
        raise ValueError(f"the {self.name} task cannot be derived from another task's data")

    def generate(self, groups: int, seed: int = 0, size: int | None = None, split_shares: dict | None = None):
        """`groups` fresh groups of this task's data."""
        raise ValueError(f"the {self.name} task has no generator; pass data (a dataset folder)")

    def load(self, path: str | Path):
        return self.dataset.load(path)

    def check(self, data) -> None:
        """Raise a ValueError naming the fix when `data` is not this task's kind of dataset."""

    @abstractmethod
    def score(self, vlm, data, out: str | Path | None, batch_size: int, **options) -> pd.DataFrame | None:
        """The per-sample table of `data` (written to out/samples.parquet when `out` is given; None on the
        processes other than the main one under `accelerate launch`)."""

    @abstractmethod
    def analyze(self, table: pd.DataFrame, config: Any = None) -> dict:
        """Every headline number, JSON-ready, from the per-sample table alone."""

    @abstractmethod
    def describe(self, result: dict) -> str:
        """The console lines of one analysis."""

    @abstractmethod
    def report(self, runs: dict[str, Any], out: str | Path, target: float | None = None, config: Any = None) -> dict:
        """Figures, report.html and summary.json in `out`; `runs` maps a run's name to an object with
        `.analysis`, `.samples` and `.info` (a Measurement). Returns the summary, with `runs` (per name)."""

    def summary(self, prefix: str, analysis: dict) -> dict[str, Any]:
        """The headline numbers of one analysis, flat and keyed `prefix/...` (W&B's run summary); by default its
        top-level numbers."""
        return {f"{prefix}/{k}": v for k, v in analysis.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def compare(self, before: Any, after: Any, target: float | None = None, config: Any = None,
                paired: dict | None = None) -> dict:
        """What a before/after pair of measurements of the same groups shows, beyond each alone (JSON-ready).
        `paired`: the report's paired comparison of the same two runs (`report(...)["paired"]`), reused where it
        already holds what this computes."""
        return {}


TASK_REGISTRY = Registry("task", "eval.tasks", unknown=(
    "task {name!r} is unknown; use one of {names}, or register one with eval.tasks.register_task"))
TASKS: dict[str, type[Task]] = TASK_REGISTRY.units
register_task = TASK_REGISTRY.register
_discover = TASK_REGISTRY.discover
supported_tasks = TASK_REGISTRY.names


def get_task(name: str) -> Task:
    return TASK_REGISTRY.get(name)
