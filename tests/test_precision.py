"""The precision table: targets x training seeds, each adapter measured on a fresh data seed."""
import json
import logging
import runpy
from pathlib import Path

import pytest

from align.precision import (PrecisionArguments, describe_summary, format_table, plot_precision, precision_row,
                             precision_summary)

ROOT = Path(__file__).resolve().parents[1]


def _guarantee(target, realized, half_width=0.1):
    ci = None if realized is None else (realized - half_width, realized + half_width)
    return {"target": target, "realized": realized, "realized_ci": ci,
            "target_in_interval": ci is not None and ci[0] <= target <= ci[1],
            "miss": None if realized is None else realized - target, "shift": -0.5, "shift_ci": (-0.7, -0.3)}


def test_precision_rows_and_summary_by_hand(tmp_path):
    p = PrecisionArguments(targets=[0.0, 0.5], data_seeds=[0], tolerance=0.15, accuracy_tolerance=0.02)
    base = {"visual": 0.50, "text": 0.98}
    rows = [
        precision_row(0, 0.0, _guarantee(0.0, 0.10), base, {"visual": 0.49, "text": 0.97}, 60.0, p),  # lands, kept
        precision_row(0, 0.5, _guarantee(0.5, 0.70, 0.25), base, {"visual": 0.50, "text": 0.95}, 61.0, p),  # misses
        precision_row(1, 0.5, _guarantee(0.5, None), base, {"visual": 0.47, "text": 0.98}, None, p),  # no crossing
    ]
    assert [r["lands"] for r in rows] == [True, False, False]
    assert [r["accuracy_kept"] for r in rows] == [True, False, False]  # text fell 3 points; image 3 points
    assert [r["target_in_interval"] for r in rows] == [True, True, False]
    assert rows[0]["miss"] == pytest.approx(0.10) and rows[2]["ci_low"] is None
    s = precision_summary(rows, p)
    assert (s["runs"], s["landed"], s["accuracy_kept"], s["target_in_interval"]) == (3, 1, 1, 2)
    assert s["mean_abs_miss"] == pytest.approx((0.10 + 0.20) / 2)  # runs with no crossing have no miss
    assert s["mean_half_width"] == pytest.approx((0.1 + 0.25) / 2)
    assert "1 of 3 runs landed within ±0.15" in describe_summary(s)
    text = format_table(rows)
    assert "NO" in text and "(dropped)" in text and "none" in text
    assert plot_precision(rows, p.tolerance, tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs, needle", [
    ({"data_seeds": [0, 7], "fresh_seed": 7}, "fresh_seed 7 is also a training seed"),
    ({"targets": []}, "at least one value"),
    ({"fresh_groups": 3}, "fresh_groups must be >= 10"),
])
def test_precision_arguments_refuse_what_would_mislead(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PrecisionArguments(**kwargs)


def test_precision_command_refuses_a_training_seed_as_the_fresh_seed(capsys):
    main = runpy.run_path(str(ROOT / "recipes" / "precision_table.py"))["main"]  # in-process: no 9 s of imports
    assert main(["--data_seeds", "0", "3", "--fresh_seed", "3"]) == 2
    assert "fresh_seed 3 is also a training seed" in capsys.readouterr().err


def test_base_scores_are_reused_from_any_finished_target_of_the_seed(tmp_path):
    """A later command with other --targets still finds the seed's base scores; unfinished scores are not copied."""
    from transformers import TrainingArguments
    from align.arguments import AlignArguments
    from align.precision import PrecisionRuns
    from eval.models import ModelArguments
    runs = PrecisionRuns(PrecisionArguments(targets=[1.0], data_seeds=[0]), AlignArguments(), ModelArguments(),
                         TrainingArguments(output_dir=str(tmp_path)))
    (tmp_path / "seed-0" / "b+0.50" / "runs" / "base").mkdir(parents=True)  # interrupted: shards, no table
    for name in ("base", "base_train"):
        done = tmp_path / "seed-0" / "b-1.00" / "runs" / name
        done.mkdir(parents=True)
        (done / "samples.parquet").write_text(name)
    runs.reuse_base_scores(0, 1.0)
    copied = tmp_path / "seed-0" / "b+1.00" / "runs"
    assert [(copied / n / "samples.parquet").read_text() for n in ("base", "base_train")] == ["base", "base_train"]
    runs.reuse_base_scores(1, 1.0)  # another seed's scores are never taken
    assert not (tmp_path / "seed-1").exists()


@pytest.mark.slow
def test_precision_table_end_to_end_reuses_base_scores_and_resumes(tmp_path, caplog):
    """Two targets of one seed on the organism (small budget): the second run resumes the first's base scores
    instead of scoring again, every adapter is measured on the fresh groups, and a re-run trains nothing."""
    from transformers import TrainingArguments
    from align.arguments import TRAINING_DEFAULTS, AlignArguments
    from align.precision import run_precision
    from data_gen.cli import parse
    from eval.models import ModelArguments
    out = tmp_path / "precision"
    argv = ["--targets", "0", "0.5", "--data_seeds", "0", "--fresh_seed", "5", "--fresh_groups", "12",
            "--groups", "40", "--split_shares", '{"train": 0.7, "validation": 0.1, "test": 0.2}', "--max_steps", "2",
            "--per_device_train_batch_size", "8", "--n_boot", "100",
            "--per_device_eval_batch_size", "64", "--dtype", "float32", "--calibration_rounds", "0",
            "--report_to", "none", "--output_dir", str(out)]
    parsed = parse([PrecisionArguments, AlignArguments, ModelArguments, TrainingArguments], argv, "precision", None,
                   TRAINING_DEFAULTS)
    with caplog.at_level(logging.INFO):
        result = run_precision(*parsed)
    rows = result["rows"]
    assert [(r["data_seed"], r["target"]) for r in rows] == [(0, 0.0), (0, 0.5)]
    assert all(r["seconds"] > 0 and r["accuracy_visual_base"] == rows[0]["accuracy_visual_base"] for r in rows)
    # the second target's recipe found the seed's base scores in place (the first's, copied) and scored nothing
    second = out / "seed-0" / "b+0.50" / "runs"
    assert (second / "base" / "samples.parquet").read_bytes() == (out / "seed-0" / "b+0.00" / "runs" / "base" /
                                                                  "samples.parquet").read_bytes()
    assert sum("resuming" in m and "shards already scored" in m for m in caplog.messages) >= 2  # base, base_train
    # both adapters scored on the same fresh groups (all of them, a seed no run trained on)
    fresh = [json.loads((out / "seed-0" / b / "fresh" / "run.json").read_text()) for b in ("b+0.00", "b+0.50")]
    assert fresh[0]["dataset_fingerprint"] == fresh[1]["dataset_fingerprint"]
    assert fresh[0]["dataset_info"]["seed"] == 5 and fresh[0]["model"] != fresh[1]["model"]
    stored = json.loads((out / "precision.json").read_text())
    assert stored["summary"]["runs"] == 2 and (out / "precision.png").exists() and (out / "precision.csv").exists()
    # a re-run reads the finished runs back: nothing is trained again, the table is the same
    record = out / "seed-0" / "b+0.00" / "alignment.json"
    stamp = record.stat().st_mtime_ns
    again = run_precision(*parse([PrecisionArguments, AlignArguments, ModelArguments, TrainingArguments], argv,
                                 "precision", None, TRAINING_DEFAULTS))
    assert record.stat().st_mtime_ns == stamp
    assert [r["realized"] for r in again["rows"]] == [r["realized"] for r in rows]


def test_precision_table_is_a_wandb_run_of_its_own(tmp_path, monkeypatch):
    """With W&B among report_to the table, its plot and the counts land in one run (job type precision); without it,
    nothing is opened."""
    from dataclasses import asdict
    from types import SimpleNamespace
    from align.tracking import log_precision
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    p = PrecisionArguments(targets=[0.0], data_seeds=[0])
    rows = [precision_row(0, 0.0, _guarantee(0.0, 0.1), {"visual": 0.5, "text": 0.98}, {"visual": 0.5, "text": 0.97},
                          60.0, p)]
    result = {"rows": rows, "summary": precision_summary(rows, p), "config": {"precision": asdict(p)},
              "figure": str(plot_precision(rows, p.tolerance, tmp_path / "precision.png"))}
    log_precision(SimpleNamespace(report_to=[], project="precision-test", run_name=None), result)
    assert not list(tmp_path.glob("wandb/offline-run-*"))
    import wandb
    wandb.teardown()  # W&B keeps the first settings a process gave it (another test's WANDB_DIR): start afresh
    log_precision(SimpleNamespace(report_to=["wandb"], project="precision-test", run_name=None), result)
    wandb.teardown()  # in-process the service may still hold the run's last block; teardown flushes it (CI saw only the header)
    records = b"".join(f.read_bytes() for f in tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert b"precision/landed" in records and b"precision/table" in records and b"precision/plot" in records
