"""Audio-visual-text conflict clips (docs/method.md, "Audio-visual conflicts"; after MMA-Bench, arXiv 2511.22826).

A clip is a short frame sequence showing one event class (a class-specific shape, colour and motion) and a
one-second sound of one event class (a class-specific synthesised sound: tones, chirps, noise bursts; numpy
only). Difficulty is graded on both sides, independently: the visual tier d_v shrinks the object and adds
clutter, the audio tier d_a lowers the signal-to-noise ratio. Each group gives one clip per condition, each
asked twice: "which class best describes the visual content?" and "... the audio content?".

| condition | frames | audio | text |
|---|---|---|---|
| aligned | class c | class c | - |
| misaligned | class c | class c' (swapped from another class) | - |
| misleading_text | class c | class c | a wrong caption (class c'') before the question |
| long_context | class c | class c | a long irrelevant text after the question |
| audio_removed | class c | none | - |
| frames_zeroed | all zero | class c | - |

The asked modality's class is the target; where the asked modality is absent (audio removed and asked about
the audio, frames zeroed and asked about the frames) there is no target and the row measures which other
evidence the model falls back on. Deterministic in (group, seed); splits by group. Waveforms are stored as
float32 sequences: the datasets `Audio` feature needs torchcodec, which has no wheel for this torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .raster import polygon_mask
from .defaults import image_size, split_shares as default_shares
from .store import assign_splits, check_split_shares, load_tables, png_bytes, save_tables, select_splits

SAMPLING_RATE = 16_000
SECONDS = 1.0
FRAMES = 4
# class -> (shape, RGB colour, motion per frame as (dx, dy, scale) in canvas units)
VISUAL = {
    "dog": ("circle", (139, 90, 43), (0.12, 0.0, 1.0)),
    "bell": ("triangle", (230, 200, 30), (0.0, 0.0, 1.0)),  # swings: the angle changes, not the place
    "bird": ("diamond", (40, 90, 230), (0.10, -0.10, 1.0)),
    "engine": ("square", (128, 128, 128), (-0.12, 0.0, 1.0)),
    "rain": ("cross", (240, 240, 240), (0.0, 0.12, 1.0)),
    "drum": ("hexagon", (220, 30, 30), (0.0, 0.0, 1.25)),  # pulses: the size changes
}
CLASSES = tuple(VISUAL)
AUDIO_SNR_DB = (20.0, 10.0, 3.0, -3.0, -8.0)  # audio tier d_a -> signal-to-noise ratio
VISUAL_SCALE = (0.45, 0.34, 0.25, 0.18, 0.12)  # visual tier d_v -> object size (share of the canvas)
VISUAL_CLUTTER = (0, 2, 4, 6, 8)  # visual tier d_v -> distractor blobs per frame
CONDITIONS = ("aligned", "misaligned", "misleading_text", "long_context", "audio_removed", "frames_zeroed")
ASKED = {"visual": "Which class best describes the visual content? Answer with one word.",
         "audio": "Which class best describes the audio content? Answer with one word."}
LONG_CONTEXT = ("The meeting was moved to Tuesday afternoon. Remember to water the plants before leaving. "
                "The library closes early on public holidays. A new bakery opened near the station last "
                "month. The train timetable changes in spring. Please bring a pen and the signed form.")
SAMPLE_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "clip_id": datasets.Value("string"), "group": datasets.Value("int64"),
    "split": datasets.Value("string"), "task": datasets.Value("string"), "condition": datasets.Value("string"),
    "asked": datasets.Value("string"), "question": datasets.Value("string"),
    "caption": datasets.Value("string"), "appendix": datasets.Value("string"),
    "answer_visual": datasets.Value("string"), "answer_audio": datasets.Value("string"),
    "target": datasets.Value("string"), "misleading_class": datasets.Value("string"),
    "d_v": datasets.Value("int64"), "d_a": datasets.Value("int64"),
})
CLIP_FEATURES = datasets.Features({
    "clip_id": datasets.Value("string"), "frames": datasets.Sequence(datasets.Image()),
    "audio": datasets.Sequence(datasets.Value("float32")), "sampling_rate": datasets.Value("int64"),
    "visual_class": datasets.Value("string"), "audio_class": datasets.Value("string"),
    "d_v": datasets.Value("int64"), "d_a": datasets.Value("int64"),
})


# ---- sound
def _envelope(t: np.ndarray, starts, length: float, decay: float) -> np.ndarray:
    """Sum of bursts starting at `starts` (s), each `length` long with exponential decay `decay` (1/s)."""
    env = np.zeros_like(t)
    for s in starts:
        inside = (t >= s) & (t < s + length)
        env[inside] += np.exp(-decay * (t[inside] - s))
    return env


def class_sound(name: str, rng: np.random.Generator) -> np.ndarray:
    """One second of the class's sound at unit RMS; `rng` jitters onsets and pitch a little."""
    t = np.arange(int(SAMPLING_RATE * SECONDS)) / SAMPLING_RATE
    jitter = 1 + 0.03 * rng.standard_normal()
    if name == "dog":  # three barks: noise bursts through a 400-900 Hz band
        noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t))) * _band(len(t), 400 * jitter, 900 * jitter), len(t))
        wave = noise * _envelope(t, [0.05, 0.35, 0.65] + 0.02 * rng.random(3), 0.12, 15)
    elif name == "bell":  # two partials ringing down
        wave = (np.sin(2 * np.pi * 880 * jitter * t) + 0.5 * np.sin(2 * np.pi * 2640 * jitter * t)) * np.exp(-3 * t)
    elif name == "bird":  # three rising chirps 2-4 kHz
        phase = 2 * np.pi * (2000 * jitter * t + 10_000 * ((t % 0.3) ** 2))
        wave = np.sin(phase) * _envelope(t, [0.05, 0.35, 0.65], 0.15, 5)
    elif name == "engine":  # a 110 Hz hum with harmonics, throbbing at 8 Hz
        f0 = 110 * jitter
        wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (1 + 0.3 * np.sin(2 * np.pi * 8 * t))
    elif name == "rain":  # steady high-passed noise
        wave = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t))) * _band(len(t), 2000, 7900), len(t))
    elif name == "drum":  # four low thumps
        wave = np.sin(2 * np.pi * 70 * jitter * t) * _envelope(t, [0.0, 0.25, 0.5, 0.75], 0.2, 20)
    else:
        raise ValueError(f"unknown sound class {name!r}; use one of {CLASSES}")
    return (wave / (np.sqrt(np.mean(wave ** 2)) + 1e-12)).astype(np.float32)


