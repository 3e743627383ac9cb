// The runtime bundled with an app's TypeScript routes: TanStack Start's
// route constructors, the `edgehost` module (key-value stores, SQL
// databases), `process.env`, and the dispatcher that answers each request
// the host hands the component, as the host answers for Rust routes.
//
// One component serves every TypeScript route of an app; the host says
// which route matched in `x-edge-route` and its params in `x-edge-params`.

import { getEnvironment } from 'wasi:cli/environment@0.2.10';
import { exit } from 'wasi:cli/exit@0.2.10';
import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment as atomicIncrement } from 'wasi:keyvalue/atomics@0.2.0-draft2';
import { Connection } from 'edge:sql/sql@0.1.0';

const ROUTE = Symbol.for('edgehost.route');
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

// --- Top-level code runs once, when the component is built -------------
//
// The engine's memory is snapshotted after every module's top level has
// run, so what that code computes is frozen into every request. Reading
// the clock, randomness, the environment or a store there is a mistake:
// it fails the build with a message that says so.
let building = true;

function atBuildTime(what) {
  if (building) {
    throw new Error(
      `${what} was called at the top level of a route file. Top-level code runs once, ` +
        'when the component is built, and its result would be frozen into every request: ' +
        'call it inside the handler instead.',
    );
  }
}

const realNow = Date.now;
Date.now = function now() {
  atBuildTime('Date.now()');
  return realNow.call(Date);
};
const realRandom = Math.random;
Math.random = function random() {
  atBuildTime('Math.random()');
  return realRandom.call(Math);
};

// --- process.env: the route's `env` and granted `secrets`, read when used --

function environment() {
  atBuildTime('process.env');
  return getEnvironment();
}

function lookup(name) {
  if (typeof name !== 'string') return undefined;
  for (const [key, value] of environment()) {
    if (key === name) return value;
  }
  return undefined;
}

const env = new Proxy(
  {},
  {
    get: (_, name) => lookup(name),
    has: (_, name) => lookup(name) !== undefined,
    ownKeys: () => environment().map(([key]) => key),
    getOwnPropertyDescriptor: (_, name) => {
      const value = lookup(name);
      return value === undefined
        ? undefined
        : { value, enumerable: true, configurable: true, writable: false };
    },
    set: () => false,
  },
);
globalThis.process = { env };

// --- request.json(): a body that is not JSON is the client's mistake ------

class BadJson extends Error {}
Request.prototype.json = async function json() {
  const text = await this.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadJson(`Invalid JSON body: ${err && err.message ? err.message : err}`);
  }
};

// --- TanStack Start's route constructors -----------------------------------

function define(path, handlers) {
  if (handlers === null || typeof handlers !== 'object') {
    throw new TypeError(`the route ${path} must be given an object of handlers (GET, POST, ...)`);
  }
  const table = {};
  for (const [method, value] of Object.entries(handlers)) {
    const handler =
      typeof value === 'function'
        ? value
        : value && typeof value.handler === 'function'
          ? value.handler
          : null;
    if (handler === null) {
      throw new TypeError(`the ${method} handler of ${path} is not a function`);
    }
    table[method.toUpperCase()] = handler;
  }
  return { [ROUTE]: true, path, handlers: table };
}

/** `createAPIFileRoute(path)({ GET, ... })`, from `@tanstack/react-start/api`. */
export function createAPIFileRoute(path) {
  return (handlers) => define(path, handlers);
}

/** `createServerFileRoute(path).methods({ GET, ... })`, from `@tanstack/react-start/server`. */
export function createServerFileRoute(path) {
  const builder = {
    middleware: () => builder,
    methods: (handlers) =>
      define(
        path,
        typeof handlers === 'function' ? handlers({ handler: (handler) => ({ handler }) }) : handlers,
      ),
  };
  return builder;
}

/** `createFileRoute(path)({ server: { handlers } })`, from `@tanstack/react-router`. */
export function createFileRoute(path) {
  return (options = {}) => {
    let handlers = (options.server && options.server.handlers) || {};
    if (typeof handlers === 'function') {
      handlers = handlers({ createHandlers: (table) => table });
    }
    return define(path, handlers);
  };
}

export const json = (body, init) => Response.json(body, init);

