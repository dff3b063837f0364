// @ts-check
/** Widget kind -> module (see layout.js for how a kind is chosen from object_info). */

import { booleanWidget } from "./boolean.js";
import { comboWidget } from "./combo.js";
import { imageUploadWidget } from "./image_upload.js";
import { multilineWidget } from "./multiline.js";
import { numberWidget } from "./number.js";
import { seedControlWidget } from "./seed_control.js";
import { textWidget } from "./text.js";

/** @type {Record<import("../canvas/layout.js").WidgetKind, import("./common.js").WidgetModule>} */
export const WIDGETS = {
  number: numberWidget,
  text: textWidget,
  multiline: multilineWidget,
  boolean: booleanWidget,
  combo: comboWidget,
  seed_control: seedControlWidget,
  image_upload: imageUploadWidget,
};

/** @param {import("../canvas/layout.js").WidgetKind} kind */
export function widgetModule(kind) {
  return WIDGETS[kind] || textWidget;
}
