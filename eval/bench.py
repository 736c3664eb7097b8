"""Benchmark: the scoring engine against a naive per-sample reference, on the same inputs.

    python -m eval.bench [--models organism tiny-llava] [--groups 4]

The reference runs `generate(output_scores=True, output_hidden_states=True)` one sample at a
time and applies the logit lens to every position of every layer, as a first implementation
would. Both must agree (entropies and predictions within 1e-4); the script prints the
throughput and peak-memory ratios measured in this one run.
"""
from __future__ import annotations

import gc
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from data_gen import generate
from data_gen.cli import parse
from eval.scoring import ScoreConfig, score_dataset
from models import load_vlm
from models.tiny import build_tiny, dataset_tokenizer


@dataclass
class BenchArguments:
    models: list[str] = field(default_factory=lambda: ["organism", "tiny-llava"], metadata={
        "help": "models to compare on: organism names, paths, hub ids, or tiny-llava (a random tiny LLaVA)"})
    groups: int = field(default=3, metadata={"help": "colour groups scored (14 visual tiers x 8 rows each)"})
    per_device_eval_batch_size: int = 32


@torch.no_grad()
def naive_reference(vlm, data, rows) -> dict:
    """Per row and condition: entropy and top-1 from generate(), lens over all positions."""
    out = {}
    for r in rows:
        ctx = r["text_context"] or ""
        conditions = {"v": (r["image_id"], "")}
        if ctx:
            conditions.update(t=(None, ctx), m=(r["image_id"], ctx))
        for c, (img, text) in conditions.items():
            inputs = vlm.encode([vlm.prompt(r["question"], text, img is not None)],
                                [data.image(img)] if img else None)
            gen = vlm.model.generate(**inputs, max_new_tokens=1, do_sample=False, output_scores=True,
                                     output_hidden_states=True, return_dict_in_generate=True,
                                     pad_token_id=vlm.tokenizer.pad_token_id)
            logits = gen.scores[0][0].float()
            logp = torch.log_softmax(logits, -1)
            entry = {"entropy": float(-(logp.exp() * logp).sum()), "top1": int(logits.argmax())}
            if c == "m":
                hidden = gen.hidden_states[0][1:]  # per layer, every position; the last is already normed
                lens = [vlm.head(h if k == len(hidden) - 1 else vlm.final_norm(h))[0] for k, h in enumerate(hidden)]
                entry["lens_top1"] = [int(l[-1].argmax()) for l in lens]
            out[(r["id"], c)] = entry
    return out


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self.base = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.extra = max(self.peak - self.base, 1)


def main(argv=None) -> int:
    (args,) = parse([BenchArguments], list(argv) if argv is not None else None, "python -m eval.bench", __doc__)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    for name in args.models:
        if name == "tiny-llava":  # a random tiny llava of the shape transformers' own tests use
            for part in build_tiny("llava", dataset_tokenizer(), 32, 8):
                part.save_pretrained(tmp / "tiny")
            path, size = str(tmp / "tiny"), 32
        else:
            path, size = name, 64
        vlm = load_vlm(path, dtype="float32", device="cpu")
        data = generate("colors", args.groups, seed=123, size=size, workers=1)
        rows = list(data.samples)
        gc.collect()
        with PeakRSS() as mem_ref:
            t0 = time.perf_counter()
            ref = naive_reference(vlm, data, rows)
            t_ref = time.perf_counter() - t0
        gc.collect()
        with PeakRSS() as mem_eng:
            t0 = time.perf_counter()
            table = score_dataset(vlm, data, tmp / f"run-{len(list(tmp.iterdir()))}", ScoreConfig(batch_size=args.per_device_eval_batch_size))
            t_eng = time.perf_counter() - t0
        worst, mismatched = 0.0, 0
        for r in table.itertuples():
            for c in ("v", "t", "m"):
                e = ref.get((r.id, c))
                if e is None:
                    continue
                worst = max(worst, abs(e["entropy"] - getattr(r, f"entropy_{c}")))
                mismatched += e["top1"] != getattr(r, f"top1_{c}")
                if c == "m" and r.condition != "no_conflict":
                    mismatched += list(e["lens_top1"]) != list(r.lens_top1)
        print(f"\n== {name}: {len(rows)} rows, {len(ref)} (row, condition) scores")
        print(f"max |entropy difference| {worst:.2e}  prediction/lens mismatches {mismatched}")
        print(f"naive reference {t_ref:.2f}s, engine {t_eng:.2f}s -> throughput ratio {t_ref / t_eng:.1f}x")
        print(f"peak extra memory: reference {mem_ref.extra / 2**20:.0f} MiB, engine {mem_eng.extra / 2**20:.0f} MiB "
              f"-> ratio {mem_ref.extra / mem_eng.extra:.2f}x")
        if worst > 1e-4 or mismatched:
            print("RESULTS DIFFER")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