// --- The `edgehost` module: what the manifest grants the route ----------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// A store's or a database's WIT error (`{ tag, val }`) as an Error saying
// what failed; a denial names the manifest key that grants access.
function hostError(err, what, grantKey) {
  const payload = err && err.payload !== undefined ? err.payload : err;
  const tag = payload && payload.tag;
  if (tag === 'access-denied' || tag === 'no-such-store') {
    return new Error(`${what}: this route is not granted it (add it to the route's \`${grantKey}\` in manifest.toml)`);
  }
  const detail = payload && payload.val !== undefined ? payload.val : String(payload);
  const kind = tag && tag !== 'other' ? `${tag}: ` : '';
  return new Error(`${what}: ${kind}${detail}`);
}

class Store {
  #name;
  #bucket;
  constructor(name) {
    this.#name = name;
  }
  #open() {
    if (this.#bucket === undefined) {
      try {
        this.#bucket = open(this.#name);
      } catch (err) {
        throw hostError(err, `key-value store "${this.#name}"`, 'kv');
      }
    }
    return this.#bucket;
  }
  #call(what, fn) {
    const bucket = this.#open();
    try {
      return fn(bucket);
    } catch (err) {
      throw hostError(err, `key-value store "${this.#name}": ${what}`, 'kv');
    }
  }
  /** The value at `key` as bytes, or `undefined`. */
  async getBytes(key) {
    return this.#call(`get ${key}`, (b) => b.get(key));
  }
  /** The value at `key` as text, or `undefined`. */
  async get(key) {
    const bytes = await this.getBytes(key);
    return bytes === undefined ? undefined : decoder.decode(bytes);
  }
  /** The value at `key` parsed as JSON, or `undefined`. */
  async getJSON(key) {
    const text = await this.get(key);
    return text === undefined ? undefined : JSON.parse(text);
  }
  /** Stores `value` (text or bytes) at `key`. */
  async set(key, value) {
    const bytes = typeof value === 'string' ? encoder.encode(value) : value;
    this.#call(`set ${key}`, (b) => b.set(key, bytes));
  }
  /** Stores `value` as JSON at `key`. */
  async setJSON(key, value) {
    return this.set(key, JSON.stringify(value));
  }
  async delete(key) {
    this.#call(`delete ${key}`, (b) => b.delete(key));
  }
  async has(key) {
    return this.#call(`exists ${key}`, (b) => b.exists(key));
  }
  /** Every key, or those starting with `prefix`, in the store's order. */
  async keys(prefix = '') {
    const keys = [];
    let cursor;
    do {
      const page = this.#call('list keys', (b) => b.listKeys(cursor));
      keys.push(...page.keys.filter((key) => key.startsWith(prefix)));
      cursor = page.cursor;
    } while (cursor !== undefined);
    return keys;
  }
  /** Adds `delta` to the number at `key` atomically; the new value. */
  async increment(key, delta = 1) {
    const value = this.#call(`increment ${key}`, (b) => atomicIncrement(b, key, BigInt(delta)));
    return Number(value);
  }
}

/** The key-value store `name`, if the manifest grants it to the route. */
export function kv(name) {
  atBuildTime(`kv(${JSON.stringify(name)})`);
  return new Store(name);
}

function toValue(value) {
  if (value === null || value === undefined) return { tag: 'null' };
  if (typeof value === 'bigint') return { tag: 'integer', val: value };
  if (typeof value === 'boolean') return { tag: 'integer', val: value ? 1n : 0n };
  if (typeof value === 'number') {
    return Number.isInteger(value) ? { tag: 'integer', val: BigInt(value) } : { tag: 'real', val: value };
  }
  if (typeof value === 'string') return { tag: 'text', val: value };
  if (value instanceof Uint8Array) return { tag: 'blob', val: value };
  throw new TypeError(`a SQL parameter must be null, a number, a string or a Uint8Array, not ${typeof value}`);
}

function fromValue(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'integer': {
      const n = value.val;
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    default:
      return value.val;
  }
}

class Database {
  #name;
  #connection;
  constructor(name) {
    this.#name = name;
  }
  #open() {
    if (this.#connection === undefined) {
      try {
        this.#connection = Connection.open(this.#name);
      } catch (err) {
        throw hostError(err, `SQL database "${this.#name}"`, 'sql');
      }
    }
    return this.#connection;
  }
  #run(text, params) {
    const connection = this.#open();
    try {
      return connection.query(text, params.map(toValue));
    } catch (err) {
      throw hostError(err, `SQL database "${this.#name}"`, 'sql');
    }
  }
  /** The rows `text` selects, each an object keyed by column. */
  async query(text, params = []) {
    const set = this.#run(text, params);
    return set.rows.map((row) => Object.fromEntries(row.map((value, i) => [set.columns[i], fromValue(value)])));
  }
  /** Runs `text`; how many rows it changed. */
  async execute(text, params = []) {
    return Number(this.#run(text, params).rowsAffected);
  }
}

