// Used by test_web_model_parity.py: node parity_convert.mjs <object_info.json> <workflow.json>...
// Prints {file: prompt} as JSON, converted by the web model (load, then toApiPrompt).
import { readFileSync } from "node:fs";
import { fromWorkflow, toApiPrompt } from "../../web/graph/serialize.js";

const [objectInfoPath, ...files] = process.argv.slice(2);
const objectInfo = JSON.parse(readFileSync(objectInfoPath, "utf8"));
const result = {};
for (const file of files) {
  result[file] = toApiPrompt(fromWorkflow(JSON.parse(readFileSync(file, "utf8"))), objectInfo);
}
process.stdout.write(JSON.stringify(result));