def _band(n: int, lo: float, hi: float) -> np.ndarray:
    freqs = np.fft.rfftfreq(n, 1 / SAMPLING_RATE)
    return ((freqs >= lo) & (freqs <= hi)).astype(float)


def noisy_sound(name: str, d_a: int, rng: np.random.Generator) -> np.ndarray:
    """The class's sound at RMS 0.1 plus white noise at the tier's signal-to-noise ratio."""
    signal = 0.1 * class_sound(name, rng)
    noise_rms = 0.1 / 10 ** (AUDIO_SNR_DB[d_a] / 20)
    return np.clip(signal + noise_rms * rng.standard_normal(len(signal)), -1, 1).astype(np.float32)


# ---- frames
def class_frames(name: str, d_v: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """FRAMES frames of the class's object moving (or swinging, or pulsing) over grey clutter."""
    shape, colour, (dx, dy, grow) = VISUAL[name]
    obj = max(3.0, VISUAL_SCALE[d_v] * size)
    x, y = rng.uniform(0.3, 0.7, 2) * size
    frames = []
    for k in range(FRAMES):
        canvas = np.full((size, size, 3), 20, dtype=np.uint8)
        for _ in range(VISUAL_CLUTTER[d_v]):  # clutter: small blobs in muted colours
            blob = polygon_mask("circle", max(2.0, 0.08 * size))
            bx, by = rng.integers(0, size - blob.shape[1] + 1), rng.integers(0, size - blob.shape[0] + 1)
            canvas[by:by + blob.shape[0], bx:bx + blob.shape[1]][blob] = rng.integers(40, 160, 3)
        angle = 25 * math.sin(k * math.pi / 2) if name == "bell" else 0.0
        mask = polygon_mask(shape, obj * grow ** (k % 2), angle)
        cx = int(np.clip(x + k * dx * size - mask.shape[1] / 2, 0, size - mask.shape[1]))
        cy = int(np.clip(y + k * dy * size - mask.shape[0] / 2, 0, size - mask.shape[0]))
        canvas[cy:cy + mask.shape[0], cx:cx + mask.shape[1]][mask] = colour
        frames.append(Image.fromarray(canvas))
    return frames


# ---- groups
def render_av_group(args: tuple[int, int, int]) -> tuple[list[dict], list[dict]]:
    """The clips and rows of one group: classes, tiers and every random draw from (group, seed)."""
    group, seed, size = args
    rng = np.random.default_rng([seed, group, 31])
    visual = CLASSES[rng.integers(len(CLASSES))]
    others = [c for c in CLASSES if c != visual]
    swapped, misleading = (others[i] for i in rng.choice(len(others), 2, replace=False))
    d_v, d_a = (int(v) for v in rng.integers(0, len(VISUAL_SCALE), 2))
    frames = class_frames(visual, d_v, size, rng)
    blank = [Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)) for _ in frames]
    clip_specs = {  # condition -> (frames, their class, audio class or None)
        "aligned": (frames, visual, visual), "misaligned": (frames, visual, swapped),
        "audio_removed": (frames, visual, None), "frames_zeroed": (blank, None, visual)}
    clips, clip_of = [], {}
    for name, (images, v_class, a_class) in clip_specs.items():
        clip_id = f"av{group:06d}-{name}"
        audio = noisy_sound(a_class, d_a, rng) if a_class else np.zeros(0, dtype=np.float32)
        clips.append({"clip_id": clip_id, "frames": [{"bytes": png_bytes(im), "path": None} for im in images],
                      "audio": audio, "sampling_rate": SAMPLING_RATE, "visual_class": v_class or "",
                      "audio_class": a_class or "", "d_v": d_v, "d_a": d_a})
        clip_of[name] = (clip_id, v_class or "", a_class or "")
    clip_of["misleading_text"] = clip_of["long_context"] = clip_of["aligned"]
    rows = []
    for condition in CONDITIONS:
        clip_id, v_class, a_class = clip_of[condition]
        for asked, question in ASKED.items():
            rows.append({"id": f"{clip_id}-{condition}-{asked}", "clip_id": clip_id, "group": group, "task": "av",
                         "condition": condition, "asked": asked, "question": question,
                         "caption": f"Caption: a {misleading}." if condition == "misleading_text" else "",
                         "appendix": LONG_CONTEXT if condition == "long_context" else "",
                         "answer_visual": v_class, "answer_audio": a_class,
                         "target": v_class if asked == "visual" else a_class,
                         "misleading_class": misleading if condition == "misleading_text" else "",
                         "d_v": d_v, "d_a": d_a})
    return clips, rows


