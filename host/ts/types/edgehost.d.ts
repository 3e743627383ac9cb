// Types of what a TypeScript route may import: TanStack Start's route
// constructors (params typed from the path), the `edgehost` module and
// `process.env`. The build checks every route file against them.

/** The names of a path's params: `/api/posts/$postId` -> `postId`, `/files/$` -> `_splat`. */
type EdgeSegments<P extends string> = P extends `${infer Head}/${infer Rest}`
  ? Head | EdgeSegments<Rest>
  : P;
type EdgeParamName<S> = S extends `$${infer Name}` ? (Name extends '' ? '_splat' : Name) : never;
/** The params of path `P`, each a string: `{ postId: string }`. */
type EdgeParams<P extends string> = { [K in EdgeParamName<EdgeSegments<P>>]: string };

type EdgeMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS';

interface EdgeHandlerContext<P extends string> {
  request: Request;
  params: EdgeParams<P>;
  context: Record<string, unknown>;
}

type EdgeHandler<P extends string> = (ctx: EdgeHandlerContext<P>) => Response | Promise<Response>;
type EdgeHandlers<P extends string> = Partial<Record<EdgeMethod, EdgeHandler<P>>>;

/** A route a file exports; the host answers its path with its handlers. */
interface EdgeRoute<P extends string> {
  readonly path: P;
}

declare module '@tanstack/react-start/api' {
  /** `export const APIRoute = createAPIFileRoute('/api/x')({ GET: ... })` */
  export function createAPIFileRoute<P extends string>(
    path: P,
  ): (handlers: EdgeHandlers<P>) => EdgeRoute<P>;
  export function json(body: unknown, init?: ResponseInit): Response;
}

declare module '@tanstack/react-start/server' {
  interface ServerRouteBuilder<P extends string> {
    middleware(middleware: unknown[]): ServerRouteBuilder<P>;
    methods(
      handlers:
        | EdgeHandlers<P>
        | ((api: {
            handler: (handler: EdgeHandler<P>) => { handler: EdgeHandler<P> };
          }) => Partial<Record<EdgeMethod, EdgeHandler<P> | { handler: EdgeHandler<P> }>>),
    ): EdgeRoute<P>;
  }
  /** `export const ServerRoute = createServerFileRoute('/api/x').methods({ GET: ... })` */
  export function createServerFileRoute<P extends string>(path: P): ServerRouteBuilder<P>;
  export function json(body: unknown, init?: ResponseInit): Response;
}

declare module '@tanstack/react-router' {
  interface FileRouteOptions<P extends string> {
    server?: {
      handlers?:
        | EdgeHandlers<P>
        | ((api: { createHandlers: (handlers: EdgeHandlers<P>) => EdgeHandlers<P> }) => EdgeHandlers<P>);
    };
    [other: string]: unknown;
  }
  /** `export const Route = createFileRoute('/api/x')({ server: { handlers: { GET: ... } } })` */
  export function createFileRoute<P extends string>(
    path: P,
  ): (options?: FileRouteOptions<P>) => EdgeRoute<P>;
}

declare module '@tanstack/react-start' {
  export function json(body: unknown, init?: ResponseInit): Response;
}

declare module 'edgehost' {
  /** A key-value store the manifest grants the route (`kv = ["name"]`). */
  export interface Store {
    get(key: string): Promise<string | undefined>;
    getBytes(key: string): Promise<Uint8Array | undefined>;
    getJSON<T = unknown>(key: string): Promise<T | undefined>;
    set(key: string, value: string | Uint8Array): Promise<void>;
    setJSON(key: string, value: unknown): Promise<void>;
    delete(key: string): Promise<void>;
    has(key: string): Promise<boolean>;
    /** Every key, or those starting with `prefix`. */
    keys(prefix?: string): Promise<string[]>;
    /** Adds `delta` (default 1) atomically; the new value. */
    increment(key: string, delta?: number): Promise<number>;
  }
  export function kv(name: string): Store;

  export type SqlValue = null | number | bigint | string | Uint8Array;
  /** A SQL database the manifest grants the route (`sql = ["name"]`). */
  export interface Database {
    /** The rows the statement selects, each an object keyed by column. */
    query<Row = Record<string, SqlValue>>(sql: string, params?: unknown[]): Promise<Row[]>;
    /** Runs the statement; how many rows it changed. */
    execute(sql: string, params?: unknown[]): Promise<number>;
  }
  export function sql(name: string): Database;
}

/** The route's `env` values and granted `secrets`, read when used. */
declare var process: { env: Record<string, string | undefined> };
