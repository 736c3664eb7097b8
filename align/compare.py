"""Every way to move a model's modality preference, side by side, on data none of them trained on.

For each method and target b*: one run of the recipe (unchanged) on the training data seed, then what it released
(adapter, steering vector or instruction) measured on the groups of a fresh data seed, beside the base on the same
groups: where the balance point lands and with what slope, what the unimodal answers and the no-conflict rows and
controls lost, oscillation, transfer to held-out wordings (data_gen/paraphrase.py) and to the attribute task, and
what it cost. The `mixed` method, which trains conflict recognition on its own base, is measured the same way
against that base.

Work that does not depend on the method is done once (the data, the base's scores, copied into every run where the
scoring engine resumes from them); a finished run is read back, so a re-run after a crash goes on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open
from transformers import TrainingArguments

from data_gen import ConflictData
from data_gen.paraphrase import paraphrased
from data_gen.files import write_text
from eval.analysis import analyze, following_samples, image_only_rows, text_only_rows
from eval.api import measure
from eval.models.steering import STEERING_FILE
from eval.prepare import generate_once
from eval.processes import holding
from eval.scoring import ScoreConfig, score_dataset
from eval.stats import cluster_mean_interval, same_answers, slope_ratio

from . import tracking
from .arguments import AlignArguments, CompareArguments, check_inputs
from .precision import PrecisionRuns
from .recipe import Recipe

log = logging.getLogger(__name__)
CONTROLS = ("no_conflict", "text_irrelevant", "image_irrelevant")


@dataclass
class Measured:
    """One model's tables on the fresh groups (conflicts + controls) and on their held-out wording, analysed."""
    table: pd.DataFrame
    analysis: dict
    paraphrase: pd.DataFrame
    paraphrase_analysis: dict
    attributes: str | dict | None = None  # the attribute task's balance point, or the ability gate's line


def interval_of(cell: dict | None, key: str = "estimate") -> dict:
    """{estimate, low, high} of a statistic's dict (keys estimate/ci or mean/ci)."""
    cell = cell or {}
    ci = cell.get("ci") or (None, None)
    return {"estimate": cell.get(key, cell.get("mean")), "low": ci[0], "high": ci[1]}


def paired_change(before: pd.DataFrame, after: pd.DataFrame, expected: str, answered: str, seed: int = 0) -> dict:
    """after - before of the rate of right answers (`answered` column against `expected`) on the same rows, with a
    group-bootstrap interval."""
    rows = before.set_index("id").join(after.set_index("id")[[answered]], rsuffix="_after", how="inner")
    right = lambda col: same_answers(rows[col], rows[expected]).astype(float)
    change = cluster_mean_interval(right(f"{answered}_after") - right(answered), rows.group.to_numpy(), seed=seed)
    return {**interval_of(change, "mean"), "before": float(right(answered).mean()) if len(rows) else None,
            "n": change["n"]}


def control_rows(table: pd.DataFrame, condition: str) -> pd.DataFrame:
    """A control's rows with the answer that is right there: the image's (no conflict, text about another object)
    or, when the asked object is not in the image, the text's."""
    rows = table[table.condition == condition].copy()
    rows["expected"] = rows.answer_visual.where(rows.answer_visual.notna() & (rows.answer_visual != ""), rows.answer_text)
    return rows


def comparison_row(method: str, target: float | None, base: Measured, after: Measured, cost: dict,
                   p: CompareArguments, base_name: str, cfg) -> dict:
    """One method and target: every column of the table, each with its 95 % group interval (`cfg`: the
    AnalysisConfig both were analysed with)."""
    bp = after.analysis["balance_point"]
    realized = bp.get("estimate")
    miss = None if realized is None or target is None else realized - target
    ratio = slope_ratio(following_samples(base.table, cfg), following_samples(after.table, cfg), cfg.n_boot, cfg.seed)
    row = {"method": method, "target": target, "base": base_name,
           "realized": interval_of(bp), "description": bp.get("description"),
           "miss": miss, "lands": miss is not None and abs(miss) <= p.tolerance,
           "base_balance_point": interval_of(base.analysis["balance_point"]),
           "slope_ratio": interval_of(ratio),
           "accuracy_change": {
               "image_only": paired_change(image_only_rows(base.table), after.table, "answer_visual", "pred_v"),
               "text_only": paired_change(text_only_rows(base.table), after.table, "answer_text", "pred_t"),
               **{c: paired_change(control_rows(base.table, c), after.table, "expected", "pred_m") for c in CONTROLS}},
           "oscillation": {region: interval_of((after.analysis.get("oscillation") or {}).get(region), "mean")
                           for region in ("ambiguous", "clear")},
           "transfer": {"paraphrase_before": interval_of(base.paraphrase_analysis["balance_point"]),
                        "paraphrase_after": interval_of(after.paraphrase_analysis["balance_point"]),
                        "attributes": after.attributes},
           **cost}
    return row


