// Module hooks for the build: componentize-js's splicer is imported through
// splice-cache.mjs, which caches its work.

const SPLICER = '/@bytecodealliance/componentize-js/lib/spidermonkey-embedding-splicer.js';
const STAND_IN = new URL('./splice-cache.mjs', import.meta.url).href;

export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  if (found.url.endsWith(SPLICER) && context.parentURL !== STAND_IN) {
    return { ...found, url: STAND_IN, shortCircuit: true };
  }
  return found;
}
