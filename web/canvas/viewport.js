// @ts-check
/**
 * Pan/zoom maths: screen = (graph + offset) * scale, in CSS px relative to the canvas element.
 * Pure (no DOM), unit-tested.
 */

export const MIN_SCALE = 0.1;
export const MAX_SCALE = 10;

export class Viewport {
  constructor() {
    /** @type {number[]} */
    this.offset = [0, 0];
    this.scale = 1;
  }

  /** @param {number[]} screen @returns {number[]} */
  toGraph(screen) {
    return [screen[0] / this.scale - this.offset[0], screen[1] / this.scale - this.offset[1]];
  }

  /** @param {number[]} pos @returns {number[]} */
  toScreen(pos) {
    return [(pos[0] + this.offset[0]) * this.scale, (pos[1] + this.offset[1]) * this.scale];
  }

  /** Move the view by a screen-space delta. @param {number} dx @param {number} dy */
  panBy(dx, dy) {
    this.offset[0] += dx / this.scale;
    this.offset[1] += dy / this.scale;
  }

  /**
   * Zoom to `scale` keeping the graph point under `screen` fixed.
   * @param {number} scale
   * @param {number[]} screen
   */
  zoomTo(scale, screen) {
    const clamped = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
    const anchor = this.toGraph(screen);
    this.scale = clamped;
    this.offset[0] = screen[0] / clamped - anchor[0];
    this.offset[1] = screen[1] / clamped - anchor[1];
  }

  /** @param {number} factor @param {number[]} screen */
  zoomBy(factor, screen) {
    this.zoomTo(this.scale * factor, screen);
  }

  /**
   * Show the graph rectangle `bounds` [x, y, w, h] centred in a `width` x `height` view.
   * @param {number[]} bounds
   * @param {number} width
   * @param {number} height
   * @param {number} [margin] screen px kept free around it
   */
  fit(bounds, width, height, margin = 40) {
    const [x, y, w, h] = bounds;
    const availW = Math.max(1, width - 2 * margin);
    const availH = Math.max(1, height - 2 * margin);
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, Math.min(availW / Math.max(w, 1), availH / Math.max(h, 1), 1.5)));
    this.scale = scale;
    this.offset[0] = width / 2 / scale - (x + w / 2);
    this.offset[1] = height / 2 / scale - (y + h / 2);
  }

  /**
   * The graph-space rectangle [x, y, w, h] visible in a view of `width` x `height` CSS px.
   * @param {number} width
   * @param {number} height
   * @param {number[]} [out] reused to avoid allocating per frame
   */
  visibleRect(width, height, out = [0, 0, 0, 0]) {
    out[0] = -this.offset[0];
    out[1] = -this.offset[1];
    out[2] = width / this.scale;
    out[3] = height / this.scale;
    return out;
  }

  /** @returns {{offset: number[], scale: number}} */
  get() {
    return { offset: [this.offset[0], this.offset[1]], scale: this.scale };
  }

  /** @param {{offset?: number[], scale?: number}} state */
  set(state) {
    if (state.offset && state.offset.length >= 2 && state.offset.every(Number.isFinite)) {
      this.offset = [Number(state.offset[0]), Number(state.offset[1])];
    }
    if (typeof state.scale === "number" && Number.isFinite(state.scale) && state.scale > 0) {
      this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, state.scale));
    }
  }
}

/**
 * @param {number[]} a [x, y, w, h]
 * @param {number[]} b [x, y, w, h]
 */
export function overlaps(a, b) {
  return a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
}

/**
 * @param {number[]} rect [x, y, w, h]
 * @param {number} x
 * @param {number} y
 */
export function contains(rect, x, y) {
  return x >= rect[0] && y >= rect[1] && x < rect[0] + rect[2] && y < rect[1] + rect[3];
}
