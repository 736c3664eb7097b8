"""Model access and the scoring engine on tiny random llava and llava_next models."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from eval.models import load_vlm, supported_families
from data_gen.user_import import import_jsonl
from eval import scoring
from eval.scoring import Candidates, ScoreConfig, forward_answer_position, score_dataset

ROOT = Path(__file__).resolve().parents[1]
# two processes on one GPU fail in NCCL ("Duplicate GPU detected"): multi-process tests run on CPUs everywhere
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def test_load_and_prompts(tiny_model):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    assert type(vlm.model).__name__.endswith("ForConditionalGeneration")
    v = vlm.prompt("What color is the star?", "", with_image=True)
    t = vlm.prompt("What color is the star?", "The star is red.", with_image=False)
    m = vlm.prompt("What color is the star?", "The star is red.", with_image=True)
    image_token = getattr(vlm.processor, "image_token", "<image>")  # Gemma's is its begin-of-image token
    assert image_token in v and image_token not in t and image_token in m
    assert "The star is red." in t and "The star is red." in m and v.rstrip().endswith("ASSISTANT:")
    assert vlm.answer_ids("red") == (vlm.tokenizer.convert_tokens_to_ids("red"),)
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        vlm.answer_ids("chartreuse")
    assert len(vlm.layers) == vlm.model.config.text_config.num_hidden_layers


def test_lora_trains_the_language_model_only(tiny_model, tiny_data):
    """The family's LoRA regex hits every decoder projection and nothing else; a training step changes only
    LoRA weights inside the decoder."""
    import re
    import torch
    from peft import LoraConfig, get_peft_model
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    decoder = {id(m) for m in vlm.layers.modules()}
    hit = [m for n, m in vlm.model.named_modules() if re.fullmatch(vlm.lora_target_modules, n)]
    assert len(hit) == 7 * len(vlm.layers) and all(id(m) in decoder for m in hit)
    before = {n: p.detach().clone() for n, p in vlm.model.named_parameters()}
    decoder_names = {n for n, m in vlm.model.named_modules() if id(m) in decoder}
    model = get_peft_model(vlm.model, LoraConfig(r=4, target_modules=vlm.lora_target_modules, init_lora_weights=False))
    rows = tiny_data.split("train").samples.select(range(4))
    batch = vlm.encode([vlm.prompt(r["question"], r["text_context"]) for r in rows],
                       [tiny_data.image(r["image_id"]) for r in rows])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    plain = lambda n: n.removeprefix("base_model.model.").replace(".base_layer", "")  # the name before PEFT
    changed = {plain(n) for n, p in model.named_parameters() if plain(n) not in before
               or not torch.equal(p, before[plain(n)])}
    assert changed and all("lora_" in n for n in changed)
    assert all(n.rsplit(".lora_", 1)[0] in decoder_names for n in changed)


def test_scoring_matches_a_per_sample_reference(tiny_model, tiny_data):
    """Batched, left-padded scoring equals one-sample generate() calls with the lens on every position."""
    from eval.bench import naive_reference
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = tiny_data.split("test")
    rows = [r for r in data.samples if r["group"] == data.samples[0]["group"]][:24]
    from eval.scoring import score_rows
    cands = Candidates.of(vlm, [*(r["answer_visual"] for r in rows), *(r["answer_text"] for r in rows)])
    table = score_rows(vlm, data, pd.DataFrame(rows), cands, ScoreConfig(batch_size=8)).set_index("id")
    reference = naive_reference(vlm, data, rows)
    for (row_id, c), ref in reference.items():
        got = table.loc[row_id]
        assert abs(got[f"entropy_{c}"] - ref["entropy"]) < 1e-5, (row_id, c)
        assert got[f"top1_{c}"] == ref["top1"]
        if c == "m":
            assert list(got.lens_top1) == ref["lens_top1"]


def test_a_batch_mixing_image_and_text_only_rows_scores_each_row_as_alone(tiny_model, tiny_data):
    """Training batches mix conflict rows (image + text) with text-only retention rows."""
    import torch
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    rows = tiny_data.samples.select(range(3))
    prompts = [vlm.prompt(rows[0]["question"], rows[0]["text_context"]),
               vlm.prompt(rows[1]["question"], rows[1]["text_context"], with_image=False),
               vlm.prompt(rows[2]["question"], "")]
    images = [tiny_data.image(rows[0]["image_id"]), None, tiny_data.image(rows[2]["image_id"])]
    last = lambda batch: vlm.model(**batch).logits[:, -1]
    with torch.no_grad():
        mixed = last(vlm.encode(prompts, images))
        alone = torch.cat([last(vlm.encode([p], [i] if i is not None else None)) for p, i in zip(prompts, images)])
    torch.testing.assert_close(mixed, alone, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one per prompt"):
        vlm.encode(prompts, images[:2])


def test_lens_at_last_layer_equals_logits(tiny_model, tiny_data):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    rows = tiny_data.samples.select(range(4))
    prompts = [vlm.prompt(r["question"], r["text_context"]) for r in rows]
    out = forward_answer_position(vlm, prompts, [tiny_data.image(r["image_id"]) for r in rows],
                                  Candidates.of(vlm, ["red"]), lens=True)
    np.testing.assert_allclose(out["lens_last_logits"], out["final_logits"], atol=1e-4)
    assert out["lens_top1"].shape == (4, len(vlm.layers))


def test_batched_left_padding_matches_single_rows(tiny_model, tiny_data, tmp_path):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = tiny_data.split("test")
    a = score_dataset(vlm, data, tmp_path / "a", ScoreConfig(batch_size=1))
    b = score_dataset(vlm, data, tmp_path / "b", ScoreConfig(batch_size=16))
    for col in ("entropy_v", "entropy_t", "entropy_m", "p_text_m", "candidate_entropy_m"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), atol=1e-4, equal_nan=True)
    assert (a.top1_m == b.top1_m).all()
    np.testing.assert_allclose(np.stack(a.lens_diff.dropna()), np.stack(b.lens_diff.dropna()), atol=1e-4)


def test_each_distinct_input_scored_once(tiny_model, tiny_data, tmp_path, monkeypatch):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    seen = []
    real = scoring.forward_answer_position

    def counting(vlm_, prompts, images, cands, lens, **kwargs):
        seen.extend(zip(prompts, [None] * len(prompts) if images is None else [im.tobytes() for im in images]))
        return real(vlm_, prompts, images, cands, lens, **kwargs)

    def counting_shared(vlm_, split, cands, lens, *args, **kwargs):  # a suffix + its image: one prompt
        seen.extend((tuple(s), split.images[r].tobytes()) for s, r in zip(split.suffixes, split.rows))
        return real_shared(vlm_, split, cands, lens, *args, **kwargs)

    real_shared = scoring.forward_shared_prefix
    monkeypatch.setattr(scoring, "forward_answer_position", counting)
    monkeypatch.setattr(scoring, "forward_shared_prefix", counting_shared)
    data = tiny_data.split("test")
    table = score_dataset(vlm, data, tmp_path / "run", ScoreConfig(shard_inputs=10**6))
    assert len(seen) == len(set(seen))  # nothing twice
    rows = data.samples.to_pandas()
    n_images = rows[["image_id", "question"]].drop_duplicates().shape[0]
    n_text = rows[rows.text_context != ""][["text_context", "question"]].drop_duplicates().shape[0]
    n_both = rows[rows.text_context != ""][["image_id", "text_context", "question"]].drop_duplicates().shape[0]
    assert len(seen) == n_images + n_text + n_both < 3 * len(rows)
    assert len(table) == len(rows)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["dataset_fingerprint"] == data.fingerprint and info["versions"]["transformers"]


def test_conflict_rows_alone_score_as_in_the_whole_table(tiny_model, tiny_data, tmp_path):
    """Calibration scores only the conflict rows (`ConflictData.conflicts`): each keeps the values it has in the
    whole table, and the rows the analysis reads are all there."""
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = tiny_data.split("test")
    whole = score_dataset(vlm, data, tmp_path / "whole", ScoreConfig(lens=False))
    conflicts = score_dataset(vlm, data.conflicts(), tmp_path / "conflicts", ScoreConfig(lens=False))
    assert set(conflicts.condition) == {"conflict"} and set(whole.condition) > {"conflict"}
    expected = whole[whole.condition == "conflict"].set_index("id").sort_index()
    got = conflicts.set_index("id").sort_index()
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got[["pred_v", "pred_t", "pred_m"]], expected[["pred_v", "pred_t", "pred_m"]])
    np.testing.assert_allclose(got[["entropy_v", "entropy_t"]], expected[["entropy_v", "entropy_t"]], atol=1e-5)


def test_table_columns_and_values(tiny_model, tiny_data, tmp_path):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    t = score_dataset(vlm, tiny_data.split("test"), tmp_path / "run")
    conflict = t[t.condition == "conflict"].iloc[0]
    for c in ("v", "t", "m"):
        assert 0 <= conflict[f"entropy_{c}"] <= np.log(len(vlm.tokenizer)) + 1e-5
        assert 0 <= conflict[f"one_minus_max_p_{c}"] <= 1 and 0 <= conflict[f"top2_margin_{c}"] <= 1
    assert conflict.token_visual == vlm.first_token(conflict.answer_visual)
    assert len(conflict.lens_top1) == len(vlm.layers) == len(conflict.lens_diff)
    original = t[t.text_tier == "original"].iloc[0]
    assert original.entropy_m == original.entropy_v  # no text: the both-modality input is the image-only one


# Multi-token answers: shared first tokens (light blue / light green, red / red star), answers that begin
# others (sky / sky blue, red / red star) and one-token answers side by side.
MULTI_TOKEN_PAIRS = [("light blue", "light green"), ("sky blue", "blue"), ("red", "sky"), ("blue", "red star"),
                     ("red star", "sky blue")]


def multi_token_data(tmp_path, pairs=MULTI_TOKEN_PAIRS):
    from PIL import Image
    for name in ("blue", "red"):
        Image.new("RGB", (32, 32), name).save(tmp_path / f"{name}.png")
    rows = [{"id": str(i), "image": f"{('blue', 'red')[i % 2]}.png", "question": "What color is the car?",
             "text_context": f"The car is {t}.", "answer_visual": v, "answer_text": t, "split": "test"}
            for i, (v, t) in enumerate(pairs)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return import_jsonl(tmp_path / "d.jsonl")


def full_sequence_logprob(vlm, prompt, image, sequence) -> float:
    """log p(sequence | prompt) by one plain forward over prompt + answer: no cache, no batch, no padding."""
    import torch
    enc = vlm.encode([prompt], [image] if image is not None else None)
    answer = torch.tensor([sequence])
    length = enc["input_ids"].shape[1]
    for key, value in enc.items():  # per-token inputs grow by the answer: text tokens, attended, of no image
        if key != "input_ids" and value.shape[:2] == (1, length):
            enc[key] = torch.cat([value, torch.full_like(answer, int(key == "attention_mask"))], 1)
    enc["input_ids"] = torch.cat([enc["input_ids"], answer], 1)
    with torch.no_grad():
        logits = vlm.model(**enc).logits[0].float()
    logp = torch.log_softmax(logits[-len(sequence) - 1:-1], -1)
    return float(logp[torch.arange(len(sequence)), answer[0]].sum())


def check_whole_answers(vlm, data):
    """The engine's whole-answer scores equal plain full-sequence forwards, and its pruning never changes the best."""
    rows = data.samples.to_pandas()
    cands = Candidates.of(vlm, [*rows.answer_visual, *rows.answer_text])
    prompts = [vlm.prompt(q, c) for q, c in zip(rows.question, rows.text_context)]
    images = [data.image(i) for i in rows.image_id]
    everything = [set(range(len(cands.answers)))] * len(rows)
    full = forward_answer_position(vlm, prompts, images, cands, lens=False, required=everything, chunk=3)
    pruned = forward_answer_position(vlm, prompts, images, cands, lens=False, chunk=3)
    for j, (prompt, image) in enumerate(zip(prompts, images)):
        expected = [full_sequence_logprob(vlm, prompt, image, seq) for seq in cands.sequences]
        np.testing.assert_allclose(full["answer_logprob"][j], expected, atol=2e-4)
        best = int(np.argmax(expected))
        assert np.nanargmax(pruned["answer_logprob"][j]) == best
        scored = ~np.isnan(pruned["answer_logprob"][j])
        np.testing.assert_allclose(pruned["answer_logprob"][j][scored], np.array(expected)[scored], atol=2e-4)
        assert full["answer"][j] == (best if full["top1"][j] == cands.first_tokens[best] else -1)
    return cands, full


