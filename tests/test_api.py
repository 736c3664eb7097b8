"""The Python API: measure() in memory or into a folder, tasks registered from outside the package, the README's
example as written."""
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_measure_keeps_everything_in_memory_unless_given_a_folder(tmp_path, monkeypatch):
    from eval import Measurement, measure
    monkeypatch.chdir(tmp_path)
    result = measure("organism", groups=12, dataset_seed=3, split="all")
    assert files_under(tmp_path) == set(), "measure() without output_dir wrote files"
    assert isinstance(result, Measurement)
    bp = result.balance_point
    assert set(bp) >= {"estimate", "ci", "description"}
    assert bp["estimate"] is None or bp["ci"][0] <= bp["estimate"] <= bp["ci"][1]
    assert 0 <= result.tfr <= 1 and result.vfr == pytest.approx(1 - result.tfr)
    assert {"centre", "rate", "ci_lo", "ci_hi", "n"} <= set(result.curve.columns)
    assert set(result.accuracy_by_tier.modality) == {"visual", "text"}
    assert len(result.samples) == len(result.to_pandas()) and "entropy_v" in result.samples
    assert "balance point" in str(result)

    run = tmp_path / "run"
    again = measure("organism", groups=12, dataset_seed=3, split="all", output_dir=run)
    assert {"samples.parquet", "run.json", "analysis.json"} <= files_under(run)
    assert json.loads((run / "analysis.json").read_text())["balance_point"] == again.balance_point
    assert again.balance_point == bp  # the folder changes where it goes, not what it says
    pd.testing.assert_frame_equal(again.samples, result.samples)
    page = result.report(tmp_path / "report", again)
    assert page.exists() and (tmp_path / "report" / "summary.json").exists()


def test_measure_names_bad_input():
    from eval import measure
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        measure("organism", groups=2, batch_size=0)
    with pytest.raises(ValueError, match="task 'nonsense' is unknown; use one of .*colors"):
        measure("organism", groups=2, task="nonsense")


# ---- a task defined here, outside the package: the registry is all it needs
@dataclass
class Questions:
    """A toy dataset: text-only questions whose answer is a colour the question names."""
    rows: pd.DataFrame

    def split(self, names):
        return Questions(self.rows[self.rows.split.isin(names)])


def toy_task():
    from eval.tasks import Task, register_task

    @register_task
    class NamedColour(Task):
        name = "toy-named-colour"
        help = "say back the colour a sentence names (text only)"

        def generate(self, groups, seed=0, size=64, split_shares=None):
            colours = ["red", "blue", "green", "yellow", "purple", "orange"]
            rng = np.random.default_rng(seed)
            picked = rng.choice(colours, size=groups)
            return Questions(pd.DataFrame({"id": [f"q{i}" for i in range(groups)], "answer": picked,
                                           "context": [f"The square is {c}." for c in picked],
                                           "split": ["test"] * groups}))

        def score(self, vlm, data, out, batch_size, **_):
            question = "What color is the square? Please use one word to answer this question."
            prompts = [vlm.prompt(question, c, with_image=False) for c in data.rows.context]
            with torch.no_grad():
                logits = vlm.model(**vlm.encode(prompts)).logits[:, -1].float()
            logp = logits.log_softmax(-1)
            top = [vlm.tokenizer.decode([int(t)]).strip() for t in logp.argmax(-1)]
            table = data.rows.assign(pred=top, entropy=-(logp.exp() * logp).sum(-1).numpy())
            if out is not None:
                Path(out).mkdir(parents=True, exist_ok=True)
                table.to_parquet(Path(out) / "samples.parquet")
                (Path(out) / "run.json").write_text(json.dumps({"model": vlm.name}))
            return table

        def analyze(self, table, config=None):
            return {"accuracy": float((table.pred == table.answer).mean()), "entropy": float(table.entropy.mean()),
                    "n": len(table)}

        def describe(self, result):
            return f"said back the named colour in {result['accuracy']:.0%} of {result['n']} questions"

        def report(self, runs, out, target=None):
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            summary = {name: run.analysis for name, run in runs.items()}
            (out / "summary.json").write_text(json.dumps(summary))
            (out / "report.html").write_text("<html>" + "".join(
                f"<p>{name}: {self.describe(r)}</p>" for name, r in summary.items()) + "</html>")
            return summary

    return NamedColour