/** The SQL database `name`, if the manifest grants it to the route. */
export function sql(name) {
  atBuildTime(`sql(${JSON.stringify(name)})`);
  return new Database(name);
}

// --- Answering ---------------------------------------------------------

function allowOf(handlers) {
  const allow = new Set(Object.keys(handlers).filter((m) => METHODS.includes(m)));
  if (allow.has('GET')) allow.add('HEAD');
  allow.add('OPTIONS');
  return [...allow].sort().join(', ');
}

function internalError() {
  return Response.json({ error: 'Internal server error' }, { status: 500 });
}

async function call(route, handler, request, params) {
  try {
    const response = await handler({ request, params, context: {} });
    if (response instanceof Response) return response;
    console.error(`${route.file}: the handler returned ${typeof response}, not a Response`);
    return internalError();
  } catch (err) {
    if (err instanceof Response) return err;
    if (err instanceof BadJson) return Response.json({ error: err.message }, { status: 400 });
    // The engine could not allocate: the host refused memory past the
    // route's limit. The instance ends here, so the host answers for the
    // limit, as it does for any guest that runs out.
    if (err === 'out of memory') exit({ tag: 'err' });
    const message = err && err.stack ? `${err}\n${err.stack}` : String(err);
    console.error(`${route.file}: ${request.method} ${route.pattern} threw: ${message}`);
    return internalError();
  }
}

/**
 * The route and params of `request`: as edgehost says (it matched the
 * path), or, run by another host (`wasmtime serve`), matched here.
 */
function routeOf(routes, request) {
  const name = request.headers.get('x-edge-route');
  if (name !== null) {
    const params = Object.fromEntries(new URLSearchParams(request.headers.get('x-edge-params') || ''));
    return { route: routes.get(name), params };
  }
  const segments = new URL(request.url).pathname.split('/').filter(Boolean).map(decodeURIComponent);
  for (const route of routes.values()) {
    const parts = route.pattern.split('/').filter(Boolean);
    const params = {};
    let matched = true;
    for (const [i, part] of parts.entries()) {
      if (part === '$') {
        params._splat = segments.slice(i).join('/');
        break;
      }
      if (i >= segments.length) matched = false;
      else if (part.startsWith('$')) params[part.slice(1)] = segments[i];
      else if (part.toLowerCase() !== segments[i].toLowerCase()) matched = false;
      if (!matched) break;
    }
    if (matched && (parts.includes('$') || parts.length === segments.length)) return { route, params };
  }
  return { route: undefined, params: {} };
}

async function answer(routes, request) {
  const { route, params } = routeOf(routes, request);
  if (route === undefined) {
    if (request.headers.has('x-edge-route')) {
      console.error(`no TypeScript route is built for ${request.headers.get('x-edge-route')}`);
      return internalError();
    }
    return Response.json({ error: 'Not found' }, { status: 404 });
  }
  const method = request.method.toUpperCase();
  const handlers = route.handlers;
  const allow = allowOf(handlers);
  if (handlers[method]) {
    return call(route, handlers[method], request, params);
  }
  if (method === 'HEAD' && handlers.GET) {
    const response = await call(route, handlers.GET, request, params);
    const body = await response.arrayBuffer();
    const headers = new Headers(response.headers);
    headers.set('content-length', String(body.byteLength));
    return new Response(body, { status: response.status, headers });
  }
  if (method === 'OPTIONS') {
    return new Response(null, { status: 204, headers: { allow } });
  }
  return Response.json({ error: 'Method not allowed', allow }, { status: 405, headers: { allow } });
}

/**
 * Serves `entries` ({ pattern, file, module }), one per route file: each
 * module's exported route, checked against the pattern its file spells.
 */
export function serve(entries) {
  const routes = new Map();
  for (const { pattern, file, module } of entries) {
    const defined = Object.values(module).filter((value) => value && value[ROUTE]);
    if (defined.length !== 1) {
      throw new Error(
        `${file}: a route file exports one route (createAPIFileRoute, createServerFileRoute or createFileRoute); found ${defined.length}`,
      );
    }
    const [route] = defined;
    if (route.path !== pattern && route.path.replace(/\/$/, '') !== pattern) {
      throw new Error(`${file}: declares the path ${route.path}, but its location spells ${pattern}`);
    }
    routes.set(pattern, { ...route, pattern, file });
  }
  building = false;
  addEventListener('fetch', (event) => event.respondWith(answer(routes, event.request)));
}
