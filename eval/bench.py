"""Benchmark: the scoring engine with and without shared image prefixes, against a naive per-sample reference,
on the same inputs.

    python -m eval.bench [--models organism tiny-llava tiny-llava-576] [--groups 4]

The reference runs `generate(output_scores=True, output_hidden_states=True)` one sample at a
time and applies the logit lens to every position of every layer, as a first implementation
would. The engine runs three times: whole prompts with the vision tower run for every prompt (the engine before
any reuse), whole prompts with the tower run once per image (`Family.with_image_features`; `share_prefix=False`),
and each image's prefix once (eval/prefix.py). All must agree (the engines' entropies within 1e-5, predictions
and lens identical; the reference within 1e-4); the script prints the throughput and peak-memory ratios
measured in this one run, and the FLOP/s the prefix engine achieves against a large matmul's.
"""
from __future__ import annotations

import gc
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from data_gen import generate, samples_frame
from data_gen.cli import parse
from eval.scoring import Candidates, ScoreConfig, score_dataset, score_rows
from .models import load_vlm
from .models.tiny import build_tiny, dataset_tokenizer


@dataclass
class BenchArguments:
    models: list[str] = field(default_factory=lambda: ["organism", "tiny-llava", "tiny-llava-576"], metadata={
        "help": "models to compare on: organism names, paths, hub ids, tiny-llava (the tests' random tiny LLaVA, 16 "
                "image tokens), tiny-llava-576 (the same with LLaVA-1.5's 576 image tokens per image), or "
                "llava-1.5-7b-shape (random weights of LLaVA-1.5-7B's shape, for GPUs: --device cuda --dtype bfloat16 "
                "--reference false)"})
    groups: int = field(default=3, metadata={"help": "colour groups scored (14 visual tiers x 8 rows each)"})
    per_device_eval_batch_size: int = 32
    reference: bool = field(default=True, metadata={"help": "run the naive per-sample reference too (slow on big models)"})
    dtype: str = field(default="float32", metadata={"help": "float32 (the agreement check's), or bfloat16 on GPUs"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


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


class PeakMemory:
    """Peak device memory of the block on a GPU, peak resident memory on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            self.extra = max(self.peak - self.base, 1)
        else:
            self.rss.__exit__(*exc)
            self.peak, self.extra = self.rss.peak, self.rss.extra

    @property
    def gib(self) -> float:
        """The whole peak (weights included: what has to fit on the device), in GiB."""
        return self.peak / 2 ** 30


class DecoderTokens:
    """Counts the tokens the language model runs (padding included: it is computed) by a hook on its embedding."""

    def __init__(self, vlm):
        self.vlm, self.count = vlm, 0

    def __enter__(self):
        self.handle = self.vlm.model.get_input_embeddings().register_forward_hook(
            lambda _m, args, _out: setattr(self, "count", self.count + args[0].numel()))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul in the model's dtype: the reachable peak, measured in the same run."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def decoder_parameters(vlm) -> int:
    """Parameters a token passes through in the language model (2 FLOPs each), without the embedding table."""
    decoder = vlm.model.get_decoder()
    return sum(p.numel() for p in decoder.parameters()) - vlm.model.get_input_embeddings().weight.numel() \
        + vlm.head.weight.numel()


# (name, share_prefix, one tower pass per image): the first is the engine before either kind of reuse
ENGINES = (("whole prompts, tower per prompt", False, False), ("whole prompts", False, True),
           ("shared prefix", True, True))


class TowerImages:
    """Counts the images the vision tower encodes (its first input's batch size), by a hook on it; 0 for a
    family whose tower is not `vision_tower`."""

    def __init__(self, vlm):
        self.tower, self.count = getattr(vlm.model.model, "vision_tower", None), 0

    def _count(self, _module, args, kwargs):
        self.count += (args[0] if args else kwargs["pixel_values"]).shape[0]

    def __enter__(self):
        self.handle = self.tower.register_forward_pre_hook(self._count, with_kwargs=True) if self.tower else None
        return self

    def __exit__(self, *exc):
        if self.handle:
            self.handle.remove()


def agreement(a, b) -> tuple[float, bool]:
    """Two engines' tables: the largest entropy difference, and whether predictions and lens are identical."""
    worst = max(float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float))))
                for c in ("entropy_v", "entropy_t", "entropy_m"))
    same = all(a[c].equals(b[c]) for c in ("top1_v", "top1_t", "top1_m", "pred_v", "pred_t", "pred_m"))
    same &= all(list(x) == list(y) for x, y in zip(a.lens_top1.dropna(), b.lens_top1.dropna()))
    return worst, same


