// @ts-check
/**
 * The ComfyUI extension shim: packages' editor scripts import `app` from "/scripts/app.js" and call
 * `app.registerExtension({name, init?, setup?, nodeCreated?, loadedGraphNode?, beforeRegisterNodeDef?})`.
 * Every URL of GET /extensions is loaded with a dynamic import(); a failing extension (a load
 * error or a hook that throws) is logged and never stops the editor.
 *
 * Node objects given to hooks are Loom's plain model nodes seen through a proxy that adds
 * ComfyUI's `comfyClass` (the class name) and `title` fallbacks; writes (node.color = ...) land on
 * the model node and redraw the canvas.
 */

/** @typedef {{name: string, [hook: string]: any}} Extension */

/**
 * @typedef {object} AppHost what web/app.js hands over once the editor is up
 * @property {() => any} graph
 * @property {() => any} canvas
 * @property {any} api
 * @property {() => Record<string, any>} objectInfo
 */

class ExtensionApp {
  constructor() {
    /** @type {Extension[]} */
    this.extensions = [];
    /** @type {AppHost | null} */
    this.host = null;
    this.started = false;
  }

  get graph() {
    return this.host ? this.host.graph() : null;
  }

  get canvas() {
    return this.host ? this.host.canvas() : null;
  }

  get api() {
    return this.host ? this.host.api : null;
  }

  /** @param {Extension} extension */
  registerExtension(extension) {
    if (!extension || typeof extension.name !== "string") {
      console.error("loom: registerExtension needs an object with a 'name'", extension);
      return;
    }
    if (this.extensions.some((ext) => ext.name === extension.name)) {
      console.warn(`loom: extension '${extension.name}' is registered twice; keeping the first`);
      return;
    }
    this.extensions.push(extension);
    // An extension that registers after start-up still gets its start hooks.
    if (this.started) {
      this.call(extension, "init", this);
      this.call(extension, "setup", this);
    }
  }

  /**
   * Run one hook of one extension; errors are logged, never thrown.
   * @param {Extension} extension
   * @param {string} hook
   * @param {...any} args
   */
  async call(extension, hook, ...args) {
    if (typeof extension[hook] !== "function") return;
    try {
      await extension[hook](...args);
    } catch (error) {
      console.error(`loom: extension '${extension.name}' failed in ${hook}:`, error);
    }
  }

  /** @param {string} hook @param {...any} args */
  async invoke(hook, ...args) {
    for (const extension of [...this.extensions]) await this.call(extension, hook, ...args);
  }

  /**
   * Load every extension script the server lists, then run init, beforeRegisterNodeDef, setup.
   * @param {AppHost} host
   * @param {string[]} urls
   */
  async start(host, urls) {
    this.host = host;
    await Promise.all(
      urls.map(async (url) => {
        try {
          await import(/* @vite-ignore */ url);
        } catch (error) {
          console.error(`loom: extension ${url} failed to load:`, error);
        }
      }),
    );
    await this.invoke("init", this);
    const info = host.objectInfo();
    for (const [type, data] of Object.entries(info)) {
      // No node classes in Loom's editor: hand over a stand-in "type" with a prototype to patch.
      await this.invoke("beforeRegisterNodeDef", { comfyClass: type, prototype: {} }, data, this);
    }
    this.started = true;
    await this.invoke("setup", this);
  }

  /**
   * A node as extensions see it.
   * @param {any} node the model node
   * @param {() => void} changed
   */
  view(node, changed) {
    return new Proxy(node, {
      get(target, key) {
        if (key === "comfyClass" || key === "type") return target.type;
        return target[key];
      },
      set(target, key, value) {
        if (key === "comfyClass") return true;
        target[key] = value;
        changed();
        return true;
      },
    });
  }

  /** @param {any} node @param {() => void} changed */
  nodeCreated(node, changed) {
    return this.invoke("nodeCreated", this.view(node, changed), this);
  }

  /** @param {any} node @param {() => void} changed */
  loadedGraphNode(node, changed) {
    return this.invoke("loadedGraphNode", this.view(node, changed), this);
  }
}

export const app = new ExtensionApp();
export default app;
