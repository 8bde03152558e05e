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
  fleet: ['errors', 'time', 'policy', 'store'],
  gateway: [
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
    'fleet',
  ],
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
    'fleet',
    'gateway',
  ],
};

/** The modules of the `keel` package: its production code may use only Node's standard library. */
export const CORE_MODULES: readonly string[] = ['errors', 'time', 'policy', 'chaos', 'cache'];

/** Where each package specifier leads: the module it is the entry of (`keel` holds three). */
export const SPECIFIER_MODULES: Readonly<Record<string, readonly string[]>> = {
  keel: ['errors', 'time', 'policy'],
  'keel/chaos': ['chaos'],
  'keel/cache': ['cache'],
  '@keel/ops': ['ops'],
  '@keel/transfer': ['transfer'],
  '@keel/store': ['store'],
  '@keel/queue': ['queue'],
  '@keel/groups': ['groups'],
  '@keel/fleet': ['fleet'],
  '@keel/gateway': ['gateway'],
};

const BUILTINS = new Set(builtinModules);

export interface SourceFile {
  /** Path relative to the repository root, with forward slashes, e.g. `packages/keel/src/cache/read.ts`. */
  file: string;
  text: string;
}

/** What the checks need to know of a workspace package. */
export interface PackageInfo {
  /** Its folder under packages/, e.g. `keel`, `gateway`. */
  dir: string;
  /** Its npm name. */
  name: string;
  /** Packages it declares (dependencies and peerDependencies). */
  declared: readonly string[];
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

/** The names a file imports from `specifier` (`*` for a namespace or side-effect import). */
export function namesImported(text: string, specifier: string): string[] {
  const source = ts.createSourceFile('x.ts', text, ts.ScriptTarget.Latest, false);
  const names: string[] = [];
  const visit = (node: ts.Node): void => {
    const from =
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier !== undefined &&
      ts.isStringLiteral(node.moduleSpecifier)
        ? node.moduleSpecifier.text
        : undefined;
    if (from === specifier && ts.isImportDeclaration(node)) {
      const bindings = node.importClause?.namedBindings;
      if (bindings && ts.isNamedImports(bindings))
        for (const el of bindings.elements) names.push((el.propertyName ?? el.name).text);
      else names.push('*');
    } else if (from === specifier && ts.isExportDeclaration(node)) {
      const clause = node.exportClause;
      if (clause && ts.isNamedExports(clause))
        for (const el of clause.elements) names.push((el.propertyName ?? el.name).text);
      else names.push('*');
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] !== undefined &&
      ts.isStringLiteral(node.arguments[0]) &&
      node.arguments[0].text === specifier
    ) {
      names.push('*');
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return names;
}

/** Package folder and module of a file under packages/, or undefined for any other file. */
export function locate(file: string): { pkg: string; module: string | undefined } | undefined {
  const parts = file.split('/');
  if (parts[0] !== 'packages' || parts[2] !== 'src' || parts.length < 4) return undefined;
  const pkg = parts[1] as string;
  if (pkg === 'keel') return { pkg, module: parts.length > 4 ? parts[3] : undefined };
  if (pkg === 'gateway') return { pkg, module: parts[3] === 'cli' && parts.length > 4 ? 'cli' : 'gateway' };
  return { pkg, module: pkg };
}

/** The npm package a bare specifier names: `@scope/name` or `name`. */
function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

/**
 * Checks files under packages/ against the dependency table and the packages' manifests:
 * relative imports stay inside their package and reach another module only through its index;
 * a package is imported by its name, only by modules the table allows (for `keel`, by the module
 * each imported name comes from, as `moduleOfKeelName` tells); every other package a production
 * file imports is declared in its package.json; the `keel` package imports nothing but Node's
 * standard library. Returns every violation.
 */
export function checkDependencies(
  files: readonly SourceFile[],
  packages: readonly PackageInfo[],
  moduleOfKeelName: (name: string) => string | undefined,
): Violation[] {
  const violations: Violation[] = [];
  const byDir = new Map(packages.map((p) => [p.dir, p]));
  for (const { file, text } of files) {
    const at = locate(file);
    if (!at) continue;
    const own = at.module;
    const isTest = /\.test\.ts$/.test(file);
    const add = (specifier: string, reason: string): void => {
      violations.push({ file, specifier, reason });
    };
    /** Whether `own` may import module `target`; reports it when not. */
    const mayImport = (specifier: string, target: string): boolean => {
      if (own === undefined || target === own) return true; // a package entry re-exports its own modules
      const allowed = ALLOWED[own];
      if (!allowed) add(specifier, `module "${own}" is not in the dependency table`);
      else if (!allowed.includes(target)) add(specifier, `module "${own}" may not import module "${target}"`);
      else return true;
      return false;
    };
    for (const specifier of importsOf(text)) {
      if (specifier.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier));
        const there = locate(target);
        if (!there || there.pkg !== at.pkg) {
          add(
            specifier,
            `imports a file outside packages/${at.pkg}/src/ (import another package by its name)`,
          );
          continue;
        }
        if (there.module === undefined || there.module === own) continue;
        // Another module of the same package is reached through its index (the CLI has none: nothing imports it).
        const entry = there.pkg === 'keel' ? `packages/keel/src/${there.module}/` : `packages/${at.pkg}/src/`;
        if (there.module !== 'cli' && !/^index\.(?:js|ts)$/.test(target.slice(entry.length)))
          add(specifier, `reaches past ${entry}index.ts`);
        mayImport(specifier, there.module);
        continue;
      }
      const bare = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
      if (specifier.startsWith('node:') || BUILTINS.has(bare.split('/')[0] ?? bare)) continue;
      const modules = SPECIFIER_MODULES[specifier];
      const name = packageName(specifier);
      const isWorkspace = modules !== undefined || name === 'keel' || name.startsWith('@keel/');
      if (isWorkspace && modules === undefined) {
        add(specifier, `no such entry point of a keel package`);
        continue;
      }
      if (modules !== undefined) {
        if (name === byDir.get(at.pkg)?.name) {
          add(specifier, 'imports its own package by name: use a relative path');
          continue;
        }
        const targets =
          specifier === 'keel'
            ? namesImported(text, specifier).map((n) => (n === '*' ? undefined : moduleOfKeelName(n)))
            : [modules[0]];
        const denied = targets.filter((m) => {
          if (m !== undefined) return !mayImport(specifier, m);
          add(specifier, 'imports a name from keel that no module of it exports');
          return true;
        });
        if (denied.length > 0) continue;
      } else if (!isTest && at.pkg === 'keel') {
        add(specifier, `the keel package may import only Node's standard library`);
        continue;
      }
      if (isTest) continue;
      const declared = byDir.get(at.pkg)?.declared ?? [];
      if (!declared.includes(name))
        add(specifier, `"${name}" is not declared in packages/${at.pkg}/package.json`);
    }
  }
  return violations;
}
