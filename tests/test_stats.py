"""Statistics against hand-computed cases and known ground truth."""
import math

import numpy as np
import pytest

from eval import stats


def test_uncertainty_indices_by_hand():
    """The indices the scoring engine runs, on logits of known distributions (one with an exact zero)."""
    import torch
    from eval import uncertainty
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]))
    assert uncertainty.entropy(logits).tolist() == pytest.approx([1.5 * math.log(2), 0.0])
    assert uncertainty.one_minus_max_p(logits).tolist() == pytest.approx([0.5, 0.0])
    assert uncertainty.top2_margin(logits).tolist() == pytest.approx([0.25, 1.0])
    assert uncertainty.candidate_entropy(torch.zeros(1, 2)).tolist() == pytest.approx([math.log(2)])
    assert uncertainty.entropy(torch.tensor([[0.0, float("nan")]])).isnan().all()  # a broken logit stays visible


def test_relative_uncertainty_by_hand_and_edge_cases():
    d = stats.relative_uncertainty([1.0, 0.5, 0.0, 0.0, np.nan], [0.5, 1.0, 1.0, 0.0, 1.0])
    assert d[:4] == pytest.approx([2 * -0.5 / 1.5, 2 * 0.5 / 1.5, 2.0, 0.0])
    assert np.isnan(d[4])


def test_following_labels_and_filter_and_tfr():
    labels = stats.following_labels(y_m=["a", "b", "c", "a"], y_v=["a", "a", "a", "x"], y_t=["b", "b", "b", "x"])
    assert labels.tolist() == ["vision", "text", "other", "same"]
    ok = stats.unimodal_correct(["a", "a", "z"], ["b", "q", "b"], ["a", "a", "a"], ["b", "b", "b"])
    assert ok.tolist() == [True, False, False]
    r = stats.tfr_vfr(["text", "text", "vision", "other"])
    assert r["tfr"] == pytest.approx(2 / 3) and r["vfr"] == pytest.approx(1 / 3) and r["n"] == 3
    assert r["tfr_ci"][0] < 2 / 3 < r["tfr_ci"][1]
    assert stats.tfr_vfr(["other"])["tfr"] is None


def test_wilson_interval_known_value():
    lo, hi = stats.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)


def test_binned_rate_counts():
    x = np.array([-1.5, -1.0, 0.1, 0.2, 1.5])
    y = np.array([1, 1, 0, 1, 0])
    b = stats.binned_rate(x, y, np.array([-2, 0, 2]))
    assert b["n"].tolist() == [2, 3] and b["rate"] == pytest.approx([1.0, 1 / 3])


def _draw(seed, a, b, n=400):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(a + b * x)))).astype(float)
    return x, y


def test_logistic_fit_recovers_parameters():
    x, y = _draw(0, 1.0, -3.0, n=20000)
    a, b = stats.logistic_fit(x, y)
    assert a == pytest.approx(1.0, abs=0.1) and b == pytest.approx(-3.0, abs=0.15)


def test_balance_point_interval_covers_truth_in_90_percent_of_seeds():
    a, b = 0.9, -3.0  # true balance point -a/b = +0.3: leans text
    truth = -a / b
    hits = 0
    for seed in range(100):
        x, y = _draw(seed, a, b, n=300)
        bp = stats.balance_point(x, y, n_boot=150, seed=seed)
        assert bp.crosses and bp.leans == "text"
        hits += bp.ci[0] <= truth <= bp.ci[1]
    assert hits >= 90, hits


