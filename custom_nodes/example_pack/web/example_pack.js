// @ts-check
// Loaded by the editor from /extensions/example_pack/example_pack.js (WEB_DIRECTORY = "./web").
// ComfyUI's extension API: register once, get called back as nodes are created.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "loom.example_pack",
  nodeCreated(node) {
    // Tint the example pack's nodes so they are easy to spot on the canvas.
    if (String(node.comfyClass || "").startsWith("Example")) {
      node.color = "#2a4a3a";
    }
  },
});
