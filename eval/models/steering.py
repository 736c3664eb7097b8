"""Steering a model's modality preference without training (docs/method.md, "Steering").

A `Steering` is a preference direction in the residual stream at one decoder layer, added with strength alpha to
every position of the image + text prompts (MC², arXiv 2505.20977). With `mode="uncertainty"` each prompt's
strength is alpha times a window over its own relative uncertainty dH_rel, computed from the model's image-only
and text-only entropies of the same question: two extra forward passes per sample, the training-free
counterpart of the soft targets. Unimodal prompts are never steered: they are the instrument that measures
uncertainty.

The file is one small safetensors (`steering.safetensors`): the direction, and its layer, alpha and window as
metadata. `measure(..., steering=FILE)` and `--steering FILE` apply it through a forward hook.
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

STEERING_FILE = "steering.safetensors"
MODES = ("constant", "uncertainty")


def uncertainty_window(d_rel, current: float, target: float, sigma: float) -> np.ndarray:
    """1 for dH_rel between the current and the desired balance point, a Gaussian fall-off of width sigma outside:
    where the curve has to move, and nowhere else."""
    x = np.asarray(d_rel, dtype=float)
    lo, hi = min(current, target), max(current, target)
    dist = np.where(x < lo, lo - x, np.where(x > hi, x - hi, 0.0))
    return np.exp(-0.5 * (dist / sigma) ** 2)


@dataclass
class Steering:
    """direction (hidden size,) added at decoder layer `layer` times alpha (times the window, mode uncertainty)."""
    direction: torch.Tensor
    layer: int
    alpha: float = 1.0
    mode: str = "constant"
    current: float | None = None  # uncertainty mode: the window spans [current, target] on dH_rel (entropy)
    target: float | None = None
    sigma: float = 0.5

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"steering mode must be one of {MODES}, got {self.mode!r}")
        if self.direction.ndim != 1:
            raise ValueError(f"the steering direction must be one vector, got shape {tuple(self.direction.shape)}")
        if self.mode == "uncertainty" and (self.current is None or self.target is None or self.sigma <= 0):
            raise ValueError("uncertainty steering needs current and target balance points and sigma > 0")

    @property
    def extra_passes(self) -> int:
        """Forward passes a deployed model runs per sample beyond the image + text one."""
        return 2 if self.mode == "uncertainty" else 0

    def with_alpha(self, alpha: float) -> "Steering":
        return Steering(self.direction, self.layer, float(alpha), self.mode, self.current, self.target, self.sigma)

    def strengths(self, d_rel) -> np.ndarray:
        """Each image + text prompt's strength, from its own relative uncertainty dH_rel (eval.stats.
        relative_uncertainty of its image-only and text-only entropies; unused by mode constant)."""
        d_rel = np.asarray(d_rel, dtype=float)
        if self.mode == "constant":
            return np.full(d_rel.shape, self.alpha)
        return np.nan_to_num(self.alpha * uncertainty_window(d_rel, self.current, self.target, self.sigma))

    @contextmanager
    def applied(self, layers: torch.nn.ModuleList, strengths) -> None:
        """Within the block, layer `layer`'s output gets strengths[row] * direction at every position."""
        if self.layer >= len(layers):
            raise ValueError(f"steering layer {self.layer} does not exist: the model has {len(layers)} decoder layers")
        first = next(layers[self.layer].parameters())
        scale = torch.as_tensor(np.asarray(strengths, dtype=float), dtype=first.dtype, device=first.device)[:, None, None]
        shift = scale * self.direction.to(first.device, first.dtype)

        def hook(_module, _args, output):
            if isinstance(output, tuple):
                return (output[0] + shift, *output[1:])
            return output + shift

        handle = layers[self.layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def metadata(self) -> dict[str, str]:
        return {"layer": str(self.layer), "alpha": repr(self.alpha), "mode": self.mode, "sigma": repr(self.sigma),
                "current": json.dumps(self.current), "target": json.dumps(self.target)}

    def save(self, path: str | Path, **extra: str) -> Path:
        """`path`: a folder (the file is STEERING_FILE in it) or a .safetensors file; `extra` goes to the metadata."""
        from safetensors.torch import save_file
        path = Path(path)
        file = path if path.suffix == ".safetensors" else path / STEERING_FILE
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + ".tmp")
        save_file({"direction": self.direction.detach().float().cpu().contiguous()}, str(tmp),
                  metadata={**self.metadata(), **{k: str(v) for k, v in extra.items()}})
        tmp.replace(file)  # a crash leaves the old file or none, never half of one
        return file

    @classmethod
    def load(cls, path: str | Path) -> "Steering":
        from safetensors import SafetensorError, safe_open
        path = Path(path).expanduser()
        file = path / STEERING_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"steering {str(path)!r}: no such file; give the {STEERING_FILE} a steering run "
                                    f"released (OUTPUT_DIR/release) or its folder")
        try:
            with safe_open(str(file), framework="pt") as f:
                meta, direction = f.metadata() or {}, f.get_tensor("direction")
        except (SafetensorError, OSError, KeyError) as e:
            raise ValueError(f"steering {str(file)!r} is not a steering file ({e}); give the {STEERING_FILE} "
                             f"written by a steer or steer_uncertainty run") from e
        try:
            return cls(direction, int(meta["layer"]), float(meta["alpha"]), meta.get("mode", "constant"),
                       json.loads(meta.get("current", "null")), json.loads(meta.get("target", "null")),
                       float(meta.get("sigma", 0.5)))
        except (KeyError, ValueError) as e:
            raise ValueError(f"steering {str(file)!r}: its metadata lacks or garbles {e}; re-save it with "
                             f"Steering.save") from e


def steered(vlm, strengths) -> "contextmanager":
    """The block in which `vlm`'s steering (if any) acts with `strengths`; a no-op without steering."""
    steering = getattr(vlm, "steering", None)
    if steering is None or strengths is None:
        return nullcontext()
    return steering.applied(vlm.layers, strengths)
