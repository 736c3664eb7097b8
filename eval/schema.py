"""The per-sample table's schema: one check of every column the analysis reads, before it reads them.

Each failure names the column, what it holds and what was expected, so a hand-made or imported
table fails with a reason instead of a bare KeyError or a silently wrong number.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FIX = "produce the table with `python -m eval score` or `python -m eval measure`"
KEYS = ("id", "group", "condition")  # identify a row and its cluster
TOKENS = ("top1_v", "top1_t", "top1_m", "token_visual", "token_text")  # token ids (NaN where a condition is absent)
ANSWERS = ("answer_visual", "answer_text", "pred_v", "pred_t", "pred_m")  # whole answers (None where absent)
ENTROPIES = ("entropy_v", "entropy_t", "entropy_m", "candidate_entropy_v", "candidate_entropy_t")  # nats, >= 0
SHARES = ("one_minus_max_p_v", "one_minus_max_p_t", "top2_margin_v", "top2_margin_t")  # in [0, 1]
REQUIRED = KEYS + ANSWERS + ("token_visual", "token_text", "entropy_v", "entropy_t")
LIST_COLUMNS = {"lens_top1": "integer token ids, one per layer", "lens_diff": "floats, one per layer"}


def _numeric(table: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """The column as floats; numbers stored as text are refused, not guessed at."""
    values = table[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        bad = next((v for v in values if not _is_number(v)), None)
        if bad is not None or pd.api.types.is_bool_dtype(values):
            raise ValueError(f"column {column!r} holds {type(bad).__name__} values such as {bad!r}; expected {what}; {FIX}")
    return values.to_numpy(dtype=float, na_value=np.nan)


def _is_nan(v) -> bool:
    return isinstance(v, float) and np.isnan(v)


def _is_number(v) -> bool:
    return v is None or isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _label_kind(v) -> str:
    """A group label's kind: integers of every width are one kind, as are strings."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return "integer"
    return "string" if isinstance(v, str) else type(v).__name__


def check_table(table: pd.DataFrame) -> None:
    """Raise ValueError naming the first column that is missing, mistyped, out of range or duplicated."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"the per-sample table lacks columns {missing}; {FIX}")
    if table.empty:
        raise ValueError("the per-sample table is empty: nothing was scored (check --data and --split)")
    duplicated = table.id[table.id.duplicated()]
    if len(duplicated):
        raise ValueError(f"column 'id' has {len(duplicated)} duplicate sample ids (e.g. {duplicated.iloc[0]!r}); "
                         f"each row must be one sample")
    kinds = {_label_kind(v) for v in table.group if not (v is None or _is_nan(v))}
    if len(kinds) > 1:
        examples = {k: next(v for v in table.group if _label_kind(v) == k) for k in sorted(kinds)}
        raise ValueError(f"column 'group' mixes {' and '.join(sorted(kinds))} labels (e.g. "
                         f"{', '.join(repr(v) for v in examples.values())}); give every group label one type, all "
                         f"strings or all integers")
    for column in ANSWERS:
        bad = next((v for v in table[column] if not (v is None or isinstance(v, str) or _is_nan(v))), None)
        if bad is not None:
            raise ValueError(f"column {column!r} holds {type(bad).__name__} values such as {bad!r}; expected answer "
                             f"strings; {FIX}")
        loose = next((v for v in table[column] if isinstance(v, str) and v != v.strip().casefold()), None)
        if loose is not None:
            log.warning("column %r holds answers with capitals or surrounding spaces (e.g. %r); answers are compared "
                        "without them", column, loose)
    for column in [c for c in TOKENS if c in table]:
        values = _numeric(table, column, "integer token ids")
        finite = values[~np.isnan(values)]
        if (finite != np.round(finite)).any() or (finite < 0).any():
            raise ValueError(f"column {column!r} holds non-integer or negative values; expected token ids")
    for column in [c for c in ENTROPIES if c in table]:
        values = _numeric(table, column, "entropies in nats (floats >= 0)")
        negative = values[values < 0]
        if len(negative):
            raise ValueError(f"column {column!r} has {len(negative)} negative values (min {negative.min():.3g}); "
                             f"entropies are >= 0 nats")
    for column in [c for c in SHARES if c in table]:
        values = _numeric(table, column, "probabilities in [0, 1]")
        outside = values[(values < 0) | (values > 1)]
        if len(outside):
            raise ValueError(f"column {column!r} has {len(outside)} values outside [0, 1] (e.g. {outside[0]:.3g})")
    for column, what in LIST_COLUMNS.items():
        if column not in table:
            continue
        cells = [c for c in table[column] if c is not None and not _is_nan(c)]
        not_lists = [c for c in cells if isinstance(c, str) or not hasattr(c, "__len__")]
        if not_lists:
            raise ValueError(f"column {column!r} holds {type(not_lists[0]).__name__} cells; expected lists of {what}")
        lengths = {len(c) for c in cells}
        if len(lengths) > 1:
            raise ValueError(f"column {column!r} has lists of different lengths {sorted(lengths)}; expected one per layer")
        kinds = {type(v) for c in cells[:50] for v in c}
        integer = column == "lens_top1"
        if any(not issubclass(k, (np.integer, int) if integer else (np.number, int, float)) or issubclass(k, bool)
               for k in kinds):
            raise ValueError(f"column {column!r} holds {sorted(k.__name__ for k in kinds)} items; expected {what}")