def test_a_task_registered_in_a_test_file_runs_measure_and_report(tmp_path, monkeypatch):
    from eval import measure
    from eval.tasks import TASK_REGISTRY, get_task, supported_tasks
    supported_tasks()  # the package's own tasks register first, in the registry that stays
    monkeypatch.setattr(TASK_REGISTRY, "units", dict(TASK_REGISTRY.units))  # the toy task leaves with the test
    toy_task()
    assert "toy-named-colour" in supported_tasks() and "colors" in supported_tasks()
    monkeypatch.chdir(tmp_path)
    result = measure("organism", task="toy-named-colour", groups=12, dataset_seed=1)
    assert result.task == "toy-named-colour" and result.analysis["n"] == 12
    assert result.analysis["accuracy"] > 0.9  # the organism reads direct text almost perfectly
    assert "said back the named colour" in str(result)
    page = result.report(tmp_path / "report")
    assert "said back the named colour" in page.read_text()
    assert get_task("toy-named-colour").summary("before", result.analysis)["before/n"] == 12  # the default summary
    saved = measure("organism", task="toy-named-colour", groups=12, dataset_seed=1, output_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "analysis.json").read_text()) == saved.analysis == result.analysis


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block after <!-- api-example -->"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "balance point" in out and "realized balance point" in out
    assert list(tmp_path.glob("reports/*/report.html")), "the example's report was not written"


def test_a_second_measure_with_the_same_data_settings_renders_nothing(tmp_path, monkeypatch):
    """`eval measure --groups N --dataset_seed S` renders into the data cache once; the next command with the same
    settings loads it. `--rows conflicts` scores only the rows the balance point reads, and reads the same point;
    `--report_to wandb` logs the measurement as a run."""
    from eval.__main__ import main as eval_main
    from eval.tasks import get_task
    monkeypatch.setenv("MODALITY_ALIGN_CACHE", str(tmp_path / "cache"))
    args = ["measure", "--groups", "8", "--dataset_seed", "3", "--split", "all", "--no_lens", "--n_boot", "100",
            "--per_device_eval_batch_size", "64", "--dtype", "float32"]
    assert eval_main([*args, "--output_dir", str(tmp_path / "all")]) == 0
    (cached,) = (tmp_path / "cache" / "data").iterdir()
    assert cached.name == "colors-8groups-seed3-64px-test0.45-train0.2-validation0.35"

    def no_rendering(*_, **__):
        raise AssertionError("rendered again")
    monkeypatch.setattr(type(get_task("colors")), "generate", no_rendering)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    import wandb
    wandb.teardown()  # W&B keeps its first settings for the process: start from this test's WANDB_DIR
    try:
        assert eval_main([*args, "--rows", "conflicts", "--report_to", "wandb", "--output_dir",
                          str(tmp_path / "conflicts")]) == 0
    finally:
        wandb.teardown()  # flush the run, and leave no settings behind for the next test
    # the measurement as a W&B run of its own: headline numbers and the following curve
    records = b"".join(f.read_bytes() for f in tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    for key in (b"measure/balance_point", b"measure/tfr", b"measure/following_curve", b"conflicts",
                b"measure/following_chart_table", b"measure/following_chart", b"following-curve"):
        assert key in records, key
    (page,) = tmp_path.glob("wandb/offline-run-*/files/media/html/**/*.html")  # the chart, drawn without a preset
    assert "vegaEmbed" in page.read_text() and '"kind": "balance_point"' in page.read_text()
    # each table once: the line chart's bins and the custom chart's rows, no copy of either under another key
    tables = sorted(p.name.rsplit("_", 2)[0] for p in tmp_path.glob("wandb/offline-run-*/files/media/table/**/*.table.json"))
    assert tables == ["following_chart_table", "following_curve_table"], tables
    every, conflicts = (pd.read_parquet(tmp_path / run / "samples.parquet") for run in ("all", "conflicts"))
    assert set(conflicts.condition) == {"conflict"} and set(every.condition) > {"conflict"}
    assert len(conflicts) == (every.condition == "conflict").sum()
    a, b = (json.loads((tmp_path / run / "analysis.json").read_text()) for run in ("all", "conflicts"))
    # the same point: entropies differ only by batching (~1e-9 nats)
    bp_all, bp_conflicts = a["balance_point"], b["balance_point"]
    assert bp_all["estimate"] == pytest.approx(bp_conflicts["estimate"], abs=1e-6)
    assert bp_all["ci"] == pytest.approx(bp_conflicts["ci"], abs=1e-6)
    assert bp_all["description"] == bp_conflicts["description"]
