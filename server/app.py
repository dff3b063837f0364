"""The aiohttp application: `create_app(services)` (the factory tests use) and `serve(config)` (main.py).

The app owns three long-lived things, started and stopped by one cleanup_ctx: the websocket hub,
the worker thread and the JobStore. Shutdown order: websockets are closed with GOING_AWAY
(on_shutdown), then the worker interrupts its running prompt, records it as interrupted and joins,
then the store closes. Pending prompts stay in the store for the next start.

The node registry may still be loading when the server already answers: `serve()` hands a loader
that runs on a thread after the socket is bound, so the page is up before any node pack (or torch)
is imported; handlers that need nodes wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from core.config import Config
from core.errors import EngineError
from core.paths import ModelPaths
from execution.cache import Cache, cache_for_policy
from execution.interrupt import InterruptFlag
from execution.queue import JobStore
from server.limits import PromptLimits
from server.security import SecurityPolicy, security_middleware, token_required
from server.worker import Runner, Worker
from server.ws import ThreadsafePublisher, WebSocketHub

log = logging.getLogger(__name__)

LOOM_VERSION = "0.1.0"
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
STORE_FILE = "loom.db"
WORKER_STOP_SECONDS = 15.0

# services keys the server consumes itself; everything else is handed to nodes (ctx.service(name)).
SERVER_KEYS = frozenset(
    {"store", "registry", "registry_loader", "packages", "executor", "run_worker", "web_root", "catalog"}
)


class ServiceUnavailable(EngineError):
    """Something the request needs is not ready or failed to start (HTTP 503)."""


class NodeCatalog:
    """The node registry and the loaded packages, possibly still loading on another thread."""

    def __init__(
        self,
        registry: Mapping[str, Any] | None = None,
        packages: Sequence[Any] = (),
        loader: Callable[[], tuple[Mapping[str, Any], Sequence[Any]]] | None = None,
    ) -> None:
        if registry is None and loader is None:
            raise EngineError("create_app needs services['registry'] (a node registry) or services['registry_loader']")
        self.registry = registry
        self.packages = list(packages)
        self.loader = loader
        self.error: BaseException | None = None
        self._ready = threading.Event()
        if registry is not None:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Run the loader (blocking; on a thread of its own). Failures are kept, not raised."""
        try:
            assert self.loader is not None
            self.registry, packages = self.loader()
            self.packages = list(packages)
        except Exception as exc:  # kept and reported to every request that needs nodes
            log.exception("loading the node registry failed; the server cannot run prompts")
            self.error = exc
        finally:
            self._ready.set()

    def wait(self, timeout: float | None = None) -> Mapping[str, Any]:
        """The registry, blocking until loaded. Raises ServiceUnavailable if loading failed."""
        if not self._ready.wait(timeout):
            raise ServiceUnavailable("the node registry is still loading; try again in a moment")
        if self.registry is None:
            raise ServiceUnavailable(f"the node registry failed to load: {self.error}")
        return self.registry

    async def get(self) -> Mapping[str, Any]:
        if not self._ready.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        return self.wait(0)

    def web_directories(self) -> dict[str, Path]:
        """Package name -> folder served at /extensions/<name>/ (its WEB_DIRECTORY)."""
        found = {}
        for report in self.packages:
            folder = getattr(report, "web_directory", None)
            if folder is not None and getattr(report, "ok", True):
                found[report.name] = Path(folder)
        return found


@dataclass(frozen=True)
class ServerSettings:
    """What handlers read besides the store, the catalog, the hub and the worker."""

    config: Config
    folders: Mapping[str, Path]
    """/view types -> folder: output, input, temp."""
    web_root: Path
    paths: ModelPaths | None
    features: Mapping[str, Any]
    node_services: Mapping[str, Any] = field(default_factory=dict)
    private_roots: tuple[tuple[str, str], ...] = ()
    """(folder, placeholder) pairs redacted from messages to clients (server.http.redact)."""
    limits: PromptLimits = field(default_factory=PromptLimits)
    user_root: Path | None = None
    """The user directory: per-user folders (user data, comfy.settings.json), users.json."""
    multi_user: bool = False
    """--multi-user: the `comfy-user` request header picks the user folder."""


CONFIG = web.AppKey("loom_config", Config)
SETTINGS = web.AppKey("loom_settings", ServerSettings)
STORE = web.AppKey("loom_store", JobStore)
CATALOG = web.AppKey("loom_catalog", NodeCatalog)
HUB = web.AppKey("loom_hub", WebSocketHub)
WORKER = web.AppKey("loom_worker", Worker)
RUN_WORKER = web.AppKey("loom_run_worker", bool)


def server_features(policy: SecurityPolicy) -> dict[str, Any]:
    """GET /features and the websocket feature_flags reply. No `extension.manager`: Loom ships no
    node manager, and claiming one would make the editor offer it."""
    return {"supports_preview_metadata": True, "max_upload_size": policy.max_body_bytes}


