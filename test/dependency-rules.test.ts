import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import {
  checkDependencies,
  importsOf,
  SPECIFIER_MODULES,
  type PackageInfo,
  type SourceFile,
} from './dependency-rules.js';

const root = path.resolve(import.meta.dirname, '..');

function sourceFiles(): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(?:ts|mts|js|mjs)$/.test(entry.name)) {
        out.push({
          file: path.relative(root, full).split(path.sep).join('/'),
          text: readFileSync(full, 'utf8'),
        });
      }
    }
  };
  for (const dir of readdirSync(path.join(root, 'packages'))) walk(path.join(root, 'packages', dir, 'src'));
  return out;
}

interface Manifest {
  name: string;
  engines?: { node?: string };
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

function manifest(dir: string): Manifest {
  return JSON.parse(readFileSync(path.join(root, 'packages', dir, 'package.json'), 'utf8')) as Manifest;
}

function workspacePackages(): PackageInfo[] {
  return readdirSync(path.join(root, 'packages')).map((dir) => {
    const m = manifest(dir);
    return {
      dir,
      name: m.name,
      declared: [...Object.keys(m.dependencies ?? {}), ...Object.keys(m.peerDependencies ?? {})],
    };
  });
}

/** For each name the `keel` entry exports, the module (errors, time or policy) it comes from. */
function keelNames(): (name: string) => string | undefined {
  const modules = ['errors', 'time', 'policy'];
  const files = modules.map((m) => path.join(root, 'packages/keel/src', m, 'index.ts'));
  const program = ts.createProgram(files, {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const owner = new Map<string, string>();
  files.forEach((file, i) => {
    const source = program.getSourceFile(file);
    const symbol = source && checker.getSymbolAtLocation(source);
    if (symbol) for (const s of checker.getExportsOfModule(symbol)) owner.set(s.name, modules[i] as string);
  });
  return (name) => owner.get(name);
}

const NONE: PackageInfo[] = [
  { dir: 'keel', name: 'keel', declared: [] },
  { dir: 'ops', name: '@keel/ops', declared: ['keel', 'pino'] },
  { dir: 'store', name: '@keel/store', declared: ['keel'] },
  { dir: 'gateway', name: '@keel/gateway', declared: ['keel', 'keel/cache', '@keel/ops', 'undici'] },
];
const owners: Record<string, string> = { classify: 'errors', systemClock: 'time', retry: 'policy' };
const check = (files: SourceFile[]) => checkDependencies(files, NONE, (n) => owners[n]);

describe('module dependency rules (DESIGN.md)', () => {
  it('every file under packages/ imports only what its module may import, declared in its package.json', () => {
    const files = sourceFiles();
    expect(files.length).toBeGreaterThan(100);
    const violations = checkDependencies(files, workspacePackages(), keelNames()).map(
      (v) => `${v.file}: import '${v.specifier}' — ${v.reason}`,
    );
    expect(violations).toEqual([]);
  });

  it('the keel package declares no runtime dependency, and every entry point names a real package', () => {
    expect(manifest('keel').dependencies ?? {}).toEqual({});
    const names = new Set(workspacePackages().map((p) => p.name));
    for (const specifier of Object.keys(SPECIFIER_MODULES))
      expect(names.has(specifier.startsWith('keel/') ? 'keel' : specifier)).toBe(true);
  });

  it('every package states the same Node versions, no older than its sources need', () => {
    const rootEngines = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Manifest)
      .engines;
    const floor = /^>=(\d+)\.(\d+)\.(\d+)$/.exec(rootEngines?.node ?? '');
    expect(floor, `root engines.node ${rootEngines?.node}`).not.toBeNull();
    for (const dir of readdirSync(path.join(root, 'packages')))
      expect(manifest(dir).engines?.node, `packages/${dir}`).toBe(rootEngines?.node);
    const [major, minor] = [Number(floor?.[1]), Number(floor?.[2])];
    // zlib.crc32 came in Node 20.15 (and 22.2): on an older 20 the importing modules fail to load.
    const crc32Users = sourceFiles().filter((f) =>
      /import\s*\{[^}]*\bcrc32\b[^}]*\}\s*from\s*'node:zlib'/.test(f.text),
    );
    expect(crc32Users.length).toBeGreaterThan(0);
    expect(major > 20 || (major === 20 && minor >= 15), `engines ${rootEngines?.node} below 20.15.0`).toBe(
      true,
    );
  });

  it('finds static, type-only, re-export and dynamic imports', () => {
    expect(
      importsOf(
        `import a from './a.js'; import type { B } from '../b/index.js'; export * from './c.js'; const d = await import('pg');`,
      ),
    ).toEqual(['./a.js', '../b/index.js', './c.js', 'pg']);
  });

  it.each([
    [
      'packages/keel/src/errors/x.ts',
      `import { clock } from '../time/index.js';`,
      'module "errors" may not import module "time"',
    ],
    [
      'packages/keel/src/cache/x.ts',
      `import { KeelError } from '../errors/keel-error.js';`,
      'reaches past packages/keel/src/errors/index.ts',
    ],
    [
      'packages/keel/src/cache/x.ts',
      `export { proxy } from '../chaos/index.js';`,
      'module "cache" may not import module "chaos"',
    ],
    [
      'packages/keel/src/policy/x.ts',
      `import pino from 'pino';`,
      "the keel package may import only Node's standard library",
    ],
    [
      'packages/keel/src/time/x.ts',
      `const m = await import('undici');`,
      "the keel package may import only Node's standard library",
    ],
    [
      'packages/store/src/x.ts',
      `import { retry } from 'keel';`,
      'module "store" may not import module "policy"',
    ],
    [
      'packages/store/src/x.ts',
      `import { nothing } from 'keel';`,
      'imports a name from keel that no module of it exports',
    ],
    [
      'packages/ops/src/x.ts',
      `import { createGateway } from '@keel/gateway';`,
      'module "ops" may not import module "gateway"',
    ],
    [
      'packages/ops/src/x.ts',
      `import { Counter } from 'prom-client';`,
      '"prom-client" is not declared in packages/ops/package.json',
    ],
    [
      'packages/ops/src/x.ts',
      `import { classify } from '../../keel/src/errors/index.js';`,
      'imports a file outside packages/ops/src/ (import another package by its name)',
    ],
    [
      'packages/gateway/src/read/x.ts',
      `import { run } from '../cli/program.js';`,
      'module "gateway" may not import module "cli"',
    ],
    ['packages/ops/src/x.ts', `import { x } from '@keel/nothing';`, 'no such entry point of a keel package'],
  ])('reports %s importing what it may not', (file, text, reason) => {
    expect(check([{ file, text }])).toEqual([expect.objectContaining({ file, reason })]);
  });

  it.each([
    [
      'packages/keel/src/policy/x.ts',
      `import { classify } from '../errors/index.js'; import { EventEmitter } from 'node:events';`,
    ],
    ['packages/keel/src/errors/x.ts', `import { createHash } from 'crypto'; import { y } from './y.js';`],
    [
      'packages/gateway/src/read/x.ts',
      `import { RangeCache } from 'keel/cache'; import { request } from 'undici'; import { s } from '../s3/s.js';`,
    ],
    ['packages/gateway/src/cli/x.ts', `import { createGateway } from '../index.js';`],
    [
      'packages/ops/src/x.ts',
      `import { classify, systemClock, retry } from 'keel'; import pino from 'pino';`,
    ],
    ['packages/keel/src/index.ts', `export * from './policy/index.js';`],
    ['packages/keel/src/policy/x.test.ts', `import fc from 'fast-check';`],
  ])('allows %s', (file, text) => {
    expect(check([{ file, text }])).toEqual([]);
  });
});
