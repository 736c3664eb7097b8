"""The release bundle, as the Hub expects one: OUTPUT_DIR/release holds only what a consumer loads.

adapter_model.safetensors + adapter_config.json (the base named by its hub id or a relative name,
never a local absolute path), a model card written with `huggingface_hub.ModelCard`, the report,
the curve image and alignment.json. No pickles, no optimizer checkpoints. `push` uploads the
folder in one commit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from huggingface_hub import ModelCard, ModelCardData

from data_gen.files import atomic_path, make_readable, write_text
from eval.recognition import format_mean, format_rate
from eval.recognition_report import describe_imbalance_change
from eval.models.vlm import is_organism, looks_local, organism_folder
from eval.models.steering import STEERING_FILE

from .methods.prompt import INSTRUCTION_FILE

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
INTERVENTION_FILES = (STEERING_FILE, INSTRUCTION_FILE)


def base_reference(name: str) -> str:
    """How the released files name the base: a hub id or organism name as given, a local path by its folder name."""
    if is_organism(name) or not looks_local(name):
        return name
    return Path(os.path.abspath(os.path.expanduser(name))).name


def base_model_id(name: str) -> str | None:
    """The card's `base_model`: only a loadable hub id (the Hub checks it), else nothing."""
    return None if is_organism(name) or looks_local(name) else name


def release(out: Path, adapter: Path, result: dict, align, model, training, card: ModelCard | None = None) -> Path:
    """The bundle folder; `card` replaces the balance-point recipe's model card (another recipe's result)."""
    bundle = out / "release"
    with atomic_path(bundle) as tmp:  # built beside, renamed into place: a crash leaves the old bundle or none
        tmp.mkdir(parents=True)
        if (adapter / "adapter_config.json").exists():
            shutil.copy(adapter / "adapter_model.safetensors", tmp)
            config = json.loads((adapter / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = base_reference(model.model_name_or_path)
            write_text(tmp / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True))
        else:  # a training-free method's steering vector or instruction
            for name in INTERVENTION_FILES:
                if (adapter / name).exists():
                    shutil.copy(adapter / name, tmp)
        report = tmp / "report"
        report.mkdir()
        for name in ("report.html", "summary.json", *[p.name for p in (out / "report").glob("*.png")]):
            shutil.copy(out / "report" / name, report)
        for view in (p for p in (out / "report").iterdir() if p.is_dir()):  # another view's report (task recognition)
            shutil.copytree(view, report / view.name)
        if (report / "following_curve.png").exists():
            shutil.copy(report / "following_curve.png", tmp)
        shutil.copy(out / "alignment.json", tmp)
        card = card or CARDS.get(getattr(align, "task", "colors"), model_card)(result, align, model, training)
        card.save(tmp / "README.md")
        make_readable(tmp)
    log.info("release bundle: %s", bundle)
    return bundle


def _bp(h: dict) -> str:
    return (h.get("balance_point") or {}).get("description", "not measured")


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _osc(h: dict, region: str) -> str:
    m = h.get(f"oscillation_{region}") or {}
    return "–" if m.get("mean") is None else f"{m['mean']:.2f}"


def load_snippet(model_name: str, hub_model_id: str | None) -> str:
    adapter = hub_model_id or "path/to/this/folder"
    if is_organism(model_name):
        folder = organism_folder(model_name)
        base = f"path/to/{folder}"
        note = (f"# the base is the project's model organism `{model_name}`, shipped inside the modality-alignment "
                f"package\n# (eval/models/organisms/{folder}); point `base` at that folder\n")
    else:
        base = base_reference(model_name)
        note = "" if base_model_id(model_name) else "# point `base` at your local copy of the base model\n"
    return f"""```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

{note}base = "{base}"
processor = AutoProcessor.from_pretrained(base)
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), "{adapter}")
```

Measure it yourself with the same code (the `modality-alignment` package, which installs `modality-align`), on
colour groups of a data seed no run trained on:

```bash
modality-align measure --model {model_name} --adapter {adapter} --groups 150 --dataset_seed 7 --split all --output_dir runs/aligned
```"""


def _mean_r(recognition: dict) -> str:
    means = [c["mean"] for c in (recognition.get("imbalance") or {}).get("imbalance", []) if c["mean"] is not None]
    return f"{np.mean(means):.3f}" if means else "–"


def _distance(recognition: dict) -> str:
    cell = (recognition.get("imbalance") or {}).get("distance_from_balance")
    return format_mean(cell) if cell else "–"


def _imbalance_change(recognition: dict) -> str:
    change = recognition.get("imbalance_change")
    return f" Measured: {describe_imbalance_change(change, ['base', 'adapted'])}." if change else ""


KIND = {"adapter": "LoRA adapter", "steering": "steering vector", "instruction": "instruction"}


def in_words(counts: dict) -> str:
    """`{'conflict_examples': 120, 'mean_p_text': 0.31}` -> 'conflict examples 120, mean p text 0.31'."""
    show = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k.replace('_', ' ')} {show(v)}" for k, v in counts.items()) or "none"