def test_whole_answers_on_tiny_models(tiny_model, tmp_path):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = multi_token_data(tmp_path)
    cands, _ = check_whole_answers(vlm, data)
    # an answer that begins another is scored with the end of answer after it; the others are not
    sequences = dict(zip(cands.answers, cands.sequences))
    assert sequences["sky"] == (*vlm.answer_ids("sky"), vlm.answer_end_id)
    assert sequences["red"][-1] == vlm.answer_end_id and sequences["sky blue"] == vlm.answer_ids("sky blue")
    assert not cands.collisions()
    # rows whose answers share a first token are scored and analysed, not dropped; the lens skips them
    t = score_dataset(vlm, data, tmp_path / "run")
    assert not t.answer_collision.any()
    assert t.set_index("id").first_token_shared.to_dict() == {"0": True, "1": False, "2": False, "3": False, "4": False}
    assert t.loc[t.first_token_shared, "lens_diff"].isna().all() and t.loc[~t.first_token_shared, "lens_diff"].notna().all()
    from eval.analysis import AnalysisConfig, conflict_samples
    analysed, counts = conflict_samples(t, AnalysisConfig(unimodal_correct=False))
    assert counts["analysed"] == len(t) == 5 and counts.get("answer_collision", 0) == 0
    for r in analysed.itertuples():  # a whole candidate answer, or (other) the token the model starts with
        assert r.pred_m in cands.answers or r.pred_m == vlm.tokenizer.decode([int(r.top1_m)]).strip()