@dataclass
class AVData:
    """Audio-visual conflict rows (`samples`) and the clips they reference (`clips`)."""
    samples: datasets.Dataset
    clips: datasets.Dataset
    info: dict = field(default_factory=dict)

    @cached_property
    def _clip_index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.clips["clip_id"])}

    def clip(self, clip_id: str) -> tuple[list[Image.Image], np.ndarray | None]:
        """The clip's frames and its waveform (None where the audio was removed)."""
        if clip_id not in self._clip_index:
            raise KeyError(f"clip {clip_id!r} is not in this dataset's clips table")
        row = self.clips[self._clip_index[clip_id]]
        audio = np.asarray(row["audio"], dtype=np.float32)
        return [im.convert("RGB") for im in row["frames"]], (audio if len(audio) else None)

    def split(self, name: str | list[str]) -> "AVData":
        return AVData(select_splits(self.samples, name), self.clips, self.info)

    def save(self, out) -> object:
        return save_tables(out, {"samples": self.samples, "clips": self.clips}, self.info)

    @classmethod
    def load(cls, path) -> "AVData":
        tables, info = load_tables(path, ("samples", "clips"), f"create one with `python -m data_gen av --output_dir {path}`")
        return cls(tables["samples"], tables["clips"], info)


def generate_av(groups: int, seed: int = 0, size: int | None = None, split_shares: dict[str, float] | None = None
                ) -> AVData:
    """`groups` groups of clips (one per condition) and rows (each condition asked about both modalities);
    `size`: the frame side (default data_gen/defaults.py's); `split_shares`: each split's share of the groups
    (default data_gen/defaults.py's)."""
    size = size or image_size("av")
    if groups < 1:
        raise ValueError(f"--groups must be >= 1, got {groups}")
    if size < 16:
        raise ValueError(f"--image_size must be >= 16 for the clips' objects to be drawn, got {size}")
    split_shares = check_split_shares(split_shares or default_shares("av"))
    splits = assign_splits(list(range(groups)), seed, split_shares)
    clips, rows = [], []
    for g in tqdm(range(groups), desc="rendering av clips", unit="group"):
        c, r = render_av_group((g, seed, size))
        clips += c
        rows += [{**x, "split": splits[g]} for x in r]
    columns = lambda records, features: {k: [r[k] for r in records] for k in features}
    return AVData(datasets.Dataset.from_dict(columns(rows, SAMPLE_FEATURES), features=SAMPLE_FEATURES),
                  datasets.Dataset.from_dict(columns(clips, CLIP_FEATURES), features=CLIP_FEATURES),
                  {"task": "av", "groups": groups, "seed": seed, "size": size, "sampling_rate": SAMPLING_RATE,
                   "frames": FRAMES, "split_shares": split_shares, "blind_readers": clip_readers(rows)})


