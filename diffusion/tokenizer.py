"""CLIP BPE tokenizer and ComfyUI's weighted, 77-token chunking of prompts.

- `ClipBPE`: OpenAI CLIP's byte-level BPE. The merges come from the openai-clip package's
  `clip/bpe_simple_vocab_16e6.txt.gz`, located through importlib.metadata (the package itself is
  never imported); the vocabulary is built from them exactly as CLIP does, which gives the ids of
  HF's CLIPTokenizer (49406 start, 49407 end). Text normalisation is the one of transformers'
  CLIPTokenizer (the tokenizers-backed class ComfyUI loads): NFC, runs of whitespace -> one space,
  lower case; no ftfy.
- `ClipTokenizer`: one text encoder's view of a prompt (ComfyUI's SDTokenizer): weights, escapes,
  `embedding:name` textual inversions, chunks of 75 tokens + start/end, padding.
- `PromptTokenizer`: the family's tokenizers by key ("l", "h", "g"), returning
  {"l": [[(token, weight), ...] per chunk]} like ComfyUI's tokenize_with_weights.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import logging
import os
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.errors import ModelError
from core.paths import contained
from diffusion.configs import TextEncoderConfig
from diffusion.prompt import EMBEDDING_PREFIX, parse_prompt, split_embedding_name, split_embeddings

log = logging.getLogger(__name__)

START_TOKEN = 49406
END_TOKEN = 49407
VOCAB_SIZE = 49408
VOCAB_FILE = "clip/bpe_simple_vocab_16e6.txt.gz"
_MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges of the file
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f"  # str.isspace() says yes; Unicode's White_Space (and HF) say no
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in _SPECIALS) + ")")
MAX_WORD_LENGTH = 8
"""A group of at least this many tokens may be cut across chunks; shorter ones move whole."""
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")

Token = int | Tensor
"""A token id, or a textual-inversion vector that replaces one token's embedding."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (no whitespace/control)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _char_class(char: str) -> str:
    """The pre-tokenizer's class: "L" letter, "N" number, "S" whitespace, "P" anything else."""
    if char.isspace() and char not in _NOT_WHITE_SPACE:
        return "S"
    category = unicodedata.category(char)[0]
    return category if category in ("L", "N") else "P"


def pre_tokenize(text: str) -> list[str]:
    """Split normalised text like CLIP's pattern
    `'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`: alternatives tried in that order at
    each position, whitespace between matches dropped. (The pattern's `<|endoftext|>` alternatives
    are left out: HF's byte-level step splits such a piece again into "<|", "endoftext", "|>";
    only the exact raw special strings are special, see ClipBPE.encode.)
    """
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction is not None:
            pieces.append(contraction)
            i += len(contraction)
            continue
        kind = _char_class(text[i])
        if kind == "S":
            i += 1
            continue
        j = i + 1
        if kind != "N":  # a number is one digit per piece; letters and symbols run on
            while j < n and _char_class(text[j]) == kind:
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


def normalize_text(text: str) -> str:
    """NFC then lower case, character by character (as the tokenizers library lowercases: no
    context-dependent final sigma). Whitespace runs need no collapsing: `pre_tokenize` drops them.
    """
    return "".join(char.lower() for char in unicodedata.normalize("NFC", text))


