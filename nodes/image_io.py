"""Image file nodes: LoadImage, LoadImageMask, SaveImage, PreviewImage (spec §5.1, §8).

Names, inputs, categories, file naming and pixel conventions follow ComfyUI's nodes.py, so
workflows, uploads and saved files interoperate: IMAGE is float32 [B, H, W, 3] in 0..1, a loaded
alpha channel becomes MASK = 1 - alpha, and saving quantises with truncation (0.5 -> 127).

Folders come from the runtime's services (`input_dir`, `output_dir`, `temp_dir`, `config`). Two
hooks run with no node runtime, though: the combo lists (called whenever /object_info is built) and
validation. They read the folders the composition root registered with `bind_folders(services)`,
and fall back to ComfyUI's defaults under the working directory (see `folder_for`).

torch, numpy and Pillow are imported inside the functions that use them: the server imports the
node modules at start and must answer its first page before torch loads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config
from core.paths import contained
from core.runtime import NodeRuntime, install_services, services
from nodes.api import Choice, Hidden, Input, Node, NodeSpec, Output, String
from nodes.pngmeta import metadata_texts

log = logging.getLogger(__name__)

FOLDER_KINDS = ("input", "output", "temp")

IMAGE_EXTENSIONS = frozenset(
    {".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".tga",
     ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".psd", ".dds", ".icns", ".pcx", ".sgi", ".qoi", ".avif",
     ".jp2", ".j2k", ".jpx", ".mpo", ".im", ".xbm", ".ras"}
)  # fmt: skip
"""Files LoadImage lists: the still-image formats Pillow reads."""

SINGLE_FRAME_FORMATS = frozenset({"MPO"})
"""Formats whose extra frames are not a batch (MPO's second frame is a stereo view), as in ComfyUI."""

_ANNOTATIONS = (("[input]", "input"), ("[output]", "output"), ("[temp]", "temp"))
_PREVIEW_LETTERS = string.ascii_lowercase


# --- folders ------------------------------------------------------------------------------------------


def bind_folders(services: Mapping[str, Any] | None) -> None:
    """Register the input/output/temp folders for code that runs outside a node (combo lists,
    validation). Kept for tests; the composition root calls core.runtime.install_services."""
    install_services(services)


def folder_for(kind: str, runtime: NodeRuntime | None = None) -> Path:
    """The input/output/temp folder: the runtime's service, else the installed one, else ComfyUI's
    default (`<cwd>/input` ...), which is what a Loom started without folder flags uses."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; expected one of {FOLDER_KINDS}")
    found = (runtime.services if runtime is not None else services()).get(f"{kind}_dir")
    if found is None and runtime is not None:
        found = services().get(f"{kind}_dir")
    if found is not None:
        return Path(found)
    defaults = Config()
    return {"input": defaults.input_path, "output": defaults.output_path, "temp": defaults.temp_path}[kind]


def list_files(folder: Path, extensions: Iterable[str]) -> list[str]:
    """Files under `folder` (recursive, "/"-separated relative paths, sorted) with one of the
    extensions. Hidden entries are skipped, and so are links that lead outside the folder (they
    could not be loaded anyway: loading refuses paths that escape)."""
    wanted = {ext.lower() for ext in extensions}
    if not folder.is_dir():
        return []
    root = os.path.realpath(folder)
    found: list[str] = []
    seen = {root}  # real paths of walked folders: a link back up must not loop forever
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and _new_inside(root, os.path.join(dirpath, d), seen)
        ]
        for filename in filenames:
            if filename.startswith(".") or os.path.splitext(filename)[1].lower() not in wanted:
                continue
            full = os.path.join(dirpath, filename)
            if _inside(root, full):
                found.append(Path(os.path.relpath(full, root)).as_posix())
    return sorted(found)


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([root, real]) == root


def _new_inside(root: str, path: str, seen: set[str]) -> bool:
    real = os.path.realpath(path)
    if real in seen or os.path.commonpath([root, real]) != root:
        return False
    seen.add(real)
    return True


def split_annotation(name: str) -> tuple[str, str | None]:
    """("x.png", "output") for "x.png [output]"; (name, None) without an annotation (ComfyUI's
    `name [input|output|temp]` form, used by uploads to other folders and by the mask editor)."""
    for tag, kind in _ANNOTATIONS:
        if name.endswith(tag):
            return name[: -len(tag)].rstrip(" "), kind
    return name, None


def resolve_annotated(name: str, default_kind: str = "input", runtime: NodeRuntime | None = None) -> Path | None:
    """The file a combo value names, or None when it escapes its folder (`..`, absolute paths,
    links leading outside) or is not a plain name. Existence is not checked."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    relative, kind = split_annotation(name)
    if not relative:
        return None
    return contained(folder_for(kind or default_kind, runtime), relative)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (ComfyUI's IS_CHANGED for loaded files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_file(name: Any, what: str, default_kind: str = "input") -> bool | str:
    """Validation shared by the file loaders: True, or ComfyUI's "Invalid <what> file: name".
    A linked value (None here) is checked when the node runs."""
    if name is None:
        return True
    path = resolve_annotated(name, default_kind) if isinstance(name, str) else None
    if path is None:
        return f"Invalid {what} file: {name} (the path leads outside the {default_kind} folder)"
    if not path.is_file():
        return f"Invalid {what} file: {name}"
    return True


def loadable_file(ctx: NodeRuntime, name: str, what: str) -> Path:
    """The input file a loader reads, from the runtime's input folder; clear errors otherwise."""
    relative, kind = split_annotation(name)
    folder = Path(ctx.service(f"{kind or 'input'}_dir"))
    path = contained(folder, relative) if relative and "\x00" not in relative else None
    if path is None:
        raise ValueError(f"{what} '{name}' is outside the {kind or 'input'} folder {folder}; pick a file from the list")
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{name}' does not exist in {folder}; upload it or pick another file")
    return path


# --- save naming (ComfyUI's get_save_image_path) ------------------------------------------------------


@dataclass(frozen=True)
class SavePath:
    folder: Path
    """Absolute folder the files go to (created if missing)."""
    filename: str
    """The prefix's last part; may still contain %batch_num%."""
    counter: int
    """The first free counter: 1 + the highest already used by `<filename>_<n>...` files."""
    subfolder: str
    """`folder` relative to the output folder ("" or "a/b"), what the ui entries report."""

    def name(self, counter: int, extension: str, batch_number: int = 0) -> str:
        return f"{self.filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.{extension}"


def expand_prefix(prefix: str, width: int = 0, height: int = 0) -> str:
    """%width%, %height% and the local-time %year% ... %second% variables of a filename prefix."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "%width%": str(width), "%height%": str(height), "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}", "%day%": f"{now.tm_mday:02}", "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}", "%second%": f"{now.tm_sec:02}",
    }  # fmt: skip
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def save_path(output_dir: Path, prefix: str, width: int = 0, height: int = 0) -> SavePath:
    """Where files saved under `prefix` go. Subfolders in the prefix are created; a prefix that
    would leave `output_dir` (`..`, an absolute path, a link leading out) raises ValueError."""
    expanded = os.path.normpath(expand_prefix(prefix, width, height))
    subfolder, filename = os.path.split(expanded)
    if not filename or filename in (".", ".."):
        raise ValueError(f"filename_prefix {prefix!r} has no file name part; use something like 'ComfyUI'")
    root = os.path.realpath(output_dir)
    folder = os.path.realpath(os.path.join(root, subfolder))
    if os.path.commonpath([root, folder]) != root:
        raise ValueError(
            f"filename_prefix {prefix!r} would save outside the output folder {root}; "
            "use a relative prefix such as 'renders/ComfyUI' (no '..', no absolute path)"
        )
    os.makedirs(folder, exist_ok=True)
    relative = os.path.relpath(folder, root)
    return SavePath(Path(folder), filename, _next_counter(folder, filename), "" if relative == "." else relative)


def _next_counter(folder: str, filename: str) -> int:
    """1 + the highest n of files named `<filename>_<n>_...` (any other name counts as 0)."""
    highest = 0
    wanted = os.path.normcase(filename)
    cut = len(filename)
    for entry in os.listdir(folder):
        if len(entry) <= cut or entry[cut] != "_" or os.path.normcase(entry[:cut]) != wanted:
            continue
        digits = entry[cut + 1 :].split("_")[0]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return highest + 1


# --- pixels -------------------------------------------------------------------------------------------


def image_to_uint8(image: Any) -> Any:
    """One IMAGE [H, W, C] as a uint8 array: clip(255 * x) truncated, as ComfyUI saves (0.5 -> 127).
    NaN pixels (a diverged decode) become 0 with a warning instead of platform-dependent values."""
    import numpy as np

    values = 255.0 * image.detach().cpu().float().numpy()
    if np.isnan(values).any():
        log.warning("image contains NaN values; they are saved as 0")
        values = np.nan_to_num(values, nan=0.0)
    return np.clip(values, 0, 255).astype(np.uint8)


def _pil_image(pixels: Any) -> Any:
    from PIL import Image

    channels = pixels.shape[-1]
    if channels == 1:
        return Image.fromarray(pixels[..., 0], mode="L")
    if channels in (3, 4):
        return Image.fromarray(pixels, mode="RGB" if channels == 3 else "RGBA")
    raise ValueError(f"cannot save an image with {channels} channels; expected 1, 3 or 4 (IMAGE is [B, H, W, C])")


def save_png_batch(
    ctx: NodeRuntime,
    images: Any,
    folder: Path,
    prefix: str,
    *,
    kind: str,
    compress_level: int,
    texts: Mapping[str, str] | None,
) -> list[dict[str, str]]:
    """Write each image of the batch as `<prefix>_<counter>_.png`; returns the ui entries."""
    from PIL.PngImagePlugin import PngInfo

    if getattr(images, "ndim", None) != 4:
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got shape {tuple(getattr(images, 'shape', ()))}")
    try:
        target = save_path(folder, prefix, width=int(images.shape[2]), height=int(images.shape[1]))
    except OSError as exc:  # the folder is a file, read-only, or the disk is full
        raise _save_error(exc, Path(folder), prefix) from exc
    results = []
    for batch_number, image in enumerate(images):
        ctx.check_interrupted()
        info = None
        if texts is not None:
            info = PngInfo()
            for key, text in texts.items():
                info.add_text(key, text)
        file = target.name(target.counter + batch_number, "png", batch_number)
        write_atomically(target.folder / file, _pil_image(image_to_uint8(image)), pnginfo=info,
                         compress_level=compress_level)  # fmt: skip
        results.append({"filename": file, "subfolder": target.subfolder, "type": kind})
    log.debug("saved %d image(s) to %s", len(results), target.folder)
    return results


def write_atomically(path: Path, image: Any, **options: Any) -> None:
    """Save a PIL image as PNG under a hidden temporary name, then rename it into place: a full
    disk or a crash never leaves a truncated PNG under the final name (ComfyUI's counter would skip
    past it and the editor would show a broken image). The error names the folder."""
    temporary = path.with_name(f".loom-{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            image.save(handle, format="PNG", **options)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise _save_error(exc, path.parent, path.name) from exc


def _save_error(exc: OSError, folder: Path, name: str) -> OSError:
    reason = exc.strerror or str(exc)
    message = (f"cannot save '{name}' in the folder {folder}: {reason}; free some disk space or make the folder "
               "writable (or start Loom with another --output-directory)")  # fmt: skip
    return OSError(message)  # raised `from exc`: the errno stays on the cause


def metadata_enabled(ctx: NodeRuntime) -> bool:
    """False under --disable-metadata. A runtime without a config service keeps metadata on."""
    config = ctx.services.get("config")
    return not getattr(config, "disable_metadata", False)


# --- loading ------------------------------------------------------------------------------------------


def _alpha_mask(frame: Any) -> Any | None:
    """1 - alpha as float32 [H, W] (ComfyUI's MASK convention), or None without transparency."""
    import numpy as np

    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return None
    return 1.0 - np.asarray(alpha).astype(np.float32) / 255.0


def _to_rgb_source(frame: Any) -> Any:
    # 32-bit integer images are scaled by 1/255 before conversion, as ComfyUI does.
    if frame.mode == "I":
        return frame.point(lambda value: value * (1 / 255))
    return frame


def decode_image_file(path: Path) -> tuple[Any, Any]:
    """(IMAGE [B, H, W, 3], MASK [B, H, W]) from any Pillow-readable file: EXIF orientation applied,
    frames of a multi-frame file batched (frames whose size differs from the first are skipped),
    MASK = 1 - alpha, or zeros 64x64 when no frame has transparency."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    pixels, masks = [], []
    try:
        with Image.open(path) as img:
            for raw in ImageSequence.Iterator(img):
                frame = ImageOps.exif_transpose(raw)
                rgb = _to_rgb_source(frame).convert("RGB")
                if pixels and rgb.size != (pixels[0].shape[1], pixels[0].shape[0]):
                    log.debug(
                        "%s: skipping a %dx%d frame (the first is %dx%d)", path, *rgb.size, *pixels[0].shape[1::-1]
                    )
                    continue
                pixels.append(np.asarray(rgb).astype(np.float32) / 255.0)
                masks.append(_alpha_mask(frame))
                if img.format in SINGLE_FRAME_FORMATS:
                    break
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image '{path.name}': {exc}") from exc
    if not pixels:
        raise ValueError(f"image '{path.name}' has no frames")
    height, width = pixels[0].shape[:2]
    if all(mask is None for mask in masks):
        mask_batch = np.zeros((len(pixels), 64, 64), dtype=np.float32)
    else:  # frames without transparency next to ones with it: fully opaque, at the image size
        mask_batch = np.stack([np.zeros((height, width), np.float32) if m is None else m for m in masks])
    return torch.from_numpy(np.stack(pixels)), torch.from_numpy(mask_batch)


def decode_mask_channel(path: Path, channel: str) -> Any:
    """MASK [1, H, W] from one channel of the file's first frame (alpha is inverted: 1 - alpha)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    band = channel[0].upper()
    try:
        with Image.open(path) as img:
            frame = ImageOps.exif_transpose(img)
            if frame.getbands() != ("R", "G", "B", "A"):
                frame = _to_rgb_source(frame).convert("RGBA")
            values = np.asarray(frame.getchannel(band)).astype(np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image '{path.name}': {exc}") from exc
    mask = torch.from_numpy(values)
    if band == "A":
        mask = 1.0 - mask
    return mask.unsqueeze(0).contiguous()


def _input_images() -> list[str]:
    return list_files(folder_for("input"), IMAGE_EXTENSIONS)


# --- nodes --------------------------------------------------------------------------------------------


class LoadImage(Node):
    """Loads an image from the input folder: multi-frame files become a batch, alpha the mask."""

    spec = NodeSpec(
        id="LoadImage",
        display_name="Load Image",
        category="image",
        inputs=(Choice("image", _input_images, image_upload=True, legacy=True),),
        outputs=(Output("IMAGE"), Output("MASK")),
    )

    @classmethod
    def fingerprint(cls, image: Any = None, **_: Any) -> str:
        path = resolve_annotated(image)
        if path is None:
            raise ValueError(f"image '{image}' is outside the input folder")
        return sha256_file(path)

    @classmethod
    def validate(cls, image: Any) -> bool | str:
        return existing_file(image, "image")

    def run(self, ctx: NodeRuntime, image: str) -> tuple[Any, Any]:
        return decode_image_file(loadable_file(ctx, image, "image"))


class LoadImageMask(Node):
    """Loads one channel of an image from the input folder as a mask (alpha is inverted)."""

    spec = NodeSpec(
        id="LoadImageMask",
        display_name="Load Image (as Mask)",
        category="mask",
        inputs=(
            Choice("image", _input_images, image_upload=True, legacy=True),
            Choice("channel", ("alpha", "red", "green", "blue"), legacy=True),
        ),
        outputs=(Output("MASK"),),
    )

    @classmethod
    def fingerprint(cls, image: Any = None, **_: Any) -> str:
        return LoadImage.fingerprint(image)

    @classmethod
    def validate(cls, image: Any) -> bool | str:
        return existing_file(image, "image")

    def run(self, ctx: NodeRuntime, image: str, channel: str) -> tuple[Any]:
        return (decode_mask_channel(loadable_file(ctx, image, "image"), channel),)


class SaveImage(Node):
    """Saves the images to the output folder as PNG files with the workflow embedded."""

    spec = NodeSpec(
        id="SaveImage",
        display_name="Save Image",
        category="image",
        inputs=(
            Input("images", "IMAGE", tooltip="The images to save."),
            String(
                "filename_prefix",
                "ComfyUI",
                tooltip="The file name prefix; may contain subfolders ('renders/ComfyUI') and "
                "%width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second%, %batch_num%.",
            ),
            Hidden("prompt", "PROMPT"),
            Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
        ),
        output_node=True,
    )

    def run(
        self,
        ctx: NodeRuntime,
        images: Any,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> dict[str, Any]:
        texts = metadata_texts(prompt, extra_pnginfo) if metadata_enabled(ctx) else None
        folder = Path(ctx.service("output_dir"))
        results = save_png_batch(ctx, images, folder, filename_prefix, kind="output", compress_level=4, texts=texts)
        return {"ui": {"images": results}}


class PreviewImage(Node):
    """Shows the images in the editor (saved to the temp folder, which is cleared on restart)."""

    spec = NodeSpec(
        id="PreviewImage",
        display_name="Preview Image",
        category="image",
        inputs=(Input("images", "IMAGE"), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")),
        output_node=True,
    )

    def run(self, ctx: NodeRuntime, images: Any, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        # A random suffix keeps previews of different nodes and prompts from sharing names.
        prefix = "ComfyUI_temp_" + "".join(random.choice(_PREVIEW_LETTERS) for _ in range(5))
        texts = metadata_texts(prompt, extra_pnginfo) if metadata_enabled(ctx) else None
        folder = Path(ctx.service("temp_dir"))
        results = save_png_batch(ctx, images, folder, prefix, kind="temp", compress_level=1, texts=texts)
        return {"ui": {"images": results}}


NODES = [SaveImage, PreviewImage, LoadImage, LoadImageMask]

__all__ = [
    "FOLDER_KINDS",
    "IMAGE_EXTENSIONS",
    "NODES",
    "LoadImage",
    "LoadImageMask",
    "PreviewImage",
    "SaveImage",
    "SavePath",
    "bind_folders",
    "decode_image_file",
    "decode_mask_channel",
    "existing_file",
    "expand_prefix",
    "folder_for",
    "image_to_uint8",
    "list_files",
    "loadable_file",
    "metadata_enabled",
    "resolve_annotated",
    "save_path",
    "save_png_batch",
    "sha256_file",
    "split_annotation",
    "write_atomically",
]
