import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDependencies, importsOf, type SourceFile } from './dependency-rules.js';

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
  walk(path.join(root, 'src'));
  return out;
}

describe('module dependency rules (DESIGN.md)', () => {
  it('every file under src/ imports only what its module may import, through index.ts', () => {
    const files = sourceFiles();
    expect(files.length).toBeGreaterThan(10);
    const violations = checkDependencies(files).map(
      (v) => `${v.file}: import '${v.specifier}' — ${v.reason}`,
    );
    expect(violations).toEqual([]);
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
      'src/errors/x.ts',
      `import { clock } from '../time/index.js';`,
      'module "errors" may not import module "time"',
    ],
    [
      'src/policy/x.ts',
      `import { openStore } from '../store/index.js';`,
      'module "policy" may not import module "store"',
    ],
    [
      'src/cache/x.ts',
      `import { KeelError } from '../errors/keel-error.js';`,
      'reaches past src/errors/index.ts',
    ],
    [
      'src/cache/x.ts',
      `export { proxy } from '../chaos/index.js';`,
      'module "cache" may not import module "chaos"',
    ],
    [
      'src/policy/x.ts',
      `import pino from 'pino';`,
      'module "policy" may import only Node\'s standard library',
    ],
    [
      'src/time/x.ts',
      `const m = await import('undici');`,
      'module "time" may import only Node\'s standard library',
    ],
    [
      'src/errors/x.ts',
      `import type { Foo } from 'some-package';`,
      'module "errors" may import only Node\'s standard library',
    ],
    [
      'src/ops/x.ts',
      `import { gateway } from '../gateway/index.js';`,
      'module "ops" may not import module "gateway"',
    ],
  ])('reports %s importing what it may not', (file, text, reason) => {
    expect(checkDependencies([{ file, text }])).toEqual([expect.objectContaining({ file, reason })]);
  });

  it.each([
    [
      'src/policy/x.ts',
      `import { classify } from '../errors/index.js'; import { EventEmitter } from 'node:events';`,
    ],
    ['src/errors/x.ts', `import { createHash } from 'crypto'; import { y } from './y.js';`],
    ['src/gateway/x.ts', `import { RangeCache } from '../cache/index.js'; import { request } from 'undici';`],
    ['src/index.ts', `export * from './policy/index.js';`],
    ['src/policy/x.test.ts', `import fc from 'fast-check';`],
  ])('allows %s', (file, text) => {
    expect(checkDependencies([{ file, text }])).toEqual([]);
  });
});
