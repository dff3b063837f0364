// @ts-check
/**
 * Pictures dropped on or pasted into the canvas, as in ComfyUI: a PNG/JPEG/WebP/GIF without an
 * embedded workflow is uploaded (POST /upload/image) and shown by an image-loading node: the one
 * it was dropped on when that node takes an image, else a new LoadImage at the drop point. One
 * undo step either way. A PNG carrying a workflow (or an API prompt) still opens that workflow.
 */

import { hitTest } from "../canvas/hit.js";
import { declaredInputs } from "../graph/types.js";
import { isPng, pngWorkflow } from "./pnginfo.js";

/** @typedef {import("../app.js").App} App */

export const LOAD_IMAGE = "LoadImage";
const IMAGE_MIME = new Set(["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"]);
const IMAGE_NAME = /\.(png|jpe?g|webp|gif|bmp)$/i;

/**
 * Is this file a picture the server can load?
 * @param {{type: string, name: string}} file
 */
export function isImageFile(file) {
  return IMAGE_MIME.has(file.type) || (!file.type && IMAGE_NAME.test(file.name));
}

/**
 * The image-upload combo of an object_info entry (LoadImage's "image"), or null.
 * @param {any} entry
 * @returns {import("../graph/types.js").InputDecl | null}
 */
export function imageInput(entry) {
  if (!entry) return null;
  return declaredInputs(entry).find((inp) => inp.isWidget && inp.choices !== null && Boolean(inp.options.image_upload)) || null;
}

/**
 * The first picture among clipboard or drag data items, or null.
 * @param {DataTransfer | null} data
 * @returns {File | null}
 */
export function imageFromTransfer(data) {
  if (!data) return null;
  for (const file of Array.from(data.files || [])) if (isImageFile(file)) return file;
  for (const item of Array.from(data.items || [])) {
    if (item.kind !== "file") continue;
    const file = item.getAsFile();
    if (file && isImageFile(file)) return file;
  }
  return null;
}

/**
 * Does the file carry a workflow or prompt to open (only PNGs do)?
 * @param {Blob} file
 */
export async function carriesWorkflow(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (!isPng(bytes)) return false;
  try {
    const found = await pngWorkflow(bytes);
    return Boolean(found.workflow || found.prompt);
  } catch {
    return false; // unreadable metadata: it is still a picture
  }
}

/**
 * A file dropped on the canvas at `screen` (canvas px): a picture goes to a LoadImage node,
 * anything else (workflow JSON, a PNG with a workflow) is opened as a workflow.
 * @param {App} app
 * @param {File} file
 * @param {number[]} screen
 */
export async function dropFile(app, file, screen) {
  if (isImageFile(file) && !(await carriesWorkflow(file))) return placeImage(app, file, screen);
  await app.files.openFile(file, { newTab: false });
  return null;
}

/**
 * Upload a picture and show it in the image node under `screen`, or in a new LoadImage there.
 * Errors are shown, not thrown.
 * @param {App} app
 * @param {File} file
 * @param {number[]} screen canvas px
 * @returns {Promise<number | null>} the id of the node showing it
 */
export async function placeImage(app, file, screen) {
  const graph = app.graph;
  const objectInfo = app.objectInfo;
  const graphPos = app.canvas.toGraph(screen);
  const hit = hitTest(app.canvas.scene, graphPos[0], graphPos[1]);
  const hitNode = hit && "nodeId" in hit ? graph.nodes.get(hit.nodeId) : undefined;
  const target = hitNode && imageInput(objectInfo[hitNode.type]) ? hitNode.id : null;
  if (target === null && !imageInput(objectInfo[LOAD_IMAGE])) {
    app.errors.showMessage(`Cannot use ${file.name}`, `there is no ${LOAD_IMAGE} node type with an image input on this server`);
    return null;
  }
  let name;
  try {
    name = await app.canvas.env.uploadImage(file);
  } catch (error) {
    app.errors.showMessage(`Cannot upload ${file.name}`, error instanceof Error ? error.message : String(error));
    return null;
  }
  // The user may have switched tabs or deleted the node while the upload ran.
  if (app.graph !== graph) return null;
  if (target !== null && graph.nodes.has(target)) {
    const decl = /** @type {import("../graph/types.js").InputDecl} */ (imageInput(objectInfo[graph.node(target).type]));
    remember(decl, name);
    app.checkpoint("replace image");
    graph.setWidget(target, decl.name, name, objectInfo);
    app.canvas.select([target]);
    return target;
  }
  const decl = /** @type {import("../graph/types.js").InputDecl} */ (imageInput(objectInfo[LOAD_IMAGE]));
  remember(decl, name);
  const node = app.addNode(LOAD_IMAGE, graphPos); // takes the undo checkpoint
  graph.setWidget(node.id, decl.name, name, objectInfo);
  return node.id;
}

/**
 * The uploaded name joins the combo's choices (as after ComfyUI's upload button).
 * @param {import("../graph/types.js").InputDecl} decl
 * @param {string} name
 */
function remember(decl, name) {
  if (decl.choices && !decl.choices.includes(name)) decl.choices.push(name);
}
