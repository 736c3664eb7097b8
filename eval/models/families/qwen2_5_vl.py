"""Qwen2.5-VL (`qwen2_5_vl`): Qwen2-VL with a windowed-attention ViT (SwiGLU, RMSNorm) and absolute time in
M-RoPE; prompts, positions and processor loading are Qwen2-VL's (models/families/qwen2_vl.py)."""
from __future__ import annotations

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from ..registry import register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE
from .qwen2_vl import QWEN2_7B_DECODER, Qwen2VL, tiny_qwen_parts


@register_family
class Qwen25VL(Qwen2VL):
    model_type = "qwen2_5_vl"
    shape = ModelShape(
        "Qwen/Qwen2.5-VL-7B-Instruct", "recipes/configs/qwen2.5-vl-7b-instruct.yaml", patch_size=14,
        parameters=8.292e9,
        config={"text_config": QWEN2_7B_DECODER,
                "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                                  "out_hidden_size": 3584, "window_size": 112,
                                  "fullatt_block_indexes": [7, 15, 23, 31]}})
    video_processor_class = Qwen2_5_VLProcessor

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   heads: int = 4, **_):
        processor, text, tokens = tiny_qwen_parts(tokenizer, image_size, patch_size, chat_template,
                                                  Qwen2_5_VLProcessor, hidden, heads)
        # window of 2x2 merged patches, so the tiny tower runs both windowed and full-attention blocks
        vision = dict(depth=2, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads,
                      patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
                      window_size=4 * patch_size, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
        return Qwen2_5_VLForConditionalGeneration(config), processor