def test_cluster_bootstrap_counts_a_repeated_sample_once():
    # ten copies of a sample carry no more information than one: resampling samples shrinks the
    # interval by about sqrt(10), resampling clusters gives the interval of the originals
    x, y = _draw(3, 0.9, -3.0, n=200)
    reference = stats.balance_point(x, y, n_boot=300, seed=1)
    xs, ys, ids = np.repeat(x, 10), np.repeat(y, 10), np.repeat(np.arange(200), 10)
    naive = stats.balance_point(xs, ys, n_boot=300, seed=1)
    clustered = stats.balance_point(xs, ys, n_boot=300, seed=1, clusters=ids)

    def width(bp):
        return bp.ci[1] - bp.ci[0]
    assert clustered.estimate == pytest.approx(reference.estimate, abs=1e-3)
    assert width(clustered) == pytest.approx(width(reference), rel=0.1)
    assert width(naive) < 0.5 * width(reference)
    with pytest.raises(ValueError, match="one per sample"):
        stats.balance_point(x, y, clusters=ids)


def test_cluster_bootstrap_keeps_coverage_when_groups_share_a_bias():
    # each group shifts the logit by its own draw (shared image and text); symmetric shifts keep the
    # population crossing at -a/b, but only the cluster bootstrap's interval still covers it
    a, b, n_groups, per_group = 0.9, -3.0, 40, 15
    truth = -a / b
    hits = {"sample": 0, "group": 0}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        groups = np.repeat(np.arange(n_groups), per_group)
        shift = rng.normal(0, 1.5, n_groups)[groups]
        x = rng.uniform(-2, 2, len(groups))
        y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-(a + b * x + shift)))).astype(float)
        for unit, clusters in (("sample", None), ("group", groups)):
            ci = stats.balance_point(x, y, n_boot=150, seed=seed, clusters=clusters).ci
            hits[unit] += ci[0] <= truth <= ci[1]
    assert hits["group"] >= 51 and hits["sample"] <= hits["group"] - 5, hits


def test_no_crossing_reported_with_its_side():
    x, y = _draw(1, 6.0, -1.0, n=300)  # crossing at +6: text wins everywhere observed
    bp = stats.balance_point(x, y, n_boot=50)
    assert not bp.crosses and bp.estimate is None and bp.leans == "text"
    assert "no crossing" in bp.describe() and "leans text" in bp.describe()
    x, y = _draw(2, -6.0, -1.0, n=300)
    assert stats.balance_point(x, y, n_boot=50).leans == "vision"


def test_balance_point_rejects_too_little_data():
    with pytest.raises(ValueError, match="needs >= 10 samples"):
        stats.balance_point([0.1, 0.2], [1, 0])
    always_text = stats.balance_point(np.linspace(-1, 1, 50), np.ones(50))
    assert not always_text.crosses and always_text.leans == "text" and always_text.estimate is None


def test_monotonicity():
    assert stats.monotonicity([-1, 0, 1, 2], [0.9, 0.7, 0.4, 0.1]) == pytest.approx(-1.0)
    assert stats.monotonicity([-1, 0, 1, 2], [0.1, 0.7, 0.4, 0.9]) > -1
    assert math.isnan(stats.monotonicity([-1, 0, 1, 2], [0.5] * 4))  # a flat curve has no order (and no warning)


@pytest.mark.parametrize("seq, expected", [
    (["v", "v", "t", "t"], 1),
    (["v", "o", "t"], 1),          # v -> other -> t counts once
    (["v", "t", "v", "t"], 3),
    (["o", "o", "o"], 0),
    (["t", "o", "t", "v", "o", "v"], 1),
    ([], 0),
])
def test_oscillation_count_hand_made(seq, expected):
    assert stats.oscillation_count(seq, "v", "t") == expected


def test_ambiguous_region_and_mean_interval():
    amb = stats.ambiguous_region([-1.0, 0.2, 0.6, 0.71], balance=0.2, width=0.5)
    assert amb.tolist() == [False, True, True, False]
    m = stats.mean_interval([1, 2, 3, np.nan])
    assert m["mean"] == 2 and m["n"] == 3 and m["ci"][0] < 2 < m["ci"][1]
    assert stats.mean_interval([])["mean"] is None


