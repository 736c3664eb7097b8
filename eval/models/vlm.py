"""Model access: one code path for real checkpoints, adapters and the shipped model organisms.

`load_vlm` loads any registered image-text-to-text family and its processor (optionally with a
PEFT adapter on top); `VLM` builds the three scoring conditions' prompts through the processor's
chat template, finds answer tokens and exposes the decoder layers, final norm and output head
for the logit lens. Loading never trains anything: a missing organism is an error.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from .arguments import ModelArguments  # noqa: F401  (re-exported: it belongs with the loader)
from .registry import Family, family_for

if TYPE_CHECKING:
    from .steering import Steering

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ORGANISMS_DIR = Path(__file__).parent / "organisms"
# the names that address a shipped organism, exactly (never a prefix: "organisms-of-mine/x" is a path or hub id)
ORGANISM_NAMES = {"organism": "text", "organism:text": "text", "organism:vision": "vision",
                  "organism:recognition": "recognition", "organism:av": "av"}
BUILD_HINTS = {"recognition": "python -m align.organism recognition --output_dir DIR",  # from organism:text
               "av": "python -m align.organism av --output_dir DIR"}
BUILD_HINT = "python -m align.organism build --preference {preference} --output_dir DIR"


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {['auto', *DTYPES]}")
    return DTYPES[dtype]


def organism_folder(name: str) -> str:
    """The folder of `eval/models/organisms/` that holds the shipped organism `name` (one of ORGANISM_NAMES)."""
    return f"organism-{ORGANISM_NAMES[name]}"


def organism_path(name: str = "organism") -> Path:
    """The shipped organism addressed by `name` (exactly one of ORGANISM_NAMES)."""
    if name not in ORGANISM_NAMES:
        raise ValueError(f"{name!r} is not a shipped organism; use one of {sorted(ORGANISM_NAMES)}, or build another "
                         f"with `{BUILD_HINT.format(preference='none')}` and pass that DIR")
    preference = ORGANISM_NAMES[name]
    path = ORGANISMS_DIR / organism_folder(name)
    if not (path / "config.json").exists():
        hint = BUILD_HINTS.get(preference, BUILD_HINT.format(preference=preference))
        raise FileNotFoundError(f"the shipped organism {name!r} is missing from {path} (an incomplete install?); "
                                f"reinstall the package, or build it with `{hint}` and pass that DIR")
    return path


def is_organism(name: str) -> bool:
    """A shipped organism's name, or an attempt at one ("organism:x"; no hub id or path has that form)."""
    return name in ORGANISM_NAMES or name.startswith("organism:")


def looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id (hub ids are 'name' or 'owner/name')."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


