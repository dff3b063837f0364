"""CLIP text encoders and ComfyUI's prompt conditioning (comfy/sd1_clip.py, sdxl_clip.py, sd2_clip.py).

Three layers:
- `ClipTextEncoder`: transformers' CLIPTextModel configured locally (never from a hub), with an
  optional bias-free `text_projection`. Its state dict is transformers' layout (`text_model.*`,
  `text_projection.weight`); open_clip checkpoints are converted at load (clip_convert.py).
  Weights may be stored in any float dtype; the forward computes in `compute_dtype` (float32, as
  ComfyUI always runs CLIP) by casting them on the fly.
- `SDClipModel`: one encoder with ComfyUI's options: which layer ("last", "penultimate" or an
  index, CLIPSetLastLayer's negative numbers), whether the final layer norm also applies to an
  intermediate layer, the pooled output, textual-inversion vectors, and the prompt weighting
  z = (z - z_empty) * w + z_empty.
- `TextEncoders`: a family's encoders by key ("l"; "h"; "l" + "g"; "g"): encodes a token dict from
  PromptTokenizer, concatenating the encoders' outputs along features (SDXL: 768 + 1280 = 2048)
  and taking the pooled output from the last encoder (SDXL: clip_g).
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.errors import ModelError
from diffusion.clip_convert import is_open_clip, open_clip_to_hf
from diffusion.configs import TextEncoderConfig
from diffusion.tokenizer import END_TOKEN, START_TOKEN, Token, encoder_key

if TYPE_CHECKING:
    from transformers import CLIPTextConfig

log = logging.getLogger(__name__)

LayerChoice = str | int
""""last", "penultimate", or a layer index (negative counts from the end: -1 = last layer)."""


def clip_text_config(config: TextEncoderConfig) -> CLIPTextConfig:
    """transformers' config for one of our text encoder configs (built locally, no hub)."""
    from transformers import CLIPTextConfig  # imported on first use: it costs seconds at startup

    return CLIPTextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        projection_dim=config.projection_dim or config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        attention_dropout=0.0,
        bos_token_id=START_TOKEN,
        eos_token_id=END_TOKEN,  # not the legacy 2: the pooled token is the first end token
        pad_token_id=1,
        attn_implementation="sdpa",
    )


@dataclass(frozen=True)
class ClipOutput:
    """One forward pass. `last` has the final layer norm; `hidden` is the requested intermediate
    layer (None when none was asked); `pooled` is `last` at each row's first end token and
    `projected` that through text_projection (== pooled without a projection)."""

    last: Tensor
    hidden: Tensor | None
    pooled: Tensor
    projected: Tensor