class ClipBPE:
    """Byte-level BPE with CLIP's vocabulary: `encode(text)` -> ids without start/end tokens."""

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        self.byte_encoder = _bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        units = list(self.byte_encoder.values())
        vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + list(_SPECIALS)
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _merge(self, piece: str) -> list[str]:
        """Apply merges lowest rank first until none applies (Sennrich et al. 2016, BPE)."""
        chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
        word = list(chars[:-1]) + [chars[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, 1 << 30))
            if best not in self.ranks:
                break
            merged: list[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and word[k] == best[0] and word[k + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        return word

    def _piece_ids(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            ids = [self.encoder[unit] for unit in self._merge(piece)]
            if len(self._cache) < 100_000:
                self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no start/end)."""
        ids: list[int] = []
        # Special tokens are cut out of the raw text first, wherever they are (HF added tokens).
        for k, part in enumerate(_SPECIAL_SPLIT.split(text)):
            if k % 2:
                ids.append(self.encoder[part])
                continue
            for piece in pre_tokenize(normalize_text(part)):
                ids.extend(self._piece_ids(piece))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; each end-of-word marker becomes a space."""
        text = "".join(self.decoder.get(int(i), "") for i in ids)
        words = text.replace("</w>", " ").split(" ")
        raw = [bytes(self.byte_decoder[c] for c in word).decode("utf-8", "replace") for word in words]
        return " ".join(raw).strip()


def vocab_path() -> Path:
    """The BPE merges file of the installed openai-clip distribution."""
    try:
        dist = importlib.metadata.distribution("openai-clip")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "the CLIP tokenizer needs the 'openai-clip' package (pip install openai-clip==1.0.1)"
        ) from None
    path = Path(str(dist.locate_file(VOCAB_FILE)))
    if not path.is_file():
        raise ModelError(f"CLIP vocabulary file missing from the openai-clip package: {path}")
    return path


@lru_cache(maxsize=1)
def clip_bpe() -> ClipBPE:
    """The shared CLIP BPE tokenizer, built once per process."""
    with gzip.open(vocab_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _MERGE_COUNT]]
    bpe = ClipBPE(merges)  # type: ignore[arg-type]
    if bpe.vocab_size != VOCAB_SIZE or bpe.encoder["<|endoftext|>"] != END_TOKEN:
        raise ModelError(f"unexpected CLIP vocabulary in {vocab_path()}: {bpe.vocab_size} entries")
    return bpe


# ---------------------------------------------------------------------------------------------
# Textual-inversion embeddings


class EmbeddingLibrary:
    """Finds and reads textual-inversion files for `embedding:name` (ComfyUI's load_embed).

    A name is looked up in every folder and every sub-folder of it, as given or with one of
    EMBEDDING_EXTENSIONS appended; names that would escape a folder are refused. Formats: A1111
    `.pt` ({"string_to_param": {...}}), plain {name: tensor} files, SDXL files with "clip_l" /
    "clip_g" keys, lists of dicts, and LoRA-bundled "bundle_emb.*" vectors.
    """

    def __init__(self, folders: Iterable[Path | str]) -> None:
        self.folders = [Path(f) for f in folders]

    def _search_folders(self) -> list[Path]:
        found: list[Path] = []
        for root in self.folders:
            found.append(root)
            if root.is_dir():
                for dirpath, dirnames, _ in os.walk(root, followlinks=True):
                    dirnames.sort()
                    found.extend(Path(dirpath, d) for d in dirnames)
        return list(dict.fromkeys(found))

    def find(self, name: str) -> Path | None:
        """The file for an embedding name, or None."""
        if not name or "\x00" in name:
            return None
        for folder in self._search_folders():
            candidate = contained(folder, name)
            if candidate is None:
                continue
            if candidate.is_file():
                return candidate
            for ext in EMBEDDING_EXTENSIONS:
                with_ext = candidate.with_name(candidate.name + ext)
                if with_ext.is_file():
                    return with_ext
        return None

    def load(self, name: str, size: int, key: str | None) -> Tensor | None:
        """The vectors of `name` as (n, size) or (size,), or None when missing or unreadable."""
        path = self.find(name)
        if path is None:
            return None
        try:
            data = _read_embedding_file(path)
            vectors = data if isinstance(data, Tensor) else _pick_vectors(data, size, key)
        except Exception as exc:  # a broken file must not fail the prompt: ComfyUI skips it too
            log.warning("could not read embedding '%s' from %s (%s); ignoring it", name, path, exc)
            return None
        if vectors is None:
            log.warning("embedding file %s holds no vectors; ignoring it", path)
        elif vectors.ndim > 2:
            vectors = vectors.reshape(-1, vectors.shape[-1])
        return vectors


def _read_embedding_file(path: Path) -> Any:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        log.debug("%s is not a plain weights file; reading its raw float data", path)
        vectors = _raw_zip_vectors(path)
        if vectors is None:
            raise
        return vectors


