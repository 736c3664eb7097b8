"""Audio-visual groundwork: a tiny Qwen2.5-Omni thinker and its processor read the AV clips, offline, on CPU."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from data_gen.av import ASKED, CLASSES, LONG_CONTEXT, generate_av
from models.image_only import image_only
from models.tiny import build_tiny, dataset_tokenizer

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
    from models import load_vlm
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
    from models import load_vlm
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
    cells = accuracy_by_condition(table)
    assert len(cells) == 12 and all(0 <= c["accuracy"]["rate"] <= 1 for c in cells if c["accuracy"]["n"])
    assert len(attention_effect_by_layer(table)) == len(vlm.layers)
