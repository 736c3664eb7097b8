"""The organisms' build configurations, one dataclass per command of `python -m align.organism` (its --help lists
them): they import nothing heavy, so the help answers at once."""
from __future__ import annotations

from dataclasses import dataclass, field

PLANTED_BALANCE = {"text": 0.5, "vision": -0.5, "none": 0.0}
# how phase 2 plants each preference by default (plant_own_answers, plant_probe_every): the shipped organisms' own;
# a vision-leaning build on the shortcut-free data plants only from its own answers and more conflicts
SHIPPED_PLANTING = {"text": (False, 8), "vision": (True, 2), "none": (False, 8)}
# A build trains on most of its groups and keeps the rest for its quality bars (its test split); recorded in
# organism.json, so the held-out groups stay the same whatever the datasets' defaults
BUILD_SPLIT_SHARES = {"train": 0.7, "validation": 0.1, "test": 0.2}


@dataclass
class OrganismConfig:
    preference: str = field(default="text", metadata={
        "help": "planted preference: text (balance +0.5), vision (-0.5) or none (0)"})
    image_size: int = 64
    patch: int = 8
    hidden: int = 128
    layers: int = 4
    # LLaVA reads layer -2 of its tower; a 3-layer tower read at -1 is the same function without
    # computing a 4th layer nobody reads
    vision_layers: int = 3
    vision_feature_layer: int = -1
    heads: int = 4
    mlp_ratio: int = field(default=2, metadata={"help": "2x keeps a step ~0.2 s on 2 cores; 4x costs half again as much"})
    groups: int = field(default=1000, metadata={"help": "colour groups the organism is trained and tested on"})
    dataset_seed: int = field(default=1000, metadata={"help": "differs from the datasets' default 0: other images"})
    split_shares: dict = field(default_factory=lambda: dict(BUILD_SPLIT_SHARES), metadata={
        "help": "each split's share of the groups (JSON): it trains on train and its bars are measured on test"})
    seed: int = 0
    train_batch_size: int = 32
    learning_rate: float = 1.5e-3
    warmup_steps: int = 100
    steps_shapes: int = field(default=1200, metadata={
        "help": "phase 0: dense shape + colour supervision of the vision tower (shape_pretraining.py)"})
    learning_rate_shapes: float = 3e-3
    shape_tiers: str = field(default="large", metadata={
        "help": "phase 0's scenes: large (tiers 0-4's sizes) or all (each scene at a random tier's size and crowding)"})
    shape_color_presence: bool = field(default=False, metadata={
        "help": "phase 0's colour head learns every colour a patch shows, not only its main object's, so a small or "
                "occluded target's colour survives in the frozen tower's tokens"})
    freeze_tower: bool = field(default=True, metadata={"help": "freeze the tower after phase 0"})
    fresh_scene_share: float = field(default=0.9, metadata={
        "help": "share of image-only batches rendered fresh (tiers 0..fresh_scene_tiers-1, with grounding labels)"})
    fresh_scene_tiers: int = field(default=5, metadata={
        "help": "fresh scenes are drawn from visual tiers 0..N-1 (5: the large targets; 10: also the occluded and "
                "small ones, which render in a few ms; 14: every tier, the crowded ones at 17-49 ms a scene)"})
    hard_scenes_from: float = field(default=0.0, metadata={
        "help": "share of phase 1 after which fresh scenes include tiers 5..fresh_scene_tiers-1 (a curriculum: "
                "the large targets' binding first)"})
    fresh_scene_shared_colors: bool = field(default=False, metadata={
        "help": "fresh scenes' distractors may take the target's colour: no 'the colour drawn least' shortcut in "
                "crowded scenes, so only finding the asked shape answers them"})
    grounding_weight: float = field(default=5.0, metadata={
        "help": "weight of the 'which image tokens are asked' loss on fresh scenes"})
    ground_dataset_images: bool = field(default=False, metadata={
        "help": "also apply the grounding loss to the dataset's images (every tier), on the patches of the target's box"})
    grounding_layer: int = field(default=2, metadata={"help": "decoder hidden state that loss reads (0 = embeddings)"})
    steps_unimodal: int = 1800
    steps_conflict: int = field(default=800, metadata={
        "help": "phase 2 steps (docs/organism-builds.md: why 800)"})
    balanced_conflicts: bool = field(default=True, metadata={
        "help": "phase 2 draws half of each conflict batch from the conflicts the planted rule labels 'follow the "
                "text' and half from 'follow the vision', so the minority side is learned as fast as the majority "
                "(off: batches in the labels' own shares, where the majority side can take over)"})
    plant_own_answers: bool | None = field(default=None, metadata={
        "help": "phase 2 labels a conflict with the model's own image-only (or text-only) answer, not the dataset's: "
                "following a modality means answering what that modality alone makes it say, which it can learn "
                "where it cannot read the image (crowded or tiny targets), whereas the dataset's colour there is "
                "noise; conflicts whose two own answers agree are left out (default: on for vision, as the shipped "
                "organism:vision; docs/organism-builds.md)"})
    easy_tier_boost: float = field(default=3.0, metadata={
        "help": "large targets (d_v <= 4) are drawn this much more often: vision learns them first"})
    plant_probe_every: int | None = field(default=None, metadata={
        "help": "phase 2 plants on every N-th training group's conflicts (8: ~3,700 conflicts, scored in ~20 s per "
                "replant); fewer groups in between, more distinct conflicts to learn the rule from (default: 2 for "
                "vision, 8 otherwise, as the shipped organisms)"})
    replant_every: int = field(default=200, metadata={
        "help": "phase 2 re-labels conflicts on the model's current uncertainty this often"})
    text_noise: dict = field(default_factory=lambda: {"direct": 0.005, "indirect_simple": 0.15, "indirect_knowledge": 0.2},
                             metadata={"help": "label noise of text-only targets per tier (JSON): harder reasoning, noisier"})
    knowledge_draws: int = field(default=8, metadata={
        "help": "statements per object in the organism's world-knowledge corpus; 0 learns the full distributions"})
    text_tier_share: dict = field(default_factory=lambda: {"direct": 0.5, "indirect_simple": 0.3, "indirect_knowledge": 0.2},
                                  metadata={"help": "how often each text tier is drawn (JSON): harder reasoning, less signal"})
    workers: int | None = field(default=None, metadata={"help": "processes rendering the dataset"})
    image_first: bool = field(default=False, metadata={
        "help": "LLaVA's order, the image before the question (experimental): grounding then supervises the answer "
                "position's attention over the image tokens instead of the image tokens themselves"})
    lens_commitment_weight: float = field(default=1.0, metadata={
        "help": "phase 2: on conflicts outside the ambiguous region (|dH_rel - planted balance| > "
                "lens_commitment_width), the logit lens of hidden states lens_commitment_from..layers-1 is trained "
                "toward the planted answer too, so clear conflicts decide early while ambiguous ones deliberate (a "
                "planted oscillation law: docs/method.md, 'Oscillation law')"})
    lens_deliberation_weight: float = field(default=1.0, metadata={
        "help": "phase 2: on conflicts inside the ambiguous region, the logit lens of hidden state lens_commitment_from "
                "is trained toward the answer the planted rule rejects, which the last layers then overturn: a "
                "planted oscillation law, the positive control of the oscillation measurement (docs/method.md)"})
    lens_undecided_layers: int = field(default=1, metadata={
        "help": "phase 2: the logit lens of the first N decoder layers is trained away from both answers of every "
                "conflict (-log(1 - p(Y_v) - p(Y_t))), as a real LLM's early layers read out neither: the organism's "
                "first layer otherwise copies the text's colour word, so every vision-following answer counts a "
                "switch wherever its dH_rel lies and the clear region oscillates as often as the ambiguous one"})
    lens_commitment_from: int = field(default=2, metadata={"help": "first decoder hidden state the lens commitment reads"})
    lens_commitment_width: float = field(default=0.5, metadata={
        "help": "half-width of the ambiguous region left free (DESIGN's 0.5 around the balance point)"})
    end_of_turn: bool = field(default=False, metadata={
        "help": "also train the end-of-turn token after the answer word, so generate() stops after one word"})
    end_of_turn_inputs: int = field(default=2048, metadata={
        "help": "without end_of_turn: prompts whose answer states train the head's end-of-turn row after the phases"})
    steps_end_of_turn: int = field(default=4000, metadata={"help": "without end_of_turn: Adam steps on that row"})

    def __post_init__(self):
        if self.preference not in PLANTED_BALANCE:
            raise ValueError(f"preference must be one of {list(PLANTED_BALANCE)}, got {self.preference!r}")
        for name in ("image_size", "patch", "hidden", "layers", "heads", "groups", "train_batch_size", "end_of_turn_inputs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch ({self.patch})")
        if not 0 <= self.fresh_scene_share <= 1:
            raise ValueError(f"fresh_scene_share must be in [0, 1], got {self.fresh_scene_share}")
        if not 0 <= self.grounding_layer <= self.layers or (self.image_first and self.grounding_layer < 1):
            raise ValueError(f"grounding_layer must be in [{int(self.image_first)}, layers={self.layers}] (a hidden "
                             f"state; with image_first the attention of the layer writing it), got {self.grounding_layer}")
        if not 1 <= self.fresh_scene_tiers <= 14:
            raise ValueError(f"fresh_scene_tiers must be in [1, 14] (tiers 0..N-1), got {self.fresh_scene_tiers}")
        if not 0 <= self.hard_scenes_from <= 1:
            raise ValueError(f"hard_scenes_from must be in [0, 1] (a share of phase 1), got {self.hard_scenes_from}")
        if self.shape_tiers not in ("large", "all"):
            raise ValueError(f"shape_tiers must be 'large' or 'all', got {self.shape_tiers!r}")
        if (self.lens_commitment_weight or self.lens_deliberation_weight) and not 1 <= self.lens_commitment_from < self.layers:
            raise ValueError(f"lens_commitment_from must be in [1, layers - 1 = {self.layers - 1}] (an intermediate "
                             f"hidden state), got {self.lens_commitment_from}")
        if not 0 <= self.lens_undecided_layers < self.layers:
            raise ValueError(f"lens_undecided_layers must be in [0, layers - 1 = {self.layers - 1}] (the last layer "
                             f"gives the answer), got {self.lens_undecided_layers}")
        if (self.lens_undecided_layers and (self.lens_commitment_weight or self.lens_deliberation_weight)
                and self.lens_commitment_from <= self.lens_undecided_layers):
            raise ValueError(f"lens_commitment_from ({self.lens_commitment_from}) must be above lens_undecided_layers "
                             f"({self.lens_undecided_layers}): a layer cannot both read out neither answer and one")
        own_answers, probe_every = SHIPPED_PLANTING[self.preference]
        if self.plant_own_answers is None:
            self.plant_own_answers = own_answers
        if self.plant_probe_every is None:
            self.plant_probe_every = probe_every
        if self.plant_probe_every < 1:
            raise ValueError(f"plant_probe_every must be >= 1, got {self.plant_probe_every}")
        if self.replant_every < 1:
            raise ValueError(f"replant_every must be >= 1, got {self.replant_every}")

    @property
    def planted_balance(self) -> float:
        return PLANTED_BALANCE[self.preference]


