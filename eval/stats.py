"""Pure statistics of the method (docs/method.md) on plain arrays: relative uncertainty, following
labels and rates, the following curve and its balance point, oscillation. No model, no tables."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


# ---- uncertainty (the per-sample indices themselves are in eval/uncertainty.py) -------------
def relative_uncertainty(h_v, h_t) -> np.ndarray:
    """dH_rel = 2 (H_t - H_v) / (H_t + H_v) in [-2, 2]; 0 where both entropies are 0; NaN stays NaN."""
    h_v, h_t = np.asarray(h_v, dtype=float), np.asarray(h_t, dtype=float)
    total = h_t + h_v
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 2 * (h_t - h_v) / np.where(total > 0, total, 1), 0.0)
    return np.where(np.isnan(total), np.nan, out)


# ---- section 4: modality following ------------------------------------------------------
def normal_answers(answers) -> np.ndarray:
    """Answers as they are compared: without surrounding spaces and case ("Blue " is "blue"); missing stays missing."""
    return np.array([a.strip().casefold() if isinstance(a, str) else a for a in answers], dtype=object)


def following_labels(y_m, y_v, y_t) -> np.ndarray:
    """'text' if Y_m = Y_t, 'vision' if Y_m = Y_v, 'other' otherwise ('same' if Y_v = Y_t: undecidable)."""
    y_m, y_v, y_t = (normal_answers(a) for a in (y_m, y_v, y_t))
    return np.where(y_v == y_t, "same", np.where(y_m == y_t, "text", np.where(y_m == y_v, "vision", "other")))


def same_answers(a, b) -> np.ndarray:
    """Elementwise: the two answers are the same once spaces and case are set aside."""
    return normal_answers(a) == normal_answers(b)


def unimodal_correct(y_v, y_t, answer_visual, answer_text) -> np.ndarray:
    """The default analysis filter: both unimodal answers equal the ground truth."""
    return same_answers(y_v, answer_visual) & same_answers(y_t, answer_text)


def tfr_vfr(labels, clusters=None) -> dict:
    """TFR = #text / #(text or vision), VFR = 1 - TFR, with 95 % intervals that respect `clusters` (groups)."""
    labels = np.asarray(labels)
    decided = np.isin(labels, ["text", "vision"])
    k, n = int((labels == "text").sum()), int(decided.sum())
    if n == 0:
        return {"tfr": None, "vfr": None, "n": 0, "tfr_ci": None, "vfr_ci": None}
    lo, hi = rate_interval((labels == "text")[decided], None if clusters is None else np.asarray(clusters)[decided])
    lo, hi = float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))
    return {"tfr": k / n, "vfr": 1 - k / n, "n": n, "tfr_ci": (lo, hi), "vfr_ci": (1 - hi, 1 - lo)}


def rate_interval(successes, clusters=None, bins=None, n_bins: int | None = None):
    """95 % interval of a rate, respecting clusters: (lo, hi) floats, or arrays per bin when `bins` gives each
    sample's bin index.

    Samples of one group share an image and a text, so their outcomes are correlated and a plain
    binomial interval is too narrow. With `clusters`, the interval is Wilson's on the effective sample
    size n / deff, where the design effect deff = V_cluster / V_binomial compares the cluster-robust
    variance of the ratio estimator sum(k_c) / sum(n_c) with the binomial one (kept >= 1; Korn & Graubard).
    Unlike a percentile bootstrap it does not collapse to [0, 0] or [1, 1] in a small or one-sided bin.
    """
    y = np.asarray(successes, dtype=float)
    per_bin = bins is not None
    bins = np.asarray(bins, dtype=int) if per_bin else np.zeros(len(y), dtype=int)
    n_bins = n_bins or int(bins.max(initial=-1)) + 1
    if clusters is None:
        cluster_index, n_clusters = np.arange(len(y)), len(y)
    else:
        _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
        n_clusters = int(cluster_index.max(initial=-1)) + 1
    k_c = np.zeros((n_clusters, n_bins))
    n_c = np.zeros((n_clusters, n_bins))
    np.add.at(k_c, (cluster_index, bins), y)
    np.add.at(n_c, (cluster_index, bins), 1.0)
    k, n = k_c.sum(0), n_c.sum(0)
    m = (n_c > 0).sum(0)  # clusters present in each bin
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        v_cluster = m / (m - 1) * ((k_c - p * n_c) ** 2).sum(0) / n ** 2
        v_binomial = p * (1 - p) / n
        deff = np.where((v_binomial > 0) & (m > 1), np.maximum(v_cluster / v_binomial, 1.0), 1.0)
    n_eff = n / deff
    z = Z95
    if clusters is not None:  # the variance is estimated from m clusters: Student's t on m - 1 degrees of freedom
        from scipy.stats import t as student_t
        z = np.where(m > 1, student_t.ppf(0.975, np.maximum(m - 1, 1)), Z95)
    lo, hi = wilson_interval(p * n_eff, n_eff, z)
    lo, hi = np.atleast_1d(lo), np.atleast_1d(hi)
    return (lo, hi) if per_bin else (float(lo[0]), float(hi[0]))


