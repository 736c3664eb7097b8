"""The analysis and report read the per-sample table; tested on synthetic tables and tiny models."""
import json

import numpy as np
import pandas as pd
import pytest

from eval.__main__ import main as eval_main
from eval.analysis import AnalysisConfig, analyze
from eval.report import write_report


def synthetic_table(n=600, a=0.6, b=-3.0, seed=0, layers=4, dataset="fp-a") -> pd.DataFrame:
    """A table shaped like the scoring engine's, with following drawn from a known logistic curve."""
    rng = np.random.default_rng(seed)
    h_v, h_t = rng.uniform(0.05, 1.5, n), rng.uniform(0.05, 1.5, n)
    d_rel = 2 * (h_t - h_v) / (h_t + h_v)
    text = rng.uniform(size=n) < 1 / (1 + np.exp(-(a + b * d_rel)))
    tv, tt = 10, 20
    lens = [[tv] * (layers - 1) + [tt if f else tv] for f in text]
    return pd.DataFrame({
        "id": [f"s{i}" for i in range(n)], "image_id": [f"i{i}" for i in range(n)], "group": np.arange(n) // 14,
        "split": "test", "task": "colors", "d_v": rng.integers(0, 14, n), "d_t": rng.integers(0, 3, n),
        "text_tier": "direct", "condition": "conflict", "question": "q", "text_context": [f"c{i}" for i in range(n)],
        "answer_visual": "red", "answer_text": "blue", "answer_collision": False,
        "entropy_v": h_v, "entropy_t": h_t, "one_minus_max_p_v": h_v / 2, "one_minus_max_p_t": h_t / 2,
        "top2_margin_v": 1 - h_v / 2, "top2_margin_t": 1 - h_t / 2, "candidate_entropy_v": h_v, "candidate_entropy_t": h_t,
        "top1_v": tv, "top1_t": tt, "top1_m": np.where(text, tt, tv), "token_visual": tv, "token_text": tt,
        "pred_v": "red", "pred_t": "blue", "pred_m": np.where(text, "blue", "red"),
        "lens_top1": lens, "lens_diff": [list(np.linspace(-1, 1 if f else -0.5, layers)) for f in text],
    })


def test_analysis_recovers_planted_curve():
    res = analyze(synthetic_table(n=2000, a=0.6, b=-3.0), AnalysisConfig(n_boot=200))
    bp = res["balance_point"]
    assert bp["crosses"] and bp["ci"][0] <= 0.2 <= bp["ci"][1] and bp["leans"] == "text"
    assert res["monotonicity"] < -0.8
    assert set(res["curves"]) == {"entropy", "one_minus_max_p", "top2_margin", "candidate_entropy"}
    assert 0 < res["following"]["tfr"] < 1 and res["counts"]["analysed"] == 2000
    osc = res["oscillation"]
    assert osc["ambiguous"]["n"] + osc["clear"]["n"] == 2000
    assert len(osc["heatmap"]["mean_logit_diff"]) == 4  # one row per layer


def test_unimodal_correct_filter_and_switch():
    t = synthetic_table(n=300)
    t.loc[:49, "pred_v"] = "green"  # the model's image-only answer is wrong on 50 rows
    assert analyze(t, AnalysisConfig(n_boot=0))["counts"]["analysed"] == 250
    assert analyze(t, AnalysisConfig(n_boot=0, unimodal_correct=False))["counts"]["analysed"] == 300


def test_bad_input_messages():
    with pytest.raises(ValueError, match="empty"):
        analyze(synthetic_table(n=20).iloc[0:0])
    with pytest.raises(ValueError, match="lacks columns"):
        analyze(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="a curve needs at least 20"):
        analyze(synthetic_table(n=12))
    t = synthetic_table(n=200)
    t.loc[:9, "entropy_v"] = np.nan
    res = analyze(t, AnalysisConfig(n_boot=0))
    assert res["counts"]["nan_entropy"] == 10 and res["counts"]["analysed"] == 190


def test_interval_resamples_groups_by_default():
    t = synthetic_table(n=150, seed=4)
    copies = t.loc[t.index.repeat(10)].reset_index(drop=True)
    copies["group"] = np.repeat(np.arange(150), 10)  # the ten rows of a group share their inputs
    copies["id"] = [f"s{i}" for i in range(len(copies))]

    def width(cfg):
        lo, hi = analyze(copies, cfg)["balance_point"]["ci"]
        return hi - lo
    assert width(AnalysisConfig(n_boot=200)) > 2 * width(AnalysisConfig(n_boot=200, bootstrap="sample"))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(n_boot=1), "n_boot must be >= 100"), (dict(n_bins=1), "n_bins must be >= 2"), (dict(bins="log"), "bins 'log'"),
    (dict(index="variance"), "index 'variance'"), (dict(bootstrap="row"), "bootstrap 'row'"),
])
def test_analysis_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        AnalysisConfig(**kwargs)


