"""ComfyUI's prompt syntax: `(text)` / `(text:1.3)` weights, `\\(` `\\)` escapes, `embedding:name`.

Behaviour follows ComfyUI's comfy/sd1_clip.py (spec §7.8), including its quirks, because a prompt
must weigh the same here as there:
- `(text)` multiplies the surrounding weight by 1.1 and nests: `((a))` is 1.21.
- `(text:w)` REPLACES the weight with w (it does not multiply the outer one): `((a:1.5))` is 1.5.
  The number is whatever follows the last `:` inside the group and must parse as a Python float;
  otherwise the group keeps its x1.1 and the colon stays part of the text.
- Square brackets mean nothing (no de-emphasis): `[a]` is the text "[a]" with the outer weight.
- Unbalanced parentheses stay literal text; `()` produces nothing.
- `\\(` and `\\)` are literal parentheses (the backslash is dropped).

Pure string code (no torch): the tokenizer turns the segments into token ids.
"""

from __future__ import annotations

import re

EMBEDDING_PREFIX = "embedding:"
GROUP_WEIGHT = 1.1
"""Factor of an unnumbered `(...)` group."""

# Escaped parentheses are swapped for private-use characters while the groups are parsed, so they
# can never open or close a group, then swapped back.
_ESC_OPEN = "\ue000"
_ESC_CLOSE = "\ue001"


def escape_important(text: str) -> str:
    """Hide `\\(` and `\\)` from the group parser."""
    return text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)


def unescape_important(text: str) -> str:
    """Turn hidden escapes back into plain parentheses."""
    return text.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "(")


def parse_parentheses(text: str) -> list[str]:
    """Split `text` into top-level pieces: plain runs and whole `(...)` groups (with their parens).

    A `)` with no open group drives the depth negative; until the depth is back at zero, every
    character (parentheses included) is plain text, exactly as ComfyUI's scanner behaves.
    """
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    pieces.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _group_weight(inner: str, outer: float) -> tuple[str, float]:
    """The text and weight of one `(inner)` group inside a span of weight `outer`."""
    weight = outer * GROUP_WEIGHT
    colon = inner.rfind(":")
    if colon > 0:
        try:
            return inner[:colon], float(inner[colon + 1 :])
        except ValueError:
            pass
    return inner, weight


def token_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """(segment, weight) pairs in prompt order; text must already be escaped.

    Iterative (explicit stack, depth-first, left to right) so that pathological nesting cannot
    exhaust Python's recursion limit.
    """
    out: list[tuple[str, float]] = []
    # Stack items: ("span", text, weight) to split, or ("piece", text, weight) to emit or open.
    stack: list[tuple[str, str, float]] = [("span", text, weight)]
    while stack:
        kind, piece, piece_weight = stack.pop()
        if kind == "span":
            stack.extend(("piece", p, piece_weight) for p in reversed(parse_parentheses(piece)))
        elif len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = _group_weight(piece[1:-1], piece_weight)
            stack.append(("span", inner, inner_weight))
        else:
            out.append((piece, piece_weight))
    return out


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Weighted segments of a prompt, escapes resolved: "a (b:1.2)" -> [("a ", 1.0), ("b", 1.2)]."""
    return [(unescape_important(segment), weight) for segment, weight in token_weights(escape_important(text))]


_EMBEDDING_SPLIT = re.compile("[ \n]" + re.escape(EMBEDDING_PREFIX))


def split_embeddings(segment: str) -> list[str]:
    """Cut a segment before every ` embedding:` / `\\nembedding:`; drop empty parts.

    Parts after the first start with "embedding:"; the first does only if the segment did. The
    text after an embedding name stays in the same part (the tokenizer splits it off).
    """
    parts = _EMBEDDING_SPLIT.split(segment)
    words = parts[:1] + [EMBEDDING_PREFIX + part for part in parts[1:]]
    return [word for word in words if word]


def split_embedding_name(word: str) -> tuple[str, str]:
    """("name", "leftover text") for a word that starts with "embedding:".

    The name ends at the first whitespace; the rest is re-joined with single spaces, as ComfyUI does.
    """
    rest = word[len(EMBEDDING_PREFIX) :].strip("\n")
    fields = rest.split()
    if not fields:
        return "", ""
    return fields[0], " ".join(fields[1:])
