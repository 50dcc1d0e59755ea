"""AutoStudio's drawers behind one interface, and the image side of its metrics.

``Drawer.draw(layout, subjects, seed) -> PIL.Image`` is all the room needs. ``SketchDrawer``
renders offline with PIL, so the room is usable and testable anywhere; ``DiffusersDrawer`` runs
diffusers' GLIGEN text-box pipeline (phrases grounded in normalised boxes) from a local folder.

Consistency across turns comes from the subject id, never from the turn: the sketch derives a
subject's shape, colour and pattern from a hash of its id, and the diffusion drawer fills each
subject's box in the initial latent noise from a generator seeded by that same hash, so a subject
that is moved at the same size starts from the same noise. Reference images are not fed back:
the GLIGEN text-box checkpoints have no image grounding input (the text-image variant needs its
own checkpoint plus a CLIP image encoder), so per-subject noise is the lever that works with the
pipeline we load.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from manyheads.errors import ModelNotFoundError
from manyheads.orchestration.rooms.studio.layout import COLOURS, Box, Layout, Subject

SCENES = {  # background words -> a colour that reads as that place
    "sky": (170, 205, 240), "beach": (240, 225, 180), "desert": (235, 205, 150),
    "forest": (110, 160, 100), "park": (150, 200, 120), "garden": (150, 205, 120),
    "meadow": (170, 215, 120), "grass": (150, 200, 110), "night": (30, 35, 70),
    "snow": (240, 245, 250), "sea": (90, 140, 200), "ocean": (80, 130, 195),
    "lake": (110, 160, 210), "river": (110, 160, 210), "room": (235, 220, 200),
    "kitchen": (240, 230, 210), "city": (175, 175, 185), "street": (170, 170, 175),
    "space": (15, 15, 35), "field": (190, 210, 120), "mountain": (160, 170, 180)}
SHAPES = ("ellipse", "rectangle", "rounded", "triangle", "diamond")
PATTERNS = ("plain", "stripes", "dots")


class Drawer(Protocol):
    """Turns a checked layout into a picture; the same subject id must keep its look."""

    def draw(self, layout: Layout, subjects: list[Subject], seed: int) -> Image.Image: ...


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def named_colour(text: str) -> tuple[int, int, int] | None:
    """The last colour word in the text ("a red ball, now blue" -> blue), if any."""
    found = [w for w in re.findall(r"[a-z]+", text.lower()) if w in COLOURS]
    return COLOURS[found[-1]] if found else None


def background_colour(text: str) -> tuple[int, int, int]:
    """A colour for the background words: a known place, a named colour, else a pale hash.

    The place wins because a small model's background often borrows a subject's colour."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in SCENES:
            return SCENES[word]
    colour = named_colour(text)
    if colour:
        return colour
    h = stable_hash(text)
    return (200 + h % 50, 200 + (h >> 8) % 50, 200 + (h >> 16) % 50)


def appearance(subject: Subject) -> dict[str, Any]:
    """Shape, pattern and colour from the id's hash; a colour word in the description wins."""
    h = stable_hash(subject.id)
    base = (40 + h % 180, 40 + (h >> 8) % 180, 40 + (h >> 16) % 180)
    return {"shape": SHAPES[(h >> 24) % len(SHAPES)],
            "pattern": PATTERNS[(h >> 32) % len(PATTERNS)],
            "fill": named_colour(f"{subject.name} {subject.description}") or base}


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(size, 6))


