"""POST /upload/image and /upload/mask (spec §1.1), with Loom's safety rules (DESIGN.md §6).

Form fields (multipart): `image` (the file), `type` (`input`, the default, or `temp` -- never
`output`), `subfolder`, `overwrite` (`true`/`1`), and for masks `original_ref` (JSON
`{filename, subfolder, type}` of the image the mask belongs to). Answer: `{"name", "subfolder",
"type"}`, the name actually written.

- Only images: the bytes are identified by Pillow, whatever the name or the declared type says;
  PNG, JPEG, WebP, GIF, BMP and TIFF are accepted, anything else (HTML, SVG, scripts, archives) is
  refused with 400. Images over Pillow's decompression-bomb pixel count are refused too.
- The size cap is `--max-upload-size` (the request body cap), enforced while reading.
- The name is the server's: folders, control characters, characters Windows forbids and leading
  dots are stripped; a name whose extension is not an image extension gets the detected format's.
- Without `overwrite`, an existing name is kept and the upload becomes "name (1).png", "name (2).png"
  ... (ComfyUI's scheme), unless that file holds the very same bytes, which is then reused. The file
  is published atomically (hard link of a finished temporary file), so two uploads racing for one
  name cannot overwrite each other.
- A mask is saved as PNG: the original image (RGBA) with its alpha replaced by the mask's alpha
  (resized to the original when their sizes differ), the original's PNG text chunks kept. Unlike
  ComfyUI, a missing or escaping `original_ref` is a 400, not a silent 200.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from server.app import SETTINGS
from server.http import TRUE_WORDS, BadRequest, parse_json
from server.security import accepts_multipart

UPLOAD_TYPES = ("input", "temp")
READABLE_TYPES = ("input", "output", "temp")
FORMAT_SUFFIXES = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jfif"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}
IMAGE_SUFFIXES = frozenset(suffix for suffixes in FORMAT_SUFFIXES.values() for suffix in suffixes)
FORBIDDEN_CHARS = frozenset('<>:"/\\|?*')
WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
MAX_NAME = 180
FIELD_LIMIT = 64 * 1024


@dataclass
class UploadForm:
    filename: str
    data: bytes
    fields: dict[str, str]


# ---------------------------------------------------------------------- pure helpers


def sniff_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """(Pillow format, size) of image bytes; BadRequest if they are not an accepted image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image_format, size = image.format, image.size
                image.verify()  # walks the data: a truncated or corrupt file fails here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadRequest("the image has too many pixels to be accepted (decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(f"the upload is not an image Loom accepts ({', '.join(FORMAT_SUFFIXES)}): {exc}") from None
    if image_format not in FORMAT_SUFFIXES:
        raise BadRequest(f"{image_format} images are not accepted; use one of {', '.join(FORMAT_SUFFIXES)}")
    return image_format, size


def clean_name(raw: str, image_format: str) -> str:
    """The server's name for an upload: base name only, no control or forbidden characters, no
    leading dots, bounded length, an image extension."""
    name = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(ch for ch in name if ch.isprintable() and ch not in FORBIDDEN_CHARS)
    name = name.strip().lstrip(".").rstrip(". ")
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in IMAGE_SUFFIXES:
        stem, suffix = name, FORMAT_SUFFIXES[image_format][0]
    stem = stem[:MAX_NAME].rstrip(". ") or "image"
    if stem.split(".")[0].lower() in WINDOWS_RESERVED:
        stem = "_" + stem
    return stem + suffix.lower()


def contained_folder(root: Path, subfolder: str) -> Path:
    """root/subfolder (created), refusing anything that leaves root once links are resolved."""
    if "\x00" in subfolder or os.path.isabs(subfolder.replace("\\", "/")):
        raise BadRequest(f"subfolder {subfolder!r} must be a relative path")
    real_root = os.path.realpath(root)
    folder = os.path.realpath(os.path.join(real_root, subfolder.replace("\\", "/")))
    if os.path.commonpath([real_root, folder]) != real_root:
        raise BadRequest(f"subfolder {subfolder!r} leads outside the upload folder")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _publish(tmp: str, path: Path) -> None:
    """Give the finished temporary file its final name, failing if the name is taken."""
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(path) from None
        # A filesystem without hard links: exclusive create, then copy.
        with open(path, "xb") as out, open(tmp, "rb") as src:
            out.write(src.read())


def save_upload(folder: Path, name: str, data: bytes, overwrite: bool) -> str:
    """Write `data` under `name` (or "name (n).ext"); the name used."""
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(tmp, folder / name)
            return name
        stem, suffix = os.path.splitext(name)
        for attempt in range(100_000):
            candidate = name if attempt == 0 else f"{stem} ({attempt}){suffix}"
            try:
                _publish(tmp, folder / candidate)
                return candidate
            except FileExistsError:
                if _same_bytes(folder / candidate, data):
                    return candidate
        raise BadRequest(f"too many files named like {name!r}; upload under another name")
    finally:
        Path(tmp).unlink(missing_ok=True)


def compose_mask(original: Path, mask: bytes) -> bytes:
    """PNG bytes: the original image with the mask's alpha channel, original text chunks kept."""
    from PIL import Image, PngImagePlugin

    with Image.open(original) as source:
        info = PngImagePlugin.PngInfo()
        for key, value in getattr(source, "text", {}).items():
            info.add_text(key, value)
        rgba = source.convert("RGBA")
    with Image.open(io.BytesIO(mask)) as uploaded:
        alpha = uploaded.convert("RGBA").getchannel("A")
    if alpha.size != rgba.size:
        alpha = alpha.resize(rgba.size, Image.Resampling.BILINEAR)
    rgba.putalpha(alpha)
    out = io.BytesIO()
    rgba.save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


