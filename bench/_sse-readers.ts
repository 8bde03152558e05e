/**
 * Stand-ins for open dashboard pages, in a process of their own (so reading them does not slow the
 * load generator): `node --import tsx bench/_sse-readers.ts <admin url> <pages> <token>` opens that
 * many `/dashboard/events` streams, prints `READY` once each got its first snapshot, and on
 * SIGTERM prints `SNAPSHOTS <total> BYTES <total>` (what the pages received) and exits.
 */
const [url, pagesText, token] = process.argv.slice(2);
const pages = Number(pagesText);
if (!url || !(pages > 0) || !token) throw new Error('usage: _sse-readers.ts <admin url> <pages> <token>');
let snapshots = 0;
let bytes = 0;
let ready = 0;
const controller = new AbortController();

async function read(): Promise<void> {
  const res = await fetch(`${url}/dashboard/events`, {
    headers: { authorization: `Bearer ${token}` },
    signal: controller.signal,
  });
  if (!res.ok || !res.body) throw new Error(`stream refused: ${res.status}`);
  const decoder = new TextDecoder();
  let first = true;
  for await (const chunk of res.body) {
    bytes += (chunk as Uint8Array).length;
    const n = decoder.decode(chunk as Uint8Array, { stream: true }).split('event: snapshot').length - 1;
    snapshots += n;
    if (first && n > 0) {
      first = false;
      if (++ready === pages) console.log('READY');
    }
  }
}

for (let i = 0; i < pages; i++)
  read().catch((err: unknown) => {
    if (!controller.signal.aborted) {
      console.error(err);
      process.exit(1);
    }
  });
process.on('SIGTERM', () => {
  controller.abort();
  console.log(`SNAPSHOTS ${snapshots} BYTES ${bytes}`);
  process.exit(0);
});
