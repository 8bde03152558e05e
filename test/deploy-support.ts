import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';

/** The repository's root and its deploy/ folder. */
export const ROOT = path.resolve(import.meta.dirname, '..');
export const DEPLOY = path.join(ROOT, 'deploy');

export const run = promisify(execFile);

/** A file of the repository, as text. */
export const text = (file: string): string => readFileSync(path.join(ROOT, file), 'utf8');

/** Every YAML document of a file (anchors and `<<` merge keys resolved, as compose resolves them). */
export function yamlDocs(file: string): Record<string, unknown>[] {
  return parseAllDocuments(text(file), { merge: true }).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as Record<string, unknown>;
  });
}

/**
 * The gateway's settings as config.ts declares them (the `SETTINGS` table: the camelCase flag
 * name and its `KEEL_*` variable), read from the source so a setting renamed there is noticed.
 */
export function gatewaySettings(): Map<string, string> {
  const source = text('packages/gateway/src/config.ts');
  const table = /const SETTINGS = \{([\s\S]*?)\} as const;/.exec(source)?.[1];
  if (table === undefined) throw new Error('config.ts: no SETTINGS table found');
  const settings = new Map<string, string>();
  for (const [, flag = '', variable = ''] of table.matchAll(/^\s*(\w+): '(KEEL_[A-Z0-9_]+)',$/gm))
    settings.set(variable, flag);
  if (settings.size < 20) throw new Error(`config.ts: only ${settings.size} settings read from SETTINGS`);
  return settings;
}

/**
 * How long a `--workers` primary lets a worker run after `--drain-seconds` before it kills it
 * (cluster/primary.ts: `config.drainSeconds * 1000 + N`), in seconds.
 */
export function workerKillMarginSeconds(): number {
  const ms = /config\.drainSeconds \* 1000 \+ ([\d_]+)/.exec(
    text('packages/gateway/src/cluster/primary.ts'),
  )?.[1];
  if (ms === undefined) throw new Error('cluster/primary.ts: the kill margin after the drain was not found');
  return Number(ms.replace(/_/g, '')) / 1000;
}

/** The port of a `[host:]port` setting (NaN when it is missing). */
export const portOf = (hostPort: string | undefined): number => Number(/(\d+)$/.exec(hostPort ?? '')?.[1]);

/** The `Key=Value` lines of a systemd unit, by key (a key may repeat). */
export function unitEntries(file: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  for (const line of text(file).split('\n')) {
    const [, key, value = ''] = /^([A-Za-z]+)=(.*)$/.exec(line) ?? [];
    if (key !== undefined) entries.set(key, [...(entries.get(key) ?? []), value]);
  }
  return entries;
}

/** `NAME=value` lines of an env file or `Environment=` values, as a record. */
export function envLines(lines: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of lines) {
    const [, name, value = ''] = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim()) ?? [];
    if (name !== undefined) env[name] = value;
  }
  return env;
}

/** Where kubernetes-types keeps the type of each `apiVersion` the manifests use. */
const K8S_TYPE_MODULES: Record<string, string> = {
  v1: 'kubernetes-types/core/v1',
  'apps/v1': 'kubernetes-types/apps/v1',
  'policy/v1': 'kubernetes-types/policy/v1',
};

/**
 * Type-checks Kubernetes objects against kubernetes-types with TypeScript's excess-property check:
 * a field that Kubernetes does not know (a misspelt `readinesProbe`, a field at the wrong level)
 * is an error, which the OpenAPI schemas alone allow. Answers the diagnostics, empty when clean.
 */
export function kubernetesTypeErrors(objects: readonly Record<string, unknown>[]): string[] {
  const file = path.join(ROOT, 'test', '.deploy-k8s-objects.ts');
  const source = objects
    .map((o, i) => {
      const module = K8S_TYPE_MODULES[String(o.apiVersion)];
      if (module === undefined)
        throw new Error(`no kubernetes-types module for apiVersion ${String(o.apiVersion)}`);
      return `import type { ${String(o.kind)} as T${i} } from '${module}';\nexport const o${i}: T${i} = ${JSON.stringify(o, null, 2)};`;
    })
    .join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
  };
  const disk = ts.createCompilerHost(options);
  // The checked file exists only in memory: nothing is written into the repository.
  const host: ts.CompilerHost = {
    ...disk,
    fileExists: (f) => f === file || disk.fileExists(f),
    readFile: (f) => (f === file ? source : disk.readFile(f)),
    getSourceFile: (f, language, ...rest) =>
      f === file ? ts.createSourceFile(f, source, language) : disk.getSourceFile(f, language, ...rest),
  };
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}
