/**
 * Reads pytest's junit XML (`--junitxml`, `junit_family=xunit1`) into one result per test: more
 * robust than reading pytest's terminal output, whose format changes between versions and
 * plugins. The HTTP exchanges and start time come from keel_compat_plugin.py, as properties.
 */
import { readFile } from 'node:fs/promises';
import { XMLParser } from 'fast-xml-parser';

/** A test's outcome; `error` is a failure outside the test body (its setup or teardown: mostly the suite's bucket cleanup). */
export type Outcome = 'passed' | 'failed' | 'error' | 'skipped';

/** One test of a run, as pytest reported it. */
export interface TestResult {
  /** The test function with its parameters, e.g. `test_object_copy_16m`. */
  name: string;
  outcome: Outcome;
  /** Where an error happened: in the test's setup or teardown (a failure is always in the test body). */
  phase?: 'setup' | 'call' | 'teardown';
  /** The lines pytest marks with `E` (the assertion or exception), joined; the skip reason for a skip. */
  reason?: string;
  /** The line of the suite where it failed: `test_s3.py:1642: request_id = …`. */
  at?: string;
  /** When a test failed and then its teardown failed too: the teardown's reason. */
  teardownReason?: string;
  /** The S3 error code in a botocore ClientError (`An error occurred (SignatureDoesNotMatch) …`). */
  s3Code?: string;
  /** HTTP exchanges of the test body (`PUT /bucket/key -> 403`), and of a setup or teardown that failed. */
  http: string[];
  /** When the test's setup started (ms since the epoch). */
  startedAtMs?: number;
  /** The suite's marks on the test (`fails_on_aws`, `fails_on_rgw`, `list_objects_v2` …). */
  markers: string[];
  /** When its teardown ended (ms since the epoch). */
  endedAtMs?: number;
  seconds: number;
}

interface XmlProperty {
  name: string;
  value: string;
}
interface XmlProblem {
  message?: string;
  '#text'?: string;
}
interface XmlTestcase {
  name: string;
  time?: string;
  properties?: { property?: XmlProperty[] }[];
  failure?: XmlProblem[];
  error?: XmlProblem[];
  skipped?: XmlProblem[];
}

const ARRAYS = new Set(['testsuite', 'testcase', 'property', 'properties', 'failure', 'error', 'skipped']);
const MAX_REASON = 600;

function problemText(p: XmlProblem): string {
  return p['#text'] ?? '';
}

/** The `E ` lines of a pytest traceback (the exception and its explanation), else its message. */
export function reasonOf(p: XmlProblem): string {
  const eLines = problemText(p)
    .split('\n')
    .filter((l) => l.startsWith('E '))
    .map((l) => l.slice(1).trim())
    .filter((l) => l !== '');
  const text = eLines.length > 0 ? eLines.slice(0, 6).join(' | ') : (p.message ?? '').trim();
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON)}…` : text;
}

/** The last frame of the traceback inside the suite's test file, with its code line. */
function locationOf(p: XmlProblem): string | undefined {
  const lines = problemText(p).split('\n');
  let at: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const m = /(?:^|\/)(test_s3\.py:\d+): in /.exec(lines[i] ?? '');
    if (m) at = `${m[1]}: ${(lines[i + 1] ?? '').trim()}`;
  }
  return at;
}

function s3CodeOf(reason: string): string | undefined {
  return /An error occurred \(([^)]+)\)/.exec(reason)?.[1];
}

function toResult(tc: XmlTestcase): TestResult {
  const props = (tc.properties ?? []).flatMap((p) => p.property ?? []);
  const http = props.filter((p) => p.name.startsWith('http_')).map((p) => `${p.name.slice(5)}: ${p.value}`);
  const started = props.find((p) => p.name === 'started_at_ms')?.value;
  const ended = props.find((p) => p.name === 'ended_at_ms')?.value;
  const markers = props.find((p) => p.name === 'markers')?.value;
  const base: TestResult = {
    name: tc.name,
    outcome: 'passed',
    http,
    markers: markers ? markers.split(',') : [],
    seconds: Number(tc.time ?? 0),
    ...(started === undefined ? {} : { startedAtMs: Number(started) }),
    ...(ended === undefined ? {} : { endedAtMs: Number(ended) }),
  };
  // A test can fail in its body and error in its teardown as well; the body's failure says more.
  const failure = tc.failure?.[0];
  const error = tc.error?.[0];
  const skipped = tc.skipped?.[0];
  const problem = failure ?? error;
  if (problem) {
    const reason = reasonOf(problem);
    const phase = failure
      ? 'call'
      : /failed on setup/.test(error?.message ?? '')
        ? 'setup'
        : /failed on teardown/.test(error?.message ?? '')
          ? 'teardown'
          : 'call';
    const at = locationOf(problem);
    const s3Code = s3CodeOf(reason);
    return {
      ...base,
      outcome: failure ? 'failed' : 'error',
      phase,
      reason,
      ...(at === undefined ? {} : { at }),
      ...(s3Code === undefined ? {} : { s3Code }),
    };
  }
  if (skipped) return { ...base, outcome: 'skipped', reason: (skipped.message ?? '').trim() };
  return base;
}

/**
 * Reads a junit XML file written by pytest into results by test name.
 * @throws when the file is missing or not junit XML.
 */
export async function readJunit(file: string): Promise<Map<string, TestResult>> {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    isArray: (name) => ARRAYS.has(name),
  });
  const doc = parser.parse(await readFile(file, 'utf8')) as {
    testsuites?: { testsuite?: { testcase?: XmlTestcase[] }[] };
  };
  if (doc.testsuites === undefined) throw new Error(`${file} is not a junit XML report of pytest`);
  const results = new Map<string, TestResult>();
  for (const suite of doc.testsuites.testsuite ?? [])
    for (const tc of suite.testcase ?? []) {
      const result = toResult(tc);
      const earlier = results.get(tc.name);
      results.set(tc.name, earlier ? merge(earlier, result) : result);
    }
  return results;
}

const SEVERITY: Record<Outcome, number> = { passed: 0, skipped: 1, error: 2, failed: 3 };

// pytest reports a test that fails in its body and errors in its teardown as two testcase
// elements of the same name (the junit schema allows one problem per testcase): one result again,
// the body's failure first.
function merge(a: TestResult, b: TestResult): TestResult {
  const [first, second] = SEVERITY[b.outcome] > SEVERITY[a.outcome] ? [b, a] : [a, b];
  const startedAtMs = Math.min(a.startedAtMs ?? Infinity, b.startedAtMs ?? Infinity);
  const endedAtMs = Math.max(a.endedAtMs ?? -Infinity, b.endedAtMs ?? -Infinity);
  return {
    ...first,
    http: [...a.http, ...b.http],
    seconds: a.seconds + b.seconds,
    ...(Number.isFinite(startedAtMs) ? { startedAtMs } : {}),
    ...(Number.isFinite(endedAtMs) ? { endedAtMs } : {}),
    ...(second.outcome === 'error' && first.outcome === 'failed' && second.reason !== undefined
      ? { teardownReason: second.reason }
      : {}),
  };
}