def test_scoring_prints_no_deprecation_warning(tiny_model, tmp_path, monkeypatch):
    """Shared prefixes, whole prompts and multi-token continuations all pass the KV cache by the public name."""
    import transformers.utils.generic as generic
    said = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda message, *a, **k: said.append(str(message)))
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = multi_token_data(tmp_path)
    for share_prefix in (True, False):
        score_dataset(vlm, data, None, ScoreConfig(share_prefix=share_prefix))
    assert not [m for m in said if "deprecated" in m], said


def test_whole_answers_on_the_organism_tokenizer(tmp_path):
    """The shipped organism writes 'sky', 'blue' and 'red star' as several words of its own tokenizer."""
    vlm = load_vlm("organism", dtype="float32", device="cpu")
    data = multi_token_data(tmp_path, [(v, t) for v, t in MULTI_TOKEN_PAIRS if "light" not in v])  # not its word
    _, out = check_whole_answers(vlm, data)
    assert (out["answer"] >= 0).any()  # the trained organism answers with colour words: some whole answers win


def test_identical_answer_tokens_are_flagged(tmp_path):
    from PIL import Image
    from tests.fixtures import tiny_model_dir
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "a.png")
    rows = [{"id": str(i), "image": "a.png", "question": "What color is the car?", "text_context": f"The car is {t}.",
             "answer_visual": v, "answer_text": t, "split": "test"}
            for i, (v, t) in enumerate([("sky blue", "sky  blue"), ("red", "blue")])]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = import_jsonl(tmp_path / "d.jsonl")
    vlm = load_vlm(str(tiny_model_dir("llava", tmp_path / "m")), dtype="float32", device="cpu")
    assert list(Candidates.of(vlm, ["sky blue", "sky  blue", "red"]).collisions().values()) == [["sky  blue", "sky blue"]]
    t = score_dataset(vlm, data, tmp_path / "run")
    assert t.set_index("id").answer_collision.to_dict() == {"0": True, "1": False}


