import { builtinModules } from 'node:module';
import path from 'node:path';
import ts from 'typescript';

/** Which modules each module may import (DESIGN.md, "Modules and the direction of dependencies"). */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  errors: [],
  time: [],
  policy: ['errors', 'time'],
  chaos: ['errors', 'time'],
  store: ['errors'],
  queue: ['errors', 'time', 'policy', 'store'],
  groups: ['errors', 'time', 'policy', 'store'],
  cache: ['errors', 'time'],
  transfer: ['errors', 'time', 'policy'],
  ops: ['errors', 'time', 'policy'],
  gateway: ['errors', 'time', 'policy', 'chaos', 'store', 'queue', 'groups', 'cache', 'transfer', 'ops'],
  cli: [
    'errors',
    'time',
    'policy',
    'chaos',
    'store',
    'queue',
    'groups',
    'cache',
    'transfer',
    'ops',
    'gateway',
  ],
};

/** Modules whose production code may use only Node's standard library. */
export const STDLIB_ONLY: readonly string[] = ['errors', 'time', 'policy'];

const BUILTINS = new Set(builtinModules);

export interface SourceFile {
  /** Path relative to the repository root, with forward slashes, e.g. `src/cache/read.ts`. */
  file: string;
  text: string;
}

export interface Violation {
  file: string;
  specifier: string;
  reason: string;
}

/** Every module specifier a file imports or re-exports, including dynamic `import()`. */
export function importsOf(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

function moduleOf(file: string): string | undefined {
  const parts = file.split('/');
  return parts[0] === 'src' && parts.length > 2 ? parts[1] : undefined;
}

/** Checks files under `src/` against the dependency table and returns every violation. */
export function checkDependencies(files: readonly SourceFile[]): Violation[] {
  const violations: Violation[] = [];
  for (const { file, text } of files) {
    const own = moduleOf(file);
    const isTest = /\.test\.ts$/.test(file);
    for (const specifier of importsOf(text)) {
      if (specifier.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier));
        const targetModule = moduleOf(target);
        if (!target.startsWith('src/')) {
          violations.push({ file, specifier, reason: 'imports a file outside src/' });
          continue;
        }
        if (targetModule === undefined || targetModule === own) continue;
        const rest = target.slice(`src/${targetModule}/`.length);
        if (!/^index\.(?:js|ts)$/.test(rest)) {
          violations.push({ file, specifier, reason: `reaches past src/${targetModule}/index.ts` });
        }
        if (own === undefined) continue; // src/index.ts, the package entry, may re-export any module
        const allowed = ALLOWED[own];
        if (!allowed) {
          violations.push({ file, specifier, reason: `module "${own}" is not in the dependency table` });
        } else if (!allowed.includes(targetModule)) {
          violations.push({
            file,
            specifier,
            reason: `module "${own}" may not import module "${targetModule}"`,
          });
        }
        continue;
      }
      const bare = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
      const isBuiltin = specifier.startsWith('node:') || BUILTINS.has(bare.split('/')[0] ?? bare);
      if (!isBuiltin && own !== undefined && STDLIB_ONLY.includes(own) && !isTest) {
        violations.push({
          file,
          specifier,
          reason: `module "${own}" may import only Node's standard library`,
        });
      }
    }
  }
  return violations;
}
