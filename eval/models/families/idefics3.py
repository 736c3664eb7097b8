"""Idefics3 / SmolVLM (`idefics3`): SigLIP-style tower, pixel-shuffle connector, Llama decoder; images split
into tiles plus a global view, each framed by row/column tokens."""
from __future__ import annotations

from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                          Idefics3Processor, Idefics3VisionConfig, LlamaConfig)

from ..registry import LANGUAGE_LORA_REGEX, Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE, decoder_sizes, tower_sizes, with_special_tokens
from .llava import PIXEL_NORM

# the processor frames each tile with these; a real checkpoint's tokenizer has them
TILE_TOKENS = ["<fake_token_around_image>", "<end_of_utterance>", "<global-img>",
               *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]


@register_family
class Idefics3(Family):
    model_type = "idefics3"
    # SmolLM2-1.7B's decoder, SigLIP-so400m's tower; pixel shuffle by 3: 81 tokens a 384-px tile
    shape = ModelShape(
        "HuggingFaceTB/SmolVLM-Instruct", "recipes/configs/smolvlm-instruct.yaml", patch_size=14, parameters=2.246e9,
        config={"text_config": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                                "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49155,
                                "max_position_embeddings": 16384},
                "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}},
        tiny={"scale_factor": 3}, image_processor={"size": {"longest_edge": 4 * 384}})
    # Idefics3's decoder is `model.text_model`, not `language_model`; the tower (`vision_model`) has q_proj too
    lora_target_modules = LANGUAGE_LORA_REGEX.replace("language_model", "text_model")

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   layers: int = 2, heads: int = 4, scale_factor: int = 2, **_):
        tokenizer = with_special_tokens(tokenizer, others=TILE_TOKENS)
        vision = Idefics3VisionConfig(**tower_sizes(hidden, layers, heads, image_size, patch_size))
        text = LlamaConfig(**decoder_sizes(tokenizer, hidden, layers, heads), num_key_value_heads=heads,
                           tie_word_embeddings=False)
        config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=scale_factor,
                                image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
        # images up to twice the tile side are split into tiles plus a global view (SmolVLM's image splitting)
        image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * image_size}, do_image_splitting=True,
                                                    max_image_size={"longest_edge": image_size}, **PIXEL_NORM)
        processor = Idefics3Processor(image_processor, tokenizer, chat_template=chat_template,
                                      image_seq_len=(image_size // patch_size) ** 2 // scale_factor ** 2)
        return Idefics3ForConditionalGeneration(config), processor
