"""A driver for Loom's editor page in the browser tests: real mouse and keyboard input on the canvas
at the points GraphCanvas's test helpers give (nodeTitlePos / slotPos / widgetRect, CSS px relative
to the canvas), and reads of the graph model through `window.loom.app` (editor contract, issue 6).

Only the input is simulated the way a person would do it; the checks read the model and the DOM.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

try:
    from playwright.sync_api import Page, expect
except ImportError as exc:  # a clear failure rather than a bare import error at collection
    raise ImportError("playwright (Python) is missing: run scripts/bootstrap.sh dev (./check does)") from exc

from tests.server.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = "loom_demo_tiny.safetensors"
MOD = "Control"  # Ctrl+... shortcuts (Linux Chromium)

# Records every GraphCanvas.setNodeState call (the contract's one way to show run state on a node),
# summarised to JSON, and a PNG of the canvas the first time a progress bar is set (the run is too
# quick on the tiny model for a page screenshot to be sure to catch it).
STATE_RECORDER = """() => {
  const canvas = window.loom.app.canvas;
  if (canvas.__loomRecorder) { canvas.__loomRecorder.length = 0; return; }
  const calls = [];
  const original = canvas.setNodeState.bind(canvas);
  canvas.__loomRecorder = calls;
  window.__loomStates = calls;
  window.__loomRunningShot = null;
  canvas.setNodeState = (id, state) => {
    const result = original(id, state);
    const s = state || {};
    const entry = {id, t: performance.now(), keys: Object.keys(s)};
    if ("running" in s) entry.running = s.running;
    if ("progress" in s) entry.progress = s.progress ? {value: s.progress.value, max: s.progress.max} : null;
    if ("preview" in s) entry.preview = s.preview ? (s.preview.constructor && s.preview.constructor.name) || "image" : null;
    if ("images" in s) entry.images = s.images ? s.images.map((image) => image.url) : null;
    if ("error" in s) entry.error = s.error ? {message: s.error.message, inputs: s.error.inputs || []} : null;
    calls.push(entry);
    if (entry.progress && !window.__loomRunningShot) {
      try { canvas.draw(); window.__loomRunningShot = document.querySelector('[data-testid="graph-canvas"]').toDataURL("image/png"); }
      catch (error) { window.__loomRunningShot = "error: " + error; }
    }
    return result;
  };
}"""


EMPTY_POINT = """(margin) => {
  const app = window.loom.app;
  const el = document.querySelector('[data-testid="graph-canvas"]');
  const r = el.getBoundingClientRect();
  const boxes = [...app.graph.nodes.values()].map((n) => [
    app.canvas.toScreen([n.pos[0], n.pos[1] - 40]), app.canvas.toScreen([n.pos[0] + n.size[0], n.pos[1] + n.size[1]])]);
  for (const g of app.graph.groups) {
    const [x, y, w, h] = g.bounding;
    boxes.push([app.canvas.toScreen([x, y]), app.canvas.toScreen([x + w, y + h])]);
  }
  const fractions = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05, 0.95];
  for (const fy of [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]) {
    for (const fx of fractions) {
      const x = r.width * fx, y = r.height * fy;
      if (boxes.some(([a, b]) => a[0] - margin <= x && x <= b[0] + margin && a[1] - margin <= y && y <= b[1] + margin)) continue;
      if (document.elementFromPoint(r.left + x, r.top + y) !== el) continue;
      return [r.left + x, r.top + y];
    }
  }
  return null;
}"""


class Editor:
    """One page on the editor."""

    def __init__(self, page: Page, server: LiveServer, artifacts: Path, console: list[str] | None = None) -> None:
        self.page = page
        self.server = server
        self.artifacts = artifacts
        self.console = console if console is not None else []

    # ------------------------------------------------------------------ page and model access

    def open(self) -> None:
        self.page.goto(self.server.url + "/")
        self.wait_ready()

    def reload(self) -> None:
        self.page.reload()
        self.wait_ready()

    def wait_ready(self) -> None:
        try:
            self.page.wait_for_function("() => window.loom && window.loom.app && window.loom.app.ready", timeout=20_000)
        except Exception as exc:
            log = "\n".join(self.console[-15:]) or "(no console output)"
            raise AssertionError(f"window.loom.app never appeared (web/app.js did not start): {exc}\n{log}") from None
        self.page.evaluate("() => window.loom.app.ready")
        self.page.wait_for_function("() => !!window.loom.app.canvas && !!window.loom.app.graph")

    def app(self, body: str, arg: Any = None) -> Any:
        """Evaluate `body` (a function body with `app` and `arg` in scope; may `await`)."""
        return self.page.evaluate(f"async (arg) => {{ const app = window.loom.app; {body} }}", arg)

    def object_info(self) -> dict[str, Any]:
        return self.app("return app.objectInfo;")

    def workflow(self) -> dict[str, Any]:
        return self.app("return JSON.parse(JSON.stringify(app.toWorkflow()));")

    def state(self) -> dict[str, Any]:
        """The graph as saved (nodes, links, groups), without the viewport or other `extra`."""
        workflow = self.workflow()
        nodes = sorted(workflow["nodes"], key=lambda node: node["id"])
        links = sorted(workflow.get("links") or [], key=lambda link: link[0] if isinstance(link, list) else link["id"])
        return {"nodes": nodes, "links": links, "groups": workflow.get("groups") or []}

    def prompt(self) -> dict[str, Any]:
        return self.app("return JSON.parse(JSON.stringify(app.toApiPrompt()));")

    def nodes(self) -> dict[int, dict[str, Any]]:
        return {node["id"]: node for node in self.workflow()["nodes"]}

    def node(self, node_id: int) -> dict[str, Any]:
        return self.app("return JSON.parse(JSON.stringify(app.graph.node(arg)));", node_id)

    def node_ids(self) -> set[int]:
        return set(self.app("return [...app.graph.nodes.keys()];"))

    def node_of_type(self, class_type: str) -> int:
        ids = [node_id for node_id, node in self.nodes().items() if node["type"] == class_type]
        assert len(ids) == 1, f"expected one {class_type} node in the graph, found {ids}"
        return ids[0]

    def links(self) -> list[dict[str, Any]]:
        return self.app("return [...app.graph.links.values()].map((l) => ({...l}));")

    def input_slot(self, node_id: int, name: str) -> int:
        names = [inp["name"] for inp in self.node(node_id)["inputs"]]
        assert name in names, f"node {node_id} has no input socket {name!r}; it has {names}"
        return names.index(name)

    def input_link(self, node_id: int, name: str) -> dict[str, Any] | None:
        """The link feeding input `name` of a node, or None."""
        link_id = self.node(node_id)["inputs"][self.input_slot(node_id, name)]["link"]
        return None if link_id is None else next(link for link in self.links() if link["id"] == link_id)

    def widget(self, node_id: int, name: str, kind: str = "value") -> Any:
        return self.app("return app.graph.getWidget(arg[0], arg[1], app.objectInfo, arg[2]);", [node_id, name, kind])

    def set_widget(self, node_id: int, name: str, value: Any, kind: str = "value") -> None:
        """Setup only (not the behaviour under test): set a widget through the model."""
        self.app(
            "app.graph.setWidget(arg[0], arg[1], arg[2], app.objectInfo, arg[3]); app.canvas.requestDraw();",
            [node_id, name, value, kind],
        )

    def load(self, workflow: dict[str, Any], new_tab: bool = False) -> None:
        self.app("await app.loadWorkflow(arg[0], {newTab: arg[1]});", [workflow, new_tab])

    def small_default_graph(self, steps: int = 4) -> dict[str, int]:
        """The first-start txt2img graph made quick: demo checkpoint, 64 px, few steps. Returns its ids."""
        ids = {
            "ckpt": self.node_of_type("CheckpointLoaderSimple"),
            "latent": self.node_of_type("EmptyLatentImage"),
            "sampler": self.node_of_type("KSampler"),
            "decode": self.node_of_type("VAEDecode"),
            "save": self.node_of_type("SaveImage"),
        }
        self.set_widget(ids["ckpt"], "ckpt_name", DEMO_CHECKPOINT)
        self.set_widget(ids["latent"], "width", 64)
        self.set_widget(ids["latent"], "height", 64)
        self.set_widget(ids["sampler"], "steps", steps)
        return ids

    # ------------------------------------------------------------------ coordinates

    def canvas_origin(self) -> tuple[float, float]:
        box = self.page.get_by_test_id("graph-canvas").bounding_box()
        assert box is not None, "the graph canvas is not displayed"
        return box["x"], box["y"]

    def canvas_size(self) -> tuple[float, float]:
        box = self.page.get_by_test_id("graph-canvas").bounding_box()
        assert box is not None, "the graph canvas is not displayed"
        return box["width"], box["height"]

    def _page_point(self, point: list[float] | tuple[float, float]) -> tuple[float, float]:
        x0, y0 = self.canvas_origin()
        return x0 + point[0], y0 + point[1]

    def title_point(self, node_id: int) -> tuple[float, float]:
        point = self._page_point(self.app("return app.canvas.nodeTitlePos(arg);", node_id))
        return self._on_canvas(point, f"the title of node {node_id}")

    def slot_point(self, node_id: int, direction: str, slot: int) -> tuple[float, float]:
        point = self.app("return app.canvas.slotPos(arg[0], arg[1], arg[2]);", [node_id, direction, slot])
        return self._on_canvas(self._page_point(point), f"{direction} slot {slot} of node {node_id}")

    def widget_rect(self, node_id: int, name: str) -> dict[str, float]:
        rect = self.app("return app.canvas.widgetRect(arg[0], arg[1]);", [node_id, name])
        assert rect and rect["w"] > 0 and rect["h"] > 0, f"node {node_id} widget {name!r} has no rectangle: {rect}"
        x, y = self._page_point((rect["x"], rect["y"]))
        return {"x": x, "y": y, "w": rect["w"], "h": rect["h"]}

    def widget_center(self, node_id: int, name: str) -> tuple[float, float]:
        rect = self.widget_rect(node_id, name)
        return rect["x"] + rect["w"] / 2, rect["y"] + rect["h"] / 2

    def graph_to_page(self, pos: list[float] | tuple[float, float]) -> tuple[float, float]:
        return self._page_point(self.app("return app.canvas.toScreen(arg);", list(pos)))

    def page_to_graph(self, point: tuple[float, float]) -> list[float]:
        x0, y0 = self.canvas_origin()
        return self.app("return app.canvas.toGraph(arg);", [point[0] - x0, point[1] - y0])

    def empty_point(self, margin: float = 40) -> tuple[float, float]:
        """A page point on the canvas that no node, group or page element covers."""
        point = self.page.evaluate(EMPTY_POINT, margin)
        assert point is not None, "no empty spot left on the canvas"
        return point[0], point[1]

    def _on_canvas(self, point: tuple[float, float], what: str) -> tuple[float, float]:
        """`point`, after checking that the canvas (not another element) is what a click there hits."""
        covered = self.page.evaluate(
            """([x, y]) => {
              const hit = document.elementFromPoint(x, y);
              if (hit && hit.matches('[data-testid="graph-canvas"]')) return null;
              return hit ? hit.outerHTML.slice(0, 160) : "nothing (outside the window)";
            }""",
            list(point),
        )
        assert covered is None, f"{what} at page point {point} is covered by {covered}"
        return point

    # ------------------------------------------------------------------ input

    def click(self, point: tuple[float, float], modifiers: list[str] | None = None) -> None:
        mods = modifiers or []
        for key in mods:
            self.page.keyboard.down(key)
        self.page.mouse.click(*point)
        for key in reversed(mods):
            self.page.keyboard.up(key)

    def select_node(self, node_id: int, additive: bool = False) -> None:
        self.click(self.title_point(node_id), ["Shift"] if additive else None)
        selection = set(self.app("return [...app.canvas.selection];"))
        assert node_id in selection, f"clicking node {node_id}'s title did not select it (selection {selection})"

    def drag(
        self, start: tuple[float, float], end: tuple[float, float], steps: int = 12, before_release: Any = None
    ) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move(start[0] + (end[0] - start[0]) / 2, start[1] + (end[1] - start[1]) / 2, steps=steps // 2)
        mouse.move(*end, steps=steps - steps // 2)
        if before_release is not None:
            before_release()
        mouse.up()

    def connect(
        self, origin: int, origin_slot: int, target: int, target_input: str, before_release: Any = None
    ) -> None:
        """Drag a link from an output socket to an input socket."""
        end = self.slot_point(target, "input", self.input_slot(target, target_input))
        self.drag(self.slot_point(origin, "output", origin_slot), end, before_release=before_release)

    def press(self, keys: str) -> None:
        self.page.keyboard.press(keys)

    def focus_canvas(self) -> None:
        """Click an empty spot so that shortcuts go to the editor, not to a text field."""
        self.click(self.empty_point())

    def add_node(self, class_type: str, at: tuple[float, float], query: str | None = None) -> int:
        """Double-click the canvas at a page point, type in the search, press Enter; the new node's id."""
        before = self.node_ids()
        self.page.mouse.dblclick(*self._on_canvas(at, f"the spot to add {class_type} at"))
        dialog = self.page.get_by_test_id("search-dialog")
        expect(dialog, "double-click on the canvas did not open the node search").to_be_visible()
        expect(self.page.get_by_test_id("search-input"), "the search input has no keyboard focus").to_be_focused()
        self.page.keyboard.type(query or class_type)
        first = self.page.get_by_test_id("search-result").first
        try:
            expect(first).to_have_attribute("data-type", class_type, timeout=3_000)
        except AssertionError:
            found = self.page.get_by_test_id("search-result").evaluate_all(
                "(items) => items.slice(0, 8).map((i) => i.dataset.type)"
            )
            raise AssertionError(
                f"searching {query or class_type!r}: first results are {found}, not {class_type}"
            ) from None
        self.press("Enter")
        expect(dialog, "Enter did not close the search").to_be_hidden()
        added = self.node_ids() - before
        assert len(added) == 1, f"picking {class_type} in the search added nodes {added}"
        node_id = added.pop()
        assert self.node(node_id)["type"] == class_type
        return node_id

    def type_into_widget(self, node_id: int, name: str, text: str) -> None:
        """Click a widget (which must open a text editor with the focus), select all, type, commit."""
        self.click(self.widget_center(node_id, name))
        try:
            self.page.wait_for_function(
                "() => ['INPUT', 'TEXTAREA'].includes(document.activeElement?.tagName)", timeout=5_000
            )
        except Exception:
            raise AssertionError(
                f"clicking widget {name!r} of node {node_id} gave no focused text field to type in"
            ) from None
        self.press("Control+A")
        self.page.keyboard.type(text)
        if self.page.evaluate("() => document.activeElement.tagName === 'TEXTAREA'"):
            self.focus_canvas()  # a multiline field commits when it loses the focus
        else:
            self.press("Enter")

    def open_file(self, path: Path) -> None:
        """Open a workflow file as a person does: Open (load-button), then "Upload file..." in its dialog."""
        with self.page.expect_file_chooser() as chooser:
            self.page.get_by_test_id("load-button").click()
            self.page.get_by_test_id("upload-file").click()
        chooser.value.set_files(str(path))

    def show_panel(self, testid: str, toggle: str) -> None:
        """Open a side panel with its toolbar button unless it is already shown."""
        if not self.page.get_by_test_id(testid).is_visible():
            self.page.get_by_test_id(toggle).click()
        expect(self.page.get_by_test_id(testid)).to_be_visible()

    def record_states(self) -> None:
        self.page.evaluate(STATE_RECORDER)

    def states(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => window.__loomStates || []")

    def wait_state(self, description: str, predicate: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll the recorded setNodeState calls until `predicate(calls)` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.states()
            if predicate(calls):
                return calls
            self.page.wait_for_timeout(50)
        calls = self.states()
        raise AssertionError(f"never saw {description}; setNodeState calls: {json.dumps(calls)[-3000:]}")

    # ------------------------------------------------------------------ artifacts

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def drop_file(self, name: str, data: bytes, mime: str) -> None:
        """Dispatch dragenter/dragover/drop with a DataTransfer holding the file onto the canvas."""
        self.page.evaluate(
            """async ([name, hex, mime]) => {
              const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
              const transfer = new DataTransfer();
              transfer.items.add(new File([bytes], name, {type: mime}));
              const target = document.querySelector('[data-testid="graph-canvas"]');
              const box = target.getBoundingClientRect();
              const at = {bubbles: true, cancelable: true, dataTransfer: transfer,
                          clientX: box.left + box.width / 2, clientY: box.top + box.height / 2};
              for (const type of ["dragenter", "dragover", "drop"]) target.dispatchEvent(new DragEvent(type, at));
            }""",
            [name, data.hex(), mime],
        )


def expected_widget_inputs(object_info: dict[str, Any], class_type: str) -> dict[str, Any]:
    """The API-prompt value of every widget of a freshly created node, from /object_info alone:
    the declared default, else a combo's first option, else the kind's zero value."""
    entry = object_info[class_type]
    values: dict[str, Any] = {}
    for section in ("required", "optional"):
        for name, spec in (entry["input"].get(section) or {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if options.get("forceInput"):
                continue
            if isinstance(kind, list):
                values[name] = options.get("default", kind[0] if kind else None)
            elif kind == "COMBO":
                values[name] = options.get("default", (options.get("options") or [None])[0])
            elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                zero = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]
                values[name] = options.get("default", zero)
    return values


def sockets_of_type(object_info: dict[str, Any], class_type: str, socket_type: str) -> list[str]:
    """Names of a node type's inputs that accept `socket_type` (links or, for widgets, conversion)."""
    entry = object_info[class_type]
    names = []
    for section in ("required", "optional"):
        for name, spec in (entry["input"].get(section) or {}).items():
            kind = spec[0]
            kinds = {"COMBO"} if isinstance(kind, list) else {part.strip() for part in str(kind).split(",")}
            if socket_type in kinds or "*" in kinds:
                names.append(name)
    return names
