"""Asked-modality alignment of an audio-visual model (recipes/align_omni.py): measure -> LoRA -> re-measure -> report
-> W&B -> release, with the alignment recipe's machinery (Recipe: loading, the LoRA trainer, processes, release).

The measurement is `eval av`'s: accuracy per condition x asked modality and attention on frames vs sound per layer,
on held-out groups, before and after.
"""
from __future__ import annotations

import json
import logging
import shutil
import time

import torch
from transformers import TrainingArguments

from data_gen import samples_frame
from data_gen.av import AVData, generate_av
from eval.av import analyze_av, describe_av
from eval.av_report import write_av_report
from eval.av_scoring import AVScoreConfig, score_av
from eval.recognition import format_rate
from eval.models import VLM, ModelArguments

from . import tracking
from .arguments import AVAlignArguments
from .asked_modality import AVCollator, asked_modality_examples
from .recipe import Recipe
from .release import av_model_card, push, release

log = logging.getLogger(__name__)


def accuracy_change(before: dict, after: dict) -> list[dict]:
    """Per condition (both asked modalities pooled): accuracy before and after, and the change."""
    rates = lambda res: {c["condition"]: c["accuracy"] for c in res["by_condition"]}
    b, a = rates(before), rates(after)
    return [{"condition": c, "before": b[c], "after": a[c], "change": a[c]["rate"] - b[c]["rate"]}
            for c in b if c in a and b[c]["rate"] is not None and a[c]["rate"] is not None]


def describe_change(change: list[dict]) -> str:
    return "\n".join(f"{c['condition']:<16} {format_rate(c['before'])} -> {format_rate(c['after'])} "
                     f"({100 * c['change']:+.1f} points)" for c in change)


class AVRecipe(Recipe):
    """One asked-modality alignment run (AVAlignArguments, ModelArguments, TrainingArguments)."""

    dataset = AVData
    render = staticmethod(generate_av)

    def collator(self, base: VLM, data: AVData, dtype: torch.dtype) -> AVCollator:
        return AVCollator(base, data, dtype)

    def measure_av(self, vlm: VLM, data: AVData, name: str) -> dict | None:
        """Score and analyse on the main process (the others wait); the run folder keeps table and analysis."""
        result = None
        if self.state.is_main:
            out = self.out / "runs" / name
            table = score_av(vlm, data, out, AVScoreConfig(batch_size=self.training.per_device_eval_batch_size))
            result = analyze_av(table)
            (out / "analysis.json").write_text(json.dumps(result, indent=2, default=float))
            log.info("audio-visual measurement (%s):\n%s", name, describe_av(result))
        self.state.wait()
        return result

    def _run(self, run, t0: float) -> dict | None:
        a, state, out = self.align, self.state, self.out
        data = self.prepare_data()
        base = self.load()
        test, train = data.split(a.eval_split), data.split(a.train_split)
        log.info("1/4 measuring the base model on the %s groups", a.eval_split)
        before = self.measure_av(base, test, "base")
        tracking.log_av(run, "before", before)

        log.info("2/4 LoRA training: answer the asked modality's class")
        examples, stats = asked_modality_examples(samples_frame(train.samples), base, a.conditions)
        log.info("training examples: %s", stats)
        if state.is_main:  # scores of an earlier adapter would be resumed as this one's
            shutil.rmtree(out / "runs" / "aligned", ignore_errors=True)
        state.wait()
        adapter = self.train_adapter(base, data, examples, out / "checkpoints")
        state.wait()

        log.info("3/4 re-measuring the adapted model with the same code")
        after = self.measure_av(self.load(adapter), test, "aligned")
        if not state.is_main:
            return None
        log.info("4/4 report, tracking and release")
        tracking.log_av(run, "after", after)
        write_av_report({"base": before, "aligned": after}, out / "report")
        result = {"base": before, "aligned": after, "change": accuracy_change(before, after),
                  "training_examples": stats, "seconds": round(time.time() - t0, 1), "config": self.config_record()}
        (out / "alignment.json").write_text(json.dumps(result, indent=2, default=float))
        bundle = release(out, adapter, result, a, self.model_args, self.training,
                         card=av_model_card(result, a, self.model_args, self.training))
        tracking.log_av_result(run, result, bundle)
        if self.training.push_to_hub:
            push(bundle, self.training.hub_model_id, private=self.training.hub_private_repo)
        result["release"] = str(bundle)
        return result


def run_av_alignment(align: AVAlignArguments, model: ModelArguments, training: TrainingArguments) -> dict | None:
    from eval.models import family_for
    from eval.models.vlm import check_model
    from .arguments import check_inputs
    check_inputs(align, model, training)
    model_type = check_model(model.model_name_or_path, model.model_revision, model.trust_remote_code)
    if not family_for(model_type).reads_audio:
        raise ValueError(f"{model.model_name_or_path} ({model_type}) reads no audio; asked-modality alignment needs a "
                         f"family that does: a Qwen2.5-Omni thinker, or the embedded organism:av")
    return AVRecipe(align, model, training).run()