def _raw_zip_vectors(path: Path) -> Tensor | None:
    """Old pickled embeddings that weights_only refuses: read the largest-index float32 blob of the
    torch zip archive directly (768 wide when it divides, else 1024), like ComfyUI's fallback."""
    with zipfile.ZipFile(path) as archive:
        for entry in reversed([n for n in archive.namelist() if "data/" in n]):
            data = archive.read(entry)
            count = len(data) // 4
            if count < 768:
                continue
            width = 768 if count % 768 == 0 else 1024
            return torch.frombuffer(bytearray(data[: count * 4]), dtype=torch.float32).reshape(-1, width).clone()
    return None


def _bundled(data: Mapping[str, Any], suffix: str) -> Tensor | None:
    parts = [v for k, v in data.items() if k.startswith("bundle_emb.") and k.endswith(suffix)]
    return torch.cat(parts, dim=0) if parts else None


def _pick_vectors(data: Any, size: int, key: str | None) -> Tensor | None:
    if isinstance(data, list):
        rows = [t.reshape(-1, t.shape[-1]) for item in data for t in item.values() if t.shape[-1] == size]
        return torch.cat(rows, dim=0) if rows else None
    if not isinstance(data, Mapping) or not data:
        return None
    if "string_to_param" in data:
        return next(iter(data["string_to_param"].values()))
    if key is not None and key in data:
        return data[key]
    found = _bundled(data, ".string_to_param.*")
    if found is None and key is not None:
        found = _bundled(data, "." + key)
    if found is None:
        found = next(iter(data.values()))
    return found if isinstance(found, Tensor) else None


# ---------------------------------------------------------------------------------------------
# Weighted, chunked tokenization


