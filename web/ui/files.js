// @ts-check
/**
 * Workflow files: read a dropped or uploaded .json (UI workflow, else API prompt) or PNG (its
 * "workflow" chunk, else its "prompt" chunk), download JSON, and the open dialog listing the
 * user's server-side workflows (/userdata?dir=workflows) with an upload button.
 */

import { fromWorkflow } from "../graph/serialize.js";
import { looksLikeApiPrompt, promptToGraph } from "./api_import.js";
import { h, modal } from "./dialog.js";
import { isPng, pngWorkflow } from "./pnginfo.js";

/** @typedef {import("../graph/model.js").Graph} Graph */

/**
 * A graph from parsed JSON: a UI workflow (has `nodes`), else an API prompt.
 * @param {any} json
 * @param {Record<string, any>} objectInfo
 * @returns {Graph}
 */
export function graphFromJson(json, objectInfo) {
  if (json && typeof json === "object" && Array.isArray(json.nodes)) return fromWorkflow(json);
  if (looksLikeApiPrompt(json)) return promptToGraph(json, objectInfo);
  throw new Error("this JSON is neither a workflow (it has no 'nodes' list) nor an API prompt");
}

/**
 * @param {File} file
 * @param {Record<string, any>} objectInfo
 * @returns {Promise<{graph: Graph, name: string}>}
 */
export async function graphFromFile(file, objectInfo) {
  const name = file.name.replace(/\.(json|png)$/i, "") || "workflow";
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (isPng(bytes)) {
    const found = await pngWorkflow(bytes);
    if (found.workflow) return { graph: fromWorkflow(found.workflow), name };
    if (found.prompt) return { graph: promptToGraph(found.prompt, objectInfo), name };
    throw new Error(`${file.name} has no workflow or prompt in its metadata`);
  }
  let json;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new Error(`${file.name} is neither a PNG nor JSON (${error instanceof Error ? error.message : error})`);
  }
  return { graph: graphFromJson(json, objectInfo), name };
}

/**
 * @param {string} filename
 * @param {any} data
 */
export function downloadJson(filename, data) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** "My flow" -> "My flow.json"; slashes kept as subfolders, nothing that climbs out. @param {string} name */
export function workflowFileName(name) {
  const clean = name
    .trim()
    .replace(/\\/g, "/")
    .split("/")
    .filter((part) => part && part !== "." && part !== "..")
    .join("/");
  if (!clean) return "";
  return clean.toLowerCase().endsWith(".json") ? clean : `${clean}.json`;
}

/**
 * The open dialog: server workflows plus "Upload file".
 * @param {{list: () => Promise<string[]>, openServer: (name: string) => void, openFile: (file: File) => void}} handlers
 */
export async function showOpenDialog(handlers) {
  const list = h("ul", { className: "file-list", dataset: { testid: "workflow-list" } }, [h("li", { className: "empty", textContent: "Loading\u2026" })]);
  const picker = h("input", { type: "file", accept: ".json,.png,application/json,image/png", hidden: true, dataset: { testid: "workflow-upload" } });
  const dialog = modal("Open a workflow", [h("p", { textContent: "Saved on the server:" }), list, picker], [
    { label: "Upload file\u2026", testid: "upload-file", onClick: () => (picker.click(), false) },
    { label: "Cancel" },
  ], { testid: "open-dialog" });
  picker.addEventListener("change", () => {
    const file = picker.files && picker.files[0];
    dialog.close();
    if (file) handlers.openFile(file);
  });
  try {
    const names = await handlers.list();
    list.replaceChildren(
      ...names.map((name) =>
        h("li", {}, [
          h("button", {
            type: "button",
            textContent: name.replace(/\.json$/i, ""),
            dataset: { testid: "workflow-file", name },
            onclick: () => {
              dialog.close();
              handlers.openServer(name);
            },
          }),
        ]),
      ),
    );
    if (!names.length) list.replaceChildren(h("li", { className: "empty", textContent: "No saved workflows yet (Save puts them here)." }));
  } catch (error) {
    list.replaceChildren(h("li", { className: "empty", textContent: `Cannot list them: ${error instanceof Error ? error.message : error}` }));
  }
}
