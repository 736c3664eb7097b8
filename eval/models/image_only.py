"""Processors of families that also take video, usable where torchvision is missing.

transformers' video processors need torchvision, and a processor cannot be built without all of its parts;
PyPI has no CPU build of torchvision that runs beside the CPU torch wheel. Scoring reads images only, so
`image_only(cls)` is `cls` without its video processor: the same image processor (and audio feature extractor),
tokenizer, chat template and token expansion. It saves under the parent's class name, so AutoProcessor reads the
folder wherever torchvision is.
"""
from __future__ import annotations

from functools import cache

from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available


@cache
def image_only(processor_class: type) -> type:
    parts = processor_class.get_attributes()
    kept = [name for name in parts if name != "video_processor"]
    video_slot = parts.index("video_processor")

    class WithoutVideoPart(ProcessorMixin):
        """Sits between the processor and ProcessorMixin: a parent that hands its parts on by position (video
        processor included, as Qwen2.5-Omni's does) gets them to ProcessorMixin without the video slot."""

        def __init__(self, *args, **kwargs):
            args = [a for k, a in enumerate(args) if k != video_slot]
            kwargs.pop("video_processor", None)
            super().__init__(*args, **kwargs)

    class ImageOnly(processor_class, WithoutVideoPart):
        @classmethod
        def from_args_and_dict(cls, args, processor_dict, **kwargs):
            # from_pretrained hands the parts over by position in get_attributes() order, which is not the
            # parent's parameter order where the video processor sat in between: pass them by name
            return super().from_args_and_dict([], processor_dict, **dict(zip(kept, args)), **kwargs)

        @classmethod
        def get_attributes(cls):
            # ProcessorMixin builds, checks, saves and loads exactly these parts; the parent's own __init__ runs
            # (its video_processor stays None), so loading keeps every saved setting it names
            return kept

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    ImageOnly.__doc__ = f"{processor_class.__name__} without its video processor (see models/image_only.py)."
    return ImageOnly


def video_capable() -> bool:
    """Whether full processors (with their video part) can be built here."""
    return is_torchvision_available()