def test_rising_curve_leans_by_p_text_at_equal_uncertainty_and_is_flagged():
    """A curve that rises with dH_rel (slope +5.2, crossing +0.29) has P(text | 0) = 0.18: it leans vision."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 1500)
    y = (rng.uniform(size=1500) < 1 / (1 + np.exp(-5.2 * (x - 0.29)))).astype(float)
    bp = stats.balance_point(x, y, n_boot=100)
    assert bp.direction == "rising" and bp.leans == "vision" and bp.p_text_at_equal_uncertainty < 0.3
    assert bp.estimate == pytest.approx(0.29, abs=0.08) and "WARNING: the curve is rising" in bp.describe()
    falling = stats.balance_point(x, 1 - y, n_boot=0)  # the mirror image falls and sits on the text side
    assert falling.direction == "falling" and falling.side == "text" and "WARNING" not in falling.describe()
    assert falling.leans == "undecided"  # no interval, no side claimed
    flat = stats.balance_point(x, (rng.uniform(size=1500) < 0.4).astype(float), n_boot=0)
    assert flat.direction == "flat" and flat.estimate is None and "flat" in flat.describe()


def test_intercept_is_not_penalised_on_separated_data():
    x = np.r_[np.linspace(-1.0, 0.2, 50), np.linspace(0.4, 1.5, 50)]
    bp = stats.balance_point(x, (x < 0.3).astype(float), n_boot=0)
    assert 0.2 <= bp.estimate <= 0.4  # inside the gap, not pulled toward 0


def _clustered_sample(rng, groups):
    p_group = rng.beta(0.6, 1.4, groups)  # mean 0.3 and a strong per-group effect
    sizes = rng.integers(3, 12, groups)
    y = np.concatenate([rng.uniform(size=m) < p for m, p in zip(sizes, p_group)])
    return y, np.repeat(np.arange(groups), sizes)


def test_rate_intervals_keep_coverage_when_groups_share_an_effect():
    """TFR's 95 % interval over groups covers the truth 92-98 % of the time; a binomial interval does not."""
    rng = np.random.default_rng(0)
    clustered = naive = 0
    for _ in range(400):
        y, groups = _clustered_sample(rng, 40)
        labels = np.where(y, "text", "vision")
        lo, hi = stats.tfr_vfr(labels, clusters=groups)["tfr_ci"]
        clustered += lo <= 0.3 <= hi
        lo, hi = stats.tfr_vfr(labels)["tfr_ci"]
        naive += lo <= 0.3 <= hi
    assert 0.92 <= clustered / 400 <= 0.98 and naive / 400 < 0.85


def test_binned_rates_widen_with_groups_and_never_collapse():
    rng = np.random.default_rng(1)
    y, groups = _clustered_sample(rng, 40)
    x = rng.uniform(-1, 1, len(y))
    edges = np.array([-1.0, 0.0, 1.0])
    plain, grouped = stats.binned_rate(x, y, edges), stats.binned_rate(x, y, edges, clusters=groups)
    assert (grouped["ci_hi"] - grouped["ci_lo"] > plain["ci_hi"] - plain["ci_lo"]).all()
    one_sided = stats.binned_rate(x, np.zeros(len(y)), edges, clusters=groups)
    assert (one_sided["ci_hi"] > 0).all()  # all-zero bins still get an interval above 0