def rate_with_interval(hits, groups) -> dict:
    """A rate, its group-clustered 95 % interval (`rate_interval`) and n; rate None where there are no samples."""
    hits = np.asarray(hits, dtype=float)
    if not len(hits):
        return {"rate": None, "ci": None, "n": 0}
    lo, hi = rate_interval(hits, groups)
    return {"rate": float(hits.mean()), "ci": (max(lo, 0.0), min(hi, 1.0)), "n": int(len(hits))}  # round-off


def cohens_d(a, b) -> float:
    """(mean a - mean b) / pooled standard deviation (ddof 1 in each group); NaN with fewer than 2 per group
    or where both groups are constant and equal, +-inf where they are constant and differ."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    diff = float(a.mean() - b.mean())
    if pooled == 0:
        return float("nan") if diff == 0 else math.copysign(math.inf, diff)
    return diff / pooled


def wilson_interval(k, n, z: float = Z95):
    """Wilson score interval of a binomial proportion (vectorised; NaN where n = 0)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z ** 2 / n
        centre = (p + z ** 2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / denom
    lo, hi = centre - half, centre + half
    return (float(lo), float(hi)) if lo.ndim == 0 else (lo, hi)


def bin_edges(x, n_bins: int = 8, kind: str = "quantile", lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if kind == "quantile":
        edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
        return edges if len(edges) > 1 else np.array([x.min() - 1e-9, x.max() + 1e-9])
    if kind == "fixed":
        return np.linspace(lo, hi, n_bins + 1)
    raise ValueError(f"bins kind {kind!r} unknown; use 'quantile' or 'fixed'")


def binned_rate(x, y, edges, clusters=None) -> dict[str, np.ndarray]:
    """Per bin: centre (mean x), count, successes, rate and its 95 % interval (respecting `clusters`)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(idx, minlength=len(edges) - 1)
    k = np.bincount(idx, weights=y, minlength=len(edges) - 1)
    sx = np.bincount(idx, weights=x, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate, centre = k / n, sx / n
    lo, hi = rate_interval(y, clusters, bins=idx, n_bins=len(edges) - 1)
    return {"lo": edges[:-1], "hi": edges[1:], "centre": centre, "n": n, "k": k, "rate": rate,
            "ci_lo": lo, "ci_hi": hi}


def logistic_fit(x, y, ridge: float = 1e-3, iters: int = 50, return_se: bool = False):
    """P(y=1) = sigmoid(a + b x) by Newton-Raphson. A small ridge on the slope keeps separable data finite;
    the intercept is not penalised (that would pull the crossing -a/b toward 0). With `return_se`, also the
    slope's standard error from the Fisher information."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    X = np.column_stack([np.ones_like(x), x])
    penalty = np.diag([0.0, ridge])
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
        grad = X.T @ (y - p) - penalty @ w
        hess = X.T @ (X * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    if not return_se:
        return float(w[0]), float(w[1])
    p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
    cov = np.linalg.pinv(X.T @ (X * (p * (1 - p))[:, None]) + penalty)
    return float(w[0]), float(w[1]), float(np.sqrt(max(cov[1, 1], 0.0)))


@dataclass
class BalancePoint:
    """Where the following curve crosses 0.5 (docs/method.md, "Modality following")."""
    estimate: float | None  # None when the curve does not cross 0.5 in the observed range
    ci: tuple[float, float] | None
    crosses: bool
    # "text" / "vision": the side the fitted curve is on at equal uncertainty (P(text | dH_rel = 0) vs 0.5),
    # or, for a curve that never crosses, the side it stays on
    leans: str
    intercept: float
    slope: float
    n: int
    x_range: tuple[float, float]
    # "falling" (the expected shape), "rising" (against it: the balance point is flagged), "flat" (slope
    # within 1.96 standard errors of 0: no balance point is meaningful) or "constant" (one modality always won)
    direction: str = "falling"
    p_text_at_equal_uncertainty: float | None = None

    def describe(self, sides: dict[str, str] | None = None) -> str:
        """`sides` names the two sides where they are not text and vision ({"text": "sound", "vision": "frames"})."""
        side = (sides or {}).get(self.leans, self.leans)
        if not self.crosses:
            text = f"no crossing in [{self.x_range[0]:+.2f}, {self.x_range[1]:+.2f}], leans {side}"
        else:
            interval = f"[{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]" if self.ci else "(no interval: n_boot 0)"
            text = f"{self.estimate:+.3f} {interval} (leans {side})"
        if self.direction == "constant":
            text += f" (every analysed conflict followed the {side})"
        elif self.direction != "falling":
            text += f"; WARNING: the curve is {self.direction} in dH_rel (slope {self.slope:+.2f}), not falling"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def balance_point(x, y, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, clusters=None) -> BalancePoint:
    """Logistic fit of text-following on dH_rel; balance point -a/b with a percentile bootstrap CI.

    `clusters` (one label per sample, e.g. the dataset group) makes it a cluster bootstrap that
    resamples whole clusters: samples of one group share an image and a text, so they are not
    independent, and resampling them one by one gives intervals that are too narrow.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~np.isnan(x) & ~np.isnan(y)
    if clusters is not None:
        clusters = np.asarray(clusters)
        if len(clusters) != len(ok):
            raise ValueError(f"clusters has {len(clusters)} labels for {len(ok)} samples; give one per sample")
        clusters = clusters[ok]
    x, y = x[ok], y[ok]
    if len(x) < 10:
        raise ValueError(f"a balance point needs >= 10 samples; got {len(x)}: use more groups or relax the filter")
    lo_x, hi_x = float(x.min()), float(x.max())
    if len(np.unique(y)) < 2:  # one modality always wins: the curve sits on one side of 0.5
        return BalancePoint(None, None, False, "text" if y[0] == 1 else "vision", math.nan, math.nan,
                            int(len(x)), (lo_x, hi_x), "constant", float(y[0]))
    a, b, se_b = logistic_fit(x, y, return_se=True)
    direction = "flat" if abs(b) < Z95 * se_b else ("falling" if b < 0 else "rising")
    crossing = -a / b if b != 0 else math.inf
    crosses = lo_x <= crossing <= hi_x and direction != "flat"
    if crosses:  # P(text | dH_rel = 0) = sigmoid(a): whatever the curve's direction
        leans = "text" if a > 0 else "vision"
    else:  # the side of 0.5 the curve stays on: above means the text wins everywhere observed
        leans = "text" if a + b * (lo_x + hi_x) / 2 > 0 else "vision"
    est, interval = None, None
    if crosses and n_boot:
        rng = np.random.default_rng(seed)
        members = _cluster_members(clusters) if clusters is not None else None
        boots = []
        for _ in range(n_boot):
            if members is None:
                i = rng.integers(0, len(x), len(x))
            else:
                i = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
            ab, bb = logistic_fit(x[i], y[i])
            boots.append(-ab / bb if bb != 0 else np.nan)
        boots = np.asarray(boots)
        boots = np.clip(boots[np.isfinite(boots)], -2.0, 2.0)  # dH_rel lives in [-2, 2]
        alpha = (1 - ci) / 2
        interval = (float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)))
    if crosses:
        est = float(crossing)
    return BalancePoint(est, interval, bool(crosses), leans, a, b, int(len(x)), (lo_x, hi_x), direction,
                        float(1 / (1 + math.exp(-a))))


def balance_point_shift(before: tuple, after: tuple, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """after - before of two runs' balance points, each run given as (dH_rel, follows_text, group) arrays.

    Both runs score the same groups, so one draw of groups resamples both (a paired cluster bootstrap): the
    difference's interval is not the one two independent intervals would give. Estimate None where either
    curve does not cross 0.5; the interval keeps the draws where both cross."""
    runs = []
    for x, y, g in (before, after):
        x, y, g = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(g)
        ok = ~np.isnan(x) & ~np.isnan(y)
        runs.append((x[ok], y[ok], g[ok]))
    estimates = [balance_point(x, y, n_boot=0).estimate for x, y, _ in runs]
    if None in estimates:
        return {"estimate": None, "ci": None, "n_groups": 0}
    shared = np.intersect1d(runs[0][2], runs[1][2])
    if len(shared) < 2:
        raise ValueError("the two runs share fewer than 2 groups; a paired shift needs both scored on the same groups")
    members = [{k: np.flatnonzero(g == k) for k in shared} for _, _, g in runs]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        draw = shared[rng.integers(0, len(shared), len(shared))]
        crossings = []
        for (x, y, _), index in zip(runs, members):
            i = np.concatenate([index[k] for k in draw])
            a, b = logistic_fit(x[i], y[i])
            crossings.append(np.clip(-a / b, -2.0, 2.0) if b != 0 else np.nan)
        boots.append(crossings[1] - crossings[0])
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    alpha = (1 - ci) / 2
    interval = (float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))) if len(boots) else None
    return {"estimate": float(estimates[1] - estimates[0]), "ci": interval, "n_groups": int(len(shared))}


def cluster_mean_interval(values, clusters, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Mean of `values` with a percentile interval from a bootstrap over `clusters` (a group's rows share an image
    and a text, so they are not independent draws). NaNs are dropped."""
    v, c = np.asarray(values, dtype=float), np.asarray(clusters)
    ok = ~np.isnan(v)
    v, c = v[ok], c[ok]
    if len(v) == 0:
        return {"mean": None, "ci": None, "n": 0, "n_groups": 0}
    members = _cluster_members(c)
    rng = np.random.default_rng(seed)
    sums, counts = np.array([v[m].sum() for m in members]), np.array([len(m) for m in members])
    draws = rng.integers(0, len(members), (n_boot, len(members)))
    boots = sums[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - ci) / 2
    interval = (float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))) if n_boot else None
    return {"mean": float(v.mean()), "ci": interval, "n": int(len(v)), "n_groups": len(members)}


def _cluster_members(clusters: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each cluster, in order of first appearance (one sort, not a scan per cluster)."""
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    labels = np.argsort(np.argsort(first))[inverse]  # cluster rank by first appearance
    by_cluster = np.argsort(labels, kind="stable")
    return np.split(by_cluster, np.cumsum(np.bincount(labels))[:-1])


def monotonicity(centres, rates) -> float:
    """Spearman correlation of binned rate with bin centre: -1 is a perfectly falling curve."""
    from scipy.stats import spearmanr
    c, r = np.asarray(centres, dtype=float), np.asarray(rates, dtype=float)
    ok = ~np.isnan(c) & ~np.isnan(r)
    if ok.sum() < 3:
        return float("nan")
    return float(spearmanr(c[ok], r[ok]).statistic)


# ---- section 5: oscillation -------------------------------------------------------------
def oscillation_count(layer_top1, y_v, y_t) -> int:
    """Switches between Y_v and Y_t in the layer-wise top-1 sequence, skipping other tokens."""
    seq = [t for t in layer_top1 if t == y_v or t == y_t]
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def ambiguous_region(d_rel, balance: float, width: float = 0.5) -> np.ndarray:
    return np.abs(np.asarray(d_rel, dtype=float) - balance) <= width


def mean_interval(values) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"mean": None, "ci": None, "n": 0}
    half = Z95 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci": (float(v.mean() - half), float(v.mean() + half)), "n": int(len(v))}
