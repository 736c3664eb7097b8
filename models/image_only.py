"""Processors of families that also take video, usable where torchvision is missing.

transformers' video processors need torchvision, and a processor cannot be built without all of its parts;
PyPI has no CPU build of torchvision that runs beside the CPU torch wheel. Scoring reads images only, so
`image_only(cls)` is `cls` without its video processor: the same image processor, tokenizer, chat template and
token expansion. It saves under the parent's class name, so AutoProcessor reads the folder wherever torchvision is.
"""
from __future__ import annotations

from functools import cache

from transformers.utils import is_torchvision_available


@cache
def image_only(processor_class: type) -> type:
    class ImageOnly(processor_class):
        @classmethod
        def get_attributes(cls):
            # ProcessorMixin builds, checks, saves and loads exactly these parts; the parent's own __init__ runs
            # unchanged (its video_processor stays None), so loading keeps every saved setting it names
            return [name for name in super().get_attributes() if name != "video_processor"]

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    ImageOnly.__doc__ = f"{processor_class.__name__} without its video processor (see models/image_only.py)."
    return ImageOnly


def video_capable() -> bool:
    """Whether full processors (with their video part) can be built here."""
    return is_torchvision_available()
