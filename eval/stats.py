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


def logistic_fit_weighted(x, y, weights, ridge: float = 1e-3, iters: int = 25,
                          tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """`logistic_fit` for many weightings of one sample at once: `weights` is (fits, samples), e.g. how often a
    bootstrap draw or a jackknife leaves each sample in. Returns the intercepts and slopes, one per row."""
    x, y, w = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.atleast_2d(np.asarray(weights, dtype=float))
    a, b = np.zeros(len(w)), np.zeros(len(w))
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(a[:, None] + b[:, None] * x, -30, 30)))
        r, s = w * (y - p), w * p * (1 - p)
        g0, g1 = r.sum(1), r @ x - ridge * b
        h00, h01, h11 = s.sum(1), s @ x, s @ (x * x) + ridge
        det = np.maximum(h00 * h11 - h01 ** 2, 1e-12)
        da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        a, b = a + da, b + db
        if max(np.abs(da).max(), np.abs(db).max()) < tol:  # a near-separated draw creeps on: its crossing has settled
            break
    return a, b


def cluster_weights(clusters, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, samples): how many times each sample is drawn when whole clusters are resampled with replacement."""
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    m = int(index.max()) + 1
    counts = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(n_draws)])
    return counts[:, index].astype(float)


def jackknife_fits(x, y, clusters, chunk: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """`logistic_fit_weighted` leaving out one cluster at a time: (intercepts, slopes), one per cluster."""
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    m = int(index.max()) + 1
    fits = [logistic_fit_weighted(x, y, (index[None, :] != np.arange(k, min(k + chunk, m))[:, None]).astype(float))
            for k in range(0, m, chunk)]
    return np.concatenate([f[0] for f in fits]), np.concatenate([f[1] for f in fits])


def bca_interval(estimate: float, boots, jackknife, ci: float = 0.95,
                 n_clusters: int | None = None) -> tuple[float, float] | None:
    """Bias-corrected and accelerated bootstrap interval (Efron 1987) from the bootstrap draws and the
    leave-one-cluster-out jackknife values. With `n_clusters`, the normal quantile becomes Student's t on
    n_clusters - 1 degrees of freedom: with few clusters a bootstrap spreads too little, and this widens it.
    None without finite draws."""
    from scipy.stats import norm
    from scipy.stats import t as student_t
    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    jack = np.asarray(jackknife, dtype=float)
    jack = jack[np.isfinite(jack)]
    if not len(boots) or not np.isfinite(estimate):
        return None
    below = (np.mean(boots < estimate) + 0.5 * np.mean(boots == estimate))
    z0 = norm.ppf(np.clip(below, 1 / (len(boots) + 1), 1 - 1 / (len(boots) + 1)))
    d = jack.mean() - jack
    denom = 6 * (d ** 2).sum() ** 1.5
    acc = float((d ** 3).sum() / denom) if denom > 0 else 0.0
    alpha = (1 - ci) / 2
    z = (student_t.ppf(1 - alpha, n_clusters - 1) if n_clusters and n_clusters > 1 else norm.ppf(1 - alpha))
    ends = []
    for zq in (-z, z):
        shifted = z0 + (z0 + zq) / (1 - acc * (z0 + zq))
        ends.append(float(np.quantile(boots, np.clip(norm.cdf(shifted), 0, 1))))
    return ends[0], ends[1]


def jackknife_t_interval(estimate: float, jackknife, ci: float = 0.95,
                         bounds=(-math.inf, math.inf)) -> tuple[float, float] | None:
    """estimate +- t(clusters - 1) x the leave-one-cluster-out jackknife's standard error, kept within `bounds`.
    A percentile group bootstrap of the balance point covers 0.93 with 60 groups; this covers 0.95
    (tests/test_stats.py). None with fewer than two finite jackknife values."""
    from scipy.stats import t as student_t
    jack = np.asarray(jackknife, dtype=float)
    jack = jack[np.isfinite(jack)]
    m = len(jack)
    if m < 2:
        return None
    se = math.sqrt((m - 1) / m * ((jack - jack.mean()) ** 2).sum())
    half = student_t.ppf(1 - (1 - ci) / 2, max(m - 1, 1)) * se
    return float(max(bounds[0], estimate - half)), float(min(bounds[1], estimate + half))


def clustered_statistic(statistic, clusters, ci: float = 0.95, bounds=(-math.inf, math.inf)) -> dict:
    """A statistic of a sample with its leave-one-cluster-out jackknife-t interval (`jackknife_t_interval`).
    `statistic(index)` computes it on the samples at `index`; `clusters` labels each sample's cluster (a group, a
    clip). Estimate None where the statistic is not finite on the whole sample; no interval with one cluster."""
    clusters = np.asarray(clusters)
    everything = np.arange(len(clusters))
    estimate = float(statistic(everything))
    if not np.isfinite(estimate):
        return {"estimate": None, "ci": None, "n_clusters": 0}
    members = _cluster_members(clusters)
    if len(members) < 2:
        return {"estimate": estimate, "ci": None, "n_clusters": len(members)}
    keep = np.ones(len(clusters), dtype=bool)
    jack = []
    for m in members:
        keep[m] = False
        jack.append(statistic(everything[keep]))
        keep[m] = True
    return {"estimate": estimate, "ci": jackknife_t_interval(estimate, jack, ci, bounds), "n_clusters": len(members)}


@dataclass
class BalancePoint:
    """Where the following curve crosses 0.5 (docs/method.md, "Modality following")."""
    estimate: float | None  # None when the curve does not cross 0.5 in the observed range
    ci: tuple[float, float] | None
    crosses: bool
    # "text" / "vision" where the interval allows a side: a crossing's interval excludes 0, or, for a curve that does
    # not cross (flat ones too), P(text | dH_rel = 0)'s interval excludes 0.5; "undecided" otherwise (a flat 50/50
    # curve, a crossing whose interval holds 0, any curve measured without intervals)
    leans: str
    intercept: float
    slope: float
    n: int
    x_range: tuple[float, float]
    # "falling" (the expected shape), "rising" (against it: the balance point is flagged), "flat" (the slope's
    # group-bootstrap interval holds 0: no balance point is meaningful), "separated" (every conflict on one side of a
    # gap follows one modality: the crossing lies somewhere in the gap, reported as the interval) or "constant"
    # (one modality always won)
    direction: str = "falling"
    p_text_at_equal_uncertainty: float | None = None
    # the point side, with no regard to intervals: where the fitted curve is at equal uncertainty, or for a curve that
    # never crosses, the side it stays on (the recipe starts its search from it)
    side: str = ""
    slope_ci: tuple[float, float] | None = None
    gap: tuple[float, float] | None = None

    def describe(self, sides: dict[str, str] | None = None) -> str:
        """`sides` names the two sides where they are not text and vision ({"text": "sound", "vision": "frames"})."""
        name = lambda s: (sides or {}).get(s, s)
        label = f"leans {name(self.leans)}" if self.leans != "undecided" else "undecided"
        if self.direction == "separated":
            return (f"{self.estimate:+.3f}, separated: the curve jumps from one side to the other in the gap "
                    f"[{self.gap[0]:+.3f}, {self.gap[1]:+.3f}] ({label})")
        if not self.crosses:
            text = f"no crossing in [{self.x_range[0]:+.2f}, {self.x_range[1]:+.2f}], {label}"
        else:
            interval = f"[{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]" if self.ci else "(no interval)"
            text = f"{self.estimate:+.3f} {interval} ({label})"
        if self.direction == "constant":
            text += f" (every analysed conflict followed the {name(self.side)})"
        elif self.direction == "flat":
            text += f"; the curve is flat in dH_rel (slope {self.slope:+.2f}, its interval holds 0): no balance point"
        elif self.direction != "falling":
            text += f"; WARNING: the curve is {self.direction} in dH_rel (slope {self.slope:+.2f}), not falling"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def side_of(interval: tuple[float, float] | None, at: float, above: str, below: str) -> str:
    """`above` when the interval lies above `at`, `below` when below, "undecided" when it holds it (or is missing)."""
    if interval is None:
        return "undecided"
    return above if interval[0] > at else below if interval[1] < at else "undecided"


def separation_gap(x: np.ndarray, y: np.ndarray) -> tuple[str, tuple[float, float]] | None:
    """("falling" | "rising", gap) when every text-following sample lies on one side of every vision-following one."""
    text, vision = x[y == 1], x[y == 0]
    if text.max() < vision.min():
        return "falling", (float(text.max()), float(vision.min()))
    if vision.max() < text.min():
        return "rising", (float(vision.max()), float(text.min()))
    return None


def balance_point(x, y, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, clusters=None) -> BalancePoint:
    """Logistic fit of text-following on dH_rel; balance point -a/b with a 95 % interval.

    `clusters` (one label per sample, e.g. the dataset group) makes every interval respect them: samples of one
    group share an image and a text, so they are not independent. The balance point's interval is the
    leave-one-cluster-out jackknife's with Student's t on clusters - 1 degrees of freedom (`jackknife_t_interval`);
    a cluster bootstrap (BCa, `bca_interval`) gives the slope's interval, which sets the curve's direction (flat
    when it holds 0), and P(text | dH_rel = 0)'s, the side of a curve that does not cross.
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
        side = "text" if y[0] == 1 else "vision"
        return BalancePoint(None, None, False, side, math.nan, math.nan, int(len(x)), (lo_x, hi_x), "constant",
                            float(y[0]), side)
    a, b, se_b = logistic_fit(x, y, return_se=True)
    separated = separation_gap(x, y)
    if separated:
        shape, gap = separated
        middle = (gap[0] + gap[1]) / 2
        leans = side_of(gap, 0.0, *(("text", "vision") if shape == "falling" else ("vision", "text")))
        return BalancePoint(middle, gap, True, leans, a, b, int(len(x)), (lo_x, hi_x), "separated",
                            float(1 / (1 + math.exp(-a))), ("text" if (shape == "falling") == (middle > 0) else "vision"),
                            None, gap)
    crossing = -a / b if b != 0 else math.inf
    side = "text" if a > 0 else "vision"
    slope_ci = intercept_ci = interval = None
    units = clusters if clusters is not None else np.arange(len(x))
    if n_boot:
        weights = cluster_weights(units, n_boot, np.random.default_rng(seed))
        fits = [logistic_fit_weighted(x, y, w) for w in np.array_split(weights, max(1, n_boot // 200))]
        boot_a, boot_b = np.concatenate([f[0] for f in fits]), np.concatenate([f[1] for f in fits])
        jack_a, jack_b = jackknife_fits(x, y, units)
        slope_ci = bca_interval(b, boot_b, jack_b, ci, len(jack_b))
        intercept_ci = bca_interval(a, boot_a, jack_a, ci, len(jack_a))
    if slope_ci is not None:
        direction = "flat" if slope_ci[0] <= 0 <= slope_ci[1] else ("falling" if b < 0 else "rising")
    else:  # no draws (or too few groups to resample): the slope's standard error, not clustered
        direction = "flat" if abs(b) < Z95 * se_b else ("falling" if b < 0 else "rising")
    crosses = lo_x <= crossing <= hi_x and direction != "flat"
    if not crosses:  # the side of 0.5 the curve stays on: above means the text wins everywhere observed
        side = "text" if a + b * (lo_x + hi_x) / 2 > 0 else "vision"
    if crosses and n_boot:
        with np.errstate(divide="ignore", invalid="ignore"):
            jack = np.clip(-jack_a / jack_b, -2.0, 2.0)  # dH_rel lives in [-2, 2]
        interval = jackknife_t_interval(crossing, jack, ci, bounds=(-2.0, 2.0))
    if crosses and direction == "falling":
        leans = side_of(interval, 0.0, "text", "vision")
    else:  # rising, flat, or no crossing: the side P(text | dH_rel = 0) is on, where its interval keeps off 0.5
        leans = side_of(intercept_ci, 0.0, "text", "vision")
    return BalancePoint(float(crossing) if crosses else None, interval, bool(crosses), leans, a, b, int(len(x)),
                        (lo_x, hi_x), direction, float(1 / (1 + math.exp(-a))), side, slope_ci)


def grouped_fit_statistic(x, y, a: float, b: float, edges, clusters=None) -> dict:
    """How well the logistic curve sigmoid(a + b x) fits the binned rates, counting groups: per bin the residual
    sum r = sum(y - p) over its samples, its variance the larger of the binomial one (sum p (1 - p)) and the one
    the groups' residual sums show (their samples share an image and a text), and X^2 = sum over bins of r^2 / var,
    against chi^2 on bins - 2 degrees of freedom (Hosmer-Lemeshow, with a design effect kept >= 1). A small p-value
    says the curve misses the rates."""
    from scipy.stats import chi2
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    clusters = np.arange(len(x)) if clusters is None else np.asarray(clusters)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    p = 1 / (1 + np.exp(-np.clip(a + b * x, -30, 30)))
    by_cluster = np.zeros((int(cluster_index.max()) + 1, len(edges) - 1))
    np.add.at(by_cluster, (cluster_index, idx), y - p)
    binomial = np.bincount(idx, weights=p * (1 - p), minlength=len(edges) - 1)
    r, var = by_cluster.sum(0), np.maximum((by_cluster ** 2).sum(0), binomial)
    used = var > 0
    statistic = float((r[used] ** 2 / var[used]).sum())
    df = max(int(used.sum()) - 2, 1)
    return {"statistic": statistic, "df": df, "p_value": float(chi2.sf(statistic, df))}


def isotonic_crossing(x, y, weights=None, presorted: bool = False) -> float | None:
    """Where a falling monotone (isotonic) fit of y on x crosses 0.5, linear between the fitted steps around it;
    None when the fit stays on one side. `presorted`: x is already in increasing order (the bootstrap sorts once)."""
    from scipy.optimize import isotonic_regression
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = None if weights is None else np.asarray(weights, dtype=float)
    if not presorted:
        order = np.argsort(xs, kind="stable")
        xs, ys, w = xs[order], ys[order], None if w is None else w[order]
    if w is not None:
        keep = w > 0
        xs, ys, w = xs[keep], ys[keep], w[keep]
    fitted = isotonic_regression(ys, weights=w, increasing=False).x
    above = np.flatnonzero(fitted > 0.5)
    below = np.flatnonzero(fitted < 0.5)
    if not len(above) or not len(below):
        return None
    i, j = above[-1], below[0]  # falling: every index above precedes every index below (ties at 0.5 between)
    if j == i + 1:
        t = (fitted[i] - 0.5) / (fitted[i] - fitted[j])
        return float(xs[i] + t * (xs[j] - xs[i]))
    return float((xs[i + 1] + xs[j - 1]) / 2)  # a step at exactly 0.5: its middle


def isotonic_balance_point(x, y, clusters=None, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """The model-free balance point: the crossing of a monotone fit (`isotonic_crossing`), with a percentile group
    bootstrap interval (draws whose fit does not cross are left out, and counted)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    estimate = isotonic_crossing(x, y)
    if estimate is None or not n_boot:
        return {"estimate": estimate, "ci": None, "no_crossing_draws": 0}
    units = np.arange(len(x)) if clusters is None else np.asarray(clusters)
    order = np.argsort(x, kind="stable")
    weights = cluster_weights(units, n_boot, np.random.default_rng(seed))[:, order]
    draws = [isotonic_crossing(x[order], y[order], w, presorted=True) for w in weights]
    found = np.array([d for d in draws if d is not None])
    alpha = (1 - ci) / 2
    interval = (float(np.quantile(found, alpha)), float(np.quantile(found, 1 - alpha))) if len(found) else None
    return {"estimate": estimate, "ci": interval, "no_crossing_draws": int(len(draws) - len(found))}


def finite_runs(*runs: tuple) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each run's (x, y, group) arrays without the samples where x or y is NaN."""
    out = []
    for x, y, g in runs:
        x, y, g = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(g)
        ok = ~np.isnan(x) & ~np.isnan(y)
        out.append((x[ok], y[ok], g[ok]))
    return out


def balance_point_shift(before: tuple, after: tuple, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """after - before of two runs' balance points, each run given as (dH_rel, follows_text, group) arrays.

    Both runs score the same groups, so one draw of groups resamples both (a paired cluster bootstrap): the
    difference's interval is not the one two independent intervals would give. Estimate None where either
    curve does not cross 0.5; the interval keeps the draws where both cross."""
    runs = finite_runs(before, after)
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


def slope_ratio(before: tuple, after: tuple, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """after / before of two runs' following-curve slopes, each run given as (dH_rel, follows_text, group) arrays
    scored on the same groups: does a change keep the model's sensitivity to relative uncertainty (1) or flatten
    it (toward 0)? A paired group bootstrap, like `balance_point_shift`."""
    runs = finite_runs(before, after)
    shared = np.intersect1d(runs[0][2], runs[1][2])
    if len(shared) < 2:
        raise ValueError("the two runs share fewer than 2 groups; a paired ratio needs both scored on the same groups")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(shared), (n_boot, len(shared)))
    # how often each shared group is drawn, the same draws for both runs (the pairing)
    counts = np.stack([np.bincount(d, minlength=len(shared)) for d in draws]) if n_boot else np.zeros((0, len(shared)))
    slopes, boots = [], []
    for x, y, g in runs:
        slopes.append(logistic_fit(x, y)[1])
        position = np.searchsorted(shared, g)
        inside = (position < len(shared)) & (shared[np.minimum(position, len(shared) - 1)] == g)
        weights = np.where(inside, counts[:, np.minimum(position, len(shared) - 1)], 0).astype(float)
        boots.append(logistic_fit_weighted(x, y, weights)[1] if n_boot else np.array([]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boots[1] / boots[0]
    ratios = ratios[np.isfinite(ratios)]
    alpha = (1 - ci) / 2
    interval = (float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))) if len(ratios) else None
    estimate = float(slopes[1] / slopes[0]) if slopes[0] != 0 else None
    return {"estimate": estimate, "ci": interval, "before": float(slopes[0]), "after": float(slopes[1]),
            "n_groups": int(len(shared))}


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
    if ok.sum() < 3 or np.ptp(r[ok]) == 0 or np.ptp(c[ok]) == 0:  # a flat curve has no rank order
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
