"""Fixtures of the editor's end-to-end suite (tests/browser): one real Loom server (`main.py` on a free
loopback port with a temporary base directory, the tiny random-weight `--demo-model` checkpoint and
latent2rgb previews) and one headless Debian Chromium for the whole session; every test gets a fresh
page with empty localStorage.

The browser is the system's `chromium` (installed by scripts/browser_deps.sh, or $LOOM_CHROMIUM),
driven by Playwright from PyPI through `executable_path`: Playwright's own browser download is never
used. A missing browser fails the suite with a message saying how to install it; CI must not skip it.
Screenshots land in test-artifacts/browser/ (or $LOOM_ARTIFACTS); a failing test adds one of its own
plus the page's console log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.loom_editor import DEMO_CHECKPOINT, ROOT, Editor
from tests.server.live_server import LiveServer

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1600, "height": 1000}

# txt2img at 64 px in one step on the demo checkpoint.
WARM_UP: dict[str, Any] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "warm up", "clip": ["1", 1]}},
    "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "4": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 1,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["1", 0],
            "positive": ["2", 0],
            "negative": ["2", 0],
            "latent_image": ["3", 0],
        },
    },
    "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests after every other test. Playwright's sync API keeps an asyncio loop
    running in the main thread from the first browser test until the session ends, and every later
    test that calls asyncio.run() (the server and fault tests do) would fail."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # stable: order kept


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Lets the page fixture know whether its test failed (for the failure screenshot).
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def chromium_path() -> str:
    path = os.environ.get("LOOM_CHROMIUM") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"no Chromium at {path}: the browser tests need Debian's chromium package. "
            "Run scripts/browser_deps.sh (./check does), or set LOOM_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("LOOM_ARTIFACTS") or ROOT / "test-artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def demo_models_dir() -> Path:
    """A models folder kept across runs in tests/.cache (gitignored), so that the `--demo-model`
    checkpoint is made once (seconds of torch work) rather than at every run. Keyed by the source of
    diffusion/: a change to the architectures or the recipe makes a fresh one."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "diffusion").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    cache = ROOT / "tests" / ".cache" / "browser-models"
    folder = cache / digest.hexdigest()[:16]
    if not folder.is_dir() and cache.is_dir():
        for old in cache.iterdir():  # models of older diffusion/ sources
            shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def loom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("loom-browser")
    models = demo_models_dir()
    server = LiveServer(base, "--demo-model", "--models-dir", str(models), "--preview-method", "latent2rgb").start()
    try:
        server.wait_ready("/object_info/KSampler", timeout=180)
        # Load torch and the model in the server's worker while the browser starts (not awaited).
        server.queue_prompt(WARM_UP, client_id="browser-tests-warm-up")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser_context(artifacts: Path) -> Iterator[Any]:
    executable = chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright (Python) is missing: run scripts/bootstrap.sh dev (./check does)", pytrace=False)
    expect.set_options(timeout=10_000)
    profile = tempfile.mkdtemp(prefix="loom-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=BROWSER_ARGS,
                viewport=VIEWPORT,
                accept_downloads=True,
            )
            context.set_default_timeout(15_000)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def editor(
    request: pytest.FixtureRequest, browser_context: Any, loom_server: LiveServer, artifacts: Path
) -> Iterator[Editor]:
    """A fresh page on the editor, localStorage cleared, `window.loom.app.ready` awaited."""
    page = browser_context.new_page()
    console: list[str] = []
    page_errors: list[str] = []
    page.on("console", lambda msg: console.append(f"console.{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: page_errors.append(f"{exc}"))
    # Clear storage on the server's origin before the app's first load reads it.
    page.goto(loom_server.url + "/features")
    page.evaluate("() => { localStorage.clear(); sessionStorage.clear(); }")
    driver = Editor(page, loom_server, artifacts, console)
    try:
        driver.open()
    except BaseException:
        _save_failure(request, page, artifacts, console, page_errors)
        page.close()
        raise
    yield driver
    if getattr(getattr(request.node, "rep_call", None), "failed", False):
        _save_failure(request, page, artifacts, console, page_errors)
    page.close()
    # An uncaught exception in the editor is a bug even when the asserted outcome looks right.
    assert not page_errors, "uncaught errors in the page:\n" + "\n".join(page_errors)


def _save_failure(
    request: pytest.FixtureRequest, page: Any, artifacts: Path, console: list[str], errors: list[str]
) -> None:
    """A screenshot and the console log of a failed test, named after it."""
    name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    try:
        page.screenshot(path=str(artifacts / f"FAILED-{name}.png"))
    except Exception as exc:  # a dead page must not hide the test's own failure
        console.append(f"(failure screenshot not taken: {exc})")
    (artifacts / f"FAILED-{name}.log").write_text("\n".join(console + [f"pageerror: {e}" for e in errors]) + "\n")