class ClipTextEncoder(nn.Module):
    """A CLIP text transformer with transformers' weights layout (see the module docstring)."""

    def __init__(
        self,
        config: TextEncoderConfig,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        empty: bool = False,
        compute_dtype: torch.dtype | None = torch.float32,
    ) -> None:
        """empty=True skips the random init (weights come from a checkpoint next; much faster)."""
        from transformers import CLIPTextModel

        super().__init__()
        self.config = config
        self.compute_dtype = compute_dtype
        with torch.device("meta") if empty else contextlib.nullcontext():
            model = CLIPTextModel(clip_text_config(config))
            projection = (
                nn.Linear(config.hidden_size, config.projection_dim, bias=False) if config.projection_dim else None
            )
        # transformers 4.x nests the transformer under `.text_model`; 5.x is it. Holding the inner
        # module keeps the keys `text_model.*` with either.
        self.text_model = getattr(model, "text_model", model)
        self.text_projection = projection
        if empty:
            if dtype is not None:
                self.to(dtype=dtype)  # still on meta: costs nothing
            self.to_empty(device=device or "cpu")
            positions = self.text_model.embeddings.position_ids
            positions.copy_(torch.arange(positions.shape[-1], device=positions.device).expand_as(positions))
        elif dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)
        self.requires_grad_(False)
        self.eval()

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @classmethod
    def from_state_dict(
        cls,
        config: TextEncoderConfig,
        state_dict: Mapping[str, Tensor],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> ClipTextEncoder:
        """Build without random init and load `state_dict` (hf or open_clip layout), strictly."""
        encoder = cls(config, dtype=dtype, device=device, empty=True)
        encoder.load_weights(state_dict)
        return encoder

    def prepare_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Bring a prefix-stripped checkpoint state dict into this module's key layout."""
        sd = open_clip_to_hf(state_dict) if is_open_clip(state_dict) else dict(state_dict)
        bare = ("embeddings.", "encoder.", "final_layer_norm.")
        sd = {("text_model." + k if k.startswith(bare) else k): v for k, v in sd.items()}
        sd.pop("text_model.embeddings.position_ids", None)  # a buffer some checkpoints carry
        if self.text_projection is None and sd.pop("text_projection.weight", None) is not None:
            log.debug("%s: ignoring text_projection.weight (config has no projection)", self.config.name)
        return sd

    def load_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load strictly; ModelError names the missing, unexpected or misshapen keys."""
        sd = self.prepare_state_dict(state_dict)
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
        if missing or unexpected or wrong:
            details = [
                f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if keys
            ]
            raise ModelError(f"text encoder {self.config.name}: weights do not fit; " + "; ".join(details))
        self.load_state_dict(sd, strict=True)

    def _weights_need_cast(self) -> bool:
        return self.compute_dtype is not None and any(p.dtype != self.compute_dtype for p in self.parameters())

    def _run_transformer(self, tokens: Tensor) -> object:
        kwargs = {"input_ids": tokens, "output_hidden_states": True}
        if not self._weights_need_cast():
            return self.text_model(**kwargs)
        cast = {name: p.to(self.compute_dtype) for name, p in self.text_model.named_parameters()}
        return torch.func.functional_call(self.text_model, cast, args=(), kwargs=kwargs)

    def _final_norm(self, x: Tensor) -> Tensor:
        norm = self.text_model.final_layer_norm
        return F.layer_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.bias.to(x.dtype), norm.eps)

    @contextlib.contextmanager
    def _injected(self, vectors: Sequence[tuple[int, int, Tensor]]) -> Iterator[None]:
        """Replace token embeddings at (row, position) by textual-inversion vectors."""
        if not vectors:
            yield
            return

        def inject(_module: nn.Module, _args: object, output: Tensor) -> Tensor:
            output = output.clone()
            for row, position, vector in vectors:
                output[row, position] = vector.to(device=output.device, dtype=output.dtype)
            return output

        handle = self.text_model.embeddings.token_embedding.register_forward_hook(inject)
        try:
            yield
        finally:
            handle.remove()

    def forward(
        self,
        tokens: Tensor,
        *,
        layer_idx: int | None = None,
        norm_hidden: bool = True,
        vectors: Sequence[tuple[int, int, Tensor]] = (),
    ) -> ClipOutput:
        """Encode token ids [B, N] (N <= max_positions).

        layer_idx selects an intermediate output (0-based, negative from the end, -1 = the last
        layer before the final norm); norm_hidden applies the final layer norm to it. `vectors`
        are (row, position, embedding) injections; their token ids are ignored.
        """
        if layer_idx is not None and not -self.num_layers <= layer_idx < self.num_layers:
            raise ValueError(f"{self.config.name}: layer {layer_idx} out of range for {self.num_layers} layers")
        # ComfyUI writes the vectors into its (storage dtype) embedding table first: round alike
        storage = self.text_model.embeddings.token_embedding.weight.dtype
        vectors = [(row, position, vector.to(storage)) for row, position, vector in vectors]
        with self._injected(vectors):
            out = self._run_transformer(tokens)
        last = out.last_hidden_state
        hidden = None
        if layer_idx is not None:
            # hidden_states[0] is the embedding output, [k + 1] the output of layer k
            hidden = out.hidden_states[layer_idx % self.num_layers + 1]
            if norm_hidden:
                hidden = self._final_norm(hidden)
        first_end = (tokens == END_TOKEN).int().argmax(dim=-1)
        pooled = last[torch.arange(last.shape[0], device=last.device), first_end]
        projected = pooled
        if self.text_projection is not None:
            projected = F.linear(pooled, self.text_projection.weight.to(pooled.dtype))
        return ClipOutput(last=last, hidden=hidden, pooled=pooled, projected=projected)


def empty_tokens(length: int, pad_token: int) -> list[int]:
    """The empty prompt: start, end, then padding to `length` (ComfyUI's gen_empty_tokens)."""
    return ([START_TOKEN, END_TOKEN] + [pad_token] * max(0, length - 2))[:length]


class SDClipModel(nn.Module):
    """One text encoder with ComfyUI's layer options and prompt weighting.

    Layer options (ComfyUI's set_clip_options / reset_clip_options): "last" is the final output
    with the final layer norm; an index takes that layer's output (with the final norm only when
    `layer_norm_hidden_state`); an index beyond the model falls back to "last"; "penultimate" is -2.
    """

    def __init__(
        self,
        transformer: ClipTextEncoder,
        *,
        layer: LayerChoice = "last",
        layer_norm_hidden_state: bool = True,
        pad_token: int = END_TOKEN,
        return_projected_pooled: bool = True,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.layer_norm_hidden_state = layer_norm_hidden_state
        self.pad_token = pad_token
        self.return_projected_pooled = return_projected_pooled
        self.layer_idx: int | None = None
        self._set_layer(layer)
        self._defaults = (self.layer_idx, self.return_projected_pooled)

    @classmethod
    def from_config(cls, transformer: ClipTextEncoder) -> SDClipModel:
        """Defaults of the encoder's family, read from its TextEncoderConfig."""
        config = transformer.config
        return cls(
            transformer,
            layer="penultimate" if config.penultimate else "last",
            layer_norm_hidden_state=config.hidden_final_norm,
            pad_token=END_TOKEN if config.pad_with_end else 0,
        )

    @property
    def num_layers(self) -> int:
        return self.transformer.num_layers

    def _set_layer(self, layer: LayerChoice | None) -> None:
        if layer == "penultimate":
            layer = -2
        if layer is None or layer == "last":
            self.layer_idx = None
        elif isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
            # ComfyUI: an index past the model (e.g. clip skip -24 on a 12-layer CLIP) means "last"
            self.layer_idx = None if abs(int(layer)) > self.num_layers else int(layer)
        else:
            raise ValueError(f"unknown CLIP layer {layer!r}: use 'last', 'penultimate' or an integer index")

    @property
    def layer(self) -> LayerChoice:
        return "last" if self.layer_idx is None else self.layer_idx

    def set_clip_options(self, options: Mapping[str, object]) -> None:
        """{"layer": index} (CLIPSetLastLayer) and/or {"projected_pooled": bool}."""
        if "layer" in options:
            self._set_layer(options["layer"])  # type: ignore[arg-type]
        if "projected_pooled" in options:
            self.return_projected_pooled = bool(options["projected_pooled"])

    def reset_clip_options(self) -> None:
        self.layer_idx, self.return_projected_pooled = self._defaults

    def _rows_to_tensor(self, rows: Sequence[Sequence[Token]]) -> tuple[Tensor, list[tuple[int, int, Tensor]]]:
        """Token ids plus textual-inversion injections. A vector of the wrong width is dropped
        with a warning and the row padded at the end, as ComfyUI does."""
        width = self.transformer.config.hidden_size
        ids: list[list[int]] = []
        vectors: list[tuple[int, int, Tensor]] = []
        for r, row in enumerate(rows):
            out: list[int] = []
            for token in row:
                if isinstance(token, Tensor):
                    if token.shape[-1] != width or token.ndim != 1:
                        log.warning(
                            "embedding of width %d does not fit this %d-wide encoder; ignored", token.shape[-1], width
                        )
                        continue
                    vectors.append((r, len(out), token))
                    out.append(0)  # placeholder id; its embedding is replaced
                else:
                    out.append(int(token))
            out.extend([self.pad_token] * (len(row) - len(out)))
            ids.append(out)
        device = self.transformer.text_model.embeddings.token_embedding.weight.device
        return torch.tensor(ids, dtype=torch.long, device=device), vectors

    @torch.no_grad()
    def encode(self, rows: Sequence[Sequence[Token]]) -> tuple[Tensor, Tensor]:
        """(z [B, N, D], pooled [B, P]) in float32 for rows of tokens, with the current options."""
        tokens, vectors = self._rows_to_tensor(rows)
        out = self.transformer(
            tokens, layer_idx=self.layer_idx, norm_hidden=self.layer_norm_hidden_state, vectors=vectors
        )
        z = out.last if out.hidden is None else out.hidden
        pooled = out.projected if self.return_projected_pooled else out.pooled
        return z.float(), pooled.float()

    def encode_token_weights(self, chunks: Sequence[Sequence[tuple]]) -> tuple[Tensor, Tensor]:
        """(cond [1, sum of chunk lengths, D], pooled [1, P]) for the chunks of one prompt.

        All chunks (plus the empty prompt when any weight is not 1) run as one batch. Tokens with
        weight w != 1 become z_empty + (z - z_empty) * w, z_empty being the empty prompt's output
        at the same position. Chunks are joined along tokens; pooled comes from the first chunk.
        """
        rows = [[pair[0] for pair in chunk] for chunk in chunks]
        weights = [[float(pair[1]) for pair in chunk] for chunk in chunks]
        weighted = any(w != 1.0 for row in weights for w in row)
        longest = max((len(r) for r in rows), default=0)
        if weighted or not rows:
            rows.append(empty_tokens(longest or self.transformer.config.max_positions, self.pad_token))
        z, pooled = self.encode(rows)
        first_pooled = pooled[0:1]
        sections = len(chunks)
        if sections == 0:
            return z[-1:], first_pooled
        out = z[:sections]
        if weighted:
            w = torch.ones(out.shape[:2], dtype=out.dtype, device=out.device)
            for k, row in enumerate(weights):
                w[k, : len(row)] = torch.tensor(row, dtype=out.dtype)
            w = w.unsqueeze(-1)
            empty = z[-1:]
            out = torch.where(w != 1.0, (out - empty) * w + empty, out)
        return out.reshape(1, -1, out.shape[-1]), first_pooled


class TextEncoders(nn.Module):
    """A family's text encoders by key, e.g. {"l": SDClipModel} or {"l": ..., "g": ...}.

    Submodules are named `clip_<key>` so the state dict reads like ComfyUI's
    (`clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight`), which LoRA key maps use.
    """

    def __init__(self, parts: Mapping[str, SDClipModel], *, pooled_from: str | None = None) -> None:
        super().__init__()
        if not parts:
            raise ValueError("TextEncoders needs at least one encoder")
        self.keys_in_order = list(parts)
        for key, part in parts.items():
            self.add_module(f"clip_{key}", part)
        self.pooled_from = pooled_from or self.keys_in_order[-1]
        if self.pooled_from not in parts:
            raise ValueError(f"pooled_from {self.pooled_from!r} is not one of {self.keys_in_order}")

    @classmethod
    def from_configs(
        cls,
        configs: Sequence[TextEncoderConfig],
        state_dicts: Mapping[str, Mapping[str, Tensor]] | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TextEncoders:
        """Build the encoders (in config order); with state_dicts (by config name, "clip_l"...,
        prefix-stripped, hf or open_clip layout) load each strictly, else init randomly."""
        parts: dict[str, SDClipModel] = {}
        for config in configs:
            if state_dicts is None:
                encoder = ClipTextEncoder(config, dtype=dtype, device=device)
            elif config.name not in state_dicts:
                raise ModelError(f"no weights for text encoder {config.name}; have {sorted(state_dicts)}")
            else:
                encoder = ClipTextEncoder.from_state_dict(config, state_dicts[config.name], dtype=dtype, device=device)
            parts[encoder_key(config)] = SDClipModel.from_config(encoder)
        return cls(parts)

    def part(self, key: str) -> SDClipModel:
        if key not in self.keys_in_order:
            raise KeyError(f"no text encoder {key!r}; have {self.keys_in_order}")
        return getattr(self, f"clip_{key}")

    def parts(self) -> list[tuple[str, SDClipModel]]:
        return [(key, self.part(key)) for key in self.keys_in_order]

    def set_clip_options(self, options: Mapping[str, object]) -> None:
        for _, part in self.parts():
            part.set_clip_options(options)

    def reset_clip_options(self) -> None:
        for _, part in self.parts():
            part.reset_clip_options()

    def encode_token_weights(self, tokens: Mapping[str, Sequence[Sequence[tuple]]]) -> tuple[Tensor, Tensor]:
        """(cond [1, T, sum of widths], pooled [1, P]) for a PromptTokenizer result.

        Outputs are joined along features in encoder order, cut to the shortest token count
        (ComfyUI's SDXL rule); pooled comes from `pooled_from`.
        """
        missing = [key for key in self.keys_in_order if key not in tokens]
        if missing:
            raise ValueError(f"token dict lacks {missing}; has {sorted(tokens)}")
        outputs = {key: part.encode_token_weights(tokens[key]) for key, part in self.parts()}
        conds = [outputs[key][0] for key in self.keys_in_order]
        length = min(c.shape[1] for c in conds)
        cond = torch.cat([c[:, :length] for c in conds], dim=-1) if len(conds) > 1 else conds[0]
        return cond, outputs[self.pooled_from][1]
