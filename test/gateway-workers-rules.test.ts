import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { originClient } from './gateway-protocol-support.js';
import { metricSum, startFleet, type Fleet } from './gateway-workers-support.js';
import { startS3Origin, type S3Origin } from './s3-origin.js';

/*
 * Cache rules with --workers 2: every worker reads the rules file and follows its changes, so a
 * change applies whichever worker a client reaches; a broken version is shown on the fleet's
 * /metrics and raised as an alert until it is fixed.
 */

let origin: S3Origin;
let root: string;
let fleet: Fleet | undefined;

beforeAll(async () => {
  origin = await startS3Origin(['b']);
  root = await mkdtemp(path.join(os.tmpdir(), 'keel-workers-rules-'));
});

afterAll(async () => {
  if (fleet) {
    fleet.proc.kill('SIGTERM');
    await fleet.exited;
  }
  await origin.close();
  await rm(root, { recursive: true, force: true });
});

/** A GET on a connection of its own, so the reads spread over the workers. */
function label(url: string, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/b/${key}`, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.headers['x-keel-cache'])));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function eventually(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never happened: ${what}`);
}

describe('cache rules with --workers', () => {
  it('a change applies in every worker; a broken file is shown on the fleet metrics and alerted until fixed', async () => {
    const rulesPath = path.join(root, 'rules.json');
    const save = async (text: string): Promise<void> => {
      await writeFile(`${rulesPath}.tmp`, text);
      await rename(`${rulesPath}.tmp`, rulesPath);
    };
    await save(JSON.stringify({ rules: [{ pattern: 'b/cold/**', ttlSeconds: 5 }] }));
    const s3 = originClient(origin);
    await s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'hot/k.bin', Body: randomBytes(100_000) }));
    s3.destroy();
    fleet = await startFleet(origin.url, path.join(root, 'cache'), 2, ['--rules', rulesPath]);
    const { url, admin } = fleet;
    await eventually(async () => (await label(url, 'hot/k.bin')) === 'HIT', 'the object to be cached');

    await save(JSON.stringify({ rules: [{ pattern: 'b/hot/**', noCache: true }] }));
    // Both workers read the new version: the fleet counts two reloads.
    await eventually(
      async () =>
        metricSum(await (await fetch(`${admin}/metrics`)).text(), 'keel_gateway_rules_reloads_total', {
          result: 'applied',
        }) === 2,
      'both workers to apply the new rules',
    );
    const after = await Promise.all(Array.from({ length: 20 }, () => label(url, 'hot/k.bin')));
    expect(after).toEqual(after.map(() => 'BYPASS'));

    // Renamed into place like the others: a worker never reads it half written.
    await save('{ "rules": [ { "pattern": "b/hot/**", "noCache": 1 } ] }');
    await eventually(
      async () =>
        metricSum(await (await fetch(`${admin}/metrics`)).text(), 'keel_gateway_rules_invalid') === 1,
      'the fleet to show the invalid file',
    );
    // One alert line per worker ("alert firing: KeelRulesInvalid: …").
    const firing = (): number => fleet?.stderr().match(/alert firing: KeelRulesInvalid: /g)?.length ?? 0;
    await eventually(() => Promise.resolve(firing() === 2), 'each worker to raise KeelRulesInvalid');
    expect(fleet.stderr()).toContain(
      'rules[0] (pattern \\"b/hot/**\\"): \\"noCache\\": expected true or false, got 1',
    );
    const during = await Promise.all(Array.from({ length: 20 }, () => label(url, 'hot/k.bin')));
    expect(during).toEqual(during.map(() => 'BYPASS'));

    await save(JSON.stringify({ rules: [] }));
    await eventually(
      async () =>
        metricSum(await (await fetch(`${admin}/metrics`)).text(), 'keel_gateway_rules_invalid') === 0,
      'the fixed file to clear the fleet metric',
    );
    await eventually(async () => (await label(url, 'hot/k.bin')) === 'HIT', 'reads to be cached again');
    await eventually(
      () => Promise.resolve(fleet?.stderr().match(/alert resolved: KeelRulesInvalid: /g)?.length === 2),
      'each worker to resolve KeelRulesInvalid',
    );
    expect(firing()).toBe(2);
  });
});