def trainable_parameters(release: Path) -> int:
    """What the release adds to the base: LoRA weights, or the steering vector's entries (none for a prompt)."""
    files = [release / "adapter_model.safetensors", release / STEERING_FILE]
    total = 0
    for file in files:
        if file.exists():
            with safe_open(str(file), framework="pt") as f:
                total += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    return total


def extra_inference(result: dict, method: str) -> str:
    """The per-sample inference cost beyond the base's one image + text forward pass."""
    examples = result.get("training_examples") or {}
    if method == "steer_uncertainty":
        return "2 forward passes (image only, text only)"
    if method == "prompt":
        return f"{examples.get('instruction_tokens', 0)} prompt tokens"
    return "none"


def _fmt(cell: dict | None, sign: bool = True) -> str:
    if not cell or cell.get("estimate") is None:
        return "–"
    f = "{:+.3f}" if sign else "{:.3f}"
    interval = f" [{f.format(cell['low'])}, {f.format(cell['high'])}]" if cell.get("low") is not None else ""
    return f.format(cell["estimate"]) + interval


def format_comparison(rows: list[dict]) -> str:
    """The table as printed: one line per method and target."""
    head = ("method             b*     realized [95%]             miss    lands  slope ratio [95%]       "
            "image-only  text-only  no-conflict  text-irr.  image-irr.  paraphrase: base -> after      attributes     "
            "seconds  params   extra inference")
    lines = [head]
    for r in rows:
        acc = r["accuracy_change"]
        pct = lambda c: "–" if c["estimate"] is None else f"{100 * c['estimate']:+.1f} pt"
        target = "  –  " if r["target"] is None else f"{r['target']:+.2f}"
        miss = "  –   " if r["miss"] is None else f"{r['miss']:+.3f}"
        attributes = r["transfer"]["attributes"]
        attributes = attributes if isinstance(attributes, str) else _fmt(interval_of(attributes))
        lines.append(
            f"{r['method']:<18} {target}  {_fmt(r['realized']):<26} {miss}  "
            f"{'–' if r['target'] is None else 'yes' if r['lands'] else 'no':<5}  "
            f"{_fmt(r['slope_ratio'], sign=False):<22}  {pct(acc['image_only']):<10}  {pct(acc['text_only']):<9}  "
            f"{pct(acc['no_conflict']):<11}  {pct(acc['text_irrelevant']):<9}  {pct(acc['image_irrelevant']):<10}  "
            f"{_fmt(r['transfer']['paraphrase_before'])} -> {_fmt(r['transfer']['paraphrase_after'])}  "
            f"{attributes[:14]:<14} {r['seconds'] or 0:>7.0f}  {r['trainable_parameters']:>7}  {r['extra_inference']}")
    return "\n".join(lines)