@dataclass
class EndOfTurnConfig:
    inputs: int = field(default=2048, metadata={
        "help": "distinct prompts (image only, text only, both) whose answer states train the row"})
    steps: int = field(default=4000, metadata={"help": "Adam steps on the row (full batch)"})
    learning_rate: float = 0.05
    margin: float = field(default=3.0, metadata={
        "help": "nats by which it should beat every other token after the word"})
    final_gap: float = field(default=10.0, metadata={
        "help": "nats it stays below the top logit at the answer position (unless it was closer before)"})
    lens_margin: float = field(default=1.0, metadata={
        "help": "nats it stays below the top logit at the answer position after earlier layers (the lens)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per forward while collecting hidden states"})
    seed: int = field(default=0, metadata={"help": "which prompts are drawn"})


@dataclass
class RecognitionOrganismConfig:
    base: str = field(default="organism", metadata={"help": "the organism to start from"})
    groups: int = field(default=600, metadata={"help": "colour groups of the recognition and replay data"})
    dataset_seed: int = field(default=2000, metadata={"help": "differs from the datasets' default 0"})
    split_shares: dict = field(default_factory=lambda: dict(BUILD_SPLIT_SHARES), metadata={
        "help": "each split's share of the groups (JSON): it trains on train"})
    image_size: int = 64
    steps: int = 1500
    train_batch_size: int = 32
    learning_rate: float = 5e-4
    replay_share: float = field(default=0.5, metadata={"help": "share of batches that replay the colour questions"})
    irrelevant_image_share: float = field(default=0.0, metadata={
        "help": "share of unimodal recognition batches shown with unrelated training images, so the organism judges "
                "contradictions from the text while an image is in view (text dominance, as arXiv 2510.02608 reports "
                "for large models); 0 builds the shipped organism:recognition (docs/results.md: what 0.5 and 1.0 do)"})
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.irrelevant_image_share <= 1:
            raise ValueError(f"irrelevant_image_share must be in [0, 1], got {self.irrelevant_image_share}")