def _runner_factory(
    services: Mapping[str, Any],
    catalog: NodeCatalog,
    cache: Cache,
    node_services: Mapping[str, Any],
    flag: InterruptFlag,
) -> Callable[[], Runner]:
    def make_runner() -> Runner:
        if services.get("executor") is not None:
            return services["executor"]
        from execution.executor import Executor  # deferred: tests may run without the executor built

        return Executor(catalog.wait(), cache, node_services, interrupt=flag)

    return make_runner


def _private_folders(config: Config, folders: Mapping[str, Path], paths: ModelPaths | None) -> list[tuple[str, Any]]:
    """Folders whose absolute paths are replaced by a placeholder in what clients are told."""
    named: list[tuple[str, Any]] = [(f"<{kind}>", folder) for kind, folder in folders.items()]
    named += [("<user>", config.user_path), ("<models>", config.models_path)]
    if paths is not None:
        named += [("<models>", folder) for kind in paths.kinds() for folder in paths.folders(kind)]
        named += [("<custom_nodes>", folder) for folder in paths.custom_nodes_dirs]
    named += [("<custom_nodes>", folder) for folder in config.all_custom_nodes_dirs]
    named += [("<loom>", config.base_dir), ("<loom>", Path(__file__).resolve().parent.parent), ("~", Path.home())]
    return named


def _settings(services: Mapping[str, Any], config: Config, policy: SecurityPolicy) -> ServerSettings:
    from server.http import private_roots  # deferred: server.http imports this module's AppKeys

    node_services = {key: value for key, value in services.items() if key not in SERVER_KEYS}
    node_services.setdefault("config", config)
    folders = {
        "output": Path(services.get("output_dir") or config.output_path),
        "input": Path(services.get("input_dir") or config.input_path),
        "temp": Path(services.get("temp_dir") or config.temp_path),
    }
    for kind, folder in folders.items():
        node_services.setdefault(f"{kind}_dir", folder)
    paths = services.get("paths")
    return ServerSettings(
        config=config,
        folders=folders,
        web_root=Path(services.get("web_root") or WEB_ROOT),
        paths=paths,
        features=server_features(policy),
        node_services=node_services,
        private_roots=private_roots(_private_folders(config, folders, paths)),
        limits=PromptLimits.from_config(config),
        user_root=Path(services.get("user_dir") or config.user_path),
        multi_user=bool(config.engine.get("multi_user")),
    )


def create_app(services: Mapping[str, Any]) -> web.Application:
    """The Loom server for these services.

    Required: `store` (a JobStore, closed with the app) and either `registry` (class_type ->
    NodeDefinition) or `registry_loader` (() -> (registry, package reports), run on a thread at
    startup). Optional: `config`, `paths` (ModelPaths), `output_dir`/`input_dir`/`temp_dir`,
    `packages` (reports with `name` and `web_directory`), `cache`, `executor` (anything with
    Executor's `execute`), `models` (with `unload_all()` for POST /free), `run_worker` (default
    True), `web_root`. All other keys are passed to nodes as services."""
    from server.extensions import add_prompt_server
    from server.handlers import error_middleware  # deferred: handlers import this module's AppKeys
    from server.routes import setup_routes
    from server.userdata import USERS, Users

    config: Config = services.get("config") or Config()
    store: JobStore = services["store"]
    catalog = services.get("catalog")
    if catalog is None:
        catalog = NodeCatalog(services.get("registry"), services.get("packages", ()), services.get("registry_loader"))
    policy = SecurityPolicy.for_listen(
        config.listen,
        config.enable_cors_header,
        config.max_upload_size_mb,
        token=config.auth_token,
        allowed_hosts=config.allowed_hosts,
    )
    settings = _settings(services, config, policy)
    node_services = settings.node_services
    hub = WebSocketHub(store.remaining, settings.features, paused=lambda: store.paused)
    flag = InterruptFlag()
    cache = services.get("cache")
    if cache is None:  # `is None`, not `or`: an empty cache is falsy (it has a length)
        cache = cache_for_policy(config.cache)
    models = services.get("models")
    worker = Worker(
        store,
        _runner_factory(services, catalog, cache, node_services, flag),
        ThreadsafePublisher(hub),
        interrupt=flag,
        preview_size=config.preview_size,
        unload_models=getattr(models, "unload_all", None),
    )
    app = web.Application(
        # Security outermost: its refusals skip the handlers, and in CORS mode it adds the headers to
        # every answer, JSON errors included.
        middlewares=[security_middleware(policy), error_middleware],
        client_max_size=policy.max_body_bytes,
    )
    app[CONFIG], app[SETTINGS], app[STORE], app[CATALOG] = config, settings, store, catalog
    app[HUB], app[WORKER], app[RUN_WORKER] = hub, worker, bool(services.get("run_worker", True))
    app[USERS] = Users(settings.user_root or config.user_path, settings.multi_user)
    add_prompt_server(app, worker.publisher)
    setup_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_websockets)
    return app


