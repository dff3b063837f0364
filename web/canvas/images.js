// @ts-check
/** Images drawn on nodes (outputs, uploaded pictures), loaded once per URL; a load triggers a redraw. */

const MAX_IMAGES = 200;

export class ImageCache {
  /** @param {() => void} onLoad */
  constructor(onLoad) {
    this.onLoad = onLoad;
    /** @type {Map<string, HTMLImageElement>} */
    this.images = new Map();
  }

  /**
   * The loaded image for `url`, or null while it loads or when it failed.
   * @param {string} url
   * @returns {HTMLImageElement | null}
   */
  get(url) {
    let image = this.images.get(url);
    if (!image) {
      if (this.images.size >= MAX_IMAGES) this.images.clear();
      image = new Image();
      image.onload = this.onLoad;
      image.src = url;
      this.images.set(url, image);
    }
    return image.complete && image.naturalWidth > 0 ? image : null;
  }
}
