import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RulesFile, type RulesReload } from './rules-file.js';

/* The rules file as it changes on disk: real files, real change events, waits bounded by turns. */

let dir: string;
let file: string;
const open: RulesFile[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-rules-file-'));
  file = path.join(dir, 'rules.json');
});

afterEach(async () => {
  for (const f of open.splice(0)) f.close();
  await rm(dir, { recursive: true, force: true });
});

const rules = (...patterns: string[]): string =>
  JSON.stringify({ rules: patterns.map((pattern) => ({ pattern, ttlSeconds: 1 })) });

async function start(pollMs?: number): Promise<{ rulesFile: RulesFile; reloads: RulesReload[] }> {
  const reloads: RulesReload[] = [];
  const rulesFile = await RulesFile.open({
    path: file,
    onReload: (r) => reloads.push(r),
    ...(pollMs === undefined ? {} : { pollMs }),
  });
  open.push(rulesFile);
  return { rulesFile, reloads };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error(`never happened: ${what}`);
}

const patterns = (f: RulesFile): string[] => f.current().rules.map((r) => r.pattern);

describe('RulesFile', () => {
  it('refuses to open a missing or invalid file, naming it', async () => {
    await expect(RulesFile.open({ path: file })).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
      message: expect.stringContaining(`cache rules ${file}: cannot read it`) as string,
    });
    await writeFile(file, '{"rules":[{"pattern":"a/**","ttlSeconds":true}]}');
    await expect(RulesFile.open({ path: file })).rejects.toThrow(
      /rules\[0\] \(pattern "a\/\*\*"\): "ttlSeconds": expected a number/,
    );
  });

  it('applies a file written in place, and one renamed over it', async () => {
    await writeFile(file, rules('a/**'));
    const { rulesFile, reloads } = await start();
    expect(patterns(rulesFile)).toEqual(['a/**']);
    await writeFile(file, rules('b/**'));
    await until(() => reloads.length === 1, 'the in-place write');
    expect(patterns(rulesFile)).toEqual(['b/**']);
    await writeFile(`${file}.new`, rules('c/**', 'd/**'));
    await rename(`${file}.new`, file);
    await until(() => reloads.length === 2, 'the rename');
    expect(reloads[1]).toEqual({ result: 'applied', rules: 2 });
    expect(patterns(rulesFile)).toEqual(['c/**', 'd/**']);
    expect(rulesFile.invalid).toBe(false);
  });

  it('keeps the rules in force while the file is invalid or removed, and applies the next valid version', async () => {
    await writeFile(file, rules('a/**'));
    const { rulesFile, reloads } = await start();
    await writeFile(file, '{"rules": [');
    await until(() => reloads.length === 1, 'the broken version');
    expect(reloads[0]).toMatchObject({ result: 'invalid', keptRules: 1, error: { code: 'INVALID_CONFIG' } });
    expect(rulesFile.invalid).toBe(true);
    expect(patterns(rulesFile)).toEqual(['a/**']);
    await unlink(file);
    await until(() => reloads.length === 2, 'the removal');
    expect(reloads[1]).toMatchObject({ result: 'invalid' });
    expect(patterns(rulesFile)).toEqual(['a/**']);
    await writeFile(file, rules('e/**'));
    await until(() => reloads.length === 3, 'the fixed version');
    expect(reloads[2]).toEqual({ result: 'applied', rules: 1 });
    expect(rulesFile.invalid).toBe(false);
    expect(patterns(rulesFile)).toEqual(['e/**']);
  });

  it('a save of the same text changes nothing', async () => {
    await writeFile(file, rules('a/**'));
    const { reloads } = await start(20);
    await writeFile(file, rules('a/**'));
    // A later real change shows the first one was read (and ignored) in between.
    await new Promise((r) => setTimeout(r, 200));
    await writeFile(file, rules('b/**'));
    await until(() => reloads.length >= 1, 'the real change');
    expect(reloads).toEqual([{ result: 'applied', rules: 1 }]);
  });

  it('stops watching once closed', async () => {
    await writeFile(file, rules('a/**'));
    const { rulesFile, reloads } = await start(20);
    rulesFile.close();
    await writeFile(file, rules('b/**'));
    await new Promise((r) => setTimeout(r, 200));
    expect(reloads).toEqual([]);
    expect(patterns(rulesFile)).toEqual(['a/**']);
  });
});
