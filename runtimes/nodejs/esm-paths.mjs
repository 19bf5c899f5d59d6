// Module resolution hooks of Nimbus's Node.js runtime: a bare specifier
// (`@aws-sdk/client-s3`) that an ES module cannot find the usual way is
// looked up in the NODE_PATH directories too, as AWS's nodejs18.x and later
// runtimes do, so that ES modules import the runtime's SDK and layers'
// packages (/opt/nodejs/node_modules) as CommonJS modules require them.

import path from "node:path";
import { pathToFileURL } from "node:url";

let parents = [];

export function initialize(data) {
  // A file inside each directory: resolving from there walks up into it.
  parents = (data?.dirs ?? []).filter(Boolean).map((d) => pathToFileURL(path.join(d, "noop.mjs")).href);
}

const BARE = /^(?![./]|[a-zA-Z][a-zA-Z0-9+.-]*:)/;

export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (err?.code !== "ERR_MODULE_NOT_FOUND" || !BARE.test(specifier)) throw err;
    for (const parentURL of parents) {
      try {
        return await next(specifier, { ...context, parentURL });
      } catch {
        // Not in this directory; try the next.
      }
    }
    throw err;
  }
}
