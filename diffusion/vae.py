"""The KL-f8 autoencoder (LDM `AutoencoderKL`) in the original checkpoint key layout, plus tiling.

`AutoencoderKL(config).state_dict()` has exactly the keys under `first_stage_model.` (prefix
stripped): encoder.*, decoder.*, quant_conv, post_quant_conv. Pixels are in -1..1 here; the
0..1 <-> -1..1 mapping and the latent scale factor (0.18215 / 0.13025) belong to the VAE handle
and the family, not to the network.

`encode` returns the posterior's mean (the mode), as ComfyUI does: no sampling, no randomness.
`encode_tiled` / `decode_tiled` run the network on overlapping tiles and blend them with linear
ramps over the overlaps, for images too large to run in one piece. Like ComfyUI's tiled VAE they
average three tilings by default -- (t, t), (t/2, 2t), (2t, t/2) -- so no seam falls on the same
place twice; `passes=1` runs only the square tiling (3x cheaper, seams slightly more visible).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from core.errors import ModelError
from core.sysmem import available_ram_bytes
from diffusion.attention import attention
from diffusion.configs import VAEConfig
from diffusion.ops import PLAIN, Operations

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as progress(tiles_done, tiles_total) after each tile."""


def _norm(ops: Operations, groups: int, channels: int, kw: dict) -> nn.GroupNorm:
    return ops.GroupNorm(groups, channels, eps=1e-6, affine=True, **kw)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice plus a skip (1x1 `nin_shortcut` when the width changes). No time input."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, ops: Operations, kw: dict) -> None:
        super().__init__()
        self.norm1 = _norm(ops, groups, in_ch, kw)
        self.conv1 = ops.Conv2d(in_ch, out_ch, 3, padding=1, **kw)
        self.norm2 = _norm(ops, groups, out_ch, kw)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = ops.Conv2d(out_ch, out_ch, 3, padding=1, **kw)
        self.nin_shortcut = ops.Conv2d(in_ch, out_ch, 1, **kw) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels; q, k, v, proj_out are 1x1 convolutions."""

    def __init__(self, channels: int, groups: int, ops: Operations, kw: dict) -> None:
        super().__init__()
        self.norm = _norm(ops, groups, channels, kw)
        self.q = ops.Conv2d(channels, channels, 1, **kw)
        self.k = ops.Conv2d(channels, channels, 1, **kw)
        self.v = ops.Conv2d(channels, channels, 1, **kw)
        self.proj_out = ops.Conv2d(channels, channels, 1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        out = attention(q, k, v, heads=1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 3x3 convolution (LDM's asymmetric padding)."""

    def __init__(self, channels: int, ops: Operations, kw: dict) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=0, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 convolution."""

    def __init__(self, channels: int, ops: Operations, kw: dict) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    """block_1, attn_1, block_2 at the lowest resolution (keys mid.block_1 ...)."""

    def __init__(self, channels: int, groups: int, ops: Operations, kw: dict) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, ops, kw)
        self.attn_1 = AttnBlock(channels, groups, ops, kw)
        self.block_2 = ResnetBlock(channels, channels, groups, ops, kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution: `block` (ResnetBlocks) and optionally `downsample` / `upsample`."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # KL-f8 has no attention inside levels; kept for the layout
        if resample is not None:
            self.add_module(name, resample)


class Encoder(nn.Module):
    """(B, 3, H, W) pixels -> (B, 2*z_channels, H/f, W/f) posterior moments (before quant_conv)."""

    def __init__(self, cfg: VAEConfig, ops: Operations, kw: dict) -> None:
        super().__init__()
        groups = cfg.norm_groups
        self.conv_in = ops.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1, **kw)
        self.down = nn.ModuleList()
        ch = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            out_ch = cfg.ch * mult
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(ch, out_ch, groups, ops, kw))
                ch = out_ch
            last = level == len(cfg.ch_mult) - 1
            self.down.append(_Level(blocks, None if last else Downsample(ch, ops, kw), "downsample"))
        self.mid = _Mid(ch, groups, ops, kw)
        self.norm_out = _norm(ops, groups, ch, kw)
        self.conv_out = ops.Conv2d(ch, 2 * cfg.z_channels, 3, padding=1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h*f, w*f) pixels in about -1..1 (not clamped)."""

    def __init__(self, cfg: VAEConfig, ops: Operations, kw: dict) -> None:
        super().__init__()
        groups = cfg.norm_groups
        ch = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = ops.Conv2d(cfg.z_channels, ch, 3, padding=1, **kw)
        self.mid = _Mid(ch, groups, ops, kw)
        levels: list[_Level] = []
        for level in reversed(range(len(cfg.ch_mult))):
            out_ch = cfg.ch * cfg.ch_mult[level]
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(ch, out_ch, groups, ops, kw))
                ch = out_ch
            levels.append(_Level(blocks, Upsample(ch, ops, kw) if level else None, "upsample"))
        # up[i] is resolution level i (as in the checkpoint), built from the lowest resolution up.
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = _norm(ops, groups, ch, kw)
        self.conv_out = ops.Conv2d(ch, cfg.out_channels, 3, padding=1, **kw)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """encode(pixels -1..1) -> latent mean; decode(latent) -> pixels. Latents are unscaled."""

    def __init__(
        self,
        config: VAEConfig,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype: torch.dtype | None = None
        kw = {"dtype": dtype, "device": device}
        self.encoder = Encoder(config, operations, kw)
        self.decoder = Decoder(config, operations, kw)
        self.quant_conv = operations.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1, **kw)
        self.post_quant_conv = operations.Conv2d(config.embed_dim, config.z_channels, 1, **kw)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: `compute_dtype` when set (see UNetModel.dtype), else the weights'."""
        return self.compute_dtype or self.quant_conv.weight.dtype

    @property
    def downscale(self) -> int:
        return self.config.downscale

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) in -1..1 -> (B, embed_dim, H/f, W/f), the posterior mean, in x's dtype."""
        moments = self.quant_conv(self.encoder(x.to(self.dtype)))
        mean, _logvar = moments.chunk(2, dim=1)
        return mean.to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, embed_dim, h, w) -> (B, 3, h*f, w*f) in about -1..1, in z's dtype.

        When the estimated working memory (`decode_bytes`) exceeds what the compute device has
        free (`available_memory`), the batch is decoded one item at a time, and if one item is
        still too large, in square tiles sized to fit (one tiling pass, linear blends over the
        overlaps) -- slower and not bit-identical, but it finishes instead of running out."""
        if id(self) in _tiling():  # a tile of decode_tiled: never split again
            return self._decode(z)
        device = self.quant_conv.weight.device
        free = available_memory(device)
        size = torch.empty((), dtype=self.dtype).element_size()
        per_item = decode_bytes(z.shape[2] * self.downscale, z.shape[3] * self.downscale, size)
        if per_item * z.shape[0] <= free:
            return self._decode(z)
        if per_item <= free:
            return torch.cat([self._decode(z[i : i + 1]) for i in range(z.shape[0])])
        tile = fitting_tile(free, self.downscale, size)
        log.info(
            "VAE decode of %dx%d px needs about %.2f GiB, %.2f GiB free on %s: decoding in %d px tiles",
            z.shape[3] * self.downscale, z.shape[2] * self.downscale, per_item / 2**30, free / 2**30,
            device, tile * self.downscale,
        )  # fmt: skip
        return self.decode_tiled(z, tile=tile, overlap=min(8, tile // 4), passes=1)

    def _decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z.to(self.dtype))).to(z.dtype)

    def encode_tiled(
        self, x: Tensor, tile: int = 512, overlap: int = 64, *, passes: int = 3, progress: Progress | None = None
    ) -> Tensor:
        """Tiled `encode`; tile and overlap in pixels, multiples of the downscale factor f; H and W
        must be multiples of f too (so every tile lands on whole latent pixels). The overlap is
        capped at tile/4 (ComfyUI's node does the same) so the half-size tilings still advance."""
        f = self.downscale
        overlap = min(overlap, tile // 4 // f * f)
        if tile % f or overlap % f or x.shape[2] % f or x.shape[3] % f:
            raise ModelError(
                f"tiled VAE encode needs tile ({tile}), overlap ({overlap}) and image size "
                f"{tuple(x.shape[2:])} to be multiples of {f}"
            )
        return _tiled(self.encode, x, tile, overlap, (1, f), self.config.embed_dim, passes, progress)

    def decode_tiled(
        self, z: Tensor, tile: int = 64, overlap: int = 8, *, passes: int = 3, progress: Progress | None = None
    ) -> Tensor:
        """Tiled `decode`; tile and overlap in latent pixels (ComfyUI's node: 512 px / 8 = 64, 64 px / 8 = 8);
        the overlap is capped at tile/4."""
        overlap = min(overlap, tile // 4)
        active = _tiling()
        active.add(id(self))  # the tiles go through decode() (so wrappers of it see them) undivided
        try:
            return _tiled(
                self.decode, z, tile, overlap, (self.downscale, 1), self.config.out_channels, passes, progress
            )
        finally:
            active.discard(id(self))


# -- memory --------------------------------------------------------------------------------------

DECODE_BYTES_PER_PIXEL = 1100
"""Working memory of a decode per output pixel, in units of the compute dtype's size: measured
peak about 900 (float32, CPU, 512 px: 0.91 GiB above the resident size before), plus a margin."""
MIN_TILE = 16
"""The smallest automatic tile, in latent pixels (128 px): smaller tiles cost more in overlaps."""


_local = threading.local()


def _tiling() -> set[int]:
    """ids of the autoencoders this thread is decoding tile by tile."""
    active = getattr(_local, "tiling", None)
    if active is None:
        active = _local.tiling = set()
    return active


def decode_bytes(height: int, width: int, element_size: int) -> int:
    """Estimated peak working memory of decoding one (height x width px) image."""
    return DECODE_BYTES_PER_PIXEL * element_size * height * width


def fitting_tile(free: int, downscale: int, element_size: int) -> int:
    """The largest square tile (latent pixels, a multiple of 8, at least MIN_TILE) whose decode
    fits in `free` bytes."""
    side = int((max(free, 1) / (DECODE_BYTES_PER_PIXEL * element_size)) ** 0.5) // downscale
    return max(MIN_TILE, side // 8 * 8)


def available_memory(device: torch.device) -> int:
    """Bytes that new tensors on `device` can take now: for CUDA the driver's free memory plus
    what torch's allocator holds unused; for the CPU MemAvailable, bounded by the cgroup's limit
    where one is set. Unknown (MPS, no /proc): a very large number."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return 1 << 62
    found = available_ram_bytes()
    limit = _cgroup_room()
    candidates = [v for v in (found, limit) if v is not None]
    return min(candidates) if candidates else 1 << 62


def _cgroup_room() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), None when unlimited or absent."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


# -- tiling --------------------------------------------------------------------------------------


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: a stride of tile - overlap, the last tile flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def _ramp(length: int, feather: int, fade_in: bool, fade_out: bool) -> Tensor:
    """1-D blend weight of one tile: rises (t+1)/feather over the first `feather` samples where the
    tile overlaps its predecessor, falls the same way at the end; 1 elsewhere. Never 0, so the sum
    of weights under every pixel is positive."""
    w = torch.ones(length)
    if feather > 0:
        rise = torch.clamp((torch.arange(length) + 1) / feather, max=1.0)
        if fade_in:
            w = w * rise
        if fade_out:
            w = w * rise.flip(0)
    return w


def _tilings(tile: int, overlap: int, passes: int, align: int) -> list[tuple[int, int]]:
    """Tile shapes of each pass; the half-size side is rounded down to `align` (the encoder's f)."""
    if tile <= overlap:
        raise ModelError(f"tiled VAE: tile size {tile} must be larger than the overlap {overlap}")
    if passes not in (1, 3):
        raise ModelError(f"tiled VAE: passes must be 1 or 3, got {passes}")
    shapes = [(tile, tile)]
    if passes == 3:
        half = tile // 2 // align * align
        shapes += [(half, tile * 2), (tile * 2, half)]
    # A tiling whose short side is not larger than the overlap cannot advance; leave it out.
    return [s for s in shapes if min(s) > overlap]


def _tiled(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    tile: int,
    overlap: int,
    ratio: tuple[int, int],
    out_channels: int,
    passes: int,
    progress: Progress | None,
) -> Tensor:
    """Apply `fn` (which scales sizes by ratio[0]/ratio[1]) over overlapping tiles of x and blend.

    Runs one batch item at a time so peak memory is one tile's, whatever the batch size.
    """
    up, down = ratio
    tilings = _tilings(tile, overlap, passes, down)
    height, width = x.shape[2], x.shape[3]
    out_h, out_w = height * up // down, width * up // down
    plans = [(th, tw, _starts(height, th, overlap), _starts(width, tw, overlap)) for th, tw in tilings]
    total = x.shape[0] * sum(len(ys) * len(xs) for _, _, ys, xs in plans)
    done = 0
    feather = overlap * up // down
    result = torch.empty(x.shape[0], out_channels, out_h, out_w, dtype=x.dtype, device=x.device)
    for b in range(x.shape[0]):
        item = x[b : b + 1]
        accum = torch.zeros(len(plans), out_channels, out_h, out_w, dtype=torch.float32, device=x.device)
        weight = torch.zeros(len(plans), 1, out_h, out_w, dtype=torch.float32, device=x.device)
        for p, (th, tw, ys, xs) in enumerate(plans):
            for y0 in ys:
                for x0 in xs:
                    piece = fn(item[:, :, y0 : y0 + th, x0 : x0 + tw]).float().to(x.device)
                    oy, ox = y0 * up // down, x0 * up // down
                    ph, pw = piece.shape[2], piece.shape[3]
                    wy = _ramp(ph, feather, y0 > 0, y0 + th < height).to(x.device)
                    wx = _ramp(pw, feather, x0 > 0, x0 + tw < width).to(x.device)
                    mask = wy[:, None] * wx[None, :]
                    accum[p, :, oy : oy + ph, ox : ox + pw] += piece[0] * mask
                    weight[p, :, oy : oy + ph, ox : ox + pw] += mask
                    done += 1
                    if progress is not None:
                        progress(done, total)
        result[b] = (accum / weight).mean(dim=0).to(x.dtype)
    return result