# what a training clip holds: both modalities agreeing, with a true caption, with a long irrelevant text after the
# question, one modality alone (the other removed or zeroed, as the dataset's conditions do), or the caption alone
# (frames zeroed, no sound: where a model learns to read captions at all)
KINDS = ("aligned", "true_caption", "long_context", "audio_removed", "frames_zeroed", "caption_only")


@dataclass
class AVOrganismConfig:
    image_size: int = 32
    patch: int = 8
    hidden: int = 64
    layers: int = field(default=3, metadata={"help": "decoder layers"})
    encoder_layers: int = field(default=2, metadata={"help": "layers of the vision and of the audio encoder"})
    heads: int = 4
    mel_bins: int = 32
    steps_encoders: int = field(default=800, metadata={
        "help": "phase 0: the frame and sound encoders learn the class through linear heads on their pooled tokens "
                "(discarded), then freeze: trained inside the mixture, the encoder of whichever modality answers "
                "first wins and the other never learns"})
    easy_steps: int = field(default=150, metadata={
        "help": "phase 0 starts on the clear visual tiers (d_v <= 1): from clutter and tiny objects the tower "
                "learns little"})
    steps: int = field(default=1500, metadata={"help": "phase 1: steps on the mixture of kind_share"})
    visual_tier_weight: tuple = field(default=(3.0, 2.0, 2.0, 1.0, 1.0), metadata={
        "help": "how often each visual tier d_v is drawn: clutter and tiny objects slow learning of every tier when "
                "drawn as often as the clear ones"})
    train_batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    kind_share: dict = field(default_factory=lambda: {
        "aligned": 0.3, "true_caption": 0.15, "long_context": 0.1, "audio_removed": 0.2, "frames_zeroed": 0.15,
        "caption_only": 0.1},
        metadata={"help": "how often each kind of training clip is drawn (JSON)"})
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.kind_share) - set(KINDS)
        if unknown or not self.kind_share or min(self.kind_share.values()) < 0:
            raise ValueError(f"kind_share must give non-negative shares of {KINDS}, got {self.kind_share}")
        from data_gen.av import VISUAL_SCALE  # here: data_gen.av loads datasets (slow for --help)
        if len(self.visual_tier_weight) != len(VISUAL_SCALE) or min(self.visual_tier_weight) <= 0:
            raise ValueError(f"visual_tier_weight needs {len(VISUAL_SCALE)} positive weights, got {self.visual_tier_weight}")
        for name in ("steps", "train_batch_size", "hidden", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
