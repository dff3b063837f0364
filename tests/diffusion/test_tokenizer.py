"""CLIP BPE ids, ComfyUI prompt weighting, 77-token chunking and textual-inversion embeddings."""

from __future__ import annotations

import gzip
import logging

import pytest
import torch
from safetensors.torch import save_file

from diffusion.configs import TextEncoderConfig
from diffusion.prompt import parse_parentheses, parse_prompt, split_embeddings
from diffusion.tokenizer import (
    END_TOKEN,
    START_TOKEN,
    ClipTokenizer,
    EmbeddingLibrary,
    PromptTokenizer,
    clip_bpe,
    encoder_key,
    pre_tokenize,
    vocab_path,
)

ASTRONAUT = "a photograph of an astronaut riding a horse"


@pytest.fixture(scope="module")
def bpe():
    return clip_bpe()


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


# --- BPE ids -----------------------------------------------------------------------------------


def test_vocab_is_clips_49408_entries_with_special_ids(bpe):
    assert bpe.vocab_size == 49408
    assert bpe.encoder["<|startoftext|>"] == START_TOKEN == 49406
    assert bpe.encoder["<|endoftext|>"] == END_TOKEN == 49407
    # the vocabulary is built from the merges file: its first merge is the first multi-char token
    with gzip.open(vocab_path(), "rt", encoding="utf-8") as f:
        f.readline()
        first_merge = f.readline().split()
    assert bpe.encoder["".join(first_merge)] == 512


def test_known_prompt_ids(bpe, tok):
    # Every word of this prompt is one whole-word vocabulary entry ("word</w>").
    words = ASTRONAUT.split()
    expected_words = [bpe.encoder[w + "</w>"] for w in words]
    assert expected_words == [320, 8853, 539, 550, 18376, 6765, 320, 4558]
    assert bpe.encode(ASTRONAUT) == expected_words
    chunks = tok.tokenize_with_weights(ASTRONAUT)
    assert len(chunks) == 1 and len(chunks[0]) == 77
    ids = [t for t, _ in chunks[0]]
    assert ids[:10] == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert ids[10:] == [49407] * 67  # CLIP-L pads with the end token
    assert all(w == 1.0 for _, w in chunks[0])


def test_normalisation_lowercase_whitespace_and_punctuation(bpe):
    assert bpe.encode("A  PHOTOGRAPH\n\tof") == bpe.encode("a photograph of")
    assert bpe.encode("hello,world!") == [bpe.encoder["hello</w>"], bpe.encoder[",</w>"]] + bpe.encode("world!")
    # digits are one token each; letters run on; symbols run together
    assert pre_tokenize("abc123!?x") == ["abc", "1", "2", "3", "!?", "x"]
    assert pre_tokenize("it's we'll") == ["it", "'s", "we", "'ll"]


def test_unknown_word_is_split_into_valid_subwords_and_decodes_back(bpe):
    ids = bpe.encode("zxqvbnmelon")
    assert len(ids) > 1
    assert all(0 <= i < 49406 for i in ids)
    assert bpe.decode(ids) == "zxqvbnmelon"
    assert bpe.decode(bpe.encode("Hello, wörld!")) == "hello , wörld !"


TRICKY = [
    ASTRONAUT,
    "Hello, World!! it's 2024 ½ ² Ünïcödé café naïve",
    "ΟΔΟΣ Σίσυφος",
    "日本語のテキスト 漢字",
    "emoji 🎉🔥 test",
    "don't you'll we've I'M",
    "<|endoftext|> x <|startoftext|>",
    "!<|endoftext|>",
    "x <|EndOfText|>y",
    "a\tb\n\nc   d",
    "e\u0301 combining",
    "masterpiece, best quality, 1girl, blue_eyes:1.2",
    "ﬁ ligature ＡＢＣ fullwidth",
    "x\x1cy\x85z\u2028w",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaa",
]


@pytest.mark.parametrize("text", TRICKY)
def test_same_ids_as_transformers_clip_tokenizer(bpe, text):
    transformers = pytest.importorskip("transformers")
    merges = sorted(bpe.ranks, key=bpe.ranks.get)
    try:
        reference = transformers.CLIPTokenizer(vocab=dict(bpe.encoder), merges=merges)
    except TypeError:
        pytest.skip("this transformers version cannot build CLIPTokenizer from in-memory vocab")
    assert bpe.encode(text) == reference(text)["input_ids"][1:-1]


# --- prompt weighting --------------------------------------------------------------------------


