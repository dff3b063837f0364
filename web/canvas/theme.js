// @ts-check
/**
 * Colours, fonts and sizes of the canvas. Sizes are in graph units (CSS px at zoom 1) and match
 * litegraph's so ComfyUI workflows (node.pos is the body's top-left, the title sits above it) lay
 * out the same here.
 */

export const TITLE_H = 30;
export const SLOT_H = 20;
export const WIDGET_H = 20;
export const WIDGET_GAP = 4;
export const SLOT_R = 5;
export const NODE_RADIUS = 8;
export const GROUP_TITLE_H = 34;
export const COLLAPSED_W = 100;
export const MULTILINE_MIN_H = 60;
export const IMAGE_MIN_H = 180;
/** Below this zoom text is not drawn; below LOD_BOXES only coloured boxes are. */
export const LOD_TEXT = 0.45;
export const LOD_BOXES = 0.25;

export const FONT = "13px system-ui, -apple-system, 'Segoe UI', sans-serif";
export const FONT_SMALL = "12px system-ui, -apple-system, 'Segoe UI', sans-serif";
export const FONT_GROUP = "22px system-ui, -apple-system, 'Segoe UI', sans-serif";

export const theme = {
  background: "#1b1d21",
  grid: "#24272c",
  nodeBg: "#2b2e33",
  nodeTitle: "#3a3e45",
  nodeBorder: "#15171a",
  nodeText: "#e2e4e8",
  slotText: "#aab0ba",
  selected: "#f0f0f0",
  running: "#4caf50",
  error: "#ff4d4f",
  progress: "#5aa9ff",
  widgetBg: "#1f2126",
  widgetBorder: "#474b53",
  widgetText: "#d7dae0",
  widgetLabel: "#8d939e",
  widgetDisabled: "#5a5f68",
  linkDefault: "#9aa0a8",
  groupColor: "#3f789e",
  bypass: "rgba(160, 60, 200, 0.55)",
  boxSelect: "rgba(120, 170, 255, 0.9)",
  boxSelectFill: "rgba(120, 170, 255, 0.12)",
};

/** Socket/link colours per type, as users know them from ComfyUI. */
export const TYPE_COLORS = /** @type {Record<string, string>} */ ({
  MODEL: "#b39ddb",
  CLIP: "#ffd500",
  VAE: "#ff6e6e",
  CONDITIONING: "#ffa931",
  LATENT: "#ff9cf9",
  IMAGE: "#64b5f6",
  MASK: "#81c784",
  CONTROL_NET: "#00d78d",
  CLIP_VISION: "#a8dadc",
  CLIP_VISION_OUTPUT: "#ad7452",
  STYLE_MODEL: "#c2ffae",
  UPSCALE_MODEL: "#8a8aff",
  GLIGEN: "#8aa0a0",
  NOISE: "#b0b0b0",
  SAMPLER: "#ecb4b4",
  SIGMAS: "#cdffcd",
  GUIDER: "#66ffff",
  INT: "#7ec8a2",
  FLOAT: "#a5d67e",
  STRING: "#e0c67e",
  BOOLEAN: "#d1a1ff",
  COMBO: "#9fb8d0",
  "*": "#9aa0a8",
});

/**
 * @param {unknown} type
 * @returns {string}
 */
export function typeColor(type) {
  if (typeof type !== "string") return theme.linkDefault;
  const direct = TYPE_COLORS[type];
  if (direct) return direct;
  const first = type.split(",")[0].trim();
  return TYPE_COLORS[first] || hashColor(type);
}

/** @type {Map<string, string>} */
const hashed = new Map();

/**
 * A stable, readable colour for custom types.
 * @param {string} type
 */
function hashColor(type) {
  let color = hashed.get(type);
  if (color) return color;
  let hash = 0;
  for (let index = 0; index < type.length; index++) hash = (hash * 31 + type.charCodeAt(index)) | 0;
  color = `hsl(${Math.abs(hash) % 360}, 55%, 65%)`;
  hashed.set(type, color);
  return color;
}

/** ComfyUI's node colour palette (title colour, body colour), for the app's colour menu. */
export const NODE_COLORS = /** @type {Record<string, {color: string, bgcolor: string}>} */ ({
  red: { color: "#322", bgcolor: "#533" },
  brown: { color: "#332922", bgcolor: "#593930" },
  green: { color: "#232", bgcolor: "#353" },
  blue: { color: "#223", bgcolor: "#335" },
  pale_blue: { color: "#2a363b", bgcolor: "#3f5159" },
  cyan: { color: "#233", bgcolor: "#355" },
  purple: { color: "#323", bgcolor: "#535" },
  yellow: { color: "#432", bgcolor: "#653" },
  black: { color: "#222", bgcolor: "#000" },
});