async def _lifecycle(app: web.Application) -> Any:
    """Start: hub on this loop, node loading (if deferred), the worker. Stop: worker, then store."""
    app[HUB].attach(asyncio.get_running_loop())
    catalog = app[CATALOG]
    if not catalog.ready:
        threading.Thread(target=catalog.load, name="loom-load-nodes", daemon=True).start()
    worker = app[WORKER]
    if app[RUN_WORKER]:
        worker.start()
    try:
        yield
    finally:
        await asyncio.to_thread(worker.stop, WORKER_STOP_SECONDS)
        app[STORE].close()
        log.info("server stopped; pending prompts stay queued for the next start")


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_all()


# ---------------------------------------------------------------------- serve (python main.py)


def services_for(
    config: Config,
    node_services: Mapping[str, Any],
    registry_loader: Callable[[], tuple[Mapping[str, Any], Sequence[Any]]],
) -> dict[str, Any]:
    """Everything create_app needs: the node services main.py built, the store, and a loader
    that builds the registry later, on a thread (loading packages is the slow part)."""
    store = JobStore(config.user_path / STORE_FILE, retention=config.retention)
    # `config` last: serve() may have completed it (a generated token) after main.py built the services.
    return {**node_services, "config": config, "store": store, "registry_loader": registry_loader}


def listen_hosts(listen: str) -> list[str]:
    return [host.strip() for host in listen.split(",") if host.strip()]


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


async def _run(app: web.Application, hosts: list[str], port: int) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for host in hosts:
            await web.TCPSite(runner, host, port, shutdown_timeout=5.0).start()
        for host in hosts:
            log.info("Loom is serving at %s", _url(host, port))
        await stop.wait()
        log.info("shutting down (interrupting the running prompt, if any)")
    finally:
        await runner.cleanup()


def secure_config(config: Config) -> Config:
    """The config to serve with: a token generated (and its URL logged) when the server can be reached
    from beyond this machine and none was given. A random token per start: pass --auth-token (or
    $LOOM_AUTH_TOKEN) for one that survives restarts."""
    if config.auth_token or not token_required(listen_hosts(config.listen), config.allowed_hosts):
        return config
    from server.auth import generate_token

    config = replace(config, auth_token=generate_token())
    shown = next((h for h in config.allowed_hosts), None)
    url = f"http://{shown}" if shown else _url(listen_hosts(config.listen)[0], config.port)
    log.warning(
        "Loom can be reached beyond this machine (--listen %s%s), so every client needs this access token:\n"
        "    %s\n  open %s/?token=%s in a browser, or send 'Authorization: Bearer <token>' from scripts. "
        "Pass --auth-token to choose one that stays the same across restarts.",
        config.listen,
        f", --allowed-hosts {','.join(config.allowed_hosts)}" if config.allowed_hosts else "",
        config.auth_token,
        url,
        config.auth_token,
    )
    return config


def announce_models(paths: ModelPaths | None) -> bool:
    """Log where checkpoints go when there is none; True if at least one was found."""
    if paths is None:
        return False
    try:
        found = paths.list("checkpoints")
    except EngineError:
        return False
    if found:
        log.info("%d checkpoint(s) in %s", len(found), ", ".join(str(f) for f in paths.folders("checkpoints")))
        return True
    log.warning(
        "no checkpoint found: put a Stable Diffusion checkpoint (.safetensors; SD1.x, SD2.x or SDXL) in %s, "
        "or restart with --demo-model to create a tiny random-weight one (it draws coloured noise, but runs the "
        "default workflow end to end). The page and the API work meanwhile.",
        paths.folders("checkpoints")[0],
    )
    return False


def serve(
    config: Config,
    node_services: Mapping[str, Any],
    registry_loader: Callable[[], tuple[Mapping[str, Any], Sequence[Any]]],
) -> int:
    """`python main.py`: serve until SIGINT/SIGTERM. Returns the process exit code.

    `node_services` and `registry_loader` come from main.py, the composition root (the same ones
    `main.py run` uses), so the server and the CLI run nodes identically."""
    hosts = listen_hosts(config.listen)
    config = secure_config(config)
    if config.auth_token:
        log.info("clients must present the access token (Authorization: Bearer, ?token= or the page's cookie)")
    announce_models(node_services.get("paths"))
    try:
        services = services_for(config, node_services, registry_loader)
    except EngineError as exc:  # another Loom holds the store, or it is from a newer version
        log.error("cannot start: %s", exc)
        return 1
    try:
        app = create_app(services)
    except BaseException:
        services["store"].close()  # release the store's process lock
        raise
    try:
        asyncio.run(_run(app, hosts, config.port))
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", config.listen, config.port, exc)
        return 1
    return 0


__all__ = [
    "CATALOG",
    "CONFIG",
    "HUB",
    "LOOM_VERSION",
    "SETTINGS",
    "STORE",
    "WORKER",
    "NodeCatalog",
    "ServerSettings",
    "ServiceUnavailable",
    "create_app",
    "listen_hosts",
    "announce_models",
    "secure_config",
    "serve",
    "services_for",
]
