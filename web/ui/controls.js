// @ts-check
/**
 * control_after_generate, applied after a prompt was queued (as ComfyUI does): the prompt runs
 * with the values shown, then every widget with a control companion moves on -- increment,
 * decrement or randomize (fixed stays) -- so the next queue uses the new value.
 */

import { primitiveTarget } from "../graph/effective_types.js";
import { widgetLayout } from "../graph/widgets_values.js";

/** ComfyUI keeps random seeds below 2^50 so they stay exact in JS numbers and in JSON. */
const RANDOM_MAX = 1125899906842624;

/**
 * The next value of a controlled widget.
 * @param {any} value
 * @param {string} mode fixed | increment | decrement | randomize
 * @param {import("../graph/types.js").InputDecl} decl
 * @param {() => number} [random]
 */
export function nextValue(value, mode, decl, random = Math.random) {
  if (mode === "fixed" || !mode) return value;
  if (decl.choices !== null) {
    const choices = decl.choices;
    if (!choices.length) return value;
    const index = Math.max(0, choices.indexOf(value));
    if (mode === "increment") return choices[Math.min(index + 1, choices.length - 1)];
    if (mode === "decrement") return choices[Math.max(index - 1, 0)];
    return choices[Math.floor(random() * choices.length)];
  }
  const min = typeof decl.options.min === "number" ? decl.options.min : 0;
  const max = Math.min(typeof decl.options.max === "number" ? decl.options.max : RANDOM_MAX, RANDOM_MAX);
  const step = decl.type === "FLOAT" ? Number(decl.options.step) || 0.1 : 1;
  const current = Number(value) || 0;
  let next = current;
  if (mode === "increment") next = current + step;
  else if (mode === "decrement") next = current - step;
  else if (mode === "randomize") {
    next = min + Math.floor(random() * (max - min + 1));
    if (decl.type === "FLOAT") next = min + random() * (max - min);
  }
  return Math.min(Math.max(next, min), max);
}

/**
 * Advance every controlled widget of the graph; returns the node ids that changed.
 * @param {import("../graph/model.js").Graph} graph
 * @param {Record<string, any>} objectInfo
 * @param {() => number} [random]
 * @returns {number[]}
 */
export function applyControlAfterGenerate(graph, objectInfo, random = Math.random) {
  /** @type {number[]} */
  const changed = [];
  for (const node of graph.nodes.values()) {
    const entry = objectInfo[node.type];
    if (!entry || node.mode === 2 || node.mode === 4) continue;
    const linked = new Set(node.inputs.filter((inp) => inp.link !== null && inp.widget).map((inp) => inp.name));
    let touched = false;
    for (const slot of widgetLayout(entry)) {
      if (slot.kind !== "control" || linked.has(slot.input.name)) continue;
      const mode = graph.getWidget(node.id, slot.input.name, objectInfo, "control");
      const value = graph.getWidget(node.id, slot.input.name, objectInfo);
      const next = nextValue(value, mode, slot.input, random);
      if (next !== value) {
        graph.setWidget(node.id, slot.input.name, next, objectInfo);
        touched = true;
      }
    }
    if (touched) changed.push(node.id);
  }
  changed.push(...applyToPrimitives(graph, objectInfo, random));
  return changed;
}

/** What an unlinked primitive's number is driven as. @type {import("../graph/types.js").InputDecl} */
const PRIMITIVE_INT = { name: "value", section: "required", type: "INT", choices: null, options: { min: 0 }, isWidget: true };

/**
 * PrimitiveNode keeps [value, control(, filter)] in widgets_values with no object_info declaration
 * of its own: it moves on like the widget it feeds (a combo cycles its choices, a FLOAT steps by
 * its step), an unlinked number like an INT seed.
 * @param {import("../graph/model.js").Graph} graph
 * @param {Record<string, any>} objectInfo
 * @param {() => number} random
 */
function applyToPrimitives(graph, objectInfo, random) {
  /** @type {number[]} */
  const changed = [];
  for (const node of graph.nodes.values()) {
    if (node.type !== "PrimitiveNode" || !Array.isArray(node.widgets_values)) continue;
    const [value, mode] = node.widgets_values;
    if (typeof mode !== "string") continue;
    const target = primitiveTarget(graph, node, objectInfo);
    const decl = target ? target.decl : PRIMITIVE_INT;
    if (typeof value !== "number" && decl.choices === null) continue;
    const next = nextValue(value, mode, decl, random);
    if (next !== value) {
      node.widgets_values[0] = next;
      changed.push(node.id);
    }
  }
  if (changed.length) graph.changed("widget-changed");
  return changed;
}
