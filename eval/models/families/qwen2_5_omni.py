"""Qwen2.5-Omni thinker (`qwen2_5_omni_thinker`): the text-writing half of Qwen2.5-Omni, a windowed ViT, a
Whisper-style audio encoder and a Qwen2 decoder with time-aligned multimodal RoPE.

Image-text conflicts score as Qwen2.5-VL's do: image tokens, and continuations placed after the largest
M-RoPE position, read off the thinker's own `get_rope_index` (which also counts audio). The audio-visual
conflicts of data_gen/av.py are why it is here. Its processor carries a Whisper feature extractor and a
video processor (torchvision); where torchvision is missing it loads without the video part.
"""
from __future__ import annotations

import torch
from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration,
                          Qwen2VLImageProcessorPil, WhisperFeatureExtractor)

from ..image_only import image_only
from ..registry import Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE, decoder_sizes, with_special_tokens
from .llava import PIXEL_NORM
from .qwen2_vl import QWEN2_7B_DECODER, rope_positions

OMNI_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
               "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
IMAGE_MARKER = "<|vision_bos|><|IMAGE|><|vision_eos|>"  # as Qwen2.5-Omni's chat template writes an image
AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def omni_rope_index(base: torch.nn.Module, batch: dict) -> torch.Tensor:
    mask = batch.get("feature_attention_mask")
    return base.get_rope_index(batch["input_ids"], batch.get("image_grid_thw"), None, batch["attention_mask"], False,
                               mask.sum(-1) if mask is not None else None)[0]


def with_audio_items(chat_template: str) -> str:
    """The tiny template with a branch for audio content items (Qwen2.5-Omni's own template has one)."""
    image_branch = "{% if item['type'] == 'image' %}"
    if image_branch not in chat_template:
        raise ValueError("the chat template has no image branch to put an audio branch beside")
    return chat_template.replace(image_branch, "{% if item['type'] == 'audio' %}" + AUDIO_MARKER + "\n{% elif item['type'] == 'image' %}", 1)


@register_family
class Qwen25OmniThinker(Family):
    model_type = "qwen2_5_omni_thinker"
    video_processor_class = Qwen2_5OmniProcessor
    reads_audio = True
    # Qwen2-7B's decoder, a 32-layer 1280-wide ViT at patch 14, a Whisper-large-style audio encoder on 128 mel bins
    shape = ModelShape(
        "Tevatron/Qwen2.5-Omni-7B-Thinker", "recipes/configs/qwen2.5-omni-7b-thinker.yaml", patch_size=14,
        parameters=8.93e9,
        config={"text_config": QWEN2_7B_DECODER,
                "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                                  "out_hidden_size": 3584, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
                "audio_config": {"encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                                 "d_model": 1280, "output_dim": 3584, "max_source_positions": 1500, "n_window": 100}},
        tiny={"mel_bins": 128})

    def image_block_end(self, processor) -> str:
        return processor.vision_eos_token  # its get_rope_index expects an image's end token after the image

    def next_positions(self, model, batch):
        return rope_positions(model, batch, omni_rope_index)

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   heads: int = 4, mel_bins: int = 32, layers: int = 2, encoder_layers: int = 2, **_):
        tokenizer = with_special_tokens(tokenizer, named=OMNI_TOKENS)
        processor = omni_processor(tokenizer, image_size, patch_size, mel_bins, chat_template)
        config = thinker_config(
            tokenizer, text=dict(**decoder_sizes(tokenizer, hidden, layers, heads), num_key_value_heads=heads // 2,
                                 rope_parameters=mrope(hidden // heads, 10000.0)),
            audio=dict(num_mel_bins=mel_bins, encoder_layers=encoder_layers, encoder_attention_heads=heads,
                       encoder_ffn_dim=2 * hidden, d_model=hidden, output_dim=hidden, max_source_positions=200,
                       n_window=50),
            vision=dict(depth=encoder_layers, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads,
                        patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
                        fullatt_block_indexes=[encoder_layers - 1], window_size=4 * patch_size))
        return Qwen2_5OmniThinkerForConditionalGeneration(config), processor


def mrope(head_dim: int, theta: float, shares: tuple[int, int, int] = (1, 1, 2)) -> dict:
    """Rope parameters whose M-RoPE sections split half the head dimension over (time, height, width) in `shares`
    (Qwen2.5-Omni-7B: 16, 24, 24 of 64, shares 2:3:3; the tiny models: 1:1:2)."""
    half = head_dim // 2
    sections = [half * k // sum(shares) for k in shares[:2]]
    return {"rope_type": "default", "mrope_section": [*sections, half - sum(sections)], "rope_theta": theta}


def omni_processor(tokenizer, image_size: int, patch_size: int, mel_bins: int, chat_template: str = CHAT_TEMPLATE):
    """The processor without its video part: a Qwen2-VL image processor, a Whisper feature extractor (2 s chunks:
    the clips are 1 s long) and the chat template with audio items."""
    merged = 2 * patch_size
    return image_only(Qwen2_5OmniProcessor)(
        image_processor=Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                                 min_pixels=merged * merged, max_pixels=4 * image_size * image_size,
                                                 **PIXEL_NORM),
        feature_extractor=WhisperFeatureExtractor(feature_size=mel_bins, sampling_rate=16_000, chunk_length=2),
        tokenizer=tokenizer, chat_template=with_audio_items(chat_template).replace("<image>", IMAGE_MARKER))


def thinker_config(tokenizer, text: dict, audio: dict, vision: dict) -> Qwen2_5OmniThinkerConfig:
    return Qwen2_5OmniThinkerConfig(
        audio_config=audio, vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
        audio_token_id=tokenizer.audio_token_id, video_token_id=tokenizer.video_token_id,
        vision_start_token_id=tokenizer.vision_bos_token_id, vision_end_token_id=tokenizer.vision_eos_token_id,
        audio_start_token_id=tokenizer.audio_bos_token_id, audio_end_token_id=tokenizer.audio_eos_token_id)