def plot_comparison(curves: dict[str, dict], base: dict, path: Path) -> Path:
    """Every method's fitted following curve on the fresh groups over the base's, one panel per target."""
    from eval.report import plt
    targets = sorted({t for _, t in curves if t is not None}) + ([None] if any(t is None for _, t in curves) else [])
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.5), squeeze=False)
    x = np.linspace(-2, 2, 200)
    sigmoid = lambda bp: 1 / (1 + np.exp(-(bp["intercept"] + bp["slope"] * x)))
    for ax, target in zip(axes[0], targets):
        for name, analysis in [("base", base.get(target, base.get("default")))] + [
                (m, a) for (m, t), a in curves.items() if t == target]:
            bp = analysis["balance_point"]
            if bp.get("intercept") is not None and bp.get("slope") is not None:
                ax.plot(x, sigmoid(bp), "k-" if name == "base" else "-", lw=2.5 if name == "base" else 1.4, label=name)
        if target is not None:
            ax.axvline(target, color="0.4", ls=":", lw=1.5)
            ax.text(target, 0.02, f" b* = {target:+.1f}", color="0.3", fontsize=8)
        ax.axhline(0.5, color="0.85", lw=1)
        ax.set(xlabel="dH_rel (fresh groups)", ylabel="P(text-following)", ylim=(0, 1),
               title=f"aimed at b* = {target:+.1f}" if target is not None else "mixed (recognition base)")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a markdown table (comparison.md; docs/results.md quotes it)."""
    pct = lambda c: "–" if c["estimate"] is None else (
        f"{100 * c['estimate']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]" if c["low"] is not None
        else f"{100 * c['estimate']:+.1f}")
    head = ("| method | b* | realized [95 %] | miss | within | slope after / base | image-only, points | text-only | "
            "no conflict | text-irrelevant | image-irrelevant | oscillation ambiguous / clear | held-out wording: base -> "
            "after | attributes | run s | added parameters | extra inference |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        acc, attributes = r["accuracy_change"], r["transfer"]["attributes"]
        lines.append("| " + " | ".join([
            r["method"], "–" if r["target"] is None else f"{r['target']:+.1f}", _fmt(r["realized"]),
            "–" if r["miss"] is None else f"{r['miss']:+.3f}",
            "–" if r["target"] is None else ("yes" if r["lands"] else "no"),
            _fmt(r["slope_ratio"], sign=False), *(pct(acc[k]) for k in ("image_only", "text_only", *CONTROLS)),
            f"{_fmt(r['oscillation']['ambiguous'], False)} / {_fmt(r['oscillation']['clear'], False)}",
            f"{_fmt(r['transfer']['paraphrase_before'])} -> {_fmt(r['transfer']['paraphrase_after'])}",
            attributes if isinstance(attributes, str) else _fmt(interval_of(attributes)),
            f"{r['seconds'] or 0:.0f}", f"{r['trainable_parameters']:,}", r["extra_inference"]]) + " |")
    return "\n".join(lines)


def card_section(row: dict, c: CompareArguments) -> str:
    """The comparison's columns for one release's model card."""
    acc = row["accuracy_change"]
    pct = lambda cell: "–" if cell["estimate"] is None else (
        f"{100 * cell['estimate']:+.1f} points [{100 * cell['low']:+.1f}, {100 * cell['high']:+.1f}]")
    lines = [("realized balance point", _fmt(row["realized"])),
             ("miss / within ±%.2f" % c.tolerance, "–" if row["miss"] is None else f"{row['miss']:+.3f} / {'yes' if row['lands'] else 'no'}"),
             ("slope after / base", _fmt(row["slope_ratio"], sign=False)),
             *[(f"accuracy change, {k.replace('_', ' ')}", pct(v)) for k, v in acc.items()],
             ("oscillation, ambiguous / clear", f"{_fmt(row['oscillation']['ambiguous'], False)} / "
                                                f"{_fmt(row['oscillation']['clear'], False)}"),
             ("held-out wording: balance point base -> after", f"{_fmt(row['transfer']['paraphrase_before'])} -> "
                                                               f"{_fmt(row['transfer']['paraphrase_after'])}"),
             ("attribute task", row["transfer"]["attributes"] if isinstance(row["transfer"]["attributes"], str)
              else _fmt(interval_of(row["transfer"]["attributes"]))),
             ("cost", f"{row['seconds'] or 0:.0f} s run, {row['trainable_parameters']} added parameters, extra "
                      f"inference: {row['extra_inference']}")]
    table = "\n".join(f"| {a} | {b} |" for a, b in lines)
    return (f"\n## Compared with every other method on fresh data\n\n{c.fresh_groups} groups of data seed "
            f"{c.fresh_seed} (no run trained on them), 95 % group intervals, by `recipes/compare_methods.py`:\n\n"
            f"| column | value |\n|---|---|\n{table}\n")


class CompareRuns(PrecisionRuns):
    """The comparison's runs over the recipe: each method and target in OUTPUT_DIR/METHOD/bT."""

    def __init__(self, compare: CompareArguments, align: AlignArguments, model, training: TrainingArguments):
        super().__init__(None, align, model, training)
        self.c = compare
        self.lens_config = ScoreConfig(batch_size=training.per_device_eval_batch_size, lens=True)

    def run_folder(self, method: str, target: float | None) -> Path:
        return self.out / method / ("recognition" if target is None else f"b{target:+.2f}")

    def fresh_data(self) -> tuple[ConflictData, ConflictData]:
        """The fresh groups' conflicts and, for the first control_groups groups, their other rows; and the held-out
        wording of the first paraphrase_groups groups' conflicts."""
        c = self.c
        data = ConflictData.load(generate_once(self.out / "fresh" / "data", c.fresh_groups, c.fresh_seed,
                                               self.align.image_size))
        groups = sorted(set(data.samples["group"]))
        controls, reworded = set(groups[:c.control_groups]), set(groups[:c.paraphrase_groups])
        rows = data.samples.filter(lambda cond, g: cond == "conflict" or g in controls, input_columns=["condition", "group"])
        conflicts = data.conflicts()
        conflicts = conflicts._with_rows(conflicts.samples.filter(lambda g: g in reworded, input_columns="group"))
        return data._with_rows(rows), paraphrased(conflicts)

    def measure_on_fresh(self, vlm, folder: Path, fresh: ConflictData, paraphrase: ConflictData,
                         attributes: bool) -> Measured:
        score_dataset(vlm, fresh, folder / "fresh", self.lens_config, seed=self.training.seed)
        score_dataset(vlm, paraphrase, folder / "paraphrase", self.score_config, seed=self.training.seed)
        self.state.wait()
        table = pd.read_parquet(folder / "fresh" / "samples.parquet")
        para = pd.read_parquet(folder / "paraphrase" / "samples.parquet")
        measured = Measured(table, analyze(table, self.align.analysis), para, analyze(para, self.align.analysis))
        if attributes:
            try:
                m = measure(vlm, task="attributes", groups=self.c.attribute_groups, dataset_seed=self.c.fresh_seed,
                            image_size=self.align.image_size, split="all",
                            batch_size=self.training.per_device_eval_batch_size, output_dir=folder / "attributes",
                            lens=False)
                measured.attributes = "fails the gate" if m.ability_gate else m.balance_point
            except ValueError as e:  # too few decided conflicts for a curve: say so in the column
                measured.attributes = f"not measured: {str(e).split(';')[0]}"
        return measured

    def recipe_for(self, method: str, target: float | None, data: Path | None, align: AlignArguments | None = None,
                   model=None, training: TrainingArguments | None = None) -> Recipe:
        """The recipe of one row, in its own folder; `align`, `model`, `training`: another config's (mixed)."""
        folder = self.run_folder(method, target)
        align = align or dataclasses.replace(self.align, data=str(data), method=method, target_balance_point=target,
                                             balance_shift=None)
        training = training or self.training
        name = training.run_name and f"{training.run_name}-{method}-{folder.name}"
        return Recipe(align, model or self.model, dataclasses.replace(training, output_dir=str(folder), run_name=name,
                                                                      report_to="none"))

    def run_recipe(self, recipe: Recipe, same_base: bool = True) -> dict:
        """The recipe's result, run unless it finished before; `same_base`: the comparison's base, whose recipe
        scores an earlier run can lend it."""
        record = recipe.out / "alignment.json"
        if not record.exists():  # (re)run: fresh scores of an earlier release would be resumed as this one's
            if self.state.is_main:
                for stale in ("fresh", "paraphrase", "attributes"):
                    shutil.rmtree(recipe.out / stale, ignore_errors=True)
            if same_base:
                self.copy_base_scores(recipe.out)
            recipe.run()
        self.state.wait()
        return json.loads(record.read_text())

    def copy_base_scores(self, dst: Path) -> None:
        """The base's recipe scores from any finished run of the same base, so this run resumes instead of
        re-scoring."""
        for name in ("base", "base_train"):
            finished = sorted(self.out.glob(f"*/b*/runs/{name}/samples.parquet"))
            if self.state.is_main and finished and not (dst / "runs" / name).exists():
                shutil.copytree(finished[0].parent, dst / "runs" / name)
        self.state.wait()

    def run(self) -> dict | None:
        c, out = self.c, self.out
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        fresh, paraphrase = self.fresh_data()
        data = generate_once(out / "data", self.align.groups, self.align.dataset_seed, self.align.image_size,
                             split_shares=self.align.split_shares)
        log.info("measuring the base on %d fresh groups of seed %d (and their held-out wording)", c.fresh_groups,
                 c.fresh_seed)
        base_vlm = Recipe(self.align, self.model, self.training).load()
        base = self.measure_on_fresh(base_vlm, out / "base", fresh, paraphrase, attributes=True)
        attributes_gate = isinstance(base.attributes, str)  # the base fails the gate (or has too few conflicts)
        rows, curves = [], {}
        for method in c.methods:
            for target in c.targets:
                recipe = self.recipe_for(method, target, data)
                result = self.run_recipe(recipe)
                after = self.measure_on_fresh(recipe.load(recipe.out / "release"), recipe.out, fresh, paraphrase,
                                              attributes=not attributes_gate)
                if attributes_gate:
                    after.attributes = base.attributes
                rows.append(self.row(method, target, base, after, result, recipe.out, self.model.model_name_or_path))
                self.add_to_card(recipe.out / "release", rows[-1])
                curves[(method, target)] = after.analysis
                log.info("%s at b* %+.2f: %s", method, target, rows[-1]["description"])
                self.write_rows(rows, t0, complete=False)
        bases = {"default": base.analysis}
        if c.mixed_config:
            row, mixed_base, mixed_after = self.run_mixed(fresh, paraphrase)
            rows.append(row)
            curves[("mixed", None)] = mixed_after.analysis
            bases[None] = mixed_base.analysis
        if not self.state.is_main:
            return None
        result = self.write_rows(rows, t0, complete=True)
        result["figure"] = str(plot_comparison(curves, bases, out / "comparison.png"))
        tracking.log_comparison(self.training, result)
        return result

    def write_rows(self, rows: list[dict], t0: float, complete: bool) -> dict | None:
        """comparison.json, .csv and .md with the rows so far (`complete` false until the last one), replaced whole."""
        if not self.state.is_main:
            return None
        result = {"rows": rows, "complete": complete, "seconds": round(time.time() - t0, 1),
                  "config": {"compare": dataclasses.asdict(self.c), "align": dataclasses.asdict(self.align),
                             "model": dataclasses.asdict(self.model)}}
        for name, text in (("comparison.json", json.dumps(result, indent=2, default=float)),
                           ("comparison.csv", pd.DataFrame([tracking.flat_row(r) for r in rows]).to_csv(index=False)),
                           ("comparison.md", markdown_table(rows) + "\n")):
            write_text(self.out / name, text)  # a crash leaves the last complete file, never half of one
        return result

    def run_mixed(self, fresh: ConflictData, paraphrase: ConflictData) -> tuple[dict, Measured, Measured]:
        """The mixed (recognition) recipe from its own config, measured on the fresh groups against its own base."""
        from data_gen.cli import parse
        from eval.models import ModelArguments

        from .arguments import TRAINING_DEFAULTS
        align, model, training = parse([AlignArguments, ModelArguments, TrainingArguments], ["--config", self.c.mixed_config],
                                "compare", "", TRAINING_DEFAULTS)
        recipe = self.recipe_for("mixed", None, None, align, model, training)
        result = self.run_recipe(recipe, same_base=False)
        folder = self.out / "mixed"
        base = self.measure_on_fresh(recipe.load(), folder / "base", fresh, paraphrase, attributes=False)
        after = self.measure_on_fresh(recipe.load(recipe.out / "release"), recipe.out, fresh, paraphrase,
                                      attributes=False)
        row = self.row("mixed", None, base, after, result, recipe.out, model.model_name_or_path)
        self.add_to_card(recipe.out / "release", row)
        row["recognition"] = {k: result.get("recognition", {}).get(k) for k in ("base", "aligned")} if isinstance(
            result.get("recognition"), dict) else None
        return row, base, after

    def add_to_card(self, release: Path, row: dict) -> None:
        """The row's columns at the end of the release's model card (once: a re-run replaces them), and in the
        method's own W&B run."""
        card = release / "README.md"
        if self.state.is_main and card.exists():
            text = card.read_text().split("\n## Compared with every other method")[0]
            write_text(card, text + card_section(row, self.c))
        if self.state.is_main:
            tracking.log_method_row(self.training, row, {"compare": dataclasses.asdict(self.c),
                                                         "method": row["method"], "target": row["target"]})

    def row(self, method: str, target: float | None, base: Measured, after: Measured, result: dict, folder: Path,
            base_name: str) -> dict:
        cost = {"seconds": result.get("seconds"), "trainable_parameters": trainable_parameters(folder / "release"),
                "extra_inference": extra_inference(result, method)}
        return comparison_row(method, target, base, after, cost, self.c, base_name, self.align.analysis)


def run_comparison(compare: CompareArguments, align: AlignArguments, model, training: TrainingArguments) -> dict | None:
    check_inputs(align, model, training)
    if align.data:
        raise ValueError("the comparison generates its training data itself (dataset_seed); leave data unset")
    if compare.fresh_seed == align.dataset_seed:
        raise ValueError(f"fresh_seed {compare.fresh_seed} is the training data seed: pick one no run trains on")
    with holding(training.output_dir):
        return CompareRuns(compare, align, model, training).run()