class ClipTokenizer:
    """One text encoder's tokenizer (ComfyUI's SDTokenizer).

    `tokenize_with_weights(text)` returns chunks of `max_length` (token, weight) pairs, or
    (token, weight, word_id) triples with return_word_ids: start token, up to 75 prompt tokens,
    end token, then padding (the end token for CLIP-L, 0 for the OpenCLIP encoders). Word ids
    number the prompt's segments and embeddings from 1; special tokens and padding have 0.
    """

    def __init__(
        self,
        *,
        max_length: int = 77,
        pad_with_end: bool = True,
        embeddings: EmbeddingLibrary | None = None,
        embedding_size: int = 768,
        embedding_key: str | None = "clip_l",
        min_length: int | None = None,
        pad_to_max_length: bool = True,
        bpe: ClipBPE | None = None,
    ) -> None:
        self.bpe = bpe if bpe is not None else clip_bpe()
        self.max_length = max_length
        self.min_length = min_length
        self.pad_to_max_length = pad_to_max_length
        self.start_token = START_TOKEN
        self.end_token = END_TOKEN
        self.pad_token = END_TOKEN if pad_with_end else 0
        self.embeddings = embeddings
        self.embedding_size = embedding_size
        self.embedding_key = embedding_key

    def _embedding(self, word: str) -> tuple[Tensor | None, str]:
        """(vectors or None, text left over) for a word that starts with "embedding:"."""
        name, leftover = split_embedding_name(word)
        library = self.embeddings
        if library is None or not name:
            return None, leftover
        vectors = library.load(name, self.embedding_size, self.embedding_key)
        if vectors is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):  # "embedding:name," - a comma glued to the name
                vectors = library.load(stripped, self.embedding_size, self.embedding_key)
                return vectors, f"{name[len(stripped) :]} {leftover}"
        return vectors, leftover

    def token_groups(self, text: str) -> list[list[tuple[Token, float]]]:
        """The prompt as groups of weighted tokens: one per weighted segment or embedding."""
        groups: list[list[tuple[Token, float]]] = []
        for segment, weight in parse_prompt(text):
            for word in split_embeddings(segment):
                if word.startswith(EMBEDDING_PREFIX) and self.embeddings is not None:
                    vectors, leftover = self._embedding(word)
                    if vectors is None:
                        log.warning("embedding '%s' not found; ignoring it", split_embedding_name(word)[0])
                    elif vectors.ndim == 1:
                        groups.append([(vectors, weight)])
                    else:
                        groups.append([(vectors[k], weight) for k in range(vectors.shape[0])])
                    if not leftover:
                        continue
                    word = leftover
                groups.append([(t, weight) for t in self.bpe.encode(word)])
        return groups

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False) -> list[list[tuple]]:
        """Chunks of `max_length` tokens (see the class docstring)."""
        room = self.max_length - 1  # every chunk ends with the end token
        batch: list[tuple[Token, float, int]] = [(self.start_token, 1.0, 0)]
        chunks = [batch]
        for word_id, group in enumerate(self.token_groups(text), start=1):
            cut_allowed = len(group) >= MAX_WORD_LENGTH
            while group:
                if len(batch) + len(group) <= room:
                    batch.extend((t, w, word_id) for t, w in group)
                    break
                remaining = room - len(batch)
                if cut_allowed:  # long groups fill this chunk and continue in the next
                    batch.extend((t, w, word_id) for t, w in group[:remaining])
                    batch.append((self.end_token, 1.0, 0))
                    group = group[remaining:]
                else:  # short groups move whole to the next chunk
                    batch.append((self.end_token, 1.0, 0))
                    if self.pad_to_max_length:
                        batch.extend([(self.pad_token, 1.0, 0)] * remaining)
                batch = [(self.start_token, 1.0, 0)]
                chunks.append(batch)
        batch.append((self.end_token, 1.0, 0))
        if self.pad_to_max_length:
            batch.extend([(self.pad_token, 1.0, 0)] * (self.max_length - len(batch)))
        if self.min_length is not None and len(batch) < self.min_length:
            batch.extend([(self.pad_token, 1.0, 0)] * (self.min_length - len(batch)))
        if return_word_ids:
            return chunks
        return [[(t, w) for t, w, _ in chunk] for chunk in chunks]

    def untokenize(self, pairs: Sequence[tuple]) -> list[tuple[tuple, str]]:
        """Each pair with the text of its token ("<embedding>" for vectors)."""
        return [(p, "<embedding>" if isinstance(p[0], Tensor) else self.bpe.decoder[int(p[0])]) for p in pairs]


def encoder_key(config: TextEncoderConfig) -> str:
    """The token-dict key of an encoder: "clip_l" -> "l", "clip_g" -> "g" (ComfyUI's keys)."""
    return config.name[len("clip_") :] if config.name.startswith("clip_") else config.name


class PromptTokenizer:
    """A family's tokenizers by key: tokenize_with_weights -> {"l": chunks, "g": chunks, ...}."""

    def __init__(self, parts: Mapping[str, ClipTokenizer]) -> None:
        if not parts:
            raise ValueError("PromptTokenizer needs at least one ClipTokenizer")
        self.parts = dict(parts)

    @classmethod
    def for_encoders(
        cls, configs: Sequence[TextEncoderConfig], embedding_folders: Iterable[Path | str] | None = None
    ) -> PromptTokenizer:
        """One ClipTokenizer per text encoder config (padding, width, embedding key from it).

        With embedding_folders None, "embedding:name" is plain text; with a list (even an empty
        one, as in the app) it names a textual inversion and is dropped with a warning if missing.
        """
        library = EmbeddingLibrary(embedding_folders) if embedding_folders is not None else None
        return cls(
            {
                encoder_key(c): ClipTokenizer(
                    max_length=c.max_positions,
                    pad_with_end=c.pad_with_end,
                    embeddings=library,
                    embedding_size=c.hidden_size,
                    embedding_key=c.name,
                )
                for c in configs
            }
        )

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False) -> dict[str, list[list[tuple]]]:
        return {key: tok.tokenize_with_weights(text, return_word_ids) for key, tok in self.parts.items()}

    def untokenize(self, pairs: Sequence[tuple]) -> list[tuple[tuple, str]]:
        return next(iter(self.parts.values())).untokenize(pairs)
