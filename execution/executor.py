"""Run a validated prompt: topological order, cache, lazy inputs, lists, expansion, async nodes.

Semantics are ComfyUI's (spec §3.1-3.4, §4.3-4.6); the registry, the cache policy and the event
sink are passed in, so this module never imports nodes/ or torch.

How a node runs. Each node execution is a generator (`_node_steps`) that does all of its work
synchronously and *yields* only when a node method handed back an awaitable. A sync node therefore
runs to completion inline, with no task or event-loop round trip (trivial graphs stay fast); the
first yield turns the rest of that node into an asyncio task while the scheduler goes on starting
other ready nodes, which is how independent async nodes overlap. When nothing is ready and tasks
are in flight the loop waits for one to finish; nothing ready and nothing in flight while nodes are
still staged means a dependency cycle.

Per prompt, every node's outputs live in `RunState.values` (a list per output slot, one element per
list-mapped call): the cache is only for reuse across prompts, so any eviction policy is safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import DependencyCycleError, EngineError, Interrupted, NodeError
from core.graph_builder import GraphBuilder, is_link
from core.runtime import ExecutionBlocker, NodeRuntime, reset_current, set_current
from core.spec import NodeDefinition
from execution.cache import Cache, ClassicCache, ObjectCache, compute_keys, is_unique
from execution.dynamic import (
    ClassInfo,
    RunState,
    call_sets,
    first_blocker,
    merge_outputs,
    merge_ui,
    split_result,
)
from execution.events import (
    EventSink,
    ExecutionBlocked,
    ExecutionCached,
    ExecutionError,
    ExecutionFinished,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    NodeExecuted,
    NodeExecuting,
    NodeFinished,
    NodePreview,
    NodeProgress,
)
from execution.guard import InputGuard, mutation_message
from execution.interrupt import InterruptFlag
from execution.oom import free_models, is_out_of_memory, out_of_memory_message

log = logging.getLogger(__name__)

Steps = Generator[Any, Any, Any]
"""A node's work: yields awaitables, receives their results."""

_SILENT_BLOCK = ExecutionBlocker(None)
_NAN = float("nan")


@dataclass
class ExecutionResult:
    """What happened to one prompt. `outputs` maps node ids to their ui dicts (cached ones too);
    `messages` are ComfyUI's history status messages."""

    prompt_id: str
    status: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: ExecutionError | ExecutionInterrupted | None = None
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == "success"