@dataclass
class VLM:
    model: torch.nn.Module
    processor: object
    name: str
    revision: str | None = None
    steering: "Steering | None" = None  # added to the image + text prompts (eval/models/steering.py)
    instruction: str = ""  # put before the question of the image + text prompts
    _answer_ids: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.family: Family = family_for(self.arch)
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

    # The logit lens reads these three (docs/method.md).
    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.family.decoder_layers(self.model)

    @property
    def final_norm(self) -> torch.nn.Module:
        return self.family.final_norm(self.model)

    @property
    def head(self) -> torch.nn.Module:
        return self.family.output_head(self.model)

    @property
    def attention_modules(self) -> list[torch.nn.Module]:
        return self.family.attention_modules(self.model)

    @property
    def image_token_id(self) -> int:
        """The token the processor repeats for an image's features."""
        config = self.model.config
        found = getattr(self.processor, "image_token_id", None)
        found = found if found is not None else getattr(config, "image_token_id", None)
        return found if found is not None else config.image_token_index

    @property
    def lora_target_modules(self) -> str:
        return self.family.lora_target_modules

    def prompt(self, question: str, context: str = "", with_image: bool = True) -> str:
        """The chat-templated prompt of one condition; the answer follows its last token. The instruction, if any,
        goes before the question where the prompt has both an image and a text."""
        if self.instruction and context and with_image:
            question = f"{self.instruction} {question}"
        return self.processor.apply_chat_template(self.family.messages(question, context, with_image),
                                                  add_generation_prompt=True, tokenize=False)

    def av_prompt(self, question: str, frames: int, with_audio: bool, caption: str = "", appendix: str = "") -> str:
        """The chat-templated prompt of an audio-visual row (data_gen/av.py): frames, sound, caption, question,
        appendix; the answer follows its last token."""
        return self.processor.apply_chat_template(
            self.family.av_messages(question, frames, with_audio, caption, appendix),
            add_generation_prompt=True, tokenize=False)

    def av_inputs(self, prompts: list[str], frames: list[list], audio: list, dtype: torch.dtype | None = None) -> dict:
        """The processor's tensors for audio-visual prompts: each row's frames, and its waveform or None where the
        row has no sound (its prompt then has no audio token)."""
        if not len(prompts) == len(frames) == len(audio):
            raise ValueError(f"{len(prompts)} prompts, {len(frames)} frame lists and {len(audio)} waveforms: give one "
                             f"of each per prompt (None: no sound)")
        batch = dict(self.processor(text=prompts, images=[f for row in frames for f in row],
                                    audio=[a for a in audio if a is not None] or None, padding=True, return_tensors="pt"))
        for key in ("pixel_values", "input_features"):  # the sound's features run through the model's dtype too
            if dtype is not None and key in batch:
                batch[key] = batch[key].to(dtype)
        return batch

    def inputs(self, prompts: list[str], images: list | None = None, dtype: torch.dtype | None = None) -> dict:
        """The processor's tensors on the CPU; `images` holds one image per prompt, None for a text-only prompt
        (a batch may mix both), and pixel values come in `dtype`."""
        kwargs = dict(text=prompts, padding=True, return_tensors="pt")
        if images and any(image is not None for image in images):
            if len(images) != len(prompts):
                raise ValueError(f"{len(images)} images for {len(prompts)} prompts: give one per prompt (None: none)")
            # nested, one list per prompt: the form every family's processor reads, mixed batches included
            kwargs["images"] = [[image] if image is not None else [] for image in images]
        batch = dict(self.processor(**kwargs))
        if dtype is not None and "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
        return batch

    def encode(self, prompts: list[str], images: list | None = None) -> dict:
        """`inputs` on the model's device, pixel values in its dtype."""
        batch = self.inputs(prompts, images, next(self.model.parameters()).dtype)
        return {k: v.to(self.device) for k, v in batch.items()}

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

    @cached_property
    def answer_end_id(self) -> int | None:
        """The token the chat template writes right after an answer (end of turn), else EOS; None if neither.

        Whole-answer scoring needs it to tell an answer from a longer one it begins ("sky" / "sky blue")."""
        marker = "ANSWERMARKER"
        messages = self.family.messages("?", with_image=False) + [
            {"role": "assistant", "content": [{"type": "text", "text": marker}]}]
        try:
            after = self.processor.apply_chat_template(messages, tokenize=False).split(marker, 1)[1]
        except Exception:  # noqa: BLE001 - a template that cannot render an answer turn: fall back to EOS
            after = ""
        ids = self.tokenizer(after.strip(), add_special_tokens=False)["input_ids"] if after.strip() else []
        return ids[0] if ids else self.tokenizer.eos_token_id


def resolve_path(name_or_path: str) -> str:
    """Where a model name points: a shipped organism's folder, a local directory (checked), or the hub id itself."""
    path = str(organism_path(name_or_path)) if is_organism(name_or_path) else name_or_path
    if looks_local(path) and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"model {name_or_path!r}: no such directory; give a directory with a saved model and "
                                f"processor, a hub id, or one of {sorted(ORGANISM_NAMES)}")
    return path


def unloadable(name_or_path: str, error: OSError) -> OSError:
    return OSError(f"could not load model {name_or_path!r}: {error}\nGive a local directory with a saved model and "
                   f"processor, a hub id you can reach, or one of {sorted(ORGANISM_NAMES)}.")


