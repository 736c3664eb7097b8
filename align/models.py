"""Model access: one code path for real LLaVA checkpoints and the model organism.

`load_vlm` loads any supported image-text-to-text model and its processor; `VLM` builds the
three scoring conditions' prompts through the processor's chat template, finds answer tokens
and exposes the decoder layers, final norm and output head for the logit lens.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

log = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("llava", "llava_next")
# PEFT matches a string with re.fullmatch: the language model's projections only, never the
# vision tower or the projector (PEFT's "all-linear" would hit both).
LANGUAGE_LORA_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {['auto', *DTYPES]}")
    return DTYPES[dtype]


@dataclass
class VLM:
    model: torch.nn.Module
    processor: object
    name: str
    revision: str | None = None
    _answer_ids: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        arch = self.model.config.model_type
        if arch not in SUPPORTED_ARCHS:
            raise ValueError(f"{self.name}: architecture {arch!r} is not supported yet; supported: {SUPPORTED_ARCHS}")
        tok = self.tokenizer
        tok.padding_side = "left"  # the answer position is then the last one for every row
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token

    @property
    def arch(self) -> str:
        return self.model.config.model_type

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # The logit lens reads these three (DESIGN.md section 5).
    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.model.get_decoder().layers

    @property
    def final_norm(self) -> torch.nn.Module:
        return self.model.get_decoder().norm

    @property
    def head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    lora_target_modules = LANGUAGE_LORA_REGEX

    def prompt(self, question: str, context: str = "", with_image: bool = True) -> str:
        """The chat-templated prompt of one condition; the answer follows its last token."""
        text = f"{context} {question}".strip() if context else question
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: list[str], images: list | None = None) -> dict:
        kwargs = dict(text=prompts, padding=True, return_tensors="pt")
        if images:
            kwargs["images"] = images
        batch = self.processor(**kwargs)
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if k == "pixel_values" else v.to(self.device)) for k, v in batch.items()}

    def answer_ids(self, answer: str) -> tuple[int, ...]:
        """Token ids of `answer` as the model would write it right after the prompt."""
        if answer not in self._answer_ids:
            ref = self.prompt("?", with_image=False)
            enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]
            base, full = enc(ref), enc(f"{ref} {answer}")
            k = 0
            while k < min(len(base), len(full)) and base[k] == full[k]:
                k += 1
            ids = tuple(full[k:])
            if not ids or self.tokenizer.unk_token_id in ids:
                raise ValueError(f"{self.name}: answer {answer!r} is not in the tokenizer's vocabulary "
                                 f"(tokens {ids}); use answers the model can write")
            self._answer_ids[answer] = ids
        return self._answer_ids[answer]

    def first_token(self, answer: str) -> int:
        return self.answer_ids(answer)[0]


def load_vlm(name_or_path: str = "organism", dtype: str | torch.dtype = "auto", device: str | None = None,
             revision: str | None = None, trust_remote_code: bool = False) -> VLM:
    """Load a model + processor from a hub id or a local path; "organism[:text|vision|none]" is the default."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = name_or_path
    if name_or_path.startswith("organism"):
        from .organism import organism_path
        path = str(organism_path(name_or_path.partition(":")[2] or "text"))
    torch_dtype = resolve_dtype(dtype, device)
    try:
        processor = AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(path, revision=revision, dtype=torch_dtype,
                                                            trust_remote_code=trust_remote_code)
    except OSError as e:
        raise OSError(f"could not load {name_or_path!r}: {e}\nGive a local directory with a saved model and "
                      f"processor, a hub id you can reach, or 'organism' for the embedded default.") from e
    model.to(device).eval()
    rev = revision or getattr(model.config, "_commit_hash", None)
    return VLM(model, processor, name_or_path, rev)
