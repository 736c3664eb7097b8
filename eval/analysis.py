"""The analysis of docs/method.md (following, balance point, oscillation), read from a per-sample table.

No model is needed: reports re-run from the table alone."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from . import stats
from .schema import check_table

log = logging.getLogger(__name__)

# Each index as an *uncertainty* (higher = less sure), per condition suffix v / t.
UNCERTAINTY_INDICES = {
    "entropy": lambda t, c: t[f"entropy_{c}"],
    "one_minus_max_p": lambda t, c: t[f"one_minus_max_p_{c}"],
    "top2_margin": lambda t, c: 1 - t[f"top2_margin_{c}"],
    "candidate_entropy": lambda t, c: t[f"candidate_entropy_{c}"],
}


@dataclass
class AnalysisConfig:
    """How a per-sample table is analysed; the same flags in `eval measure`, `eval report` and the recipe."""
    unimodal_correct: bool = field(default=True, metadata={
        "help": "analyse only conflicts whose image-only and text-only answers are both right (--no_unimodal_correct: all)"})
    index: str = field(default="entropy", metadata={
        "help": f"uncertainty index of the main curve: {', '.join(UNCERTAINTY_INDICES)}"})
    bins: str = field(default="quantile", metadata={"help": "quantile, or fixed (equal width over [-2, 2])"})
    n_bins: int = field(default=8, metadata={"help": "bins of the following curve (>= 2)"})
    min_bin_count: int = field(default=10, metadata={"help": "bins with fewer samples are flagged, not hidden"})
    ambiguous_width: float = field(default=0.5, metadata={
        "help": "ambiguous region: |dH_rel - balance point| <= this"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of the balance point (>= 100; 0: no interval)"})
    bootstrap: str = field(default="group", metadata={
        "help": "resample whole groups (their samples share an image and a text) or single samples: group | sample"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    min_samples: int = field(default=20, metadata={"help": "fewest decided conflicts a curve is fitted on"})
    force: bool = field(default=False, metadata={
        "help": "fit the balance point even where the model cannot answer one modality alone above chance "
                "(the ability gate); the result is flagged"})

    def __post_init__(self):
        if self.index not in UNCERTAINTY_INDICES:
            raise ValueError(f"index {self.index!r} is unknown; use one of {list(UNCERTAINTY_INDICES)}")
        if self.bins not in ("quantile", "fixed"):
            raise ValueError(f"bins {self.bins!r} is unknown; use quantile or fixed")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2 (a curve needs two bins), got {self.n_bins}")
        if self.n_boot != 0 and self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a 95% interval, or 0 for no interval; got {self.n_boot}")
        if self.bootstrap not in ("group", "sample"):
            raise ValueError(f"bootstrap {self.bootstrap!r} is unknown; use group or sample")
        if self.ambiguous_width <= 0:
            raise ValueError(f"ambiguous_width must be > 0, got {self.ambiguous_width}")
        if self.min_samples < 10:
            raise ValueError(f"min_samples must be >= 10 (a logistic fit needs them), got {self.min_samples}")


def conflict_samples(table: pd.DataFrame, cfg: AnalysisConfig) -> tuple[pd.DataFrame, dict]:
    """Conflict rows entering the analysis, with following labels and dH_rel per index."""
    check_table(table)
    counts = {"rows": int(len(table))}
    t = table[table.condition == "conflict"].copy()
    counts["conflict"] = int(len(t))
    if "answer_collision" in t:
        counts["answer_collision"] = int(t.answer_collision.sum())
        t = t[~t.answer_collision.astype(bool)]
    t = t.dropna(subset=["pred_t", "pred_m"])
    nan = t[["entropy_v", "entropy_t"]].isna().any(axis=1) | ~np.isfinite(t[["entropy_v", "entropy_t"]]).all(axis=1)
    counts["nan_entropy"] = int(nan.sum())
    if nan.any():
        log.warning("%d conflict rows have NaN/inf entropies and are left out", int(nan.sum()))
    t = t[~nan]
    # whole answers (docs/method.md, "Whole answers"): pred_c is the answer the model prefers in condition c
    t["unimodal_correct"] = stats.unimodal_correct(t.pred_v, t.pred_t, t.answer_visual, t.answer_text)
    counts["unimodal_correct"] = int(t.unimodal_correct.sum())
    if cfg.unimodal_correct:
        t = t[t.unimodal_correct]
    t["following"] = stats.following_labels(t.pred_m, t.pred_v, t.pred_t)
    for name, fn in UNCERTAINTY_INDICES.items():
        t[f"d_rel_{name}"] = stats.relative_uncertainty(fn(t, "v"), fn(t, "t"))
    counts["analysed"] = int(len(t))
    return t, counts


def following_curve(d_rel: np.ndarray, follows_text: np.ndarray, cfg: AnalysisConfig, groups=None,
                    check_fit: bool = True) -> dict:
    edges = stats.bin_edges(d_rel, cfg.n_bins, cfg.bins)
    curve = stats.binned_rate(d_rel, follows_text, edges, clusters=groups)
    curve["few"] = curve["n"] < cfg.min_bin_count
    bp = stats.balance_point(d_rel, follows_text, cfg.n_boot, cfg.seed, clusters=groups)
    keep = curve["n"] >= cfg.min_bin_count
    return {
        "bins": {k: np.asarray(v).tolist() for k, v in curve.items()},
        "balance_point": bp.to_dict(),
        "monotonicity": stats.monotonicity(curve["centre"][keep], curve["rate"][keep]),
        "fit_check": fit_check(d_rel, follows_text, bp, edges, groups, cfg) if check_fit else None,
    }


def fit_check(d_rel, follows_text, bp, edges, groups, cfg: AnalysisConfig) -> dict:
    """Is the logistic curve believable? Its grouped goodness of fit on the binned rates, and the model-free
    (isotonic) balance point beside it; `disagrees` when both cross and their intervals do not overlap."""
    check = {"goodness_of_fit": None, "isotonic": stats.isotonic_balance_point(d_rel, follows_text, groups,
                                                                                cfg.n_boot, cfg.seed),
             "disagrees": False}
    if np.isfinite(bp.slope):
        check["goodness_of_fit"] = stats.grouped_fit_statistic(d_rel, follows_text, bp.intercept, bp.slope, edges, groups)
    iso = check["isotonic"]
    if bp.ci and iso["ci"]:
        check["disagrees"] = bool(iso["ci"][1] < bp.ci[0] or bp.ci[1] < iso["ci"][0])
    return check


def describe_fit_check(check: dict | None) -> str:
    """One line: the fit statistic and the isotonic crossing, and a flag when they disagree."""
    if not check:
        return "fit check: n/a"
    gof, iso = check["goodness_of_fit"], check["isotonic"]
    parts = []
    if gof:
        parts.append(f"grouped fit X^2 {gof['statistic']:.1f} on {gof['df']} df (p {gof['p_value']:.3f})")
    ci = iso["ci"]
    parts.append("isotonic balance point " + ("none (the monotone fit does not cross 0.5)" if iso["estimate"] is None else
                 f"{iso['estimate']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")))
    text = "fit check: " + "; ".join(parts)
    return text + ("; WARNING: the logistic and the isotonic balance points disagree beyond their intervals"
                   if check["disagrees"] else "")


def oscillation(t: pd.DataFrame, balance: float | None, cfg: AnalysisConfig) -> dict | None:
    """Mean oscillation count in the ambiguous and clear regions around `balance` (no split without one)."""
    if "first_token_shared" in t:  # the lens reads first tokens: it cannot tell these answers apart
        t = t[~t.first_token_shared.astype(bool)]
    if "lens_top1" not in t or t.lens_top1.isna().all():
        return None
    t = t.dropna(subset=["lens_top1"])
    counts = np.array([stats.oscillation_count(list(seq), tv, tt)
                       for seq, tv, tt in zip(t.lens_top1, t.token_visual, t.token_text)])
    none = {"mean": None, "ci": None, "n": 0}
    amb = stats.ambiguous_region(t.d_rel_entropy, balance, cfg.ambiguous_width) if balance is not None else None
    d_rel = t.d_rel_entropy.to_numpy()
    diffs = np.stack([np.asarray(d, dtype=float) for d in t.lens_diff]) if "lens_diff" in t else None
    heat = None
    if diffs is not None:
        edges = stats.bin_edges(d_rel, cfg.n_bins, "fixed")  # equal width over [-2, 2]: runs share the bins
        idx = np.clip(np.searchsorted(edges, d_rel, side="right") - 1, 0, len(edges) - 2)
        heat = {"edges": edges.tolist(),
                "mean_logit_diff": [[float(diffs[idx == b, layer].mean()) if (idx == b).any() else None
                                     for b in range(len(edges) - 1)] for layer in range(diffs.shape[1])]}
    return {"balance_used": balance, "width": cfg.ambiguous_width,
            "ambiguous": stats.mean_interval(counts[amb]) if amb is not None else none,
            "clear": stats.mean_interval(counts[~amb]) if amb is not None else none,
            "per_sample_mean": float(counts.mean()), "heatmap": heat}


def image_only_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each image and question once, with the model's image-only answer and an image answer to check it against."""
    img = table.dropna(subset=["pred_v", "answer_visual"]).drop_duplicates(["image_id", "question"])
    return img[img.answer_visual != ""]


