// Loads pages from two loopback origins in headless Chromium and lets each
// `fetch` the host, so the browser's own CORS checks decide what a page may
// read. Prints the page ports as `ports <listed> <unlisted>`, reads the
// host's base URL from stdin, then prints one JSON line of results.
//
//   node cors.mjs <folder holding node_modules/playwright-core> <chromium>
import { createRequire } from 'node:module';
import http from 'node:http';
import readline from 'node:readline';

const [modules, executablePath] = process.argv.slice(2);
const { chromium } = createRequire(`${modules}/`)('playwright-core');

function pageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>page</title><p>page</p>');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const listed = await pageServer();
const unlisted = await pageServer();
console.log(`ports ${listed.address().port} ${unlisted.address().port}`);

const lines = readline.createInterface({ input: process.stdin });
const host = await new Promise((resolve) => lines.once('line', resolve));
lines.close();

// What a page at `origin` gets from `fetch(url, init)`: the status and
// body it may read, or the error the browser gave it instead.
async function fetchFrom(page, url, init) {
  return page.evaluate(async ([url, init]) => {
    try {
      const response = await fetch(url, init);
      return { status: response.status, body: await response.text() };
    } catch (err) {
      return { error: String(err) };
    }
  }, [url, init]);
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });
const results = {};
try {
  for (const [name, server] of [['listed', listed], ['unlisted', unlisted]]) {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    results[`${name}_get`] = await fetchFrom(page, `${host}/api/data`, {});
    results[`${name}_post`] = await fetchFrom(page, `${host}/kv/runs/incr?key=${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    results[`${name}_strict_post`] = await fetchFrom(page, `${host}/strict/runs/incr?key=strict-${name}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    await page.close();
  }
} finally {
  await browser.close();
  listed.close();
  unlisted.close();
}
console.log(JSON.stringify(results));