def test_resume_skips_finished_shards(tiny_model, tiny_data, tmp_path, monkeypatch):
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    first = score_dataset(vlm, tiny_data, tmp_path / "run", ScoreConfig(shard_inputs=40))
    assert len(list((tmp_path / "run" / "shards").glob("shard-*.parquet"))) > 6  # more shards than the 6 groups
    monkeypatch.setattr(scoring, "forward_answer_position", lambda *a, **k: pytest.fail("re-scored a finished shard"))
    again = score_dataset(vlm, tiny_data, tmp_path / "run", ScoreConfig(shard_inputs=40))
    pd.testing.assert_frame_equal(first, again)
    assert first.id.tolist() == tiny_data.samples["id"]  # the dataset's order, whatever the shards
    with pytest.raises(ValueError, match="different score_config"):
        score_dataset(vlm, tiny_data, tmp_path / "run", ScoreConfig(shard_inputs=41))


def test_shards_are_sized_by_inputs_not_groups(tiny_data):
    """A crash loses at most one shard of about `shard_inputs` inputs, even on a split of a few large groups."""
    from eval.scoring import distinct_inputs, plan_shards
    rows = tiny_data.samples.to_pandas()
    shards = plan_shards(rows, scoring.CONDITIONS, 40)
    assert sorted(np.concatenate(shards)) == list(range(len(rows)))  # every row once
    sizes = [len(distinct_inputs(rows.iloc[k], scoring.CONDITIONS)) for k in shards]
    per_image = max(len(distinct_inputs(unit, scoring.CONDITIONS)) for _, unit in rows.groupby(["group", "image_id"]))
    assert max(sizes) <= max(40, per_image) and len(shards) > rows.group.nunique()


