"""The model flags every command shares; importing them loads nothing heavy (a command's --help answers at once)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    """Which model to load; the same flags in every command (field names follow TRL's ModelConfig)."""
    model_name_or_path: str = field(default="organism", metadata={
        "aliases": ["--model"],
        "help": "hub id, local directory, or a shipped model organism: organism (= organism:text), organism:vision, "
                "organism:recognition (organism:text taught to recognise contradictions within one modality), "
                "organism:av (a tiny Qwen2.5-Omni thinker for audio-visual conflicts)"})
    adapter: str | None = field(default=None, metadata={
        "help": "a PEFT adapter (local directory or hub id) to apply on top of the model"})
    steering: str | None = field(default=None, metadata={
        "help": "a steering vector (steering.safetensors, or its folder) added to the image + text prompts"})
    instruction: str | None = field(default=None, metadata={
        "help": "an instruction put before the question of every image + text prompt (e.g. which modality to "
                "trust)"})
    model_revision: str | None = field(default=None, metadata={"help": "hub revision of the model"})
    dtype: str = field(default="auto", metadata={
        "help": "float32, bfloat16, float16, or auto (bfloat16 on GPUs, float32 on CPUs)"})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow custom model code from the hub"})