def text_only_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Each conflict's text and question once, with the model's text-only answer."""
    return table[table.condition == "conflict"].dropna(subset=["pred_t"]).drop_duplicates(["text_context", "question"])


def difficulty_views(table: pd.DataFrame) -> dict:
    """Mean entropy and accuracy per visual tier (image only) and text tier (text only); TFR per cell."""
    out = {}
    img = image_only_rows(table)
    if "d_v" in img and img.d_v.notna().any():
        g = img.assign(correct=stats.same_answers(img.pred_v, img.answer_visual)).groupby("d_v")
        out["visual"] = g.agg(accuracy=("correct", "mean"), entropy=("entropy_v", "mean"), n=("id", "size")).reset_index().to_dict("records")
    txt = text_only_rows(table)
    if "d_t" in txt and txt.d_t.notna().any():
        g = txt.assign(correct=stats.same_answers(txt.pred_t, txt.answer_text)).groupby("d_t")
        out["text"] = g.agg(accuracy=("correct", "mean"), entropy=("entropy_t", "mean"), n=("id", "size")).reset_index().to_dict("records")
    return out


def tfr_cells(t: pd.DataFrame) -> list[dict]:
    cells = []
    for (dv, dt), g in t.groupby(["d_v", "d_t"]):
        r = stats.tfr_vfr(g.following)
        cells.append({"d_v": int(dv), "d_t": int(dt), "tfr": r["tfr"], "n": r["n"]})
    return cells


def bootstrap_clusters(t: pd.DataFrame, cfg: AnalysisConfig) -> np.ndarray | None:
    """The group of each sample for a cluster bootstrap, or None to resample samples."""
    if cfg.bootstrap == "sample":
        return None
    if "group" not in t:
        log.warning("the table has no `group` column: the bootstrap resamples samples, so intervals are "
                    "too narrow if samples share inputs")
        return None
    return t.group.to_numpy()


def ability_gate(table: pd.DataFrame) -> dict:
    """Whether the model can do the task on each modality alone: image-only accuracy (each image and question once)
    and text-only accuracy (each text and question once) with group-clustered intervals, beside chance, a uniform
    pick among the answers the table has. A modality fails when its interval does not lie above chance; then no
    balance point means anything (docs/method.md, "The ability gate")."""
    answers = pd.concat([table.answer_visual, table.answer_text]).dropna()
    answers = set(stats.normal_answers(answers[answers != ""]).tolist())
    img, txt = image_only_rows(table), text_only_rows(table)
    rates = {name: stats.rate_with_interval(stats.same_answers(rows[pred], rows[truth]), rows.group.to_numpy())
             for name, rows, truth, pred in (("image only", img, "answer_visual", "pred_v"),
                                             ("text only", txt, "answer_text", "pred_t"))}
    return gate_verdict(rates, len(answers))


def gate_verdict(rates: dict[str, dict], answers: int) -> dict:
    """The gate's verdict from each modality's accuracy (`stats.rate_with_interval`) and the number of answers a
    uniform pick chooses among: which modalities are not above chance with their interval, and the line saying so."""
    chance = 1 / max(answers, 1)
    modalities = {name: {**rate, "above_chance": bool(rate["ci"] is not None and rate["ci"][0] > chance)}
                  for name, rate in rates.items()}
    failing = [m for m, r in modalities.items() if not r["above_chance"]]
    line = "; ".join(f"{m} accuracy {float('nan') if modalities[m]['rate'] is None else modalities[m]['rate']:.3f} "
                     + (f"[{modalities[m]['ci'][0]:.3f}, {modalities[m]['ci'][1]:.3f}] " if modalities[m]["ci"] else "")
                     + f"is not above chance {chance:.3f} ({answers} answers)" for m in failing)
    return {"passed": not failing, "chance": chance, "answers": answers, "modalities": modalities,
            "line": f"the model cannot do the task on its own: {line}" if failing else None}


def gated_balance_point(gate: dict, forced: bool, bp: dict | None) -> dict | None:
    """The balance point a failed gate leaves: none (its line says why), or with --force the fitted one, flagged."""
    if forced:
        return bp and {**bp, "forced_past_gate": True,
                       "description": f"{bp['description']} (FORCED: {gate['line']})"}
    return {"estimate": None, "ci": None, "crosses": False, "leans": "undecided", "side": "", "direction": "gated",
            "intercept": float("nan"), "slope": float("nan"), "description": f"none ({gate['line']})"}


def apply_gate(gate: dict, curves, force: bool) -> None:
    """A failed gate takes the balance point out of each curve (or, forced, flags it), and says so in the log."""
    if gate["passed"]:
        return
    log.warning(gate["line"])
    for curve in curves:
        if curve and "balance_point" in curve:
            curve["balance_point"] = gated_balance_point(gate, force, curve["balance_point"])


def analyze(table: pd.DataFrame, cfg: AnalysisConfig | None = None) -> dict:
    """Every headline number of a run, JSON-ready."""
    cfg = cfg or AnalysisConfig()
    t, counts = conflict_samples(table, cfg)
    decided = t[t.following.isin(["text", "vision"])]
    if len(decided) < cfg.min_samples:
        raise ValueError(f"only {len(decided)} conflict samples are text- or vision-following after filtering "
                         f"({counts}); a curve needs at least {cfg.min_samples}: score more groups"
                         + (" or drop the unimodal-correct filter (--no_unimodal_correct; the recipe: --unimodal_correct false)" if cfg.unimodal_correct else ""))
    follows = (decided.following == "text").to_numpy(float)
    groups = bootstrap_clusters(decided, cfg)
    result = {"config": asdict(cfg), "counts": counts,
              "following": stats.tfr_vfr(t.following, bootstrap_clusters(t, cfg)),
              "other_share": float((t.following == "other").mean()) if len(t) else None, "curves": {}}
    for name in UNCERTAINTY_INDICES:
        try:
            result["curves"][name] = following_curve(decided[f"d_rel_{name}"].to_numpy(), follows, cfg, groups,
                                                     check_fit=name == cfg.index)  # the headline curve's
        except ValueError as e:
            result["curves"][name] = {"error": str(e)}
    result["ability"] = gate = ability_gate(table)
    apply_gate(gate, result["curves"].values(), cfg.force)
    main = result["curves"][cfg.index]
    result["balance_point"] = main.get("balance_point")
    result["monotonicity"] = main.get("monotonicity")
    result["fit_check"] = main.get("fit_check")
    bp = result["balance_point"] or {}
    result["oscillation"] = oscillation(decided, bp.get("estimate"), cfg)  # no crossing (or gated): no region split
    result["difficulty"] = difficulty_views(table)
    result["tfr_cells"] = tfr_cells(t) if "d_v" in t and t.d_v.notna().all() else []
    return result


def following_samples(table: pd.DataFrame, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dH_rel, follows text, group) of the text- or vision-following conflicts the balance point is fitted on."""
    t, _ = conflict_samples(table, cfg)
    decided = t[t.following.isin(["text", "vision"])]
    return (decided[f"d_rel_{cfg.index}"].to_numpy(), (decided.following == "text").to_numpy(float),
            decided.group.to_numpy())