def base_license(name: str) -> str:
    """The base model's license from its card where one is at hand (a local folder, or the hub cache); else
    'other' (the Hub's value for a license it does not list)."""
    from huggingface_hub import try_to_load_from_cache
    card = None
    if is_organism(name):
        return "other"
    if looks_local(name):
        card = Path(name).expanduser() / "README.md"
    else:
        cached = try_to_load_from_cache(name, "README.md")
        card = Path(cached) if isinstance(cached, str) else None
    try:
        return (ModelCard.load(card).data.license or "other") if card is not None and card.exists() else "other"
    except Exception:  # an unreadable card names no license
        return "other"


def prompt_section(result: dict) -> str:
    """The prompt format with one real example of the run's data, and the command that reproduces the run."""
    config = result.get("config") or {}
    example, command = config.get("prompt_example"), config.get("command")
    parts = []
    if example:
        parts.append(f"""## Prompt format
The model is measured and trained on chat-templated prompts; the answer is the first token after the prompt. One
image + text example from the run's data (question: "{example['question']}"; text: "{example['text']}"):

```text
{example['prompt'].strip()}
```""")
    if command:
        parts.append(f"""## Reproduce
The command this run was started with (the `modality-alignment` package, from its repository root):

```bash
{command}
```""")
    return "\n\n".join(parts)


def method_section(result: dict, align, training, data: str, calibration: str) -> str:
    """How the release was made: the LoRA training, or what a training-free method used."""
    from .methods import get_method
    method = get_method(align.method)
    common = (f"- data: {data}; from the base model's scores on the `{align.train_split}` groups, evaluation on "
              f"`{align.eval_split}`\n- used: {in_words(result['training_examples'])}")
    if method.intervention != "adapter":
        steps = (f"\n- strength calibrated on the `{align.calibration_split}` groups (the released one is the round "
                 f"nearest b*): {calibration}" if result.get("calibration") else "")
        return f"## Method (no training)\n{common}{steps}"
    return f"""## Training
{common}
- LoRA r={align.lora_r}, alpha={align.lora_alpha}, dropout={align.lora_dropout}, language model only
- lr {training.learning_rate}, {getattr(training.lr_scheduler_type, 'value', training.lr_scheduler_type)}, warmup {training.warmup_steps}, epochs {training.num_train_epochs},
  batch {training.per_device_train_batch_size} x {training.gradient_accumulation_steps} per device, seed {training.seed}
- calibration on the `{align.calibration_split}` groups (the released adapter is the round whose realized balance point lies nearest b*): {calibration}"""


def apply_snippet(model_name: str, intervention: str) -> str:
    """How to apply a steering vector or an instruction: through the measurement code, or by hand."""
    if intervention == "instruction":
        return f"""Put the instruction of `{INSTRUCTION_FILE}` before the question of every image + text prompt. Measure it:

```bash
modality-align measure --model {model_name} --instruction "$(python -c 'import json; print(json.load(open("{INSTRUCTION_FILE}"))["instruction"])')" --groups 150 --dataset_seed 7 --split all --output_dir runs/prompted
```"""
    return f"""`{STEERING_FILE}` holds the direction; its metadata the decoder layer, alpha and (steer_uncertainty) the
dH_rel window. It is added to every position of the image + text prompts at that layer; unimodal prompts stay
unsteered. Measure it with the same code:

```bash
modality-align measure --model {model_name} --steering path/to/{STEERING_FILE} --groups 150 --dataset_seed 7 --split all --output_dir runs/steered
```

or from Python, `measure("{model_name}", steering="path/to/{STEERING_FILE}")`; in your own forward pass:

```python
from eval.models.steering import Steering
steering = Steering.load("path/to/{STEERING_FILE}")
with steering.applied(decoder_layers, [steering.alpha] * batch_size):  # mode uncertainty: steering.strengths(dH_rel)
    outputs = model(**inputs)
```"""