class SketchDrawer:
    """An offline drawer: flat shapes on a coloured background, each labelled with its name."""

    def __init__(self, width: int = 256, height: int = 256) -> None:
        self.width, self.height = width, height

    def draw(self, layout: Layout, subjects: list[Subject], seed: int = 0) -> Image.Image:
        # seed is unused: a sketch is a pure function of the layout and the subject ids.
        image = Image.new("RGB", (self.width, self.height), background_colour(layout.background))
        pen = ImageDraw.Draw(image)
        by_id = {s.id: s for s in subjects}
        wholes_first = sorted(layout.boxes, key=lambda i: by_id[i].parent_id is not None
                              if i in by_id else True)
        for subject_id in wholes_first:
            if subject_id in by_id:
                self.subject(pen, by_id[subject_id], layout.boxes[subject_id])
        return image

    def subject(self, pen: ImageDraw.ImageDraw, subject: Subject, box: Box) -> None:
        """One subject, scaled to its box (so its crop looks the same wherever it moves)."""
        x0, y0, x1, y1 = box.pixels(self.width, self.height)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        look = appearance(subject)
        w, h = x1 - x0, y1 - y0
        inset = (x0 + w // 12, y0 + h // 12, x1 - w // 12, y1 - h // 12)
        outline = tuple(c // 3 for c in look["fill"])
        shape_of(pen, look["shape"], inset, look["fill"], outline)
        pattern_of(pen, look["pattern"], inset, outline)
        size = max(h // 7, 6)
        pen.text(((x0 + x1) // 2, y1 - size // 2 - 1), subject.name[:16], fill=(0, 0, 0),
                 font=font(size), anchor="ms")


def shape_of(pen: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int],
             fill: tuple[int, ...], outline: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape == "ellipse":
        pen.ellipse(box, fill=fill, outline=outline, width=2)
    elif shape == "rounded":
        pen.rounded_rectangle(box, radius=max((x1 - x0) // 5, 1), fill=fill, outline=outline,
                              width=2)
    elif shape == "triangle":
        pen.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill, outline=outline)
    elif shape == "diamond":
        pen.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill, outline=outline)
    else:
        pen.rectangle(box, fill=fill, outline=outline, width=2)


def pattern_of(pen: ImageDraw.ImageDraw, pattern: str, box: tuple[int, int, int, int],
               colour: tuple[int, ...]) -> None:
    """Stripes or dots in proportion to the box, so they scale with it."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if pattern == "stripes":
        for k in range(1, 4):
            y = y0 + k * h // 4
            pen.line([(x0 + w // 3, y), (x1 - w // 3, y)], fill=colour, width=max(h // 40, 1))
    elif pattern == "dots":
        r = max(min(w, h) // 16, 1)
        for fx, fy in ((0.4, 0.45), (0.6, 0.45), (0.5, 0.62)):
            cx, cy = x0 + int(fx * w), y0 + int(fy * h)
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)


class DiffusersDrawer:
    """GLIGEN (text-box grounding) on Stable Diffusion, from a local pipeline folder."""

    def __init__(self, pipeline: Any, *, steps: int = 25, guidance: float = 7.5,
                 width: int = 512, height: int = 512, grounding: float = 0.3) -> None:
        self.pipeline, self.steps, self.guidance = pipeline, steps, guidance
        self.width, self.height, self.grounding = width, height, grounding
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_path(cls, path: str | Path, **options: Any) -> DiffusersDrawer:
        """Load ``StableDiffusionGLIGENPipeline`` from a folder (no download is attempted)."""
        from diffusers import StableDiffusionGLIGENPipeline

        if not (Path(path) / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path} is not a diffusers pipeline folder",
                                     hint="point model_path at a saved GLIGEN text-box pipeline")
        pipeline = StableDiffusionGLIGENPipeline.from_pretrained(
            str(path), safety_checker=None, requires_safety_checker=False, local_files_only=True)
        return cls(pipeline, **options)

    def draw(self, layout: Layout, subjects: list[Subject], seed: int = 0) -> Image.Image:
        import torch

        placed = [s for s in subjects if s.id in layout.boxes]
        phrases = [f"{s.description or s.name}"[:70] for s in placed]
        prompt = layout.caption or ", ".join(phrases)
        if layout.background:
            prompt = f"{prompt}, {layout.background}"
        result = self.pipeline(
            prompt=prompt, gligen_phrases=phrases,
            gligen_boxes=[layout.boxes[s.id].clipped().as_list() for s in placed],
            gligen_scheduled_sampling_beta=self.grounding, height=self.height, width=self.width,
            num_inference_steps=self.steps, guidance_scale=self.guidance,
            latents=self.latents(layout, placed, seed, torch), output_type="pil")
        return result.images[0]

    def latents(self, layout: Layout, placed: list[Subject], seed: int, torch: Any) -> Any:
        """Initial noise [1, C, H/f, W/f]: the scene's seed, each subject's box from its own."""
        channels = self.pipeline.unet.config.in_channels
        factor = self.pipeline.vae_scale_factor
        shape = (1, channels, self.height // factor, self.width // factor)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        for subject in placed:
            x0, y0, x1, y1 = layout.boxes[subject.id].pixels(shape[3], shape[2])
            own = torch.randn(shape, generator=torch.Generator().manual_seed(
                stable_hash(subject.id) % 2**31))
            noise[:, :, y0:y1, x0:x1] = own[:, :, : y1 - y0, : x1 - x0]
        return noise.to(self.pipeline.unet.dtype)


# -- image metrics ----------------------------------------------------------------------------
Embedding = Callable[[Image.Image], np.ndarray]


def pixel_embedding(image: Image.Image, size: int = 24) -> np.ndarray:
    """The crop as a centred, unit-length pixel vector: cosine of two is their correlation."""
    vector = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR),
                        dtype=np.float64).ravel()
    vector = vector - vector.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def crop(image: Image.Image, box: Box) -> Image.Image:
    return image.crop(box.pixels(*image.size))


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embeddings; two flat (zero) crops count as the same."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float(na == nb)
    return float(np.dot(a, b) / (na * nb))


def subject_consistency(turns: list[tuple[Image.Image, Layout]], embed: Embedding = pixel_embedding
                        ) -> dict[str, float]:
    """Per subject id, the mean similarity of its crops in consecutive turns that show it."""
    crops: dict[str, list[np.ndarray]] = {}
    for image, layout in turns:
        for subject_id, box in layout.boxes.items():
            crops.setdefault(subject_id, []).append(embed(crop(image, box)))
    return {sid: float(np.mean([similarity(a, b) for a, b in zip(vs, vs[1:], strict=False)]))
            for sid, vs in crops.items() if len(vs) > 1}


def contact_sheet(images: list[Image.Image], labels: list[str], tile: int = 256) -> Image.Image:
    """The turns of one dialogue side by side, each with its user turn underneath."""
    strip = 40
    sheet = Image.new("RGB", (tile * max(len(images), 1), tile + strip), "white")
    pen = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        sheet.paste(image.convert("RGB").resize((tile, tile)), (index * tile, 0))
        for line, start in enumerate(range(0, min(len(label), 84), 42)):
            pen.text((index * tile + 4, tile + 4 + 16 * line), label[start:start + 42],
                     fill=(0, 0, 0), font=font(12))
    return sheet
