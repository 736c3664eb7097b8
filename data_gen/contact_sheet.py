"""A PNG contact sheet: one rendered sample per visual tier, labelled."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from .defaults import image_size


def contact_sheet(task: str, out: str | Path, size: int | None = None, seed: int = 0, group: int = 0) -> Path:
    from .attributes import render_attribute_group
    from .colors import render_color_group
    render = {"colors": render_color_group, "attributes": render_attribute_group}[task]
    size = size or image_size(task)
    images, rows = render((group, seed, size))
    cols = min(7, len(images))
    n_rows = -(-len(images) // cols)
    label_h, pad = 16, 4
    sheet = Image.new("RGB", (cols * (size + pad), n_rows * (size + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, im in enumerate(images):
        x, y = (k % cols) * (size + pad), (k // cols) * (size + label_h + pad)
        sheet.paste(im["image"], (x, y + label_h))
        draw.text((x + 2, y + 2), f"d_v={k}  n={im['n_distractors']}  occ={im['occlusion_share']:.0%}", fill="black")
    question = next(r for r in rows if r["text_tier"] == "direct")
    draw.text((2, sheet.height - 12), f"{question['question']}  (image: {question['answer_visual']})", fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