def alignment_guarantee(before: pd.DataFrame, after: pd.DataFrame, after_result: dict, target: float,
                        cfg: AnalysisConfig) -> dict:
    """What an alignment run can claim (docs/method.md, "What a run guarantees"): the realized balance point
    with its interval, whether the target lies inside it, and the shift after - before with its paired interval."""
    bp = after_result["balance_point"]
    ci = bp.get("ci")
    shift = stats.balance_point_shift(following_samples(before, cfg), following_samples(after, cfg),
                                      cfg.n_boot, cfg.seed)
    return {"target": target, "realized": bp.get("estimate"), "realized_ci": ci,
            "target_in_interval": bool(ci is not None and ci[0] <= target <= ci[1]),
            "miss": None if bp.get("estimate") is None else bp["estimate"] - target,
            "shift": shift["estimate"], "shift_ci": shift["ci"], "groups": shift["n_groups"]}


def paired_runs(first: pd.DataFrame, second: pd.DataFrame, second_result: dict, target: float | None,
                cfg: AnalysisConfig, names: tuple[str, str], same_data: bool = True) -> dict:
    """Two runs compared as a pair: with the same conflicts of the same dataset scored, the shift second - first
    with its paired interval (and with a target the run's guarantee); otherwise a line that says why there is none."""
    conflicts = lambda t: set(t.id[t.condition == "conflict"])
    a, b = conflicts(first), conflicts(second)
    if not same_data:
        return {"paired": False, "description": f"{names[0]} and {names[1]} were scored on different datasets: no "
                                                f"paired shift; measure both on the same data to compare them as a pair"}
    if not a or a != b:
        return {"paired": False, "description": (
            f"{names[0]} and {names[1]} were not scored on the same conflicts ({len(a)} and {len(b)}, {len(a & b)} "
            f"shared): no paired shift; measure both on the same data and split to compare them as a pair")}
    if target is not None:
        g = alignment_guarantee(first, second, second_result, target, cfg)
        return {"paired": True, "guarantee": g, "shift": g["shift"], "shift_ci": g["shift_ci"], "groups": g["groups"],
                "description": describe_guarantee(g)}
    shift = stats.balance_point_shift(following_samples(first, cfg), following_samples(second, cfg), cfg.n_boot,
                                      cfg.seed)
    told = (f"{shift['estimate']:+.3f} [{shift['ci'][0]:+.3f}, {shift['ci'][1]:+.3f}] ({shift['n_groups']} groups, "
            f"paired bootstrap)" if shift["estimate"] is not None and shift["ci"] else
            "not measured (a curve does not cross 0.5)")
    return {"paired": True, "shift": shift["estimate"], "shift_ci": shift["ci"], "groups": shift["n_groups"],
            "description": f"balance point shift {names[1]} - {names[0]}: {told}"}


def describe_guarantee(g: dict) -> str:
    if g["realized"] is None:
        return f"the adapted curve does not cross 0.5: no realized balance point (target {g['target']:+.2f})"
    ci = g["realized_ci"]
    inside = "inside" if g["target_in_interval"] else "OUTSIDE"
    shift = (f"{g['shift']:+.3f} [{g['shift_ci'][0]:+.3f}, {g['shift_ci'][1]:+.3f}]" if g["shift_ci"]
             else "not measured (the base curve does not cross)")
    interval = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(no interval)"
    return (f"realized balance point {g['realized']:+.3f} {interval}, target {g['target']:+.2f} {inside} it "
            f"(miss {g['miss']:+.3f}); shift after - before {shift} ({g['groups']} groups, paired bootstrap)")
