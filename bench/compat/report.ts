/**
 * What a harness run found, as written to bench/results/compat.json: counts per run, the tests
 * that pass directly against the origin but not through keel (each with its reason and the HTTP
 * statuses it saw on both paths), those that go the other way, and those that fail both ways but
 * differently.
 */
import type { Outcome, TestResult } from './junit.js';
import type { OriginFault } from './servers.js';

/** The runs of the harness: straight to the origin, and through keel in each auth mode. */
export const RUNS = ['direct', 'gateway', 'anonymous'] as const;
/** A run's name. */
export type RunName = (typeof RUNS)[number];
/** The runs through keel. */
export const KEEL_RUNS = ['gateway', 'anonymous'] as const;
/** A run through keel. */
export type KeelRun = (typeof KEEL_RUNS)[number];

/** Tests per outcome; each test is counted once (a test that failed and then errored in its teardown is a failure). */
export type Counts = Record<Outcome, number> & { total: number };

/** An origin fault with the test that was running when it happened. */
export interface LocatedFault extends OriginFault {
  test: string | undefined;
}

/** One run as recorded. */
export interface RunRecord {
  endpoint: string;
  counts: Counts;
  seconds: number;
  pytestExitCode: number;
  originFaults: LocatedFault[];
  /** Set when the origin or keel ended before the run stopped it. */
  serverExits: string[];
  /** keel runs: how often each bucket's origin breaker opened (from keel's /metrics). */
  breakerOpenings?: Record<string, number>;
  /** keel runs: the alerts keel raised, by name (from its log). */
  alertsFired?: Record<string, number>;
  /** keel runs: keel_gateway_requests_total by outcome (from keel's /metrics). */
  requestsByOutcome?: Record<string, number>;
}

/** A test whose outcome through keel differs from its outcome directly. */
export interface Difference {
  test: string;
  /** The suite's marks on the test: `fails_on_aws` says it expects what AWS S3 does not do. */
  markers: string[];
  direct: Outcome;
  keel: Outcome;
  /** The failing side's reason: the assertion or exception pytest printed. */
  reason: string | undefined;
  phase?: TestResult['phase'];
  at?: string;
  s3Code?: string;
  /** HTTP exchanges of the failing side (method, path, status). */
  http: string[];
  /** The same test's exchanges on the other side, to compare statuses. */
  httpOtherSide: string[];
  /** Outcomes when the test ran again on fresh servers (see {@link confirm}). */
  again?: { direct: Outcome | undefined; keel: Outcome | undefined };
}

/** A test that fails directly and through keel, but not in the same way: keel answered something else. */
export interface DifferentFailure {
  test: string;
  markers: string[];
  direct: FailureSide;
  keel: FailureSide;
}

/** One side of a {@link DifferentFailure}. */
export interface FailureSide {
  outcome: Outcome;
  reason: string | undefined;
  s3Code?: string;
  /** Method and status of each exchange of the test body, in order (`PUT 200`). */
  statuses: string[];
}

const MAX_HTTP = 16;

/** Counts results by outcome. */
export function countOutcomes(results: Map<string, TestResult>): Counts {
  const counts: Counts = { passed: 0, failed: 0, error: 0, skipped: 0, total: 0 };
  for (const r of results.values()) {
    counts[r.outcome]++;
    counts.total++;
  }
  return counts;
}

/** Attaches each fault to the test whose run (setup to teardown) it happened in. */
export function locateFaults(faults: OriginFault[], results: Map<string, TestResult>): LocatedFault[] {
  return faults.map((f) => {
    const during = [...results.values()].find(
      (r) =>
        r.startedAtMs !== undefined &&
        r.endedAtMs !== undefined &&
        f.atMs >= r.startedAtMs &&
        f.atMs <= r.endedAtMs,
    );
    return { ...f, test: during?.name };
  });
}

function lastHttp(r: TestResult | undefined): string[] {
  const http = r?.http ?? [];
  return http.length <= MAX_HTTP
    ? http
    : [`(${http.length - MAX_HTTP} earlier exchanges left out)`, ...http.slice(-MAX_HTTP)];
}

function difference(
  failing: TestResult,
  other: TestResult | undefined,
  direct: Outcome,
  keel: Outcome,
): Difference {
  return {
    test: failing.name,
    markers: failing.markers,
    direct,
    keel,
    reason: failing.reason,
    ...(failing.phase === undefined ? {} : { phase: failing.phase }),
    ...(failing.at === undefined ? {} : { at: failing.at }),
    ...(failing.s3Code === undefined ? {} : { s3Code: failing.s3Code }),
    http: lastHttp(failing),
    httpOtherSide: lastHttp(other),
  };
}

const passed = (o: Outcome | undefined): boolean => o === 'passed';
const failing = (o: Outcome | undefined): boolean => o === 'failed' || o === 'error';

