"""Audio-visual groundwork: a tiny Qwen2.5-Omni thinker and its processor read the AV clips, offline, on CPU."""
import torch

from data_gen.av import ASKED, CLASSES, LONG_CONTEXT, generate_av
from models.image_only import image_only
from models.tiny import CHAT_TEMPLATE, dataset_tokenizer, with_special_tokens

OMNI_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
               "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
FRAME = "<|vision_bos|><|IMAGE|><|vision_eos|>"
SOUND = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def tiny_omni(hidden: int = 32):
    """A random Qwen2.5-Omni thinker (vision, audio and text towers of 2 layers) and its processor, offline; the
    processor is built without its video part where torchvision is missing (models/image_only.py)."""
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration,
                              Qwen2VLImageProcessorPil, WhisperFeatureExtractor)
    tok = with_special_tokens(dataset_tokenizer([*CLASSES, *ASKED.values(), LONG_CONTEXT, "Caption: a"]), named=OMNI_TOKENS)
    processor = image_only(Qwen2_5OmniProcessor)(
        image_processor=Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=256,
                                                 max_pixels=4096, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        feature_extractor=WhisperFeatureExtractor(feature_size=32, sampling_rate=16_000, chunk_length=2),
        tokenizer=tok, chat_template=CHAT_TEMPLATE)
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=2 * hidden,
                          d_model=hidden, output_dim=hidden, max_source_positions=200, n_window=50),
        vision_config=dict(depth=2, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=4, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[1], window_size=16),
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}),
        image_token_id=tok.image_token_id, audio_token_id=tok.audio_token_id, video_token_id=tok.video_token_id,
        vision_start_token_id=tok.vision_bos_token_id, vision_end_token_id=tok.vision_eos_token_id,
        audio_start_token_id=tok.audio_bos_token_id, audio_end_token_id=tok.audio_eos_token_id)
    torch.manual_seed(0)
    return Qwen2_5OmniThinkerForConditionalGeneration(config).eval(), processor


def test_omni_thinker_reads_frames_and_sound_of_a_clip(tmp_path):
    """The processor (no video part) saves and loads with its audio feature extractor; a clip's frames and sound
    become image and audio tokens, and the answer position's logits depend on the sound."""
    from transformers import Qwen2_5OmniProcessor
    model, processor = tiny_omni()
    processor.save_pretrained(tmp_path)
    loaded = image_only(Qwen2_5OmniProcessor).from_pretrained(tmp_path)
    assert loaded.feature_extractor.feature_size == 32 and loaded.chat_template == CHAT_TEMPLATE
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
