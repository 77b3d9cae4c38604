"""Pictures made on the CPU: deterministic, cheap, and recognisable in a demo.

An image depends only on (prompt, seed, size), so tests can compare runs and a
person can tell two users' results apart at a glance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

_SEQUENCE = re.compile(r"^(\d+)-")


def render(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """A two-colour gradient at a seed-chosen angle, with the prompt and seed written on it."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    start, end = tuple(digest[0:3]), tuple(digest[3:6])
    # rotate a large gradient and keep its centre, so no corner is left unfilled
    big = Image.linear_gradient("L").resize((512, 512)).rotate(digest[6] * 360 / 256)
    mask = big.crop((128, 128, 384, 384)).resize((width, height))
    img = Image.composite(
        Image.new("RGB", mask.size, end), Image.new("RGB", mask.size, start), mask
    )
    draw = ImageDraw.Draw(img)
    size = max(10, width // 16)
    font = ImageFont.load_default(size=size)
    ink = (255, 255, 255) if sum(start) + sum(end) < 3 * 255 else (0, 0, 0)
    lines = _wrap(prompt or "(empty prompt)", max(8, width // (size * 6 // 10)))
    for i, line in enumerate(lines[: max(1, height // (size + 4) - 2)]):
        draw.text((size // 2, size // 2 + i * (size + 4)), line, fill=ink, font=font)
    draw.text((size // 2, height - size - size // 2), f"seed {seed}", fill=ink, font=font)
    return img


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.extend(word[i : i + width] for i in range(0, len(word), width))
    return lines


def encode_png(img: Image.Image, infotext: str) -> bytes:
    """PNG bytes with A1111's ``parameters`` text chunk, so "PNG Info" tools read them."""
    meta = PngInfo()
    meta.add_text("parameters", infotext)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def decode_image(encoded: str) -> Image.Image:
    """An RGB image from base64 or a data: URI (img2img's ``init_images``); ValueError if bad."""
    raw = encoded.split(",", 1)[-1] if encoded.startswith("data:") else encoded
    try:
        return Image.open(io.BytesIO(base64.b64decode(raw))).convert("RGB")
    except (binascii.Error, OSError) as exc:
        raise ValueError("invalid encoded image") from exc


def image_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def save_sequenced(directory: Path, seed: int, data: bytes) -> Path:
    """Write ``NNNNN-<seed>.png`` with the next free number, never overwriting a file."""
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _SEQUENCE.match(p.name))]
    number = max(numbers, default=0) + 1
    while True:
        path = directory / f"{number:05}-{seed}.png"
        try:
            with path.open("xb") as fh:
                fh.write(data)
            return path
        except FileExistsError:  # another process sharing the volume won the race
            number += 1