def check_hub_id(repo_id: str, revision: str | None = None, what: str = "model") -> None:
    """A hub id is in the local cache, or one request (5 s at most, no retries) finds it on the hub: an
    unreachable id fails here in about a second instead of after transformers' retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    if isinstance(try_to_load_from_cache(repo_id, "adapter_config.json" if what == "adapter" else "config.json",
                                         revision=revision), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise OSError(f"{what} {repo_id!r} is not a local folder and not in the hub cache, and HF_HUB_OFFLINE is set; "
                      f"give a local folder{' or one of ' + str(sorted(ORGANISM_NAMES)) if what == 'model' else ''}")
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "adapter_config.json" if what == "adapter" else "config.json",
                                        revision=revision), timeout=5)
    except Exception as e:  # no network, unknown repo, gated repo: all mean "not loadable from here"
        raise OSError(f"{what} {repo_id!r} is not a local folder, not in the hub cache, and the hub did not serve it "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); give a local folder"
                      f"{', a hub id you can reach, or one of ' + str(sorted(ORGANISM_NAMES)) if what == 'model' else ''}"
                      ) from e


def check_adapter(adapter: str) -> None:
    """A local adapter folder has a readable adapter_config.json and weights whose file is whole."""
    from safetensors import SafetensorError, safe_open
    if not looks_local(adapter):
        check_hub_id(adapter, what="adapter")
        return
    folder = Path(adapter).expanduser()
    config = folder / "adapter_config.json"
    if not config.exists():
        raise FileNotFoundError(f"adapter {adapter!r}: no adapter_config.json there; give the folder a recipe released "
                                f"(OUTPUT_DIR/release) or a hub id of a PEFT adapter")
    try:
        json.loads(config.read_text())
    except ValueError as e:
        raise ValueError(f"{config} is damaged ({e}); release the adapter again or download it again") from e
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        try:
            with safe_open(str(weights), "pt"):
                pass
        except SafetensorError as e:
            raise ValueError(f"{weights} is damaged ({e}); release the adapter again or download it again") from e
    elif not (folder / "adapter_model.bin").exists():
        raise FileNotFoundError(f"adapter {adapter!r}: no adapter_model.safetensors there")


def check_model_args(args: "ModelArguments") -> str:
    """Everything ModelArguments names, checked before any data is generated or scored: the model (its config),
    the adapter's files, the steering vector. Returns the model's family name."""
    from .steering import Steering
    family = check_model(args.model_name_or_path, args.model_revision, args.trust_remote_code)
    if args.adapter:
        check_adapter(args.adapter)
    if args.steering:
        Steering.load(args.steering)
    return family


def check_model(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """Read only the model's config: the name resolves and its family is supported. Returns the family name.

    Cheap enough to run before any data is generated or scored."""
    path = resolve_path(name_or_path)
    if not looks_local(path):
        check_hub_id(path, revision)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise unloadable(name_or_path, e) from e
    family_for(config.model_type)
    return config.model_type


def load_vlm(name_or_path: str = "organism", dtype: str | torch.dtype = "auto", device: str | None = None,
             revision: str | None = None, trust_remote_code: bool = False, adapter: str | None = None,
             steering: str | None = None, instruction: str | None = None) -> VLM:
    """Load a model + processor from a hub id, a local path or a shipped organism name, and an optional adapter,
    steering vector (eval/models/steering.py) and instruction for the image + text prompts."""
    from .steering import Steering
    steer = Steering.load(steering) if steering else None  # a bad file fails before the model loads
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        processor = family_for(config.model_type).load_processor(path, revision=revision,
                                                                 trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(path, config=config, revision=revision, dtype=torch_dtype,
                                                            trust_remote_code=trust_remote_code)
    except OSError as e:
        raise unloadable(name_or_path, e) from e
    rev = revision or getattr(model.config, "_commit_hash", None)
    name = name_or_path
    if adapter:
        model = apply_adapter(model, adapter)
        name = f"{name_or_path}+{adapter}"
    if steer is not None:
        name = f"{name}+steering:{steering}"
    if instruction:
        name = f"{name}+instruction:{instruction!r}"
    model.to(device).eval()
    return VLM(model, processor, name, rev, steer, instruction or "")


def apply_adapter(model: torch.nn.Module, adapter: str) -> torch.nn.Module:
    from peft import PeftModel
    check_adapter(adapter)
    try:
        peft = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError) as e:
        raise OSError(f"could not load adapter {adapter!r}: {e}") from e
    # in float32 the merged weights compute the same function to rounding, without the adapter's extra matmuls
    # (scoring an organism's adapter ran at two thirds of the base's speed); in half precision merging would round
    # the update into the weights, so the adapter is measured as trained
    return peft.merge_and_unload() if model.dtype == torch.float32 else peft


def load_from_args(args: ModelArguments, device: str | None = None) -> VLM:
    return load_vlm(args.model_name_or_path, dtype=args.dtype, device=device or args.device,
                    revision=args.model_revision, trust_remote_code=args.trust_remote_code, adapter=args.adapter,
                    steering=args.steering, instruction=args.instruction)
