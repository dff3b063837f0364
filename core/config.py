"""Config: the one reader of argv. A frozen dataclass built in main.py and passed down.

ComfyUI's flag names are accepted beside Loom's own (`--output-directory` and `--output-dir`), so
scripts that start ComfyUI can start Loom unchanged. Flags that only matter to later layers (memory
policy, precision, attention) are parsed and kept in `Config.engine` so nothing rejects them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMANDS = ("serve", "run", "convert")
DEFAULT_PORT = 8188
DEFAULT_LISTEN = "127.0.0.1"
LISTEN_ALL = "0.0.0.0,::"
AUTH_TOKEN_ENV = "LOOM_AUTH_TOKEN"
"""Environment variable read when --auth-token is not given (keeps the secret out of `ps`)."""


@dataclass(frozen=True)
class CachePolicy:
    """Which output cache the executor uses (ComfyUI's --cache-* flags, spec §4.4)."""

    kind: str = "classic"  # classic | lru | ram | none
    lru_size: int = 0
    ram_gb: float = 0.0

    def describe(self) -> str:
        if self.kind == "lru":
            return f"LRU, {self.lru_size} entries"
        if self.kind == "ram":
            return f"RAM budget, keep {self.ram_gb:g} GB free"
        if self.kind == "none":
            return "none"
        return "classic (keep the last prompt)"


@dataclass(frozen=True)
class Config:
    command: str = "serve"
    workflow: Path | None = None
    """The workflow file of `run` / `convert`."""
    base_dir: Path = field(default_factory=Path.cwd)
    output_dir: Path | None = None
    input_dir: Path | None = None
    temp_dir: Path | None = None
    user_dir: Path | None = None
    models_dir: Path | None = None
    custom_nodes_dirs: tuple[Path, ...] = ()
    """Extra custom node folders, searched beside <base>/custom_nodes."""
    extra_model_paths: tuple[Path, ...] = ()
    disable_custom_nodes: bool = False
    whitelist_custom_nodes: tuple[str, ...] = ()
    listen: str = DEFAULT_LISTEN
    port: int = DEFAULT_PORT
    cache: CachePolicy = field(default_factory=CachePolicy)
    cpu: bool = False
    preview_method: str = "none"
    preview_size: int = 512
    enable_cors_header: str | None = None
    max_upload_size_mb: float = 100.0
    disable_metadata: bool = False
    auth_token: str | None = None
    """Required from every client when set; generated at start if absent and the server is reachable
    beyond loopback (non-loopback --listen or --allowed-hosts)."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra Host names accepted while listening on loopback (a reverse proxy's public name)."""
    retention: int = 10_000
    """Finished prompts kept in history (oldest dropped first)."""
    demo_model: bool = False
    """Create models/checkpoints/loom_demo_tiny.safetensors (tiny random weights) if missing."""
    max_nodes: int = 10_000
    max_prompt_size_mb: float = 32.0
    max_image_size: int = 8192
    """Cap on constant width/height inputs of a queued prompt (0 = no cap); likewise the two below."""
    max_batch_size: int = 64
    max_steps: int = 1000
    verbose: str | None = None
    """Log level; None = INFO when serving, WARNING for `run` / `convert` (their output is the point)."""
    log_stdout: bool = False
    quiet: bool = False
    """`run`: no progress display."""
    engine: dict[str, Any] = field(default_factory=dict)
    """Flags for the diffusion engine (memory, precision, attention), kept verbatim by name."""

    # Folders default to ComfyUI's layout under the base directory.
    @property
    def output_path(self) -> Path:
        return self.output_dir or self.base_dir / "output"

    @property
    def input_path(self) -> Path:
        return self.input_dir or self.base_dir / "input"

    @property
    def temp_path(self) -> Path:
        return self.temp_dir or self.base_dir / "temp"

    @property
    def user_path(self) -> Path:
        return self.user_dir or self.base_dir / "user"

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.base_dir / "models"

    @property
    def all_custom_nodes_dirs(self) -> tuple[Path, ...]:
        return (self.base_dir / "custom_nodes", *self.custom_nodes_dirs)

    @classmethod
    def from_args(cls, argv: Sequence[str], *, base_dir: Path | None = None) -> Config:
        """Parse a command line (without the program name). Raises SystemExit on bad flags."""
        argv = list(argv)
        command = "serve"
        if argv and argv[0] in COMMANDS:
            command = argv.pop(0)
        args = build_parser(command).parse_args(argv)
        return _config_from_namespace(command, args, base_dir)


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().absolute() if value else None


def _config_from_namespace(command: str, args: argparse.Namespace, base_dir: Path | None) -> Config:
    base = _path(args.base_directory) or base_dir or Path.cwd()
    if args.cache_none:
        cache = CachePolicy("none")
    elif args.cache_lru:
        cache = CachePolicy("lru", lru_size=args.cache_lru)
    elif args.cache_ram is not None:
        cache = CachePolicy("ram", ram_gb=args.cache_ram)
    else:
        cache = CachePolicy("classic")
    engine = {name: getattr(args, name) for name in _ENGINE_FLAGS if getattr(args, name) not in (None, False)}
    extra_yaml = tuple(Path(p).expanduser().absolute() for group in args.extra_model_paths_config or () for p in group)
    return Config(
        command=command,
        workflow=_path(getattr(args, "workflow", None)),
        base_dir=base,
        output_dir=_path(args.output_dir),
        input_dir=_path(args.input_dir),
        temp_dir=_path(args.temp_dir),
        user_dir=_path(args.user_dir),
        models_dir=_path(args.models_dir),
        custom_nodes_dirs=tuple(Path(p).expanduser().absolute() for p in args.custom_nodes_dir or ()),
        extra_model_paths=extra_yaml,
        disable_custom_nodes=args.disable_all_custom_nodes,
        whitelist_custom_nodes=tuple(args.whitelist_custom_nodes or ()),
        listen=args.listen,
        port=args.port,
        cache=cache,
        cpu=args.cpu,
        preview_method=args.preview_method,
        preview_size=args.preview_size,
        enable_cors_header=args.enable_cors_header,
        max_upload_size_mb=args.max_upload_size,
        disable_metadata=args.disable_metadata,
        auth_token=args.auth_token or os.environ.get(AUTH_TOKEN_ENV) or None,
        allowed_hosts=tuple(
            h.strip().lower() for group in args.allowed_hosts or () for h in group.split(",") if h.strip()
        ),
        retention=args.retention,
        demo_model=args.demo_model,
        max_nodes=args.max_nodes,
        max_prompt_size_mb=args.max_prompt_size,
        max_image_size=args.max_image_size,
        max_batch_size=args.max_batch_size,
        max_steps=args.max_steps,
        verbose=args.verbose,
        log_stdout=args.log_stdout,
        quiet=getattr(args, "quiet", False),
        engine=engine,
    )


# Engine flags: parsed so ComfyUI command lines work, consumed by the diffusion layer.
_ENGINE_SWITCHES = (
    "gpu_only", "highvram", "normalvram", "lowvram", "novram", "disable_smart_memory", "force_fp32",
    "force_fp16", "fp32_unet", "fp16_unet", "bf16_unet", "fp8_e4m3fn_unet", "fp8_e5m2_unet", "fp16_vae",
    "fp32_vae", "bf16_vae", "cpu_vae", "fp8_e4m3fn_text_enc", "fp8_e5m2_text_enc", "fp16_text_enc",
    "fp32_text_enc", "bf16_text_enc", "use_split_cross_attention", "use_quad_cross_attention",
    "use_pytorch_cross_attention", "use_sage_attention", "use_flash_attention", "disable_xformers",
    "force_upcast_attention", "dont_upcast_attention", "deterministic", "disable_mmap",
    "disable_pinned_memory", "async_offload", "multi_user", "auto_launch", "disable_auto_launch",
    "dont_print_server", "enable_compress_response_body", "disable_api_nodes", "quick_test_for_ci",
)  # fmt: skip
_ENGINE_VALUES = ("reserve_vram", "cuda_device", "default_device", "fast", "tls_keyfile", "tls_certfile",
                  "database_url", "default_hashing_function", "front_end_root", "front_end_version")  # fmt: skip
_LOOM_ENGINE_SWITCHES = ("compile",)  # Loom's own engine switches, shown in --help
_ENGINE_FLAGS = _ENGINE_SWITCHES + _ENGINE_VALUES + _LOOM_ENGINE_SWITCHES


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    prog = "main.py" if command == "serve" else f"main.py {command}"
    parser = argparse.ArgumentParser(
        prog=prog,
        description={
            "serve": "Start the Loom server and editor. Other commands: `run WORKFLOW`, `convert WORKFLOW`.",
            "run": "Run a workflow (API or UI format JSON) headless and print where its outputs went.",
            "convert": "Print the API prompt of a UI-format workflow (API prompts are printed as they are).",
        }[command],
    )
    if command in ("run", "convert"):
        parser.add_argument("workflow", help="workflow JSON file (ComfyUI API or UI format)")
    if command == "run":
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    folders = parser.add_argument_group("folders")
    folders.add_argument("--base-directory", metavar="DIR", help="base for output/, input/, models/, custom_nodes/")
    folders.add_argument("--output-dir", "--output-directory", dest="output_dir", metavar="DIR")
    folders.add_argument("--input-dir", "--input-directory", dest="input_dir", metavar="DIR")
    folders.add_argument("--temp-dir", "--temp-directory", dest="temp_dir", metavar="DIR")
    folders.add_argument("--user-dir", "--user-directory", dest="user_dir", metavar="DIR")
    folders.add_argument("--models-dir", metavar="DIR", help="model folders root (default <base>/models)")
    folders.add_argument(
        "--custom-nodes-dir", action="append", metavar="DIR", help="extra custom node folder (repeatable)"
    )
    folders.add_argument("--extra-model-paths-config", nargs="+", action="append", metavar="YAML")
    folders.add_argument("--disable-all-custom-nodes", action="store_true")
    folders.add_argument("--whitelist-custom-nodes", nargs="+", metavar="NAME")

    cache = parser.add_argument_group("cache").add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="keep only the last prompt's results (default)")
    cache.add_argument("--cache-lru", type=_non_negative_int, default=0, metavar="N", help="keep N results (LRU)")
    cache.add_argument(
        "--cache-ram", type=float, nargs="?", const=4.0, metavar="GB", help="evict when free RAM < GB (default 4)"
    )
    cache.add_argument("--cache-none", action="store_true", help="cache nothing")

    server = parser.add_argument_group("server")
    server.add_argument("--listen", nargs="?", const=LISTEN_ALL, default=DEFAULT_LISTEN, metavar="ADDR")
    server.add_argument("--port", type=int, default=DEFAULT_PORT)
    server.add_argument("--enable-cors-header", nargs="?", const="*", metavar="ORIGIN")
    server.add_argument("--max-upload-size", type=float, default=100.0, metavar="MB")
    server.add_argument(
        "--preview-method", default="none", choices=["none", "auto", "latent2rgb", "taesd"], help="live previews"
    )
    server.add_argument("--preview-size", type=int, default=512)
    server.add_argument("--disable-metadata", action="store_true", help="no workflow in saved PNGs")
    server.add_argument(
        "--demo-model", action="store_true", help="create a tiny random-weight SD1.5 checkpoint to try Loom"
    )
    server.add_argument("--retention", type=_positive_int, default=10_000, metavar="N", help="finished prompts kept")

    _add_security_flags(parser)
    server.add_argument("--verbose", nargs="?", const="DEBUG", default=None, metavar="LEVEL")
    server.add_argument("--log-stdout", action="store_true")

    engine = parser.add_argument_group("engine (memory, precision, attention)")
    engine.add_argument("--cpu", action="store_true", help="run on the CPU")
    engine.add_argument(
        "--compile",
        action="store_true",
        help="compile the diffusion model with torch.compile (CUDA graphs on CUDA); the first run pays the compile",
    )
    for name in _ENGINE_SWITCHES:
        engine.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", help=argparse.SUPPRESS)
    for name in _ENGINE_VALUES:
        nargs = "*" if name == "fast" else None
        engine.add_argument("--" + name.replace("_", "-"), dest=name, nargs=nargs, help=argparse.SUPPRESS)
    return parser


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    security = parser.add_argument_group("security and limits")
    security.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help=f"token every client must send (or ${AUTH_TOKEN_ENV}); generated if needed",
    )
    security.add_argument(
        "--allowed-hosts", action="append", metavar="HOST[,HOST]", help="Host names accepted besides loopback (proxy)"
    )
    security.add_argument("--max-nodes", type=_positive_int, default=10_000, metavar="N", help="nodes per prompt")
    security.add_argument("--max-prompt-size", type=float, default=32.0, metavar="MB", help="POST /prompt body size")
    security.add_argument("--max-image-size", type=_non_negative_int, default=8192, metavar="PX", help="0 = no cap")
    security.add_argument("--max-batch-size", type=_non_negative_int, default=64, metavar="N", help="0 = no cap")
    security.add_argument("--max-steps", type=_non_negative_int, default=1000, metavar="N", help="0 = no cap")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