def _planted_run(crossing: float, groups: int, seed: int, per_group: int = 20, slope: float = -3.0):
    """dH_rel, follows-text draws of a logistic curve crossing 0.5 at `crossing`, and each sample's group."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, groups * per_group)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-slope * (x - crossing)))).astype(float)
    return x, y, np.repeat(np.arange(groups), per_group)


def test_balance_point_shift_recovers_a_planted_shift_and_pairs_the_groups():
    before, after = _planted_run(0.8, 60, seed=1), _planted_run(0.0, 60, seed=2)
    shift = stats.balance_point_shift(before, after, n_boot=300)
    lo, hi = shift["ci"]
    assert shift["estimate"] == pytest.approx(-0.8, abs=0.2) and lo < shift["estimate"] < hi < 0
    assert shift["n_groups"] == 60
    assert shift["estimate"] == pytest.approx(stats.balance_point(*after[:2], n_boot=0).estimate
                                              - stats.balance_point(*before[:2], n_boot=0).estimate)
    # paired: the same table twice moves by exactly 0 in every draw, where two independent intervals would be wide
    same = stats.balance_point_shift(before, before, n_boot=100)
    assert same["estimate"] == 0 and same["ci"] == (0.0, 0.0)
    # a curve that never crosses has no shift
    flat = (before[0], np.ones_like(before[1]), before[2])
    assert stats.balance_point_shift(before, flat, n_boot=10)["estimate"] is None
    with pytest.raises(ValueError, match="same groups"):
        stats.balance_point_shift(before, (after[0], after[1], after[2] + 1000), n_boot=10)


def test_guarantee_says_whether_the_target_is_inside_the_interval():
    from eval.analysis import describe_guarantee
    g = {"target": 0.0, "realized": 0.12, "realized_ci": (-0.05, 0.3), "target_in_interval": True, "miss": 0.12,
         "shift": -0.7, "shift_ci": (-0.9, -0.5), "groups": 40}
    assert "target +0.00 inside it" in describe_guarantee(g) and "-0.700 [-0.900, -0.500]" in describe_guarantee(g)
    g.update(realized_ci=(0.05, 0.3), target_in_interval=False)
    assert "OUTSIDE" in describe_guarantee(g)


def test_cohens_d_by_hand():
    # means 2 and 3.5; variances (ddof 1) 1 and 5/3; pooled variance (2 * 1 + 3 * 5/3) / 5 = 1.4
    assert stats.cohens_d([1, 2, 3], [2, 3, 4, 5]) == pytest.approx(-1.5 / math.sqrt(1.4))
    assert stats.cohens_d([1, 2, 3], [1, 2, 3]) == 0
    assert math.isnan(stats.cohens_d([1], [1, 2])) and math.isnan(stats.cohens_d([2, 2], [2, 2]))
    assert stats.cohens_d([3, 3], [2, 2]) == math.inf


def test_av_accuracy_and_attention_effect_on_a_planted_table():
    import pandas as pd
    from eval.av import accuracy_by_condition, attention_effect_by_layer
    rows = []
    for g in range(10):
        for asked in ("visual", "audio"):
            # misaligned: the model answers the visual class whatever is asked (a visual-dominant model)
            rows.append(dict(group=g, condition="misaligned", asked=asked, answer_visual="dog", answer_audio="bell",
                             target="dog" if asked == "visual" else "bell", misleading_class="", pred="dog",
                             mass_video=[0.6, 0.8] if asked == "visual" else [0.6, 0.2],
                             mass_audio=[0.4, 0.2] if asked == "visual" else [0.4, 0.8]))
            rows.append(dict(group=g, condition="audio_removed", asked=asked, answer_visual="dog", answer_audio="",
                             target="dog" if asked == "visual" else "", misleading_class="", pred="dog",
                             mass_video=[1.0, 1.0], mass_audio=[0.0, 0.0]))
    rows[0]["mass_video"] = [0.5, 0.7]  # some spread, so d is finite
    cells = {(c["condition"], c["asked"]): c for c in accuracy_by_condition(pd.DataFrame(rows))}
    assert cells["misaligned", "visual"]["accuracy"]["rate"] == 1.0
    assert cells["misaligned", "audio"]["accuracy"]["rate"] == 0.0
    assert cells["misaligned", "audio"]["other_modality"]["rate"] == 1.0  # answered from the frames
    assert cells["audio_removed", "audio"]["accuracy"]["n"] == 0  # no audio: no target
    assert cells["audio_removed", "audio"]["other_modality"]["rate"] == 1.0
    layers = attention_effect_by_layer(pd.DataFrame(rows))
    assert layers[1]["video_share_visual_asked"] > layers[1]["video_share_audio_asked"]
    assert layers[1]["cohens_d"] > 5 and abs(layers[0]["cohens_d"]) < 1  # only layer 1 follows the question


def test_av_audio_following_reads_dh_rel_of_sound_against_frames():
    """A planted model that answers the sound on misaligned clips iff the sound alone was surer than the frames
    alone: dH_rel(sound vs frames) is computed per group from the unimodal rows, groups with a wrong unimodal answer
    are left out, and the balance point lands near 0 with P(sound) falling in dH_rel."""
    import pandas as pd
    from eval.av import audio_following, audio_following_samples
    rng = np.random.default_rng(0)
    rows = []
    for g in range(120):
        h_video, h_audio = rng.uniform(0.1, 1.5, 2)
        sound_right = g % 20 != 0  # every 20th group's sound alone is misheard: left out
        rows += [dict(group=g, condition="audio_removed", asked="visual", answer_visual="dog", answer_audio="",
                      target="dog", pred="dog", entropy=h_video),
                 dict(group=g, condition="frames_zeroed", asked="audio", answer_visual="", answer_audio="dog",
                      target="dog", pred="dog" if sound_right else "bell", entropy=h_audio)]
        for asked in ("visual", "audio"):
            follows_sound = h_audio < h_video
            rows.append(dict(group=g, condition="misaligned", asked=asked, answer_visual="dog", answer_audio="bell",
                             target="dog" if asked == "visual" else "bell", pred="bell" if follows_sound else "dog",
                             entropy=0.5))
    table = pd.DataFrame(rows)
    samples = audio_following_samples(table)
    assert len(samples) == 2 * 114 and not samples.group.isin(range(0, 120, 20)).any()
    g = samples.iloc[0]
    h_v, h_a = (table[(table.group == g.group) & (table.condition == c)].entropy.iloc[0]
                for c in ("audio_removed", "frames_zeroed"))
    assert g.d_rel == pytest.approx(2 * (h_a - h_v) / (h_a + h_v))
    assert ((samples.d_rel < 0) == (samples.follows_audio == 1)).all()
    curves = audio_following(table)
    assert abs(curves["both"]["balance_point"]["estimate"]) < 0.2 and curves["both"]["balance_point"]["slope"] < 0
    assert curves["visual_asked"]["n"] == curves["audio_asked"]["n"] == 114


def test_cluster_mean_interval_counts_groups_not_rows():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 6)
    independent = rng.normal(1.0, 1.0, len(groups))
    shared = np.repeat(rng.normal(1.0, 1.0, 50), 6)  # every row of a group the same: 50 draws, not 300
    a = stats.cluster_mean_interval(independent, groups, n_boot=500)
    b = stats.cluster_mean_interval(shared, groups, n_boot=500)
    assert a["mean"] == pytest.approx(independent.mean()) and a["n"] == 300 and a["n_groups"] == 50
    assert a["ci"][0] < a["mean"] < a["ci"][1]
    width = lambda cell: cell["ci"][1] - cell["ci"][0]
    assert width(b) > 1.8 * width(a)  # sqrt(6) wider in expectation
    with_nan = stats.cluster_mean_interval(np.r_[independent, np.nan], np.r_[groups, 99], n_boot=10)
    assert with_nan["n"] == 300 and with_nan["n_groups"] == 50
    assert stats.cluster_mean_interval([], [], n_boot=10)["mean"] is None


def _group_effect_sample(seed, n_groups=60, a=0.9, b=-3.0, sd=0.8):
    """Following labels with a known crossing -a/b (+0.3): each group shifts the logit by its own draw, symmetric,
    so the population curve still crosses at -a/b."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), rng.integers(5, 16, n_groups))
    x = rng.uniform(-2, 2, len(groups))
    shift = rng.normal(0, sd, n_groups)[groups]
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-(a + b * x + shift)))).astype(float)
    return x, y, groups