# ---------------------------------------------------------------------- request handling


async def read_form(request: web.Request, max_bytes: int) -> UploadForm:
    """The multipart form: the `image` file part (read up to max_bytes) and the small text fields."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest(f"uploads are multipart/form-data with an 'image' file field, got {request.content_type!r}")
    try:
        return await _read_parts(request, max_bytes)
    except (ValueError, HttpProcessingError) as exc:  # aiohttp's parser: no boundary, a bad part header ...
        raise BadRequest(f"the multipart/form-data body is malformed: {exc}") from None


async def _read_parts(request: web.Request, max_bytes: int) -> UploadForm:
    reader = await request.multipart()
    filename, data, fields = "", None, {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "image" and part.filename is not None:
            # Some clients (aiohttp's FormData among them) percent-encode the name in the header.
            filename = unquote(part.filename)
            data = await _read_part(part, max_bytes, "the image")
        else:
            fields[part.name] = (await _read_part(part, FIELD_LIMIT, f"field '{part.name}'")).decode("utf-8", "replace")
    if data is None:
        raise BadRequest("no file in the form: send the image in a file field named 'image'")
    if not filename.strip():
        raise BadRequest("the uploaded file has an empty file name")
    return UploadForm(filename, data, fields)


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"{what} is larger than the limit of {limit} bytes (--max-upload-size)", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _target_folder(request: web.Request, form: UploadForm) -> tuple[str, str, Path]:
    kind = form.fields.get("type") or "input"
    if kind not in UPLOAD_TYPES:
        raise BadRequest(f"uploads go to {' or '.join(UPLOAD_TYPES)}, not {kind!r}")
    root = request.app[SETTINGS].folders[kind]
    folder = contained_folder(root, form.fields.get("subfolder", ""))
    # The answer names the folder written ("a\\b" and "a/./b" are "a/b"), so /view finds the file.
    subfolder = folder.relative_to(os.path.realpath(root)).as_posix()
    return kind, "" if subfolder == "." else subfolder, folder


def _original(request: web.Request, ref_text: str | None) -> Path:
    if not ref_text:
        raise BadRequest("a mask upload needs 'original_ref' (JSON {filename, subfolder, type})")
    try:
        ref: Any = parse_json(ref_text)  # strict: a lone surrogate in a name would fail realpath()
    except BadRequest as exc:
        raise BadRequest(f"'original_ref' is not valid JSON: {exc}") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) or not ref["filename"]:
        raise BadRequest("'original_ref' must be a JSON object with a 'filename'")
    filename, kind = ref["filename"], ref.get("type") or "input"
    if "\x00" in filename or "\x00" in str(ref.get("subfolder") or ""):  # realpath() raises on NUL
        raise BadRequest("'original_ref' names a file with a NUL character")
    for suffix in (" [input]", " [output]", " [temp]"):
        if filename.endswith(suffix):
            filename, kind = filename[: -len(suffix)], suffix[2:-1]
    if kind not in READABLE_TYPES:
        raise BadRequest(f"'original_ref' type must be one of {', '.join(READABLE_TYPES)}, got {kind!r}")
    root = os.path.realpath(request.app[SETTINGS].folders[kind])
    target = os.path.realpath(os.path.join(root, str(ref.get("subfolder") or ""), filename))
    if os.path.commonpath([root, target]) != root or "\x00" in target:
        raise BadRequest("'original_ref' points outside its folder")
    if not os.path.isfile(target):
        raise BadRequest(f"the original image {ref['filename']!r} does not exist in {kind}")
    return Path(target)


def _limit(request: web.Request) -> int:
    return int(request.app[SETTINGS].features.get("max_upload_size", 100 * 1024 * 1024))


@accepts_multipart
async def upload_image(request: web.Request) -> web.Response:
    form = await read_form(request, _limit(request))
    image_format, _ = await asyncio.to_thread(sniff_image, form.data)
    kind, subfolder, folder = _target_folder(request, form)
    overwrite = form.fields.get("overwrite", "").strip().lower() in TRUE_WORDS
    name = clean_name(form.filename, image_format)
    saved = await asyncio.to_thread(save_upload, folder, name, form.data, overwrite)
    return web.json_response({"name": saved, "subfolder": subfolder, "type": kind})


@accepts_multipart
async def upload_mask(request: web.Request) -> web.Response:
    form = await read_form(request, _limit(request))
    await asyncio.to_thread(sniff_image, form.data)
    original = _original(request, form.fields.get("original_ref"))
    kind, subfolder, folder = _target_folder(request, form)
    overwrite = form.fields.get("overwrite", "").strip().lower() in TRUE_WORDS
    data = await asyncio.to_thread(compose_mask, original, form.data)
    name = clean_name(os.path.splitext(form.filename)[0] + ".png", "PNG")
    saved = await asyncio.to_thread(save_upload, folder, name, data, overwrite)
    return web.json_response({"name": saved, "subfolder": subfolder, "type": kind})


__all__ = [
    "FORMAT_SUFFIXES",
    "UPLOAD_TYPES",
    "clean_name",
    "compose_mask",
    "contained_folder",
    "save_upload",
    "sniff_image",
    "upload_image",
    "upload_mask",
]