def _approx(pairs):
    return [(text, pytest.approx(weight)) for text, weight in pairs]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (cat) sat", [("a ", 1.0), ("cat", 1.1), (" sat", 1.0)]),
        ("((cat))", [("cat", 1.1 * 1.1)]),
        ("(cat:1.5)", [("cat", 1.5)]),
        ("((cat:1.5))", [("cat", 1.5)]),  # an explicit weight replaces, it does not multiply
        ("(a (b:0.5) c:1.2)", [("a ", 1.2), ("b", 0.5), (" c", 1.2)]),
        ("(a (b) c:2)", [("a ", 2.0), ("b", 2.2), (" c", 2.0)]),
        ("(a:b)", [("a:b", 1.1)]),  # not a number: x1.1 and the colon stays
        ("(:1.2)", [(":1.2", 1.1)]),  # a colon at position 0 is not a weight
        ("[cat]", [("[cat]", 1.0)]),  # no [] de-emphasis in ComfyUI
        ("\\(cat\\)", [("(cat)", 1.0)]),
        ("(\\(cat\\):1.2)", [("(cat)", 1.2)]),
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),
        ("a) (b)", [("a) (b)", 1.0)]),
        ("x () y", [("x ", 1.0), (" y", 1.0)]),
        ("(cat: 0.8 )", [("cat", 0.8)]),
    ],
)
def test_parse_prompt(prompt, expected):
    assert parse_prompt(prompt) == _approx(expected)


def test_parse_parentheses_top_level_pieces():
    assert parse_parentheses("a (b (c)) d") == ["a ", "(b (c))", " d"]


def test_deep_nesting_needs_no_recursion():
    depth = 3000  # well past Python's default recursion limit
    assert parse_prompt("(" * depth + "x:2" + ")" * depth) == [("x", 2.0)]
    nested = parse_prompt("(" * 50 + "x" + ")" * 50)
    assert nested == [("x", pytest.approx(1.1**50))]


def test_weighted_tokens_carry_their_weights(bpe, tok):
    chunk = tok.tokenize_with_weights("a (red:1.3) cat")[0]
    assert chunk[:5] == [
        (START_TOKEN, 1.0),
        (bpe.encoder["a</w>"], 1.0),
        (bpe.encoder["red</w>"], pytest.approx(1.3)),
        (bpe.encoder["cat</w>"], 1.0),
        (END_TOKEN, 1.0),
    ]


def test_split_embeddings():
    assert split_embeddings("a embedding:foo b\nembedding:bar") == ["a", "embedding:foo b", "embedding:bar"]
    assert split_embeddings("embedding:foo") == ["embedding:foo"]
    assert split_embeddings("noembedding:foo") == ["noembedding:foo"]


# --- chunking ----------------------------------------------------------------------------------


def _body(chunk):
    """Prompt tokens of a chunk (start/end/padding removed)."""
    return [t for t, _ in chunk[1:] if t not in (END_TOKEN, 0)]


def test_long_prompt_is_cut_at_75_tokens(tok, bpe):
    a = bpe.encoder["a</w>"]
    chunks = tok.tokenize_with_weights(" ".join(["a"] * 100))
    assert [len(c) for c in chunks] == [77, 77]
    assert [t for t, _ in chunks[0]] == [START_TOKEN] + [a] * 75 + [END_TOKEN]
    assert [t for t, _ in chunks[1]] == [START_TOKEN] + [a] * 25 + [END_TOKEN] * 51


@pytest.mark.parametrize(("count", "chunks"), [(75, 1), (76, 2), (150, 2), (151, 3)])
def test_chunk_count(tok, count, chunks):
    assert len(tok.tokenize_with_weights(" ".join(["a"] * count))) == chunks


def test_short_group_moves_whole_to_the_next_chunk(tok, bpe):
    a, x = bpe.encoder["a</w>"], bpe.encoder["x</w>"]
    chunks = tok.tokenize_with_weights(" ".join(["a"] * 74) + " (x x x:1.2)")
    assert [t for t, _ in chunks[0]] == [START_TOKEN] + [a] * 74 + [END_TOKEN, END_TOKEN]
    assert [t for t, _ in chunks[1][:5]] == [START_TOKEN, x, x, x, END_TOKEN]
    assert [w for _, w in chunks[1][1:4]] == [pytest.approx(1.2)] * 3


def test_long_weighted_group_is_cut_across_chunks(tok, bpe):
    a, x = bpe.encoder["a</w>"], bpe.encoder["x</w>"]
    chunks = tok.tokenize_with_weights(" ".join(["a"] * 70) + " (" + " ".join(["x"] * 10) + ":0.5)")
    assert _body(chunks[0]) == [a] * 70 + [x] * 5
    assert _body(chunks[1]) == [x] * 5
    assert [w for _, w in chunks[1][1:6]] == [0.5] * 5


def test_word_ids_number_segments(tok):
    chunk = tok.tokenize_with_weights("a (b:1.2) c", return_word_ids=True)[0]
    assert [word for _, _, word in chunk[:5]] == [0, 1, 2, 3, 0]
    assert all(word == 0 for _, _, word in chunk[5:])


