// @ts-check
/**
 * Text chunks of a PNG (tEXt, zTXt, iTXt), where SaveImage stores "workflow" (UI format) and
 * "prompt" (API format) as JSON (spec §8). Compressed chunks are inflated with the browser's
 * DecompressionStream (also in node >= 18).
 */

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** @param {Uint8Array} bytes */
export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((value, index) => bytes[index] === value);
}

/**
 * @param {Uint8Array} bytes
 * @returns {Promise<Record<string, string>>} keyword -> text; the first chunk of a keyword wins
 */
export async function readPngText(bytes) {
  if (!isPng(bytes)) throw new Error("not a PNG file (wrong signature)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  /** @type {Record<string, string>} */
  const found = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const start = offset + 8;
    const end = start + length;
    if (end > bytes.length) break; // truncated file: keep what was read
    const data = bytes.subarray(start, end);
    const entry = await decodeChunk(type, data);
    if (entry && !(entry[0] in found)) found[entry[0]] = entry[1];
    if (type === "IEND") break;
    offset = end + 4; // skip the CRC
  }
  return found;
}

/**
 * @param {string} type
 * @param {Uint8Array} data
 * @returns {Promise<[string, string] | null>}
 */
async function decodeChunk(type, data) {
  if (type !== "tEXt" && type !== "zTXt" && type !== "iTXt") return null;
  const zero = data.indexOf(0);
  if (zero < 0) return null;
  const keyword = latin1(data.subarray(0, zero));
  if (type === "tEXt") return [keyword, latin1(data.subarray(zero + 1))];
  if (type === "zTXt") return [keyword, latin1(await inflate(data.subarray(zero + 2)))];
  // iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
  const compressed = data[zero + 1] === 1;
  const languageEnd = data.indexOf(0, zero + 3);
  const translatedEnd = languageEnd < 0 ? -1 : data.indexOf(0, languageEnd + 1);
  if (translatedEnd < 0) return null;
  const body = data.subarray(translatedEnd + 1);
  return [keyword, new TextDecoder().decode(compressed ? await inflate(body) : body)];
}

/** Text chunks are Latin-1 by the standard, but some writers put UTF-8 there. @param {Uint8Array} bytes */
function latin1(bytes) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // not UTF-8: read as Latin-1 below
  }
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return text;
}

/** @param {Uint8Array} bytes zlib stream */
async function inflate(bytes) {
  const stream = new Blob([bytes.slice()]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The workflow and/or API prompt embedded in a PNG (parsed JSON; a chunk that is not JSON is skipped).
 * @param {Uint8Array} bytes
 * @returns {Promise<{workflow?: any, prompt?: any}>}
 */
export async function pngWorkflow(bytes) {
  const chunks = await readPngText(bytes);
  /** @type {{workflow?: any, prompt?: any}} */
  const result = {};
  for (const key of /** @type {const} */ (["workflow", "prompt"])) {
    if (!chunks[key]) continue;
    try {
      result[key] = JSON.parse(chunks[key]);
    } catch {
      console.warn(`loom: the PNG's '${key}' chunk is not JSON`);
    }
  }
  return result;
}
