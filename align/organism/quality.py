"""The organism's quality bars, computed from a scored table of its held-out test groups."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_gen import ConflictData, generate
from eval.analysis import AnalysisConfig, analyze
from eval.scoring import ScoreConfig, score_dataset
from eval.stats import monotonicity, relative_uncertainty, wilson_interval
from eval.models import load_vlm
from eval.models.vlm import resolve_path

from .config import OrganismConfig
from .end_of_turn import one_word_answers


MIN_OSCILLATION_RATIO = 1.5  # the paper's LLaVA-1.6-7B: 1.43 vs 0.71, about 2
# On the organism's grid (64 px, 8-px patches) the targets of tiers 0-6 own most of a patch and those of 7-13 a sixth
# of one (`python -m data_gen readability --image_size 64 --patch 8`): a graded ladder over 0-6, chance beyond.
RESOLVED_TIERS = range(7)
AT_CHANCE_MARGIN = 0.1


def quality_bars(table: pd.DataFrame, planted_balance: float | None = None, oscillation_law: bool = False,
                 chance_by_tier: dict[int, float] | None = None) -> dict:
    """Graded uncertainty on both sides and a spread of dH_rel, from a scored test table; with `planted_balance`
    (the build's), also whether the measurement recovers the planted preference; with `oscillation_law` (a build
    whose early layers were trained undecided), whether it shows the law; with `chance_by_tier` (the dataset's
    blind readers' chance per visual tier), whether the tiers it cannot resolve are answered at chance, no worse."""
    img = table[table.text_tier == "original"].copy()
    img["correct"] = img.pred_v == img.answer_visual
    v = img.groupby("d_v").agg(accuracy=("correct", "mean"), entropy=("entropy_v", "mean"), n=("id", "size"))
    txt = table[table.condition == "conflict"].drop_duplicates(["text_tier", "group"]).copy()
    txt["correct"] = txt.pred_t == txt.answer_text
    t = txt.groupby("d_t").agg(accuracy=("correct", "mean"), entropy=("entropy_t", "mean"), n=("id", "size"))
    conf = table[(table.condition == "conflict") & (table.pred_v == table.answer_visual) & (table.pred_t == table.answer_text)]
    d_rel = relative_uncertainty(conf.entropy_v.to_numpy(), conf.entropy_t.to_numpy())
    rho = lambda s, col: monotonicity(s.index, s[col])  # n/a (nan, failing its bar) for a constant column
    resolved = v[v.index.isin(RESOLVED_TIERS)]
    bars = {
        "easiest_visual_accuracy": float(v.accuracy.iloc[:5].mean()),
        "direct_text_accuracy": float(t.accuracy.loc[0]),
        "spearman_visual_accuracy": rho(resolved, "accuracy"), "spearman_visual_entropy": rho(resolved, "entropy"),
        "spearman_text_accuracy": rho(t, "accuracy"), "spearman_text_entropy": rho(t, "entropy"),
        "share_d_rel_negative": float(np.mean(d_rel < 0)), "share_d_rel_positive": float(np.mean(d_rel > 0)),
        "n_conflicts_unimodal_correct": int(len(conf)),
    }
    checks = {
        "easiest visual tiers accuracy >= 0.9": bars["easiest_visual_accuracy"] >= 0.9,
        "direct text accuracy >= 0.9": bars["direct_text_accuracy"] >= 0.9,
        f"visual: accuracy falls, entropy rises over the resolved tiers {RESOLVED_TIERS.start}-{RESOLVED_TIERS.stop - 1} "
        "(|Spearman| >= 0.8)": bars["spearman_visual_accuracy"] <= -0.8 and bars["spearman_visual_entropy"] >= 0.8,
        "text: accuracy falls, entropy rises (|Spearman| >= 0.8)":
            bars["spearman_text_accuracy"] <= -0.8 and bars["spearman_text_entropy"] >= 0.8,
        "dH_rel spreads: >= 20% on each side of 0":
            bars["share_d_rel_negative"] >= 0.2 and bars["share_d_rel_positive"] >= 0.2,
    }
    if chance_by_tier:
        beyond = v[~v.index.isin(RESOLVED_TIERS)]
        offsets = {int(d): float(row.accuracy - chance_by_tier[int(d)]) for d, row in beyond.iterrows()}
        below = {d: wilson_interval(row.accuracy * row.n, row.n)[1] < chance_by_tier[int(d)] for d, row in beyond.iterrows()}
        bars["unresolved_tiers_accuracy_minus_chance"] = offsets
        checks[f"visual: tiers beyond {RESOLVED_TIERS.stop - 1} at chance +- {AT_CHANCE_MARGIN}, none below it "
               "(its interval)"] = all(abs(o) <= AT_CHANCE_MARGIN for o in offsets.values()) and not any(below.values())
    analysis = curve_analysis(table)  # once: both the oscillation split and the planted bar read it
    bars.update(oscillation_bars(analysis))
    if oscillation_law:
        checks[f"oscillation law: ambiguous > clear, intervals apart, ratio >= {MIN_OSCILLATION_RATIO}"] = \
            oscillation_law_shown(bars)
    if planted_balance is not None:
        bars["balance_point"] = measured_balance_point(analysis)
        checks["planted preference recovered: the curve crosses, on the planted side"] = planted_preference_recovered(
            bars["balance_point"], planted_balance)
    return {"bars": bars, "checks": checks, "visual_tiers": v.reset_index().to_dict("records"),
            "text_tiers": t.reset_index().to_dict("records")}


def curve_analysis(table: pd.DataFrame) -> dict | None:
    """The run's analysis without the bootstrap (the bars need estimates, and the oscillation intervals need none);
    None when too few conflicts are decided for a curve."""
    try:
        return analyze(table, AnalysisConfig(n_boot=0))
    except ValueError:
        return None


def measured_balance_point(analysis: dict | None) -> float | None:
    """The balance point's estimate in a `curve_analysis` (no interval needed for the bar); None without a crossing or
    a curve."""
    return (analysis["balance_point"] or {}).get("estimate") if analysis else None


def planted_preference_recovered(balance_point: float | None, planted_balance: float) -> bool:
    """The planted rule is the ground truth the measurement must recover (docs/method.md, "The model organism"): the
    following curve must cross, and on the planted side of equal uncertainty (a text-leaning build above 0, a
    vision-leaning one below); a build planted at 0 must cross inside the ambiguous region around it. Phase 2 can
    fail to plant while every unimodal bar passes: image + text answers then follow the text almost everywhere."""
    if balance_point is None:
        return False
    if planted_balance == 0:
        return abs(balance_point) <= AnalysisConfig().ambiguous_width
    return balance_point * planted_balance > 0


def oscillation_bars(analysis: dict | None) -> dict:
    """Mean oscillation in the ambiguous region around the balance point and outside it, with intervals (the paper's
    LLaVA-1.6-7B: 1.43 vs 0.71), from a `curve_analysis`; empty for a table scored without the logit lens, or without
    a balance point."""
    osc = analysis and analysis["oscillation"]  # no lens: None; no curve: no balance point to split around
    if not osc or osc["ambiguous"]["mean"] is None or osc["clear"]["mean"] is None:
        return {}
    amb, clear = osc["ambiguous"], osc["clear"]
    return {"oscillation_ambiguous": amb["mean"], "oscillation_ambiguous_ci": amb["ci"],
            "oscillation_clear": clear["mean"], "oscillation_clear_ci": clear["ci"],
            "oscillation_ratio": amb["mean"] / clear["mean"] if clear["mean"] else None}


def oscillation_law_shown(bars: dict) -> bool:
    """The ambiguous region oscillates more than the clear one, intervals apart, by at least MIN_OSCILLATION_RATIO."""
    if not bars.get("oscillation_ratio"):
        return False
    return (bars["oscillation_ambiguous_ci"][0] > bars["oscillation_clear_ci"][1]
            and bars["oscillation_ratio"] >= MIN_OSCILLATION_RATIO)


def default_output_dir(name_or_path: str, fresh: str = "") -> Path:
    """Under the working directory, never inside the (installed) organism's folder."""
    return Path("outputs") / "organism-evaluation" / (Path(resolve_path(name_or_path)).name + fresh)


def evaluate(name_or_path: str = "organism", data: str | None = None, output_dir: str | Path | None = None,
             batch_size: int = 64, groups: int | None = None, dataset_seed: int | None = None) -> dict:
    """Score an organism's held-out groups: its build's test split regenerated from organism.json, `groups` /
    `dataset_seed` fresh groups (another seed than the build's: every split unseen, all scored), or `data`'s
    test split."""
    fresh = ""
    meta_path = Path(resolve_path(name_or_path)) / "organism.json"
    cfg = OrganismConfig(**json.loads(meta_path.read_text())["config"]) if meta_path.exists() else None
    if data:
        test = ConflictData.load(data).split("test")
    else:
        if cfg is None:
            raise FileNotFoundError(f"{meta_path} not found: {name_or_path!r} is not an organism build; "
                                    f"pass --data with a dataset to evaluate it on")
        seed = cfg.dataset_seed if dataset_seed is None else dataset_seed
        # the build's own seed: only its held-out test groups (rendered alone); another seed: every group is unseen
        test = generate("colors", groups or cfg.groups, seed, cfg.image_size, cfg.workers, cfg.split_shares,
                        only_split="test" if seed == cfg.dataset_seed else None)
        fresh = f"-seed{seed}-groups{groups or cfg.groups}" if (groups, dataset_seed) != (None, None) else ""
    vlm = load_vlm(name_or_path, dtype="float32")
    table = score_dataset(vlm, test, Path(output_dir or default_output_dir(name_or_path, fresh)),
                          ScoreConfig(batch_size=batch_size))  # with the lens: the oscillation bars read it
    chance = {int(r["d_v"]): r["chance"] for r in test.info.get("blind_readers", {}).get("tiers", [])}
    report = quality_bars(table, cfg.planted_balance if cfg else None,
                          oscillation_law=bool(cfg and cfg.lens_undecided_layers), chance_by_tier=chance or None)
    report["bars"]["one_word_answers"] = one_word_answers(vlm, test)
    report["checks"]["generate() ends the answer after one word (>= 95% of answers)"] = (
        report["bars"]["one_word_answers"] >= 0.95)
    return report


def print_quality(report: dict) -> bool:
    fmt = lambda recs, key: "\n".join(f"  {key}={r[key]:>2}  acc={r['accuracy']:.3f}  H={r['entropy']:.3f}  n={r['n']}"
                                      for r in recs)
    print("image only, by visual tier:\n" + fmt(report["visual_tiers"], "d_v"))
    print("text only, by text tier:\n" + fmt(report["text_tiers"], "d_t"))
    print(json.dumps(report["bars"], indent=2))
    for name, ok in report["checks"].items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    return all(report["checks"].values())
