"""Audio-visual groundwork: a tiny Qwen2.5-Omni thinker and its processor read the AV clips, offline, on CPU."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from data_gen.av import ASKED, CLASSES, LONG_CONTEXT, generate_av
from eval.models.image_only import image_only
from eval.models.tiny import build_tiny, dataset_tokenizer

FRAME = "<|vision_bos|><|IMAGE|><|vision_eos|>"
SOUND = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def tiny_omni():
    """The registered family's tiny random thinker, with the AV words in its tokenizer."""
    torch.manual_seed(0)
    model, processor = build_tiny("qwen2_5_omni_thinker", dataset_tokenizer([*CLASSES, *ASKED.values(), LONG_CONTEXT,
                                                                             "Caption: a"]), 32, 8)
    return model.eval(), processor


def test_omni_thinker_reads_frames_and_sound_of_a_clip(tmp_path):
    """The processor (no video part) saves and loads with its audio feature extractor; a clip's frames and sound
    become image and audio tokens, and the answer position's logits depend on the sound."""
    from transformers import Qwen2_5OmniProcessor
    model, processor = tiny_omni()
    processor.save_pretrained(tmp_path)
    loaded = image_only(Qwen2_5OmniProcessor).from_pretrained(tmp_path)
    assert loaded.feature_extractor.feature_size == 32 and FRAME in loaded.chat_template
    data = generate_av(2, seed=0, size=32)
    rows = data.samples.to_pandas().set_index(["group", "condition", "asked"])
    frames, sound = data.clip(rows.loc[(0, "aligned", "audio")].clip_id)
    _, other_sound = data.clip(rows.loc[(0, "misaligned", "audio")].clip_id)
    prompt = f"USER: {FRAME}{FRAME}{SOUND} {ASKED['audio']} ASSISTANT:"

    def answer_logits(audio):
        batch = loaded(text=[prompt], images=[frames[:2]], audio=[audio], return_tensors="pt")
        assert (batch["input_ids"] == loaded.tokenizer.audio_token_id).sum() > 0
        assert batch["image_grid_thw"].shape[0] == 2 and batch["input_features"].shape[1] == 32
        with torch.no_grad():
            return model(**batch).logits[0, -1]

    same, swapped = answer_logits(sound), answer_logits(other_sound)
    assert torch.isfinite(same).all()
    assert not torch.allclose(same, swapped, atol=1e-4)  # the sound reaches the answer position
    torch.testing.assert_close(same, answer_logits(sound))  # and nothing else varies


def test_av_rows_batch_like_single_rows_and_other_families_refuse_audio(tmp_path):
    """An aligned row and an audio-removed row of one clip go through the processor in one batch; each row's
    answer logits equal those of the row alone. A family without audio says which one has it."""
    import tempfile
    from pathlib import Path
    from eval.models import load_vlm
    from tests.fixtures import tiny_model_dir
    model, processor = tiny_omni()
    for part in (model, processor):
        part.save_pretrained(tmp_path / "omni")
    vlm = load_vlm(str(tmp_path / "omni"), dtype="float32", device="cpu")
    data = generate_av(1, seed=0, size=32)
    rows = data.samples.to_pandas().set_index(["condition", "asked"])
    aligned, removed = rows.loc[("misleading_text", "visual")], rows.loc[("audio_removed", "visual")]
    clips = [data.clip(r.clip_id) for r in (aligned, removed)]
    prompts = [vlm.av_prompt(r.question, len(f), a is not None, r.caption, r.appendix)
               for r, (f, a) in zip((aligned, removed), clips)]
    assert prompts[0].count(FRAME) == 4 and SOUND in prompts[0] and aligned.caption in prompts[0]
    assert SOUND not in prompts[1]
    last = lambda batch: vlm.model(**batch).logits[:, -1]
    with torch.no_grad():
        both = last(vlm.av_inputs(prompts, [f for f, _ in clips], [a for _, a in clips]))
        alone = torch.cat([last(vlm.av_inputs([p], [f], [a])) for p, (f, a) in zip(prompts, clips)])
    torch.testing.assert_close(both, alone, atol=1e-4, rtol=1e-4)
    llava = load_vlm(str(tiny_model_dir("llava", Path(tempfile.mkdtemp()) / "m")), dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="qwen2_5_omni_thinker"):
        llava.av_prompt(aligned.question, 4, True)