class Executor:
    """Runs validated prompts against a registry, with one cache policy. Reusable: each prompt's
    state is its own, and a failing prompt leaves the executor ready for the next one."""

    def __init__(
        self,
        registry: Mapping[str, NodeDefinition],
        cache: Cache | None = None,
        services: Mapping[str, Any] | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> None:
        self.registry = registry
        self.cache: Cache = cache if cache is not None else ClassicCache()
        self.services: Mapping[str, Any] = services if services is not None else {}
        self.interrupt = interrupt if interrupt is not None else InterruptFlag()
        self.objects = ObjectCache(enabled=getattr(self.cache, "keep_objects", True))
        self._busy = False

    def execute(
        self,
        prompt: Mapping[str, Mapping[str, Any]],
        prompt_id: str,
        outputs: Sequence[str],
        *,
        extra_data: Mapping[str, Any] | None = None,
        events: EventSink | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> ExecutionResult:
        """Synchronous `execute_async` (its own event loop; not callable from inside one)."""
        return asyncio.run(
            self.execute_async(prompt, prompt_id, outputs, extra_data=extra_data, events=events, interrupt=interrupt)
        )

    async def execute_async(
        self,
        prompt: Mapping[str, Mapping[str, Any]],
        prompt_id: str,
        outputs: Sequence[str],
        *,
        extra_data: Mapping[str, Any] | None = None,
        events: EventSink | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> ExecutionResult:
        """Run the `outputs` of an already validated `prompt` and everything they need."""
        if self._busy:
            raise EngineError("this Executor is already running a prompt; use one Executor per worker")
        self._busy = True
        flag = interrupt if interrupt is not None else self.interrupt
        flag.begin(prompt_id)
        run = RunState(self.registry, prompt, prompt_id, extra_data or {}, events, flag)
        try:
            run.record(ExecutionStart(prompt_id))
            if await self._prepare(run, outputs):
                await self._loop(run)
        finally:
            await self._cancel_tasks(run)
            self.cache.end_prompt()
            self._busy = False
        result = self._finish(run)
        _release(run)
        return result

    def _finish(self, run: RunState) -> ExecutionResult:
        status = "success"
        if run.failure is None:
            run.record(ExecutionSuccess(run.prompt_id))
        else:
            status = "interrupted" if isinstance(run.failure, ExecutionInterrupted) else "error"
            if status == "interrupted":
                run.interrupt.clear(run.prompt_id)
        run.emit(ExecutionFinished(run.prompt_id, status))
        return ExecutionResult(
            run.prompt_id, status, run.outputs, run.ran, run.cached, run.failure, run.messages, run.meta
        )

    # --- before the first node: keys, cache lookups, staging ---------------------------------------

    async def _prepare(self, run: RunState, outputs: Sequence[str]) -> bool:
        """Specs, IS_CHANGED, keys, cache lookups, then stage the outputs; False if that failed."""
        blamed = ""
        try:
            for node_id, node in run.prompt.items():
                blamed = node_id
                run.info(node["class_type"])
            blamed = next(iter(outputs), "")
            fingerprints = await _complete(self._fingerprint_steps(run, run.prompt))
            run.keys = compute_keys(run.prompt, run.spec_of, fingerprints)
            self.cache.begin_prompt({key for key in run.keys.values() if not is_unique(key)})
            self.objects.begin_prompt(run.prompt)
            cached = self._lookup(run, run.keys)
            run.record(ExecutionCached(run.prompt_id, tuple(cached)))
            self._announce_cached(run, cached)
            for blamed in outputs:
                if blamed in run.values:
                    self._serve_cached_output(run, blamed)
                else:
                    run.schedule.add_node(blamed)
        except Exception as exc:
            self._fail(run, blamed, exc)
            return False
        return True

    def _lookup(self, run: RunState, keys: Mapping[str, str]) -> list[str]:
        """Load cached results of these nodes into the run; returns the ids that hit."""
        hits = []
        for node_id, key in keys.items():
            if is_unique(key):
                continue
            entry = self.cache.get(key)
            if entry is not None:
                run.values[node_id], run.cached_ui[node_id] = entry
                hits.append(node_id)
        run.cached.extend(hits)
        return hits

    def _announce_cached(self, run: RunState, hits: Sequence[str]) -> None:
        if run.sink is not None:
            for node_id in hits:
                display, parent, real = run.ids(node_id)
                run.emit(NodeFinished(run.prompt_id, node_id, True, display, parent, real))

    def _serve_cached_output(self, run: RunState, node_id: str) -> None:
        run.executed[run.dyn.get_real_node_id(node_id)] = None
        ui = run.cached_ui.get(node_id)
        if ui:
            self._record_ui(run, node_id, ui)

    def _fingerprint_steps(self, run: RunState, nodes: Mapping[str, Mapping[str, Any]]) -> Steps:
        """IS_CHANGED of every node that has one, constants only (spec §4.4); errors -> NaN."""
        values: dict[str, Any] = {}
        waiting: list[tuple[str, Any]] = []
        for node_id, node in nodes.items():
            info = run.info(node["class_type"])
            if not info.spec.has_fingerprint:
                continue
            inputs = {
                name: items[0] for name, items in self._gather(run, node_id, node, info, resolve=False)[0].items()
            }
            runtime = self._runtime(run, node_id, info)
            token = set_current(runtime)
            try:
                value = info.definition.fingerprint(inputs)
            except Exception:
                log.warning(
                    "IS_CHANGED of node %s (%s) failed; it will always re-run", node_id, info.spec.id, exc_info=True
                )
                value = _NAN
            finally:
                reset_current(token)
            if inspect.isawaitable(value):
                waiting.append((node_id, _in_context(runtime, node_id, 0, value)))
            else:
                values[node_id] = value
        if waiting:
            done = yield asyncio.gather(*(awaitable for _, awaitable in waiting), return_exceptions=True)
            for (node_id, _), value in zip(waiting, done, strict=True):
                values[node_id] = _NAN if isinstance(value, BaseException) else value
        return values

    # --- the scheduling loop -------------------------------------------------------------------------

    async def _loop(self, run: RunState) -> None:
        schedule = run.schedule
        while run.failure is None:
            node_id = schedule.pop_ready()
            if node_id is not None:
                self._start(run, node_id)
            elif run.tasks:
                await self._wait(run)
            elif schedule.has_pending():
                self._fail_cycle(run)
            else:
                return

    def _start(self, run: RunState, node_id: str) -> None:
        steps = self._node_steps(run, node_id)
        try:
            awaitable = steps.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._fail(run, node_id, exc)
            return
        task = asyncio.get_running_loop().create_task(self._continue(run, node_id, steps, awaitable))
        run.tasks[task] = node_id
        task.add_done_callback(functools.partial(_task_done, run))

    async def _continue(self, run: RunState, node_id: str, steps: Steps, awaitable: Any) -> None:
        try:
            while True:
                try:
                    value = await awaitable
                except Exception as exc:
                    awaitable = steps.throw(exc)
                else:
                    awaitable = steps.send(value)
        except StopIteration:
            return
        except Exception as exc:
            self._fail(run, node_id, exc)

    async def _wait(self, run: RunState) -> None:
        """Wait for an async node to finish; poll the interrupt flag meanwhile (a sleeping async
        node never reports progress)."""
        run.wake.clear()
        while not run.wake.is_set():
            try:
                await asyncio.wait_for(run.wake.wait(), timeout=0.1)
            except TimeoutError:
                if run.interrupt.is_requested(run.prompt_id) and run.tasks:
                    self._fail(
                        run, next(iter(run.tasks.values())), Interrupted(f"prompt {run.prompt_id} was interrupted")
                    )
                    return

    async def _cancel_tasks(self, run: RunState) -> None:
        tasks = list(run.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _fail_cycle(self, run: RunState) -> None:
        cycle = run.schedule.find_cycle() or list(run.schedule.staged)
        # Blame the first expanded node on the cycle (spec §3.3), reported under its real id.
        blamed = next((node_id for node_id in cycle if run.dyn.is_ephemeral(node_id)), cycle[0])
        described = " -> ".join(f"{node_id} ({run.dyn.get_node(node_id)['class_type']})" for node_id in cycle)
        message = f"dependency cycle detected: {described} -> {cycle[0]}; each waits on the next"
        self._fail(run, blamed, DependencyCycleError(message))

    def _fail(self, run: RunState, node_id: str, exc: BaseException) -> None:
        """Record the prompt's first failure (later ones are consequences and are dropped)."""
        if run.failure is not None:
            return
        has_node = run.dyn.has_node(node_id)
        real = run.dyn.get_real_node_id(node_id) if has_node else node_id
        node_type = str(run.dyn.get_node(node_id).get("class_type", "")) if has_node else ""
        executed = tuple(run.executed)
        if isinstance(exc, Interrupted):
            log.info("prompt %s interrupted at node %s (%s)", run.prompt_id, node_id, node_type)
            run.failure = ExecutionInterrupted(run.prompt_id, real, node_type, executed)
        else:
            log.error("prompt %s: node %s (%s) failed: %s", run.prompt_id, node_id, node_type, exc, exc_info=exc)
            cycle = isinstance(exc, DependencyCycleError)
            run.failure = ExecutionError.from_exception(
                run.prompt_id,
                real,
                node_type,
                executed,
                exc,
                run.inputs_of.get(node_id, {}),
                tuple(run.values),
                "graph.DependencyCycleError" if cycle else None,
            )
            if is_out_of_memory(exc):  # ComfyUI's answer: free every model, say what to try
                free_models(self.services)
                run.failure = dataclasses.replace(run.failure, exception_message=out_of_memory_message(exc))
        run.record(run.failure)

    # --- one node ------------------------------------------------------------------------------------

    def _node_steps(self, run: RunState, node_id: str) -> Steps:
        node = run.dyn.get_node(node_id)
        info = run.info(node["class_type"])
        run.check_interrupt()
        expanded = node_id in run.expansions
        if not expanded and self._reuse(run, node_id):
            return
        if run.sink is not None:
            display, parent, real = run.ids(node_id)
            run.emit(NodeExecuting(run.prompt_id, node_id, display, parent, real))
        if expanded:
            outputs, ui = self._resolve_expansion(run, node_id, info)
            self._store(run, node_id, outputs, ui)
            return
        inputs, missing, sources = self._gather(run, node_id, node, info, resolve=True)
        run.inputs_of[node_id] = inputs
        instance = self.objects.get(node_id, info.spec.id, info.definition.create, run.dyn.get_real_node_id(node_id))
        if info.spec.has_lazy_check:
            asked = yield from self._call_steps(run, node_id, info, instance, inputs, sources, lazy_check=True)
            if self._request_lazy(run, node_id, node, asked, missing):
                return
        results = yield from self._call_steps(run, node_id, info, instance, inputs, sources, lazy_check=False)
        per_call, ui, graphs = [], None, {}
        for index, returned in enumerate(results):
            values, call_ui, graph = split_result(node_id, info.spec.id, len(info.list_outputs), returned)
            per_call.append(values)
            if call_ui:
                ui = merge_ui(ui, call_ui)
            if graph is not None:
                graphs[index] = graph
        if graphs:
            yield from self._expand(run, node_id, per_call, graphs, ui)
            return
        self._store(run, node_id, merge_outputs(per_call, info.list_outputs), ui)

    def _reuse(self, run: RunState, node_id: str) -> bool:
        """An identical node (same key) already ran in this prompt: use its result, as ComfyUI does."""
        key = run.keys.get(node_id)
        if key is None or is_unique(key) or key not in self.cache:
            return False
        entry = self.cache.get(key)
        if entry is None:
            return False
        run.values[node_id], run.cached_ui[node_id] = entry
        run.cached.append(node_id)
        self._serve_cached_output(run, node_id)
        self._announce_cached(run, (node_id,))
        run.schedule.complete(node_id)
        return True

    def _gather(
        self, run: RunState, node_id: str, node: Mapping[str, Any], info: ClassInfo, *, resolve: bool
    ) -> tuple[dict[str, list[Any]], set[str], dict[str, str]]:
        """Inputs of one node as lists (spec §4.5), the linked inputs still missing (unevaluated lazy
        ones, passed as None) and the producer of each resolved link. `resolve=False` (IS_CHANGED)
        passes every link as None."""
        inputs: dict[str, list[Any]] = {}
        missing: set[str] = set()
        sources: dict[str, str] = {}
        declared = info.declared
        for name, value in node.get("inputs", {}).items():
            if is_link(value):
                if name in info.raw:
                    inputs[name] = [value]
                    continue
                produced = run.values.get(value[0]) if resolve else None
                if produced is None:
                    inputs[name] = [None]
                    missing.add(name)
                    continue
                slot = int(value[1])
                if slot >= len(produced):
                    raise NodeError(
                        node_id,
                        info.spec.id,
                        f"input '{name}' links to output {slot} of node {value[0]}, which has {len(produced)} output(s)",
                    )
                inputs[name] = produced[slot]
                sources[name] = value[0]
            elif name in declared and declared[name].hidden_kind is None:
                inputs[name] = [value]  # undeclared constants are dropped, as in ComfyUI
        for name, kind in info.hidden:
            inputs[name] = [run.hidden_value(node_id, kind)]
        return inputs, missing, sources

    def _call_steps(
        self,
        run: RunState,
        node_id: str,
        info: ClassInfo,
        instance: Any,
        inputs: dict[str, list[Any]],
        sources: dict[str, str],
        *,
        lazy_check: bool,
    ) -> Steps:
        """Call FUNCTION (or check_lazy_status) once per list-mapped input set; returns the results."""
        input_is_list = info.spec.input_is_list
        calls = call_sets(inputs, input_is_list)
        method = info.definition.check_lazy if lazy_check else info.definition.execute
        guard = InputGuard()
        runtime = self._runtime(run, node_id, info)
        results: list[Any] = [None] * len(calls)
        waiting: list[int] = []
        for index, args in enumerate(calls):
            blocker = None if input_is_list else first_blocker(args, sources)
            if blocker is not None:
                results[index] = blocker if lazy_check else self._blocked(run, node_id, info, blocker)
                continue
            run.check_interrupt()
            for name, producer in sources.items():
                args[name] = guard.protect(args[name], name, producer)
            GraphBuilder.set_default_prefix(node_id, index, 0)
            token = set_current(runtime)
            try:
                value = method(instance, args)
            finally:
                reset_current(token)
            if inspect.isawaitable(value):
                waiting.append(index)
                results[index] = _in_context(runtime, node_id, index, value)
            else:
                results[index] = value
        if waiting:
            done = yield asyncio.gather(*(results[index] for index in waiting))
            for index, value in zip(waiting, done, strict=True):
                results[index] = value
        if guard.watching:
            self._check_guard(run, node_id, info, guard)
        return results

    def _check_guard(self, run: RunState, node_id: str, info: ClassInfo, guard: InputGuard) -> None:
        violations = guard.violations()
        if not violations:
            return
        for _, producer in violations:
            key = run.keys.get(producer or "")
            if key is not None and not is_unique(key):
                self.cache.discard(key)  # its value is corrupted: never serve it again
        raise NodeError(node_id, info.spec.id, mutation_message(violations[0][0]))

    def _blocked(self, run: RunState, node_id: str, info: ClassInfo, blocker: ExecutionBlocker) -> ExecutionBlocker:
        """A call fed a blocker is not made; a message is reported once, then it blocks silently."""
        if blocker.message is not None and id(blocker) not in run.reported_blocks:
            run.reported_blocks.add(id(blocker))
            real = run.dyn.get_real_node_id(node_id)
            run.emit(ExecutionBlocked(run.prompt_id, real, info.spec.id, str(blocker.message), tuple(run.executed)))
        return _SILENT_BLOCK

    def _request_lazy(
        self, run: RunState, node_id: str, node: Mapping[str, Any], asked: list[Any], missing: set[str]
    ) -> bool:
        """Stage the producers of the lazy inputs check_lazy_status asked for; True = run later."""
        names: set[str] = set()
        for answer in asked:
            if isinstance(answer, (list, tuple)):
                names.update(name for name in answer if isinstance(name, str))
        needed = sorted(names & missing)
        if not needed:
            return False
        for name in needed:
            source, slot = node["inputs"][name]
            run.schedule.add_strong_link(source, int(slot), node_id)
        run.inputs_of.pop(node_id, None)
        run.schedule.requeue(node_id)
        return True

    def _runtime(self, run: RunState, node_id: str, info: ClassInfo) -> NodeRuntime:
        return NodeRuntime(
            node_id=node_id,
            class_type=info.spec.id,
            prompt_id=run.prompt_id,
            display_node_id=run.dyn.get_display_node_id(node_id),
            report_progress=functools.partial(_report_progress, run, node_id),
            interrupt_check=run.check_interrupt,
            services=self.services,
            extra_data=run.extra_data,
        )

    # --- results, expansion ----------------------------------------------------------------------------

    def _store(self, run: RunState, node_id: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        run.values[node_id] = outputs
        run.inputs_of.pop(node_id, None)
        real = run.dyn.get_real_node_id(node_id)
        key = run.keys.get(node_id)
        if key is not None and not is_unique(key):
            owner = run.keys.get(real) if real != node_id else None
            self.cache.put(key, (outputs, ui), node_id, owner)
        run.ran.append(node_id)
        run.executed[real] = None
        if ui:
            self._record_ui(run, node_id, ui)
        if run.sink is not None:
            display, parent, _ = run.ids(node_id)
            run.emit(NodeFinished(run.prompt_id, node_id, False, display, parent, real))
        run.schedule.complete(node_id)

    def _record_ui(self, run: RunState, node_id: str, ui: dict[str, Any]) -> None:
        display, parent, real = run.ids(node_id)
        run.outputs[node_id] = ui
        run.meta[node_id] = {
            "node_id": node_id,
            "display_node": display,
            "parent_node": parent,
            "real_node_id": real,
        }
        run.emit(NodeExecuted(run.prompt_id, node_id, display, ui))

    def _expand(
        self,
        run: RunState,
        node_id: str,
        per_call: list[tuple[Any, ...]],
        graphs: dict[int, Any],
        ui: dict[str, Any] | None,
    ) -> Steps:
        """Add the nodes a call returned under "expand" (spec §3.3) and run the parent again once
        its linked results exist."""
        class_type = run.dyn.get_node(node_id)["class_type"]
        added: dict[str, Mapping[str, Any]] = {}
        for graph in graphs.values():
            if not isinstance(graph, Mapping):
                raise NodeError(node_id, class_type, f"'expand' must be a graph dict, got {type(graph).__name__}")
            for new_id, new_node in graph.items():
                if run.dyn.has_node(new_id) or new_id in added:
                    raise NodeError(
                        node_id,
                        class_type,
                        f"expansion adds node '{new_id}', which already exists; build expansions "
                        "with GraphBuilder() so ids get a unique prefix",
                    )
                if not isinstance(new_node, Mapping) or new_node.get("class_type") not in run.registry:
                    raise NodeError(node_id, class_type, f"expansion node '{new_id}' has an unknown class_type")
                added[new_id] = new_node
        for new_id, new_node in added.items():
            run.dyn.add_ephemeral_node(new_id, new_node, node_id, new_node.get("override_display_id"))
        fingerprints = yield from self._fingerprint_steps(run, added)
        keys = compute_keys(added, run.spec_of, fingerprints, known=run.keys)
        run.keys.update(keys)
        self._announce_cached(run, self._lookup(run, keys))
        run.expansions[node_id] = (per_call, graphs, ui)
        for new_id, new_node in added.items():
            if run.info(new_node["class_type"]).output_node:
                if new_id in run.values:
                    self._serve_cached_output(run, new_id)
                else:
                    run.schedule.add_node(new_id)
        for index in graphs:
            for value in per_call[index]:
                if is_link(value):
                    run.schedule.add_strong_link(value[0], int(value[1]), node_id)
        run.inputs_of.pop(node_id, None)
        run.schedule.requeue(node_id)

    def _resolve_expansion(self, run: RunState, node_id: str, info: ClassInfo) -> tuple[list[list[Any]], Any]:
        """The parent's outputs once its subgraph ran: links in an expanding call's result become
        the linked node's values (all its elements)."""
        per_call, graphs, ui = run.expansions.pop(node_id)
        outputs: list[list[Any]] = []
        for slot, is_list in enumerate(info.list_outputs):
            values: list[Any] = []
            for index, result in enumerate(per_call):
                value = result[slot]
                if index in graphs and is_link(value):
                    produced = run.values.get(value[0])
                    if produced is None or int(value[1]) >= len(produced):
                        raise NodeError(
                            node_id, info.spec.id, f"expansion result links to {value}, which produced nothing"
                        )
                    values.extend(produced[int(value[1])])
                elif is_list and isinstance(value, (list, tuple)):
                    values.extend(value)
                else:
                    values.append(value)
            outputs.append(values)
        return outputs, ui


def _report_progress(run: RunState, node_id: str, value: float, total: float | None, preview: Any = None) -> None:
    if run.sink is None:
        return
    display, parent, real = run.ids(node_id)
    run.emit(NodeProgress(run.prompt_id, node_id, value, total, display, parent, real))
    if preview is not None:
        run.emit(NodePreview(run.prompt_id, node_id, preview, display, parent, real))


def _release(run: RunState) -> None:
    """Drop the prompt's node values once its result is built. A RunState is part of a reference
    cycle (its Schedule holds its bound methods), so without this every tensor, latent and model
    handle a prompt produced would live on until Python's cyclic GC happened to run -- unloaded
    models and old images piling up in RSS, prompt after prompt (tests/soak/)."""
    run.values.clear()
    run.inputs_of.clear()
    run.cached_ui.clear()
    run.expansions.clear()
    run.tasks.clear()


def _task_done(run: RunState, task: asyncio.Task[Any]) -> None:
    run.tasks.pop(task, None)
    run.wake.set()


async def _in_context(runtime: NodeRuntime, node_id: str, index: int, awaitable: Any) -> Any:
    """Await a node method's awaitable with the node's runtime and expansion prefix current (each
    task has its own context, so concurrent async nodes never see each other's)."""
    GraphBuilder.set_default_prefix(node_id, index, 0)
    token = set_current(runtime)
    try:
        return await awaitable
    finally:
        reset_current(token)


async def _complete(steps: Steps) -> Any:
    """Drive a step generator to its end, awaiting what it yields."""
    try:
        awaitable = steps.send(None)
        while True:
            awaitable = steps.send(await awaitable)
    except StopIteration as stop:
        return stop.value


__all__ = ["ExecutionResult", "Executor"]