def test_balance_point_interval_at_nominal_with_60_groups_and_a_group_effect():
    """The design where a percentile group bootstrap covered 0.918: 60 groups, group effect sd 0.8."""
    intervals = [stats.balance_point(*_group_effect_sample(s)[:2], n_boot=100, seed=s,
                                     clusters=_group_effect_sample(s)[2]).ci for s in range(300)]
    hits = sum(lo <= 0.3 <= hi for lo, hi in intervals)
    assert 0.93 <= hits / 300 <= 0.97, hits


def test_a_flat_curve_gets_no_side_and_a_direction_about_5_percent_of_the_time():
    """Flat 50/50 with a group effect: the clustered slope calls it falling or rising about 5 % of the time (the
    unclustered test said 6.7-7.7 %), and it is never given a side."""
    directions, sides = [], []
    for s in range(300):
        x, y, g = _group_effect_sample(s, a=0.0, b=0.0)
        bp = stats.balance_point(x, y, n_boot=500, seed=s, clusters=g)
        directions.append(bp.direction)
        sides.append(bp.leans)
    called = np.mean([d in ("falling", "rising") for d in directions])
    assert 0.02 <= called <= 0.08, called
    assert np.mean([s == "undecided" for s in sides]) >= 0.95


def test_a_crossing_whose_interval_holds_0_is_undecided():
    x, y, g = _group_effect_sample(0, a=0.0, b=-3.0)  # crosses at 0
    bp = stats.balance_point(x, y, n_boot=200, clusters=g)
    assert bp.crosses and bp.ci[0] < 0 < bp.ci[1] and bp.leans == "undecided"
    assert "(undecided)" in bp.describe() and "leans" not in bp.describe()
    x, y, g = _group_effect_sample(0, a=1.5, b=-3.0)  # crosses at +0.5, well away from 0
    assert stats.balance_point(x, y, n_boot=200, clusters=g).leans == "text"