# conditions where only the asked modality should name the target: the other one disagrees, is a wrong caption,
# or is absent (aligned and long-context clips agree by design, so reading the other modality there is no shortcut)
BLIND_CONDITIONS = ("misaligned", "misleading_text", "audio_removed", "frames_zeroed")


def clip_readers(rows: list[dict]) -> dict:
    """Readers that ignore the asked modality: the asked class from the other modality's class (where it is not
    meant to agree), from the wrong caption, or from the clip's difficulty tiers, fit on the train split; per
    condition, beside a uniform pick of a class. A reader with nothing to read on a row splits its pick evenly."""
    import pandas as pd

    from .blind_readers import lookup_summary
    table = pd.DataFrame(rows)
    table = table[table["condition"].isin(BLIND_CONDITIONS) & (table["target"] != "")].copy()
    other = table["answer_audio"].where(table["asked"] == "visual", table["answer_visual"])
    table["other_modality"] = other.where(table["condition"] != "misleading_text")  # there it agrees by design
    table["caption"] = table["misleading_class"].where(table["condition"] == "misleading_text")
    table["tiers"] = table["d_v"].astype(str) + "/" + table["d_a"].astype(str)
    # a misaligned clip's other modality, and a wrong caption, name a class the target is not: chance is a pick
    # among the five others there
    table["chance"] = np.where(table["condition"].isin(["misaligned", "misleading_text"]), 1 / (len(CLASSES) - 1),
                               1 / len(CLASSES))
    features = {"other_modality": "other_modality", "caption": "caption", "tiers": "tiers"}
    return lookup_summary(table, features, "target", "condition", chance="chance")