def _score_cmd(model, data, out, *extra):
    return [sys.executable, "-m", "eval", "score", "--model", str(model), "--data", str(data), "--output_dir", str(out),
            "--split", "all", "--dtype", "float32", "--device", "cpu", *extra]


@pytest.mark.slow
def test_real_kill_loses_at_most_the_shard_in_flight(tmp_path):
    from tests.fixtures import tiny_dataset, tiny_model_dir
    tiny_dataset(tmp_path / "data", groups=12)
    model = tiny_model_dir("llava", tmp_path / "model")
    ref = subprocess.run(_score_cmd(model, tmp_path / "data", tmp_path / "ref", "--shard-inputs", "40"),
                         capture_output=True, text=True, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen(_score_cmd(model, tmp_path / "data", tmp_path / "run", "--shard-inputs", "40",
                                       "--per-device-eval-batch-size", "2"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "run" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(shards.glob("shard-*.parquet"))
    assert 2 <= len(done) < 12, "the run finished before it could be killed"
    for f in done:  # every shard on disk is whole
        pd.read_parquet(f)
    assert not (tmp_path / "run" / "samples.parquet").exists()
    res = subprocess.run(_score_cmd(model, tmp_path / "data", tmp_path / "run", "--shard-inputs", "40",
                                    "--per-device-eval-batch-size", "2"), capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and "resuming" in res.stderr
    a = pd.read_parquet(tmp_path / "ref" / "samples.parquet")
    b = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    np.testing.assert_allclose(a.entropy_m, b.entropy_m, atol=1e-4)
    assert (a.id == b.id).all()


@pytest.mark.slow
def test_data_parallel_under_accelerate_matches_one_process(tiny_data, tmp_path):
    from tests.fixtures import tiny_model_dir
    model = tiny_model_dir("llava", tmp_path / "model")
    data_path = tiny_data.info["path"]
    one = subprocess.run(_score_cmd(model, data_path, tmp_path / "one", "--shard-inputs", "40"),
                         capture_output=True, text=True, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
                          "-m", *_score_cmd(model, data_path, tmp_path / "two", "--shard-inputs", "40")[2:]],
                         capture_output=True, text=True, cwd=ROOT, env=CPU_ONLY)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "scoring [1]" in two.stderr and "scoring [0]" in two.stderr
    a = pd.read_parquet(tmp_path / "one" / "samples.parquet")
    b = pd.read_parquet(tmp_path / "two" / "samples.parquet")
    np.testing.assert_allclose(a.entropy_m, b.entropy_m, atol=1e-4)


def test_families_register_by_model_type():
    from eval.models import family_for, supported_families
    assert {"llava", "llava_next", "idefics3", "gemma3"} <= set(supported_families())
    with pytest.raises(ValueError, match="not supported yet"):
        family_for("mamba_vlm")


def test_organisms_are_named_exactly_and_never_built_on_load(tmp_path, monkeypatch):
    from eval.models import vlm as vlm_module
    with pytest.raises(ValueError, match="python -m align.organism build"):
        load_vlm("organism:none")
    # a path or hub id that merely starts with "organism" is that path or hub id, not the shipped organism
    with pytest.raises(OSError, match="organisms-of-mine/my-llava"):
        load_vlm("./organisms-of-mine/my-llava")
    monkeypatch.setattr(vlm_module, "ORGANISMS_DIR", tmp_path)  # as if the shipped builds were missing
    with pytest.raises(FileNotFoundError, match="python -m align.organism build --preference vision"):
        load_vlm("organism:vision")
    assert not list(tmp_path.iterdir())  # nothing was built


def test_adapter_loads_by_name_and_scores_like_the_peft_model(tiny_model, tiny_data, tmp_path):
    """`load_vlm(..., adapter=DIR)` and `eval score --adapter DIR` score exactly what the PEFT model computes."""
    import torch
    from peft import LoraConfig, get_peft_model
    base = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    torch.manual_seed(1)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, target_modules=base.lora_target_modules,
                                                       init_lora_weights=False))  # random B: the adapter matters
    peft_model.save_pretrained(tmp_path / "adapter")
    data = tiny_data.split("test")
    direct = score_dataset(scoring_vlm := load_vlm(str(tiny_model), dtype="float32", device="cpu", adapter=str(tmp_path / "adapter")),
                           data, tmp_path / "a", ScoreConfig(batch_size=8))
    plain = score_dataset(load_vlm(str(tiny_model), dtype="float32", device="cpu"), data, tmp_path / "b",
                          ScoreConfig(batch_size=8))
    assert scoring_vlm.name.endswith("+" + str(tmp_path / "adapter"))
    assert np.abs(direct.entropy_m.to_numpy() - plain.entropy_m.to_numpy()).max() > 1e-4  # the adapter changed scores
    # float32 adapters are merged for scoring: the same scores as the unmerged PEFT model
    from eval.models.vlm import VLM
    assert "lora" not in " ".join(n for n, _ in scoring_vlm.model.named_modules()).lower()
    peft_model.eval()
    unmerged = score_dataset(VLM(peft_model, base.processor, "unmerged"), data, tmp_path / "u", ScoreConfig(batch_size=8))
    np.testing.assert_allclose(direct.entropy_m, unmerged.entropy_m, atol=1e-5)
    assert (direct.top1_m == unmerged.top1_m).all()
    from eval.__main__ import main as eval_main
    assert eval_main(["score", "--model", str(tiny_model), "--adapter", str(tmp_path / "adapter"), "--data",
                      tiny_data.info["path"], "--output_dir", str(tmp_path / "cli"), "--dtype", "float32"]) == 0
    cli = pd.read_parquet(tmp_path / "cli" / "samples.parquet")
    np.testing.assert_allclose(cli.entropy_m, direct.entropy_m, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_vlm(str(tiny_model), device="cpu", adapter=str(tmp_path))


def test_shared_image_prefix_scores_like_whole_prompts(tiny_model, tiny_data, tmp_path, monkeypatch):
    """Each image's prefix runs once and every prompt continues over its cache: the table is the whole-prompt
    engine's (entropies within 1e-5, identical predictions and lens), on every family that allows it."""
    from eval import prefix as prefix_module
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = tiny_data.split("test")
    encoded = []
    real = prefix_module.encode_prefixes
    monkeypatch.setattr(scoring, "encode_prefixes", lambda v, split: encoded.extend(
        im.tobytes() for im in split.images) or real(v, split))
    whole = score_dataset(vlm, data, tmp_path / "whole", ScoreConfig(batch_size=8, share_prefix=False))
    assert not encoded
    shared = score_dataset(vlm, data, tmp_path / "shared", ScoreConfig(batch_size=8))
    if vlm.family.shares_image_prefix:
        rows = data.samples.to_pandas()
        assert len(encoded) == len(set(encoded)) == rows.image_id.nunique()  # each image's prefix once
    else:
        assert not encoded  # Gemma 3: sliding windows and bidirectional image attention need whole prompts
    for col in ("entropy_v", "entropy_t", "entropy_m", "p_text_m", "p_visual_v", "logp_text_m", "candidate_entropy_m"):
        np.testing.assert_allclose(whole[col].to_numpy(float), shared[col].to_numpy(float), atol=1e-5, equal_nan=True)
    for col in ("top1_v", "top1_t", "top1_m", "pred_v", "pred_m"):
        pd.testing.assert_series_equal(whole[col], shared[col])
    assert whole.lens_top1.isna().equals(shared.lens_top1.isna())
    assert all(list(a) == list(b) for a, b in zip(whole.lens_top1.dropna(), shared.lens_top1.dropna()))
    np.testing.assert_allclose(np.stack(whole.lens_diff.dropna()), np.stack(shared.lens_diff.dropna()), atol=1e-5)


def test_whole_prompts_run_the_tower_once_per_image(tiny_model, tiny_data, tmp_path, monkeypatch):
    """Where whole prompts run (text before the image, Gemma 3, `share_prefix=False`), a family that takes
    precomputed image features encodes each image once for all its prompts, and the table is the one the tower run
    for every prompt gives; other families never take that path."""
    vlm = load_vlm(str(tiny_model), dtype="float32", device="cpu")
    data = tiny_data.split("test")
    encoded = []
    real = vlm.family.image_features
    monkeypatch.setattr(vlm.family, "image_features", lambda model, pixels: encoded.append(len(pixels)) or
                        real(model, pixels))
    whole = ScoreConfig(batch_size=8, share_prefix=False)
    reused = score_dataset(vlm, data, tmp_path / "reused", whole)
    if not vlm.family.reuses_image_features:
        assert not encoded
        return
    assert sum(encoded) == data.samples.to_pandas().image_id.nunique()  # not once per prompt (3 or more each)
    monkeypatch.setattr(vlm.family, "reuses_image_features", False)
    per_prompt = score_dataset(vlm, data, tmp_path / "per-prompt", whole)
    for col in ("entropy_v", "entropy_m", "p_text_m", "logp_text_m"):
        np.testing.assert_allclose(reused[col].to_numpy(float), per_prompt[col].to_numpy(float), atol=1e-5,
                                   equal_nan=True)
    for col in ("top1_v", "top1_m", "pred_v", "pred_m"):
        pd.testing.assert_series_equal(reused[col], per_prompt[col])
    assert all(list(a) == list(b) for a, b in zip(reused.lens_top1.dropna(), per_prompt.lens_top1.dropna()))


def test_prompts_with_text_before_the_image_take_the_whole_prompt_path(tiny_data):
    """The organism's template asks the question before the image: nothing is shared, and the split says so;
    a processor whose tokens differ from prefix + suffix is caught before any score is written."""
    from eval.prefix import encode_prefixes, matches_whole_prompts, split_at_image
    organism = load_vlm("organism", dtype="float32", device="cpu")
    image = tiny_data.image(tiny_data.samples[0]["image_id"])
    prompts = [organism.prompt("What color is the star?", ctx) for ctx in ("", "The star is red.")]
    assert split_at_image(organism, prompts, [image, image]) is None
    from tests.fixtures import tiny_model_dir
    import tempfile
    vlm = load_vlm(str(tiny_model_dir("llava", Path(tempfile.mkdtemp()) / "m")), dtype="float32", device="cpu")
    prompts = [vlm.prompt("What color is the star?", ctx) for ctx in ("", "The star is red.")]
    split = split_at_image(vlm, prompts, [image, image])
    assert split is not None and split.rows == [0, 0] and len(split.images) == 1
    prefix = encode_prefixes(vlm, split)
    assert matches_whole_prompts(vlm, split, prefix, prompts)
    split.suffixes[1] = split.suffixes[1][1:]  # as if the processor merged a token across the image's end
    assert not matches_whole_prompts(vlm, split, prefix, prompts)


def test_bench_checks_agreement_and_prints_the_ratios(capsys):
    """`python -m eval.bench` on the tests' tiny LLaVA: the two engines agree, and every figure is printed."""
    from eval.bench import main
    assert main(["--models", "tiny-llava", "--groups", "1", "--reference", "false"]) == 0
    out = capsys.readouterr().out
    assert "predictions and lens identical" in out
    for figure in ("rows/s", "throughput ratio shared prefix / whole prompts", "% of a", "decoder tokens",
                   "throughput ratio vs whole prompts, tower per prompt", "tower images"):
        assert figure in out


@pytest.mark.parametrize("family", supported_families())
def test_every_family_builds_its_checkpoints_shape(family):
    """The GPU figures' models (recipes/gpu_figures.py): each family's recipe-config checkpoint with random weights,
    built on the meta device (nothing allocated) in bf16, has the checkpoint's parameter count; the default dtype is
    left as it was."""
    import torch
    import yaml
    from eval.models import family_for
    from eval.models.tiny import dataset_tokenizer
    fam = family_for(family)
    image_size = yaml.safe_load(open(fam.shape.recipe_config))["image_size"]
    model, processor = fam.build_shape(dataset_tokenizer(), image_size, "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(fam.shape.parameters, rel=2e-3)
    assert next(model.parameters()).dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    assert fam.shape.checkpoint == yaml.safe_load(open(fam.shape.recipe_config))["model_name_or_path"] or \
        family == "qwen2_vl"  # Qwen2-VL runs with the Qwen2.5-VL config, the model swapped
    if family == "llava":
        assert model.config.image_seq_length == 576 and model.get_output_embeddings().weight.shape[0] == 32064


def test_a_one_process_accelerate_launch_on_cpu_uses_every_core(monkeypatch):
    """`accelerate launch` sets OMP_NUM_THREADS=1 for a one-process CPU run here; the run takes the cores back,
    while a thread count set outside accelerate is left alone."""
    import os
    import torch
    from eval.processes import use_every_core
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
        use_every_core()
        assert torch.get_num_threads() == 1  # plain python with OMP_NUM_THREADS=1: the user's choice
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
        use_every_core()
        assert torch.get_num_threads() == cores  # accelerate's default of 1: every core
    finally:
        torch.set_num_threads(before)


def test_gpu_figures_run_end_to_end_on_cpu_with_tiny_models(tmp_path, monkeypatch, capsys):
    """recipes/gpu_figures.py on a CPU with the families' tiny models: every family is built through its shape's
    code, scored at its recipe config's batch size and trained for LoRA steps; the figures land in the JSON, the
    table and the README between its markers; a re-run keeps what the first finished."""
    import runpy
    from align import gpu_figures
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- gpu-figures -->\nold table\n<!-- /gpu-figures -->\n\nafter\n")
    argv = ["--device", "cpu", "--dtype", "float32", "--tiny", "--image_size", "64", "--output_dir",
            str(tmp_path / "out"), "--readme", str(readme)]
    monkeypatch.setattr(sys, "argv", ["recipes/gpu_figures.py", *argv])
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(ROOT / "recipes" / "gpu_figures.py"), run_name="__main__")
    assert ended.value.code == 0
    record = json.loads((tmp_path / "out" / "gpu_figures.json").read_text())
    assert [f["family"] for f in record["figures"]] == supported_families()
    for f in record["figures"]:
        assert f["scoring"]["rows"] > 50 and f["scoring"]["rows_per_s"] > 0, f["family"]
        assert f["training"]["seconds_per_step"] > 0 and f["training"]["steps"] == 3, f["family"]
        assert f["scoring"]["batch"] == yaml.safe_load(open(ROOT / f["recipe_config"]))["per_device_eval_batch_size"]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n") and text.endswith("after\n")
    assert text.count("rows/s at batch") == len(supported_families()) and "tiny sizes" in text
    assert (tmp_path / "out" / "gpu_figures.md").read_text().strip() in text
    capsys.readouterr()

    def built_again(*_):
        raise AssertionError("a finished family ran again")
    monkeypatch.setattr(gpu_figures, "family_figures", built_again)
    assert gpu_figures.main(argv) == 0
    assert gpu_figures.main(["--families", "nonsense", "--device", "cpu"]) == 2  # one line naming the choices
    assert "nonsense" in capsys.readouterr().err