def test_separated_data_is_reported_as_separated_with_its_gap():
    x = np.r_[np.linspace(-1.5, -0.4, 60), np.linspace(0.6, 1.8, 60)]
    bp = stats.balance_point(x, (x < 0).astype(float), n_boot=100)
    assert bp.direction == "separated" and bp.gap == pytest.approx((-0.4, 0.6))
    assert bp.estimate == pytest.approx(0.1) and bp.leans == "undecided"  # the gap holds 0
    assert "separated" in bp.describe() and "flat" not in bp.describe()
    shifted = stats.balance_point(x + 1.0, (x < 0).astype(float), n_boot=100)
    assert shifted.gap[0] > 0 and shifted.leans == "text"


def test_recognition_balanced_accuracy_interval_at_nominal_with_15_groups():
    """15 groups, each with its own propensity to say yes (a shared effect); truth: BA = 0.75."""
    import pandas as pd

    from eval.recognition import balanced_accuracy
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        rows = []
        for group in range(15):
            bias = rng.normal(0, 1.0)
            for contradiction in (True, False):
                logit = (1.0986 if contradiction else -1.0986) + bias  # P(yes) 0.75 / 0.25 at bias 0
                for _ in range(rng.integers(4, 12)):
                    rows.append({"group": group, "contradiction": contradiction,
                                 "said_yes": rng.uniform() < 1 / (1 + np.exp(-logit))})
        truth = 0.5 * (np.mean(1 / (1 + np.exp(-(1.0986 + rng.normal(0, 1.0, 20000)))))
                       + 1 - np.mean(1 / (1 + np.exp(-(-1.0986 + rng.normal(0, 1.0, 20000))))))
        lo, hi = balanced_accuracy(pd.DataFrame(rows))["ci"]
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 400 <= 0.97, hits


