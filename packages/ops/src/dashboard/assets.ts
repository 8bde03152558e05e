import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

/** A static file of the page, read once, with its gzip form and a content hash for its URL. */
export interface Asset {
  name: string;
  type: string;
  body: Buffer;
  gzip: Buffer;
  /** First 16 hex digits of its SHA-256: the `?v=` of its URL, its ETag. */
  hash: string;
}

/** The page's files: ours from the package's `dashboard/` folder, uPlot's from its package. */
const FILES: readonly { name: string; type: string; from: () => string }[] = [
  { name: 'app.js', type: 'text/javascript; charset=utf-8', from: () => own('app.js') },
  { name: 'style.css', type: 'text/css; charset=utf-8', from: () => own('style.css') },
  { name: 'uPlot.min.js', type: 'text/javascript; charset=utf-8', from: () => uplot('uPlot.iife.min.js') },
  { name: 'uPlot.min.css', type: 'text/css; charset=utf-8', from: () => uplot('uPlot.min.css') },
];

// src/dashboard/assets.ts and dist/dashboard/assets.js are both two folders below the package.
const own = (name: string): string => fileURLToPath(new URL(`../../dashboard/${name}`, import.meta.url));
const uplot = (name: string): string => createRequire(import.meta.url).resolve(`uplot/dist/${name}`);

function asset(name: string, type: string, body: Buffer): Asset {
  const hash = createHash('sha256').update(body).digest('hex').slice(0, 16);
  return { name, type, body, gzip: gzipSync(body), hash };
}

/**
 * The page and its assets, keyed by name (`index.html` with each asset's URL carrying its hash,
 * and whether the server wants a token, so the page asks before its first request).
 */
export async function loadAssets(authRequired: boolean): Promise<Map<string, Asset>> {
  const assets = new Map<string, Asset>();
  for (const f of FILES) assets.set(f.name, asset(f.name, f.type, await readFile(f.from())));
  let html = (await readFile(own('index.html'), 'utf8')).replace('{{auth}}', authRequired ? 'token' : 'none');
  for (const a of assets.values())
    html = html.replaceAll(`{{${a.name}}}`, `/dashboard/assets/${a.name}?v=${a.hash}`);
  assets.set('index.html', asset('index.html', 'text/html; charset=utf-8', Buffer.from(html)));
  return assets;
}

/** Names of the files under `/dashboard/assets/` (the page itself is served at `/` and `/dashboard`). */
export const ASSET_NAMES: readonly string[] = FILES.map((f) => f.name);
