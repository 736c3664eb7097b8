"""The settings of generated data, one default per task shared by every command that generates it (`python -m
data_gen`, `measure`, the recipes, the benchmarks), so a dataset one command makes is the one another would make.
Imports nothing: every command's --help shows them."""
from __future__ import annotations

# Sized for measuring, what these datasets are for: the recipe trains on 20 % of the groups, calibrates on 35 % and
# reports on 45 %, so a balance point's interval (it narrows with the square root of the groups) is as narrow as the
# groups allow
SPLIT_SHARES = {"train": 0.2, "validation": 0.35, "test": 0.45}
# The audio-visual recipe trains on most groups: asked-modality answers are learnt, not calibrated
AV_SPLIT_SHARES = {"train": 0.7, "validation": 0.1, "test": 0.2}

# task: (the side of its generated images in px, its split shares). The sides are the embedded organisms'; a real
# model's recipe config sets its own (e.g. 336)
TASK_DEFAULTS = {
    "colors": (64, SPLIT_SHARES), "attributes": (64, SPLIT_SHARES), "recognition": (64, SPLIT_SHARES),
    "recognition-attributes": (64, SPLIT_SHARES), "av": (32, AV_SPLIT_SHARES),
}


def _defaults(task: str) -> tuple[int, dict[str, float]]:
    if task not in TASK_DEFAULTS:
        raise ValueError(f"no generated data for task {task!r}; use one of {sorted(TASK_DEFAULTS)}")
    return TASK_DEFAULTS[task]


def image_size(task: str) -> int:
    """The default image side of `task`'s generated data, px."""
    return _defaults(task)[0]


def split_shares(task: str) -> dict[str, float]:
    """The default share of `task`'s generated groups in each split (train, validation, test)."""
    return dict(_defaults(task)[1])