def test_cohens_d_interval_resamples_clips_at_nominal():
    """10 groups of clips; a clip's two questions share an effect on the video share. Truth: d of the population."""
    import pandas as pd

    from eval.av import attention_effect_by_layer
    rng = np.random.default_rng(1)
    effect, clip_sd, noise_sd = 0.05, 0.06, 0.05
    truth = effect / np.sqrt(clip_sd ** 2 + noise_sd ** 2)
    hits = 0
    for _ in range(300):
        rows = []
        for group in range(10):
            for clip in range(4):
                shared = rng.normal(0.5, clip_sd)
                for asked in ("visual", "audio"):
                    share = shared + (effect if asked == "visual" else 0) + rng.normal(0, noise_sd)
                    rows.append({"group": group, "clip_id": f"{group}-{clip}", "asked": asked, "answer_visual": "dog",
                                 "answer_audio": "dog", "mass_video": [share], "mass_audio": [1 - share]})
        lo, hi = attention_effect_by_layer(pd.DataFrame(rows))[0]["cohens_d_ci"]
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 300 <= 0.97, hits


def test_fit_check_accepts_a_logistic_curve_and_flags_one_it_misses():
    """On logistic data the grouped fit statistic rejects about 5 % of the time and the isotonic crossing covers the
    truth; on a curve that falls, then sits at 0.47 over (0, 1.5], the logistic fit is rejected."""
    rejected = covered = 0
    for seed in range(100):
        x, y, g = _group_effect_sample(seed, sd=0.3)
        a, b = stats.logistic_fit(x, y)
        gof = stats.grouped_fit_statistic(x, y, a, b, stats.bin_edges(x, 8), g)
        rejected += gof["p_value"] < 0.05
        iso = stats.isotonic_balance_point(x, y, g, n_boot=100, seed=seed)
        covered += iso["ci"][0] <= 0.3 <= iso["ci"][1]
    assert rejected <= 12 and covered >= 88, (rejected, covered)
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 3000)
    p = np.where(x < 0, 1 / (1 + np.exp(3 * x - 1.5)), np.where(x <= 1.5, 0.47, 0.05))
    y = (rng.uniform(size=len(x)) < p).astype(float)
    a, b = stats.logistic_fit(x, y)
    assert stats.grouped_fit_statistic(x, y, a, b, stats.bin_edges(x, 8))["p_value"] < 0.001
    assert stats.isotonic_crossing([0, 1, 2, 3], [1, 1, 0, 0]) == pytest.approx(1.5)
    assert stats.isotonic_crossing([0, 1, 2], [1, 1, 1]) is None


def test_the_av_gate_withholds_the_audio_following_balance_point_from_a_model_deaf_to_the_sound():
    """Frames alone answered right, the sound alone at chance: the gate names the sound, and the curve has no
    balance point unless forced."""
    import pandas as pd

    from data_gen.av import CLASSES
    from eval.analysis import AnalysisConfig
    from eval.av import analyze_av, describe_av
    rng = np.random.default_rng(0)
    rows = []
    for group in range(120):
        visual, audio = rng.choice(CLASSES, 2, replace=False)
        for condition, target, asked in (("audio_removed", visual, "visual"), ("frames_zeroed", audio, "audio"),
                                         ("misaligned", visual, "visual"), ("misaligned", audio, "audio")):
            pred = target if asked == "visual" or condition == "misaligned" else rng.choice(CLASSES)
            if condition == "misaligned":
                pred = rng.choice([visual, audio])
            rows.append({"group": group, "condition": condition, "asked": asked, "target": target,
                         "answer_visual": visual if condition != "frames_zeroed" else "",
                         "answer_audio": audio if condition != "audio_removed" else "",
                         "misleading_class": "", "pred": pred, "entropy": rng.uniform(0.1, 2.0)})
    table = pd.DataFrame(rows)
    res = analyze_av(table)
    gate = res["ability"]
    assert gate["modalities"]["frames alone"]["above_chance"] and not gate["modalities"]["sound alone"]["above_chance"]
    assert "sound alone accuracy" in gate["line"] and gate["line"] in describe_av(res)
    curves = [c for c in res["audio_following"].values() if c]
    assert curves and all(c["balance_point"]["estimate"] is None for c in curves)
    forced = analyze_av(table, AnalysisConfig(force=True))["audio_following"]["both"]["balance_point"]
    assert forced["forced_past_gate"]
