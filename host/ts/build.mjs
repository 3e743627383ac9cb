// Builds an app's TypeScript routes into one WebAssembly component:
// checks each file's declared path against its location, type-checks,
// bundles with esbuild and componentizes with componentize-js (cached by
// the hash of its inputs).
//
// `edgehost build` starts it once and writes the path of one JSON config
// per line to its stdin; it answers each with JSON events, one per line
// on stdout, the last `end`. Kept running (as `edgehost dev` keeps it), the
// type checker, esbuild and the splicer's compiled code stay warm between
// builds. With a config path as its argument it builds that and exits.
//
// config: { cwd, routes: [{ pattern, file, shown }], work, out, runtime,
//           types, wit, world, cache }

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync, copyFileSync, existsSync, readdirSync, statSync, rmSync, utimesSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');

/** A build that cannot go on; its errors were emitted. */
class Failed extends Error {}

const RUNTIME_MODULES = new Set([
  '@tanstack/react-start/api',
  '@tanstack/react-start/server',
  '@tanstack/react-start',
  '@tanstack/react-router',
  'edgehost',
]);

/** How many componentized apps, and splices of the engine, the caches keep. */
const KEEP_COMPONENTS = 16;
const KEEP_SPLICES = 8;

/** Marks `file` as used now: pruning keeps what was used last. */
function touch(file) {
  const now = new Date();
  try {
    utimesSync(file, now, now);
  } catch {
    // Gone meanwhile: it is made again when next needed.
  }
}

/** Removes all but the `keep` files of `dir` used last (a splice is two files). */
function prune(dir, keep) {
  let files;
  try {
    files = readdirSync(dir)
      .filter((name) => !name.endsWith('.partial'))
      .map((name) => ({ path: join(dir, name), at: statSync(join(dir, name)).mtimeMs }));
  } catch {
    return;
  }
  files.sort((a, b) => b.at - a.at);
  const byEntry = new Map();
  for (const file of files) {
    const entry = file.path.replace(/\.(wasm|json)$/, '');
    if (!byEntry.has(entry)) byEntry.set(entry, []);
    byEntry.get(entry).push(file.path);
  }
  for (const paths of [...byEntry.values()].slice(keep)) {
    for (const path of paths) rmSync(path, { force: true });
  }
}

/** The tools, loaded on first use and kept. */
const tools = {};
let lastProgram;