/** Tests that pass directly but not through keel. */
export function passDirectFailThroughKeel(
  direct: Map<string, TestResult>,
  keel: Map<string, TestResult>,
): Difference[] {
  const out: Difference[] = [];
  for (const [name, d] of direct) {
    const k = keel.get(name);
    if (passed(d.outcome) && k && failing(k.outcome)) out.push(difference(k, d, d.outcome, k.outcome));
  }
  return out;
}

/** Tests that fail (or error) directly but pass through keel: for information, keel is not worse there. */
export function failDirectPassThroughKeel(
  direct: Map<string, TestResult>,
  keel: Map<string, TestResult>,
): Difference[] {
  const out: Difference[] = [];
  for (const [name, d] of direct) {
    const k = keel.get(name);
    if (failing(d.outcome) && passed(k?.outcome))
      out.push(difference(d, k, d.outcome, k?.outcome ?? 'passed'));
  }
  return out;
}

function statuses(r: TestResult): string[] {
  return r.http
    .filter((h) => h.startsWith('call: '))
    .map((h) => {
      const m = /^call: (\S+) .* -> (\S+)$/.exec(h);
      return m ? `${m[1]} ${m[2]}` : h;
    });
}

function side(r: TestResult): FailureSide {
  return {
    outcome: r.outcome,
    reason: r.reason,
    ...(r.s3Code === undefined ? {} : { s3Code: r.s3Code }),
    statuses: statuses(r),
  };
}

/**
 * Tests that fail both directly and through keel, where keel's answers differ from the origin's
 * (another status somewhere in the test body, or another S3 error code): the origin's own defect
 * hides whether keel would pass them, and what keel answered instead is worth a look.
 */
export function failBothDifferently(
  direct: Map<string, TestResult>,
  keel: Map<string, TestResult>,
): DifferentFailure[] {
  const out: DifferentFailure[] = [];
  for (const [name, d] of direct) {
    const k = keel.get(name);
    if (!k || !failing(d.outcome) || !failing(k.outcome)) continue;
    if (d.s3Code === k.s3Code && statuses(d).join() === statuses(k).join()) continue;
    out.push({ test: name, markers: d.markers, direct: side(d), keel: side(k) });
  }
  return out;
}

/** The tests whose outcome through some keel run differs (pass against fail) from the direct run. */
export function differingTests(
  direct: Map<string, TestResult>,
  keelRuns: Map<string, TestResult>[],
): Set<string> {
  const out = new Set<string>();
  for (const [name, d] of direct)
    for (const keel of keelRuns) {
      const k = keel.get(name)?.outcome;
      if ((passed(d.outcome) && failing(k)) || (failing(d.outcome) && passed(k))) out.add(name);
    }
  return out;
}

/**
 * Splits differences by whether they held when the test ran again on fresh servers: a test whose
 * direct and keel outcomes both came out the same (pass or not) again is confirmed; any other is
 * unstable (a race in the test or the origin, or load on the machine), and listed apart.
 */
export function confirm(
  differences: Difference[],
  again: { direct: Map<string, TestResult> | undefined; keel: Map<string, TestResult> | undefined },
): { confirmed: Difference[]; unstable: Difference[] } {
  const confirmed: Difference[] = [];
  const unstable: Difference[] = [];
  for (const d of differences) {
    const direct = again.direct?.get(d.test)?.outcome;
    const keel = again.keel?.get(d.test)?.outcome;
    const withAgain = { ...d, again: { direct, keel } };
    const held = passed(direct) === passed(d.direct) && passed(keel) === passed(d.keel);
    (held ? confirmed : unstable).push(withAgain);
  }
  return { confirmed, unstable };
}

/** Each test's outcome per run, in the suite's order: `{ test_x: { direct: 'passed', gateway: 'failed', … } }`. */
export function outcomesByTest(
  runs: Partial<Record<RunName, Map<string, TestResult>>>,
): Record<string, Partial<Record<RunName, Outcome>>> {
  const out: Record<string, Partial<Record<RunName, Outcome>>> = {};
  for (const run of RUNS)
    for (const [name, r] of runs[run] ?? []) {
      (out[name] ??= {})[run] = r.outcome;
    }
  return out;
}

/** Sums a Prometheus counter's samples by one label, e.g. breaker openings by bucket. */
export function sumByLabel(
  metrics: string,
  name: string,
  label: string,
  where: Record<string, string> = {},
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels = Object.fromEntries(
      [...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(where).some(([k, v]) => labels[k] !== v)) continue;
    const key = labels[label];
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (key === undefined || !Number.isFinite(value) || value === 0) continue;
    out[key] = (out[key] ?? 0) + value;
  }
  return out;
}