def model_card(result: dict, align, model, training) -> ModelCard:
    from .methods import get_method
    method = get_method(align.method)
    before, after = result["base"], result["aligned"]
    rows = [("balance point [95% CI]", _bp(before), _bp(after)),
            ("TFR", _pct(before["tfr"]), _pct(after["tfr"])), ("VFR", _pct(before["vfr"]), _pct(after["vfr"])),
            ("conflicts analysed / text- or vision-following", f"{before['n_analysed']} / {before['n_following']}",
             f"{after['n_analysed']} / {after['n_following']}"),
            ("image-only accuracy", _pct(before["unimodal_accuracy"]["visual"]), _pct(after["unimodal_accuracy"]["visual"])),
            ("text-only accuracy", _pct(before["unimodal_accuracy"]["text"]), _pct(after["unimodal_accuracy"]["text"])),
            ("oscillation, ambiguous region", _osc(before, "ambiguous"), _osc(after, "ambiguous")),
            ("oscillation, clear region", _osc(before, "clear"), _osc(after, "clear"))]
    if "recognition" in result:  # loss mixed: what it trained for, beside what else moved
        rb, ra = result["recognition"]["base"], result["recognition"]["aligned"]
        rows = [(f"recognition, {k.replace('_', '-')} [95% CI]", format_rate(rb[k]["recognition"]), format_rate(ra[k]["recognition"]))
                for k in ("unimodal", "cross_modal")] + [
            ("cross-modal balanced accuracy", _pct(rb["cross_modal"]["balanced_accuracy"]),
             _pct(ra["cross_modal"]["balanced_accuracy"])),
            ("attention imbalance R, mean over layers", _mean_r(rb), _mean_r(ra)),
            ("distance from balance, mean over layers of abs(R - 0.5)", _distance(rb), _distance(ra))] + rows
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    rounds = result.get("calibration") or []
    knob = lambda r: f"alpha {r['alpha']:+.3f}" if "alpha" in r else f"trained at {r['trained_at']:+.3f}"
    calibration = ("; ".join(f"round {k}: {knob(r)} -> {r['description']}"
                             + (" (released)" if r.get("released") else "") for k, r in enumerate(rounds))
                   if rounds else "none")
    name = model.model_name_or_path
    data = align.data or (f"generated colour conflicts, {align.groups} groups, dataset seed {align.dataset_seed}, "
                          f"{align.image_size} px")
    card_data = ModelCardData(library_name="peft" if method.intervention == "adapter" else None,
                              base_model=base_model_id(name), license=base_license(name),
                              pipeline_tag="image-text-to-text",
                              tags=["modality-alignment", "lora" if method.intervention == "adapter" else method.name,
                                    "vision-language"])
    purpose = (f"""This adapter trains **conflict recognition across modalities**: on modality-mixed instances (an image
and a text that must be reconciled, answered "is there a contradiction?"), with retention share
{align.retention_share}. Recognition and the attention imbalance R = U_vision / (U_vision + U_text) are reported
beside the balance point, so you see what else moved.{_imbalance_change(result["recognition"])}""" if "recognition" in result else
               f"""This {KIND[method.intervention]} moves the model's **balance point**, the relative uncertainty dH_rel at
which it is equally likely to follow the image or the text, toward **{result['target_balance_point']:+.2f}**. Method
`{align.method}`: {method.help}.""" + (f""" The soft targets are p*(x) = sigmoid((b* - dH_rel(x)) / tau), tau = {align.tau},
boundary-weighted, with retention share {align.retention_share} (half image-only, half text-only rows).""" if method.examples == "soft" else ""))
    guarantee = (f"**What this run guarantees** (95 % group-bootstrap intervals on the held-out groups): "
                 f"{result['guarantee']['description']}.\n\n" if result.get("guarantee") else "")
    body = f"""
# Modality-alignment {KIND[method.intervention]} for `{base_reference(name)}`

{purpose}

## Measured on held-out groups (same measurement code before and after)

| metric | base | adapted |
|---|---|---|
{table}

![following curve](following_curve.png)

{guarantee}The full report is in `report/report.html`; every number above is in `alignment.json`.

{method_section(result, align, training, data, calibration)}

{prompt_section(result)}

## Load it
{load_snippet(name, training.hub_model_id) if method.intervention == "adapter" else apply_snippet(name, method.intervention)}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def av_model_card(result: dict, align, model, training) -> ModelCard:
    """The asked-modality adapter's card: accuracy per condition before and after, attention per layer."""
    name = model.model_name_or_path
    rows = "\n".join(f"| {c['condition']} | {format_rate(c['before'])} | {format_rate(c['after'])} | "
                     f"{100 * c['change']:+.1f} |" for c in result["change"])
    d = lambda res: {l["layer"]: l["cohens_d"] for l in res.get("attention") or []}
    db, da = d(result["base"]), d(result["aligned"])
    layers = "\n".join(f"| {k} | {db[k]:+.2f} | {da.get(k, float('nan')):+.2f} |" for k in db)
    data = align.data or f"generated audio-visual clips, {align.groups} groups, dataset seed {align.dataset_seed}"
    card_data = ModelCardData(library_name="peft", base_model=base_model_id(name), license=base_license(name),
                              pipeline_tag="any-to-any",
                              tags=["modality-alignment", "lora", "audio-visual", "asked-modality"])
    base = base_reference(name)
    body = f"""
# Asked-modality LoRA adapter for `{base}`

This adapter teaches the model to answer from **the modality the question asks about**: the frames' class when
asked about the visual content, the sound's class when asked about the audio, whatever the other modality or a
caption says (after MMA-Bench's modality alignment tuning, arXiv 2511.22826).

## Measured on held-out groups (same measurement code before and after)

Accuracy against the asked modality's class, both questions pooled, 95 % intervals clustered by group:

| condition | base | adapted | change (points) |
|---|---|---|---|
{rows}

Cohen's d of the answer position's attention share on the frames (vs the sound) between visual- and audio-asked
prompts, per decoder layer (positive: the question steers attention to the asked modality):

| layer | base | adapted |
|---|---|---|
{layers}

![accuracy per condition](report/av.png)

The full report is in `report/report.html`; every number above is in `alignment.json`.

## Training
- data: {data}; trained on the `{align.train_split}` groups ({align.train_conditions}), evaluated on `{align.eval_split}`
- LoRA r={align.lora_r}, alpha={align.lora_alpha}, dropout={align.lora_dropout}, modules `{align.lora_target_modules}`
- lr {training.learning_rate}, epochs {training.num_train_epochs}, batch {training.per_device_train_batch_size} x
  {training.gradient_accumulation_steps} per device, seed {training.seed}
- examples: {in_words(result['training_examples'])}

{prompt_section(result)}

## Load it

```python
from peft import PeftModel
from transformers import AutoProcessor, Qwen2_5OmniThinkerForConditionalGeneration

base = "{base if base_model_id(name) else 'path/to/the/base/thinker'}"
processor = AutoProcessor.from_pretrained(base)
model = PeftModel.from_pretrained(Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(base), "path/to/this/folder")
```

## Measure it yourself (the `modality-alignment` package, which installs `modality-align`)

```bash
modality-align data av --output_dir data/av --groups 300 --dataset_seed 7 --image_size 32
modality-align av --model {name} --adapter path/to/this/folder --data data/av --split all --output_dir runs/aligned
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def push(bundle: Path, hub_model_id: str, private: bool | None = None) -> None:
    """Upload the release folder as one commit."""
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(hub_model_id, exist_ok=True, private=private)
    api.upload_folder(folder_path=str(bundle), repo_id=hub_model_id, commit_message="Release modality-alignment adapter")
    log.info("pushed the adapter to https://huggingface.co/%s", hub_model_id)


# the model card of a task's adapter where it is not the balance-point card (with the recognition section when the
# result has one)
CARDS = {"av": av_model_card}