async function build(config) {
  process.chdir(config.cwd);
  const byFile = new Map(config.routes.map((route) => [route.file, route]));
  let failed = false;
  const fail = (file, text) => {
    failed = true;
    emit({ event: 'error', file: file ?? null, text });
  };
  const stopIfFailed = () => {
    if (failed) throw new Failed();
  };

  // 1. Each file declares the path its location spells, as TanStack's generator demands.
  const DECLARED = /\bcreate(?:APIFile|ServerFile|File)Route\s*\(\s*(['"`])([^'"`]*)\1/;
  for (const route of config.routes) {
    const source = readFileSync(route.file, 'utf8');
    const found = DECLARED.exec(source);
    if (!found) {
      fail(
        route.file,
        `${route.shown}: no route found: export one with createAPIFileRoute('${route.pattern}'), ` +
          `createServerFileRoute('${route.pattern}') or createFileRoute('${route.pattern}')`,
      );
    } else if (found[2] !== route.pattern && found[2].replace(/\/$/, '') !== route.pattern) {
      fail(
        route.file,
        `${route.shown}: declares the path '${found[2]}', but its location spells '${route.pattern}': ` +
          `change the path to '${route.pattern}' or move the file`,
      );
    }
  }
  stopIfFailed();

  // 2. Type-check, as tsc --noEmit --strict would.
  emit({ event: 'phase', name: 'type-checking', count: config.routes.length });
  tools.ts ??= (await import('typescript')).default;
  const ts = tools.ts;
  // The last build's program: files that did not change are not parsed again.
  const program = ts.createProgram([...config.routes.map((r) => r.file), config.types], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
    types: [],
    skipLibCheck: true,
    allowImportingTsExtensions: true,
    isolatedModules: true,
    esModuleInterop: true,
  }, undefined, lastProgram);
  lastProgram = program;
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (diagnostic.file) {
      const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
      const file = diagnostic.file.fileName;
      const shown = byFile.get(file)?.shown ?? relative(process.cwd(), file);
      const code = diagnostic.file.text.split('\n')[line] ?? '';
      fail(
        byFile.has(file) ? file : null,
        `error TS${diagnostic.code}: ${message}\n  --> ${shown}:${line + 1}:${character + 1}\n   | ${code}\n   | ${' '.repeat(character)}^`,
      );
    } else {
      fail(null, `error TS${diagnostic.code}: ${message}`);
    }
  }
  stopIfFailed();

  // 3. Bundle: one script for every route, TanStack's and our imports resolved to the runtime.
  emit({ event: 'phase', name: 'bundling' });
  mkdirSync(config.work, { recursive: true });
  const entry = join(config.work, 'entry.js');
  const lines = [`import { serve } from ${JSON.stringify(config.runtime)};`];
  config.routes.forEach((route, i) => lines.push(`import * as route${i} from ${JSON.stringify(route.file)};`));
  lines.push(
    'serve([',
    ...config.routes.map(
      (route, i) => `  { pattern: ${JSON.stringify(route.pattern)}, file: ${JSON.stringify(route.shown)}, module: route${i} },`,
    ),
    ']);',
  );
  writeFileSync(entry, lines.join('\n') + '\n');
  tools.esbuild ??= await import('esbuild');
  const esbuild = tools.esbuild;
  const bundle = join(config.work, 'bundle.js');
  let imported = [];
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      outfile: bundle,
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      mainFields: ['module', 'main'],
      conditions: ['worker', 'browser', 'import'],
      logLevel: 'silent',
      metafile: true,
      plugins: [
        {
          name: 'edgehost',
          setup(build) {
            // The host's interfaces: imports of the component. Free of side
            // effects, so one nothing uses is dropped, and the component
            // does not import it at all.
            build.onResolve({ filter: /^(wasi|edge):/ }, (args) => ({
              path: args.path,
              external: true,
              sideEffects: false,
            }));
            build.onResolve({ filter: /^(@tanstack\/|edgehost$)/ }, (args) =>
              RUNTIME_MODULES.has(args.path) ? { path: config.runtime } : undefined,
            );
          },
        },
      ],
    });
    for (const warning of result.warnings) {
      emit({ event: 'warning', file: warning.location?.file ?? null, text: warning.text });
    }
    const output = Object.values(result.metafile.outputs)[0];
    imported = [...new Set(output.imports.filter((i) => i.external).map((i) => i.path))].sort();
  } catch (err) {
    for (const error of err.errors ?? [{ text: String(err) }]) {
      const at = error.location;
      const file = at ? join(process.cwd(), at.file) : null;
      const shown = at ? `\n  --> ${at.file}:${at.line}:${at.column + 1}\n   | ${at.lineText}` : '';
      fail(file && byFile.has(file) ? file : null, `error: ${error.text}${shown}`);
    }
    throw new Failed();
  }

  // 4. The app's world: what its script imports of the host's interfaces
  // (each one the full world offers), and the HTTP handler it exports.
  const full = readFileSync(join(config.wit, 'world.wit'), 'utf8');
  const offered = new Set([...full.matchAll(/^\s*import\s+([^;]+);/gm)].map((m) => m[1].trim()));
  const unknown = imported.filter((name) => !offered.has(name));
  if (unknown.length > 0) {
    fail(
      null,
      `error: the routes import ${unknown.join(', ')}, which the host does not provide ` +
        `(it provides ${[...offered].join(', ')})`,
    );
    throw new Failed();
  }
  const wit = join(config.work, 'wit');
  mkdirSync(join(wit, 'deps'), { recursive: true });
  const witFiles = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else witFiles.push(path);
    }
  };
  walk(join(config.wit, 'deps'));
  for (const file of witFiles) {
    const to = join(wit, relative(config.wit, file));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(file, to);
  }
  const worldText = [
    'package edgehost:app@0.1.0;',
    '',
    `world ${config.world} {`,
    ...imported.map((name) => `  import ${name};`),
    ...[...full.matchAll(/^\s*export\s+([^;]+);/gm)].map((m) => `  export ${m[1].trim()};`),
    '}',
    '',
  ].join('\n');
  writeFileSync(join(wit, 'world.wit'), worldText);

  // 5. Componentize, unless these exact inputs were componentized before.
  const witHash = createHash('sha256');
  witHash.update(config.world).update(worldText);
  for (const file of witFiles) witHash.update(relative(config.wit, file)).update(readFileSync(file));
  const componentizePackage = JSON.parse(
    readFileSync(new URL('./node_modules/@bytecodealliance/componentize-js/package.json', import.meta.url)),
  );
  witHash.update(componentizePackage.version);
  const world = witHash.digest('hex');
  const key = createHash('sha256').update(readFileSync(bundle)).update(world).digest('hex');
  const cached = join(config.cache, `${key}.wasm`);
  const hit = existsSync(cached);
  // A component used again counts as new for the pruning below.
  if (hit) touch(cached);
  if (!hit) {
    emit({ event: 'phase', name: 'componentizing' });
    // The engine with the world's bindings spliced in is the same for every
    // script: splice-cache.mjs keeps it, so an edit is not spliced again.
    process.env.EDGEHOST_SPLICE_CACHE = join(config.cache, '..', 'splices');
    process.env.EDGEHOST_SPLICE_SALT = world;
    if (!tools.componentize) {
      const { register } = await import('node:module');
      register('./hooks.mjs', import.meta.url);
      tools.componentize = (await import('@bytecodealliance/componentize-js')).componentize;
    }
    const componentize = tools.componentize;
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: bundle,
        witPath: wit,
        worldName: config.world,
      }));
    } catch (err) {
      fail(null, explain(String(err && err.message ? err.message : err)));
      throw new Failed();
    }
    mkdirSync(config.cache, { recursive: true });
    const partial = `${cached}.${process.pid}.partial`;
    writeFileSync(partial, component);
    renameSync(partial, cached);
    // Every save in dev makes a new component: keep the latest few.
    prune(config.cache, KEEP_COMPONENTS);
    prune(process.env.EDGEHOST_SPLICE_CACHE, KEEP_SPLICES);
  }
  mkdirSync(dirname(config.out), { recursive: true });
  const partial = `${config.out}.${process.pid}.partial`;
  copyFileSync(cached, partial);
  renameSync(partial, config.out);
  emit({ event: 'done', out: config.out, cached: hit, key });
}

/** Runs one build; whether it succeeded. Its last event is `end`. */
async function run(configFile) {
  let ok = false;
  try {
    await build(JSON.parse(readFileSync(configFile, 'utf8')));
    ok = true;
  } catch (err) {
    if (!(err instanceof Failed)) {
      emit({ event: 'error', file: null, text: `the TypeScript build failed: ${err && err.stack ? err.stack : err}` });
    }
  }
  emit({ event: 'end', ok });
  return ok;
}

if (process.argv[2]) {
  process.exitCode = (await run(process.argv[2])) ? 0 : 1;
} else {
  // One build at a time, in the order asked; stdin's end ends the process.
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) await run(line.trim());
  }
}

/** A componentize failure, with what to do about the mistakes it is known for. */
function explain(message) {
  if (/Wizer initialization|cannot call arbitrary imported functions/i.test(message)) {
    return (
      `${message}\n\nA route file's top-level code called something that only works while a request is ` +
      'answered (randomness, the clock, the environment, a store). Top-level code runs once, when the ' +
      'component is built: move the call into the handler.'
    );
  }
  return message;
}
