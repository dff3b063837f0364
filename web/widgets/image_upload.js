// @ts-check
/**
 * Image upload (LoadImage, or any combo input with {image_upload: true}): an "upload" button row
 * that opens a file chooser, uploads through env.uploadImage and sets the image combo to the
 * returned name. The chosen image is previewed in the node body (see imagePreviewUrl).
 */

import { FONT_SMALL, theme } from "../canvas/theme.js";

/**
 * The combo row an upload row belongs to (same input).
 * @param {import("../canvas/layout.js").WidgetRow[]} rows
 * @param {import("../canvas/layout.js").WidgetRow} upload
 */
export function uploadTarget(rows, upload) {
  return rows.find((row) => row.slotKind === "value" && row.decl && upload.decl && row.name === upload.decl.name) || null;
}

/**
 * The URL of the picture to preview for a node with an upload row, or null.
 * @param {import("../canvas/layout.js").NodeLayout} layout
 * @param {(name: string, type?: string) => string} viewUrl
 */
export function imagePreviewUrl(layout, viewUrl) {
  const upload = layout.widgets.find((row) => row.kind === "image_upload");
  const target = upload && uploadTarget(layout.widgets, upload);
  const value = target ? layout.values[target.index] : null;
  return typeof value === "string" && value ? viewUrl(value, "input") : null;
}

/**
 * Let the user choose an image file, upload it, and set the combo.
 * @param {import("./common.js").WidgetContext} wctx
 */
export function chooseAndUpload(wctx) {
  const target = uploadTarget(wctx.rows, wctx.row);
  if (!target) return;
  const input = document.createElement("input");
  input.type = "file";
  input.accept = "image/png,image/jpeg,image/webp,image/gif,image/*";
  input.style.display = "none";
  input.dataset.testid = "upload-input";
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    input.remove();
    if (!file) return;
    const name = await wctx.env.uploadImage(file);
    // Like ComfyUI, the uploaded name joins the combo's choices so it can be picked again.
    const choices = target.decl && target.decl.choices;
    if (choices && !choices.includes(name)) choices.push(name);
    wctx.setRow(target, name, "Upload image");
  });
  wctx.overlay.appendChild(input);
  input.click();
}

/** @type {import("./common.js").WidgetModule} */
export const imageUploadWidget = {
  draw(ctx, row, _value, w, opts) {
    ctx.fillStyle = "#30343b";
    ctx.strokeStyle = theme.widgetBorder;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.roundRect(0, 0, w, row.h, row.h / 2);
    ctx.fill();
    ctx.stroke();
    if (!opts.text) return;
    ctx.font = FONT_SMALL;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillStyle = theme.widgetText;
    ctx.fillText("choose file to upload", w / 2, row.h / 2 + 1, w - 20);
  },

  pointerDown(wctx) {
    return {
      up(moved) {
        if (!moved) chooseAndUpload(wctx);
      },
    };
  },
};
