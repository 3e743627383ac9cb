// componentize-js splices the bindings of the app's WIT world into the
// JavaScript engine before it runs the app's script: seconds of work whose
// result depends on the engine, the world and the features only, never on
// the script. This module stands in for the splicer (hooks.mjs routes
// componentize-js's import here) and keeps each splice in the cache folder
// EDGEHOST_SPLICE_CACHE names, so a rebuild after an edit skips it.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const { splicer: real } = await import(
  new URL('./node_modules/@bytecodealliance/componentize-js/lib/spidermonkey-embedding-splicer.js', import.meta.url)
);

function spliceBindings(engine, features, witWorld, witPath, worldName, debug) {
  const dir = process.env.EDGEHOST_SPLICE_CACHE;
  const salt = process.env.EDGEHOST_SPLICE_SALT;
  if (!dir || !salt || witWorld !== undefined) {
    return real.spliceBindings(engine, features, witWorld, witPath, worldName, debug);
  }
  // The WIT files are in the salt (build.mjs hashes them with the tools' version).
  const key = createHash('sha256')
    .update(engine)
    .update(JSON.stringify([features, worldName, debug, salt]))
    .digest('hex');
  const wasmFile = join(dir, `${key}.wasm`);
  const restFile = join(dir, `${key}.json`);
  if (existsSync(wasmFile) && existsSync(restFile)) {
    // Used again: the build's pruning keeps what was used last.
    const now = new Date();
    for (const file of [wasmFile, restFile]) utimesSync(file, now, now);
    const rest = JSON.parse(readFileSync(restFile, 'utf8'));
    return { ...rest, wasm: new Uint8Array(readFileSync(wasmFile)) };
  }
  const spliced = real.spliceBindings(engine, features, witWorld, witPath, worldName, debug);
  const { wasm, ...rest } = spliced;
  mkdirSync(dir, { recursive: true });
  // The JSON after the wasm: a reader that finds it finds both whole.
  for (const [file, data] of [
    [wasmFile, wasm],
    [restFile, JSON.stringify(rest)],
  ]) {
    const partial = `${file}.${process.pid}.partial`;
    writeFileSync(partial, data);
    renameSync(partial, file);
  }
  return spliced;
}

export const splicer = { ...real, spliceBindings };