def bench_model(vlm, data, args, tmp: Path) -> bool:
    """One model: reference (optional), whole-prompt engine, prefix engine; prints the figures, True if all agree."""
    rows = list(data.samples)
    ok, runs = True, {}
    ref, t_ref, mem_ref = None, None, None
    if args.reference:
        with PeakMemory(vlm.device) as mem_ref:
            t0 = time.perf_counter()
            ref = naive_reference(vlm, data, rows)
            t_ref = time.perf_counter() - t0
    table = samples_frame(data.samples)
    first_group = table[table.group == table.group.iloc[0]]
    cands = Candidates.of(vlm, [a for a in (*table.answer_visual, *table.answer_text) if isinstance(a, str)])
    reuses_features = vlm.family.reuses_image_features
    for engine, share, reuse in ENGINES:
        vlm.family.reuses_image_features = reuses_features and reuse  # this instance only, for this run
        config = ScoreConfig(batch_size=args.per_device_eval_batch_size, share_prefix=share)
        score_rows(vlm, data, first_group, cands, config)  # warm-up: the first forwards of a shape are slower
        with PeakMemory(vlm.device) as mem, DecoderTokens(vlm) as tokens, TowerImages(vlm) as tower:
            t0 = time.perf_counter()
            table = score_dataset(vlm, data, tmp / f"run-{len(list(tmp.iterdir()))}", config)
            elapsed = time.perf_counter() - t0
        runs[engine] = (table, elapsed, mem.extra, tokens.count, tower.count)
    vlm.family.reuses_image_features = reuses_features
    prefix = runs["shared prefix"][0]
    print(f"\n== {vlm.name}: {len(rows)} rows, {len(prefix)} scored")
    for engine, *_ in ENGINES[:-1]:
        worst, same = agreement(runs[engine][0], prefix)
        print(f"shared prefix vs {engine}: max |entropy difference| {worst:.2e}, predictions and lens "
              f"{'identical' if same else 'DIFFER'}")
        ok &= worst <= 1e-5 and same
    if ref is not None:
        worst_ref, mismatched = 0.0, 0
        for r in prefix.itertuples():
            for c in ("v", "t", "m"):
                e = ref.get((r.id, c))
                if e is None:
                    continue
                worst_ref = max(worst_ref, abs(e["entropy"] - getattr(r, f"entropy_{c}")))
                mismatched += e["top1"] != getattr(r, f"top1_{c}")
                if c == "m" and r.condition != "no_conflict":
                    mismatched += list(e["lens_top1"]) != list(r.lens_top1)
        print(f"shared prefix vs naive reference: max |entropy difference| {worst_ref:.2e}, "
              f"prediction/lens mismatches {mismatched}")
        ok &= worst_ref <= 1e-4 and not mismatched
    width = max(len(engine) for engine, *_ in ENGINES)
    for engine, (_, elapsed, extra, tokens, images) in runs.items():
        print(f"{engine:>{width}}: {elapsed:7.2f}s  {len(rows) / elapsed:8.1f} rows/s  {tokens:9d} decoder tokens  "
              f"{images:6d} tower images  peak extra memory {extra / 2**20:.0f} MiB")
    t_before, t_whole, t_prefix = (runs[engine][1] for engine, *_ in ENGINES)
    if ref is not None:
        print(f"{'naive reference':>{width}}: {t_ref:7.2f}s  {len(rows) / t_ref:8.1f} rows/s  peak extra memory "
              f"{mem_ref.extra / 2**20:.0f} MiB")
        print(f"throughput ratios: shared prefix / naive {t_ref / t_prefix:.1f}x, whole prompts / naive "
              f"{t_ref / t_whole:.1f}x")
    print(f"throughput ratio shared prefix / whole prompts: {t_whole / t_prefix:.2f}x "
          f"(decoder tokens {runs['whole prompts'][3] / max(runs['shared prefix'][3], 1):.2f}x fewer)")
    print(f"throughput ratio vs {ENGINES[0][0]}: whole prompts {t_before / t_whole:.2f}x, shared prefix "
          f"{t_before / t_prefix:.2f}x (tower images {runs[ENGINES[0][0]][4] / max(runs['shared prefix'][4], 1):.1f}x "
          f"fewer)")
    peak = matmul_peak_flops(vlm.device, next(vlm.model.parameters()).dtype)
    achieved = 2 * decoder_parameters(vlm) * runs["shared prefix"][3] / t_prefix
    print(f"model FLOP/s (decoder, 2 x parameters per token run, attention scores not counted): {achieved:.3g}, "
          f"{100 * achieved / peak:.1f} % of a {peak:.3g} FLOP/s matmul measured here")
    return ok


def bench_model_named(name: str, args, tmp: Path):
    """The VLM for a --models entry and the image size to render at: a random LLaVA of the tests' shape (16 image
    tokens), of LLaVA-1.5's 576 image tokens, of LLaVA-1.5-7B's whole shape (built on the device), or any name
    `load_vlm` takes."""
    from .models.registry import family_for
    from .models.vlm import VLM, resolve_dtype
    tiny = {"tiny-llava": (32, 8), "tiny-llava-576": (336, 14)}  # (image size, patch)
    if name == "llava-1.5-7b-shape":
        model, processor = family_for("llava").build_shape(dataset_tokenizer(), 336, args.device,
                                                           resolve_dtype(args.dtype, args.device))
        return VLM(model, processor, name), 336
    if name not in tiny:
        return load_vlm(name, dtype=args.dtype, device=args.device), 64
    size, patch = tiny[name]
    for part in build_tiny("llava", dataset_tokenizer(), size, patch, max_positions=1024):
        part.save_pretrained(tmp / name)
    return load_vlm(str(tmp / name), dtype=args.dtype, device=args.device), size


def main(argv=None) -> int:
    (args,) = parse([BenchArguments], list(argv) if argv is not None else None, "python -m eval.bench", __doc__)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    ok = True
    for name in args.models:
        vlm, size = bench_model_named(name, args, tmp)
        data = generate("colors", args.groups, seed=123, size=size, workers=1)
        ok &= bench_model(vlm, data, args, tmp)
    if not ok:
        print("RESULTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