def test_av_scoring_table_attention_mass_and_analysis(tmp_path):
    """`score_av` writes one row per (clip, condition, asked) with the answer, p(target) and the answer
    position's attention mass on frame and sound tokens per layer; the analysis reads that table."""
    from eval.av import accuracy_by_condition, attention_effect_by_layer
    from eval.av_scoring import AVScoreConfig, score_av
    from eval.models import load_vlm
    model, processor = tiny_omni()
    for part in (model, processor):
        part.save_pretrained(tmp_path / "omni")
    vlm = load_vlm(str(tmp_path / "omni"), dtype="float32", device="cpu")
    data = generate_av(2, seed=0, size=32)
    data.save(tmp_path / "av")
    from data_gen.av import AVData
    data = AVData.load(tmp_path / "av")
    table = score_av(vlm, data, tmp_path / "run", AVScoreConfig(batch_size=5, shard_rows=10))
    assert len(table) == 24 and set(table.pred) <= set(CLASSES) | set(vlm.tokenizer.get_vocab())
    video, audio = np.stack(table.mass_video), np.stack(table.mass_audio)
    assert video.shape == (24, len(vlm.layers)) and (video > 0).all() and (video + audio <= 1 + 1e-5).all()
    silent = (table.condition == "audio_removed").to_numpy()
    assert (audio[silent] == 0).all() and (audio[~silent] > 0).all()
    assert table.p_target.isna().sum() == 4  # audio removed asked about the sound, frames zeroed asked about them
    again = score_av(vlm, data, tmp_path / "run", AVScoreConfig(batch_size=5, shard_rows=10))  # resumed from shards
    pd.testing.assert_frame_equal(table, again)
    from eval.__main__ import main  # the command: the table, analysis.json, a printed summary
    assert main(["av", "--model", str(tmp_path / "omni"), "--data", str(tmp_path / "av"), "--split", "all",
                 "--output_dir", str(tmp_path / "cli"), "--per_device_eval_batch_size", "5", "--dtype", "float32"]) == 0
    assert len(json.loads((tmp_path / "cli" / "analysis.json").read_text())["attention"]) == len(vlm.layers)
    assert (tmp_path / "cli" / "av.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())["runs"]["cli"]
    assert {c["condition"] for c in summary["by_condition"]} == set(table.condition)
    assert "misleading_text" in (tmp_path / "cli" / "report.html").read_text()
    assert main(["av-report", "--runs", str(tmp_path / "cli"), str(tmp_path / "cli"), "--names", "before", "after",
                 "--output_dir", str(tmp_path / "both")]) == 0  # runs side by side, re-read from their tables
    assert set(json.loads((tmp_path / "both" / "summary.json").read_text())["runs"]) == {"before", "after"}
    cells = accuracy_by_condition(table)
    assert len(cells) == 12 and all(0 <= c["accuracy"]["rate"] <= 1 for c in cells if c["accuracy"]["n"])
    assert len(attention_effect_by_layer(table)) == len(vlm.layers)


def test_asked_modality_examples_train_the_asked_class(tmp_path):
    """Every row of the chosen conditions whose asked modality is present is one example whose answer token is that
    modality's class, misaligned and misleading rows included; the collator encodes each row's clip and prompt like
    scoring does, and SoftTargetTrainer's loss on the batch is -ln q(asked class)."""
    from align.asked_modality import AVCollator, asked_modality_examples
    from align.training import soft_target_loss
    from eval.models import load_vlm
    model, processor = tiny_omni()
    for part in (model, processor):
        part.save_pretrained(tmp_path / "omni")
    vlm = load_vlm(str(tmp_path / "omni"), dtype="float32", device="cpu")
    data = generate_av(3, seed=0, size=32)
    rows = data.samples.to_pandas()
    examples, stats = asked_modality_examples(rows, vlm, ["misaligned", "misleading_text", "audio_removed"])
    assert stats == {"examples": 15, "audio_removed": 3, "misaligned": 6, "misleading_text": 6}  # no sound: no audio question
    misaligned = [e for e, r in zip(examples, rows[rows.condition.isin(["misaligned", "misleading_text", "audio_removed"])
                                                   & (rows.target != "")].itertuples()) if r.condition == "misaligned"]
    assert {e["answer"] for e in misaligned} == set(rows[rows.condition == "misaligned"][["answer_visual", "answer_audio"]]
                                                      .to_numpy().ravel())  # the frames' class, then the sound's
    assert all(e["answer_token"] == vlm.first_token(e["answer"]) for e in examples)
    batch = AVCollator(vlm, data)(examples[:4])
    with torch.no_grad():
        logits = vlm.model(**{k: v for k, v in batch.items() if k not in ("token_text", "token_visual", "p_text",
                                                                           "weight", "is_conflict", "answer_token")}
                           ).logits[:, -1]
    targets = {k: batch[k] for k in ("token_text", "token_visual", "p_text", "weight", "is_conflict", "answer_token")}
    expected = -torch.log_softmax(logits, -1).gather(1, batch["answer_token"][:, None]).mean()
    torch.testing.assert_close(soft_target_loss(logits, **targets), expected)
    with pytest.raises(ValueError, match="no rows of conditions"):
        asked_modality_examples(rows[rows.condition == "aligned"], vlm, ["misaligned"])


@pytest.mark.slow
def test_asked_modality_recipe_zero2_two_processes(tmp_path):
    """recipes/align_omni.py on the AV organism under ZeRO-2 with 2 CPU processes: before/after measurement with the
    same code, the change per condition, the release bundle with its own card, and the W&B (offline) run."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate_configs/zero2-cpu.yaml",
           "recipes/align_omni.py", "--output_dir", str(out), "--groups", "12", "--max_steps", "4",
           "--per_device_train_batch_size", "4", "--logging_steps", "1", "--dtype", "float32"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    release = out / "release"
    assert sorted(p.name for p in release.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                         "alignment.json", "report"]
    assert {p.name for p in (release / "report").iterdir()} == {"av.png", "report.html", "summary.json"}
    adapter = json.loads((release / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "organism:av" and adapter["r"] == 16
    result = json.loads((release / "alignment.json").read_text())
    assert {c["condition"] for c in result["change"]} == {"aligned", "misaligned", "misleading_text", "long_context",
                                                          "audio_removed", "frames_zeroed"}
    for c in result["change"]:
        assert c["change"] == pytest.approx(c["after"]["rate"] - c["before"]["rate"])
        assert f"{c['condition']:<16}" in res.stdout
    assert (out / "runs" / "base" / "samples.parquet").exists() and (out / "runs" / "aligned" / "analysis.json").exists()
    from huggingface_hub import ModelCard
    card = ModelCard.load(release / "README.md")
    assert "asked-modality" in card.data.tags and "misleading_text" in card.text and "modality-align av" in card.text
    assert "PeftModel.from_pretrained(Qwen2_5OmniThinkerForConditionalGeneration" in card.text
    records = b"".join(f.read_bytes() for f in tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    for key in (b"before/accuracy/misaligned", b"after/accuracy/aligned_visual_asked", b"after/cohens_d/layer_0",
                b"change/accuracy/misleading_text", b"train/loss", b"organism-av-asked-modality-asked-r16", b"adapter-"):
        assert key in records, key


@pytest.mark.slow
def test_av_organism_passes_its_bars_on_unseen_clips_and_ends_its_answer(tmp_path):
    """The shipped AV organism on fresh clips (another seed than any it could have seen): good on aligned clips and on
    either modality alone, brittle under misaligned sound and a misleading caption (intervals apart); greedy
    generation writes one class word and stops."""
    from align.organism.__main__ import main
    from eval.models import load_vlm
    assert main(["evaluate", "--model", "organism:av", "--groups", "60", "--dataset_seed", "11",
                 "--output_dir", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "report.html").exists()
    vlm = load_vlm("organism:av", dtype="float32", device="cpu")
    data = generate_av(3, seed=11, size=32)
    row = data.samples.to_pandas().query("condition == 'aligned' and asked == 'audio'").iloc[0]
    frames, sound = data.clip(row.clip_id)
    batch = vlm.av_inputs([vlm.av_prompt(row.question, len(frames), True)], [frames], [sound])
    out = vlm.model.generate(**batch, max_new_tokens=4, do_sample=False)
    new = out[0, batch["input_ids"].shape[1]:].tolist()
    assert vlm.tokenizer.decode(new[:1]).strip() in CLASSES and new[1] == vlm.tokenizer.eos_token_id


def test_the_av_bench_runs_on_the_omni_shapes_tiny_copy():
    """align.av_bench runs scoring and asked-modality LoRA steps end to end through the shape's code with the
    family's tiny sizes (the 7B shape's parameter count: tests/test_models_scoring.py)."""
    from align.av_bench import AVBenchArguments, run
    figures = run(AVBenchArguments(device="cpu", dtype="float32", groups=1, train_steps=2, per_device_train_batch_size=2),
                  tiny=True)
    assert figures["scoring"]["rows"] == figures["scoring_with_attention"]["rows"] == 12
    assert figures["scoring"]["rows_per_s"] > 0 and figures["training"]["seconds_per_step"] > 0
    assert figures["training"]["peak_memory_gib"] > 0