def test_openclip_pads_with_zero_and_sdxl_gives_both_keys(bpe):
    configs = [
        TextEncoderConfig(name="clip_l"),
        TextEncoderConfig(name="clip_g", hidden_size=1280, pad_with_end=False, layout="open_clip"),
    ]
    assert [encoder_key(c) for c in configs] == ["l", "g"]
    tokens = PromptTokenizer.for_encoders(configs).tokenize_with_weights(ASTRONAUT)
    assert set(tokens) == {"l", "g"}
    ids_l = [t for t, _ in tokens["l"][0]]
    ids_g = [t for t, _ in tokens["g"][0]]
    assert ids_l[:10] == ids_g[:10]
    assert ids_l[10:] == [END_TOKEN] * 67
    assert ids_g[10:] == [0] * 67


def test_empty_prompt(tok):
    chunks = tok.tokenize_with_weights("")
    assert [t for t, _ in chunks[0][:3]] == [START_TOKEN, END_TOKEN, END_TOKEN]
    assert len(chunks) == 1 and len(chunks[0]) == 77


# --- textual-inversion embeddings --------------------------------------------------------------


@pytest.fixture
def embedding_dir(tmp_path):
    gen = torch.Generator("cpu").manual_seed(0)
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 768, generator=gen)}, str(folder / "two.safetensors"))
    torch.save({"string_to_param": {"*": torch.randn(3, 768, generator=gen)}, "name": "a1111"}, folder / "a1111.pt")
    save_file(
        {"clip_l": torch.randn(2, 768, generator=gen), "clip_g": torch.randn(2, 1280, generator=gen)},
        str(folder / "sub" / "xl.safetensors"),
    )
    (tmp_path / "secret.safetensors").write_bytes(b"not here")
    return folder


def _vectors(chunk):
    return [(i, t) for i, (t, _) in enumerate(chunk) if isinstance(t, torch.Tensor)]


def test_embedding_vectors_replace_the_name(embedding_dir, bpe):
    library = EmbeddingLibrary([embedding_dir])
    tok = ClipTokenizer(embeddings=library)
    stored = library.load("two", 768, "clip_l")
    chunk = tok.tokenize_with_weights("a embedding:two cat")[0]
    found = _vectors(chunk)
    assert [i for i, _ in found] == [2, 3]
    assert torch.equal(found[0][1], stored[0]) and torch.equal(found[1][1], stored[1])
    assert chunk[1][0] == bpe.encoder["a</w>"] and chunk[4][0] == bpe.encoder["cat</w>"]


def test_embedding_formats_weights_and_trailing_comma(embedding_dir, bpe):
    tok = ClipTokenizer(embeddings=EmbeddingLibrary([embedding_dir]))
    chunk = tok.tokenize_with_weights("(embedding:a1111.pt:1.3) x embedding:two, y")[0]
    vectors = _vectors(chunk)
    assert len(vectors) == 5  # 3 from the .pt file, 2 from "two"
    assert [chunk[i][1] for i, _ in vectors[:3]] == [pytest.approx(1.3)] * 3
    # the comma glued to "two," is kept as text after the vectors
    assert chunk[vectors[-1][0] + 1][0] == bpe.encoder[",</w>"]


def test_sdxl_embedding_file_gives_each_encoder_its_own_vectors(embedding_dir):
    configs = [
        TextEncoderConfig(name="clip_l"),
        TextEncoderConfig(name="clip_g", hidden_size=1280, pad_with_end=False),
    ]
    tokens = PromptTokenizer.for_encoders(configs, [embedding_dir]).tokenize_with_weights("embedding:xl")
    widths = {key: [t.shape[0] for t, _ in chunks[0] if isinstance(t, torch.Tensor)] for key, chunks in tokens.items()}
    assert widths == {"l": [768, 768], "g": [1280, 1280]}


def test_missing_or_escaping_embedding_is_dropped(embedding_dir, bpe, caplog):
    tok = ClipTokenizer(embeddings=EmbeddingLibrary([embedding_dir]))
    with caplog.at_level(logging.WARNING):
        chunk = tok.tokenize_with_weights("a embedding:nothere embedding:../secret b")[0]
    assert [t for t, _ in chunk[:4]] == [START_TOKEN, bpe.encoder["a</w>"], bpe.encoder["b</w>"], END_TOKEN]
    assert "nothere" in caplog.text


def test_without_a_library_embedding_syntax_is_plain_text(bpe):
    chunk = ClipTokenizer().tokenize_with_weights("embedding:two")[0]
    assert [t for t, _ in chunk[1:-1] if t != END_TOKEN] == bpe.encode("embedding:two")