def test_n_boot_zero_gives_an_estimate_without_interval():
    res = analyze(synthetic_table(n=2000, a=0.6, b=-3.0), AnalysisConfig(n_boot=0))
    bp = res["balance_point"]
    assert bp["ci"] is None and bp["estimate"] == pytest.approx(0.2, abs=0.1) and "no interval" in bp["description"]


def test_no_crossing_is_reported_not_numbered():
    res = analyze(synthetic_table(n=400, a=8.0, b=-1.0), AnalysisConfig(n_boot=0))
    assert res["balance_point"]["estimate"] is None and "no crossing" in res["balance_point"]["description"]


def _run_dir(path, table, fingerprint):
    path.mkdir(parents=True)
    table.to_parquet(path / "samples.parquet")
    (path / "run.json").write_text(json.dumps({"model": "synthetic", "dataset_fingerprint": fingerprint}))
    return path


def test_report_overlays_runs_and_warns_on_different_datasets(tmp_path):
    a = _run_dir(tmp_path / "a", synthetic_table(a=0.6), "fp-a")
    b = _run_dir(tmp_path / "b", synthetic_table(a=-0.9, seed=1), "fp-b")
    summary = write_report([a, b], tmp_path / "rep", AnalysisConfig(n_boot=100, n_bins=30, bins="fixed"))
    assert any("different datasets" in w for w in summary["warnings"])
    assert any("fewer than" in w for w in summary["warnings"])  # 30 equal-width bins: the outer ones are small
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64" in html and "balance point" in html
    for fig in ("following_curve", "oscillation", "lens_heatmap", "difficulty", "tfr_cells", "curves_by_index"):
        assert (tmp_path / "rep" / f"{fig}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert saved["runs"]["a"]["balance_point"]["estimate"] > saved["runs"]["b"]["balance_point"]["estimate"]


def test_report_of_two_runs_of_the_same_conflicts_states_the_paired_shift_and_the_target(tmp_path, capsys):
    # the same draws of uncertainty, following from two curves: the same conflicts, the point moved by -0.33
    before, after = synthetic_table(n=600, a=0.6, b=-3.0), synthetic_table(n=600, a=-0.4, b=-3.0)
    runs = [_run_dir(tmp_path / n, t, "fp") for n, t in (("base", before), ("aligned", after))]
    args = ["report", "--runs", *map(str, runs), "--output_dir", str(tmp_path / "rep"), "--n_boot", "200"]
    assert eval_main([*args, "--target", "-0.4"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    paired = summary["paired"]
    assert paired["paired"] and paired["shift"] < 0 and paired["shift_ci"][1] < 0 and paired["groups"] == 43
    assert paired["guarantee"]["target"] == -0.4 and "target -0.40" in paired["description"]
    assert paired["description"] in out and paired["description"] in (tmp_path / "rep" / "report.html").read_text()
    # without a target: the shift alone; with another dataset's run: said plainly, no shift
    assert eval_main(args) == 0 and "balance point shift aligned - base: -" in capsys.readouterr().out
    other = _run_dir(tmp_path / "other", after, "fp-other")
    assert eval_main(["report", "--runs", str(runs[0]), str(other), "--output_dir", str(tmp_path / "rep2")]) == 0
    assert "different datasets: no paired shift" in capsys.readouterr().out


def test_report_cli_clear_error_on_missing_run(tmp_path, capsys):
    assert eval_main(["report", "--runs", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "r")]) == 2
    assert "no samples.parquet" in capsys.readouterr().err


def test_measure_and_report_on_tiny_models(tiny_model, tiny_data, tmp_path, capsys):
    """Every code path on the tiny fixtures; a random model's curve may not exist, which must be said clearly."""
    data = tiny_data.info["path"]
    code = eval_main(["measure", "--model", str(tiny_model), "--data", data, "--output_dir", str(tmp_path / "run"),
                      "--split", "all", "--no_unimodal_correct", "--n-boot", "0", "--dtype", "float32"])
    err = capsys.readouterr().err
    assert (tmp_path / "run" / "samples.parquet").exists()
    if code == 0:
        assert eval_main(["report", "--runs", str(tmp_path / "run"), "--output_dir", str(tmp_path / "rep"),
                          "--no-unimodal-correct", "--n-boot", "100"]) == 0
        assert (tmp_path / "rep" / "report.html").exists()
    else:  # a random model rarely follows either answer: the message says why and what to do
        assert code == 2 and "conflict samples" in err


def report_of_one_run(table, tmp_path):
    """The report (no bootstrap) of a run folder holding `table`, written to tmp_path / "rep"."""
    run = tmp_path / "run"
    run.mkdir()
    table.to_parquet(run / "samples.parquet")
    return write_report([run], tmp_path / "rep", AnalysisConfig(n_boot=0))


def test_a_rising_curve_is_said_in_headline_report_and_summary(tmp_path, capsys):
    from eval.__main__ import print_headline
    table = synthetic_table(n=1500, a=-1.5, b=5.2)  # rises, crossing at +0.29
    res = analyze(table, AnalysisConfig(n_boot=0))
    assert res["balance_point"]["direction"] == "rising" and res["balance_point"]["side"] == "vision"
    print_headline(res)
    assert "WARNING: the curve is rising" in capsys.readouterr().out
    summary = report_of_one_run(table, tmp_path)
    assert summary["runs"]["run"]["direction"] == "rising" and any("rising" in w for w in summary["warnings"])
    assert "rising" in (tmp_path / "rep" / "report.html").read_text()


def test_no_crossing_gives_no_oscillation_split_and_no_nan_in_the_headline(capsys):
    from eval.__main__ import print_headline
    res = analyze(synthetic_table(n=400, a=8.0, b=-1.0), AnalysisConfig(n_boot=0))
    assert res["oscillation"]["ambiguous"]["mean"] is None and res["oscillation"]["clear"]["mean"] is None
    res["monotonicity"] = float("nan")  # e.g. too few bins
    print_headline(res)
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "monotonicity (Spearman) n/a" in out


def _broken(change):
    t = synthetic_table(n=200)
    change(t)
    return t


@pytest.mark.parametrize("change, needle", [
    (lambda t: t.pop("group"), "lacks columns ['group']"),
    (lambda t: t.__setitem__("entropy_v", t.entropy_v.astype(str)), "column 'entropy_v' holds str values"),
    (lambda t: t.__setitem__("lens_top1", [[str(v) for v in row] for row in t.lens_top1]),
     "column 'lens_top1' holds ['str'] items"),
    (lambda t: t.__setitem__("lens_top1", ["10 10 10 20"] * len(t)), "column 'lens_top1' holds str cells"),
    (lambda t: t.loc.__setitem__((slice(0, 2), "entropy_t"), -0.2), "column 'entropy_t' has 3 negative values"),
    (lambda t: t.loc.__setitem__((slice(0, 1), "id"), "s0"), "1 duplicate sample ids (e.g. 's0')"),
    (lambda t: t.__setitem__("top1_m", 0.5), "column 'top1_m' holds non-integer"),
    (lambda t: t.__setitem__("pred_m", 7), "column 'pred_m' holds int values such as 7; expected answer strings"),
    (lambda t: t.pop("pred_v"), "lacks columns ['pred_v']"),
    (lambda t: t.__setitem__("group", [g if i % 2 else f"g{g}" for i, g in enumerate(t.group)]),
     "column 'group' mixes integer and string labels (e.g. 0, 'g0')"),
])
def test_table_schema_names_the_column_and_the_expectation(change, needle):
    with pytest.raises(ValueError) as e:
        analyze(_broken(change), AnalysisConfig(n_boot=0))
    assert needle in str(e.value)


def test_answers_that_differ_only_in_case_or_spaces_are_the_same_answer(caplog):
    """A user's table with "Blue " against the model's "blue" is analysed as if written alike, and says so."""
    clean = analyze(synthetic_table(n=300), AnalysisConfig(n_boot=0))
    t = synthetic_table(n=300)
    t["answer_text"], t["answer_visual"] = "Blue ", " RED"
    with caplog.at_level("WARNING"):
        loose = analyze(t, AnalysisConfig(n_boot=0))
    assert loose["counts"] == clean["counts"] and loose["balance_point"] == clean["balance_point"]
    assert "column 'answer_visual' holds answers with capitals or surrounding spaces (e.g. ' RED')" in caplog.text
    assert loose["difficulty"] == clean["difficulty"]


def test_tfr_intervals_stay_inside_zero_and_one():
    from eval.stats import tfr_vfr
    for labels, groups in ((["text"] * 3, [0, 0, 1]), (["vision"] * 5 + ["text"], [0, 0, 0, 1, 1, 2])):
        r = tfr_vfr(np.array(labels), np.array(groups))
        assert 0 <= r["tfr_ci"][0] <= r["tfr"] <= r["tfr_ci"][1] <= 1 and 0 <= r["vfr_ci"][0] <= r["vfr_ci"][1] <= 1


@pytest.mark.parametrize("flags, needle", [
    (["--model", "/nonexistent/model"], "no such directory"),
    (["--model", "nobody/no-such-model"], "model 'nobody/no-such-model' is not a local folder"),
    (["--n-boot", "1"], "n_boot must be >= 100"),
    (["--n_bins", "0"], "n_bins must be >= 2"),
    (["--split", "nosuch"], "split(s) ['nosuch'] not in this dataset"),
    (["--data", "/no/such/data"], "is not a conflict dataset"),
])
def test_measure_cli_errors_are_one_line_and_leave_nothing(flags, needle, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    argv = ["measure", "--data", tiny_data.info["path"], "--output_dir", str(out), *flags]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_compared_runs_share_scales_and_every_mark_is_explained(tmp_path):
    import matplotlib.pyplot as plt
    from eval.report import CAPTIONS, plot_curves
    a, b = synthetic_table(n=600, a=0.6, b=-3.0), synthetic_table(n=600, a=-0.5, b=-2.0, seed=1)
    results = {"base": analyze(a, AnalysisConfig(n_boot=100)), "aligned": analyze(b, AnalysisConfig(n_boot=100))}
    # the heatmaps of two runs use the same bins (equal width over [-2, 2])
    assert results["base"]["oscillation"]["heatmap"]["edges"] == results["aligned"]["oscillation"]["heatmap"]["edges"]
    ax = plot_curves(results, "entropy", plt.figure().gca(), target=0.25)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # a short legend (one entry per run, and b*); every other mark is explained in the caption
    assert len(labels) <= 6 and labels[-1] == "target b* = +0.25", labels
    assert labels[0].startswith("base: balance point +0.") and "[" in labels[0]
    for needle in ("binned rates", "logistic fits", "95% intervals", "isotonic", "equal uncertainty", "target"):
        assert needle in CAPTIONS["following_curve"], needle
    b_star = [line for line in ax.get_lines() if line.get_label().startswith("target")][0]
    assert b_star.get_color() != "grey" and b_star.get_linewidth() > 1.5  # told apart from dH_rel = 0
    plt.close("all")
    for name, table in (("base", a), ("aligned", b)):
        (tmp_path / name).mkdir()
        table.to_parquet(tmp_path / name / "samples.parquet")
    summary = write_report([tmp_path / "base", tmp_path / "aligned"], tmp_path / "rep", AnalysisConfig(n_boot=100),
                           target=0.25)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert all(CAPTIONS[k][:40] in page.replace("&#x27;", "'") for k in ("following_curve", "lens_heatmap"))
    run = summary["runs"]["base"]
    assert run["n_analysed"] == results["base"]["counts"]["analysed"] and run["n_following"] == results["base"]["following"]["n"]


def test_seed_reaches_the_bootstrap():
    from data_gen.cli import parse
    from eval.__main__ import COMMANDS
    model, score, analysis = parse(COMMANDS["measure"].dataclasses, ["--data", "d", "--output_dir", "o", "--seed", "7"],
                                   "measure")
    assert analysis.seed == 7
    t = synthetic_table(n=600)
    slope_ci = lambda seed: analyze(t, AnalysisConfig(n_boot=200, seed=seed))["balance_point"]["slope_ci"]
    assert slope_ci(7) == slope_ci(7) and slope_ci(7) != slope_ci(8)  # the balance point's own interval is a jackknife


def test_the_ability_gate_withholds_the_balance_point_from_a_model_at_chance(tmp_path, capsys):
    """Image-only answers at chance: the console, analysis, summary.json and report say which modality fails, with
    its accuracy and chance, and there is no balance point unless forced, and then it is flagged."""
    from eval.__main__ import print_headline
    table = synthetic_table(n=1500)
    rng = np.random.default_rng(0)
    colours = sorted(set(table.answer_visual) | set(table.answer_text))
    table["pred_v"] = rng.choice(colours, len(table))  # guesses: the image alone tells it nothing
    res = analyze(table, AnalysisConfig(n_boot=0))
    gate = res["ability"]
    assert not gate["passed"] and not gate["modalities"]["image only"]["above_chance"]
    assert gate["modalities"]["text only"]["above_chance"] and gate["chance"] == pytest.approx(1 / len(colours))
    assert gate["line"].startswith("the model cannot do the task on its own: image only accuracy")
    assert res["balance_point"]["estimate"] is None and gate["line"] in res["balance_point"]["description"]
    print_headline(res)
    assert "image only accuracy" in capsys.readouterr().out
    summary = report_of_one_run(table, tmp_path)
    assert any("cannot do the task" in w for w in summary["warnings"])
    assert summary["runs"]["run"]["ability"]["passed"] is False
    assert "cannot do the task" in (tmp_path / "rep" / "report.html").read_text()
    forced = analyze(table, AnalysisConfig(n_boot=0, force=True))["balance_point"]
    assert forced["forced_past_gate"] and "FORCED" in forced["description"]
    fine = analyze(synthetic_table(n=1500), AnalysisConfig(n_boot=0))
    assert fine["ability"]["passed"] and fine["ability"]["line"] is None


def test_a_run_is_shown_by_its_release_name_not_a_workspace_path():
    from eval.report import display_model
    assert display_model("organism+/work/outputs/align-organism/adapter") == "organism + align-organism"
    assert display_model("organism+runs/x/release+steering:/y/steer-run/release/steering.safetensors") == \
        "organism + x + steering steer-run"
    assert display_model("organism") == "organism" and display_model(None) is None


def test_the_wandb_following_chart_draws_bands_markers_and_the_target():
    """The chart W&B shows (eval/tracking.py): each run's binned rates with their intervals, its fitted curve and
    its balance point with interval, and b*; the spec, its placeholders filled, is valid Vega-Lite."""
    import altair
    from eval.tracking import CHART_COLUMNS, chart_html, chart_rows, chart_spec
    curves = [(name, analyze(synthetic_table(n=900, a=a, seed=seed), AnalysisConfig(n_boot=100)))
              for name, a, seed in (("before", 0.6, 0), ("after", -0.6, 1))]
    rows = chart_rows(curves, target=-0.25)
    kinds = {(r["model"], r["kind"]) for r in rows}
    assert kinds == {(m, k) for m in ("before", "after") for k in ("bin", "fit", "balance_point")} | {("target", "target")}
    for name, analysis in curves:
        bp = analysis["curves"]["entropy"]["balance_point"]
        (marker,) = [r for r in rows if r["model"] == name and r["kind"] == "balance_point"]
        assert (marker["d_rel"], [marker["d_rel_low"], marker["d_rel_high"]]) == (bp["estimate"], list(bp["ci"]))
        bins = [r for r in rows if r["model"] == name and r["kind"] == "bin"]
        assert bins and all(r["rate_low"] - 1e-9 <= r["rate"] <= r["rate_high"] + 1e-9 for r in bins)
        fit = [r for r in rows if r["model"] == name and r["kind"] == "fit"]
        at_bp = min(fit, key=lambda r: abs(r["d_rel"] - bp["estimate"]))
        assert at_bp["rate"] == pytest.approx(0.5, abs=0.05)  # the fitted curve crosses 1/2 at the balance point
    assert [r["d_rel"] for r in rows if r["kind"] == "target"] == [-0.25]
    spec = chart_spec("before and after", rows)
    assert "${" not in json.dumps(spec) and set(rows[0]) == set(CHART_COLUMNS)
    altair.Chart.from_dict(spec)  # raises on a spec Vega-Lite's schema rejects
    with pytest.raises(Exception):
        altair.Chart.from_dict({**spec, "layer": [{"mark": "no-such-mark"}]})
    assert "vegaEmbed" in chart_html(spec) and "b* -0.25" in chart_html(spec)


def test_the_guarantee_is_bootstrapped_once_per_run(monkeypatch):
    """The recipe's report computes the paired guarantee; the task's compare takes it from there for the same target
    (one group bootstrap of the pair, not two) and computes its own for another target."""
    from types import SimpleNamespace
    from eval import analysis
    from eval.tasks import get_task
    cfg = AnalysisConfig(n_boot=100)
    before, after = (synthetic_table(n=900, a=a, seed=1) for a in (0.6, -0.6))
    after_result = analyze(after, cfg)
    paired = analysis.paired_runs(before, after, after_result, 0.0, cfg, ("base", "aligned"))
    runs = [SimpleNamespace(samples=t, analysis=r) for t, r in ((before, None), (after, after_result))]
    calls = []
    real = analysis.alignment_guarantee
    monkeypatch.setattr("eval.tasks.following.alignment_guarantee", lambda *a: calls.append(a) or real(*a))
    task = get_task("colors")
    reused = task.compare(*runs, 0.0, cfg, paired)["guarantee"]
    assert calls == [] and reused["shift_ci"] == paired["guarantee"]["shift_ci"] and "description" in reused
    assert task.compare(*runs, 0.5, cfg, paired)["guarantee"]["target"] == 0.5 and len(calls) == 1
