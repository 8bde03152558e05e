/**
 * keel's S3 compatibility harness (`npm run compat`): runs a selection of ceph/s3-tests (about 300
 * object tests, see selection.ts) three times, each against fresh servers on loopback:
 *   direct     straight to an s3rver origin;
 *   gateway    through `keel gateway --auth gateway` (clients sign with client keys, keel signs
 *              anew to the origin with its credentials);
 *   anonymous  through `keel gateway --auth anonymous`.
 * and writes bench/results/compat.json: counts per run, the tests that pass directly but fail
 * through keel (with the reason pytest printed and the HTTP statuses seen), the reverse, and the
 * tests that fail both ways but differently. Every test whose outcome differs is run a second time
 * on fresh servers, in each run, and a difference that does not hold is listed apart as unstable.
 *
 * Needs the suite (`S3TESTS_DIR`, see suite.ts) and Debian's Python packages; installs and fetches
 * nothing. Takes minutes. Not part of `npm test`.
 *
 *   S3TESTS_DIR=/path/to/s3-tests node --import tsx bench/compat/run.ts
 *     [--only direct,gateway,anonymous] [--tests <regex>] [--keel-args '<flags>'] [--out <file>] [--keep] [--no-confirm]
 *
 * `--only` and `--tests` make a trial run, which leaves bench/results/compat.json alone unless
 * `--out` names it; `--keep` keeps the temporary directory (logs, junit XML, origin data);
 * `--no-confirm` skips the second pass.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { readJunit, type TestResult } from './junit.js';
import { KEEL_ROOT } from './keel-source.js';
import { cleanupAll, keepTemporaryDirectories, temporaryDirectory } from './processes.js';
import {
  confirm,
  countOutcomes,
  differingTests,
  failBothDifferently,
  failDirectPassThroughKeel,
  KEEL_RUNS,
  locateFaults,
  outcomesByTest,
  passDirectFailThroughKeel,
  RUNS,
  sumByLabel,
  type Difference,
  type DifferentFailure,
  type KeelRun,
  type RunName,
  type RunRecord,
} from './report.js';
import { EXCLUDE, INCLUDE, selectTests, testName } from './selection.js';
import { ORIGIN_CREDENTIALS, startKeel, startOrigin, type Keel } from './servers.js';
import {
  checkPython,
  collectTests,
  DEBIAN_PACKAGES,
  locateSuite,
  PYTHON,
  runPytest,
  SUITE_COMMIT,
  SUITE_REPOSITORY,
  SUITE_TEST_FILE,
  TEST_TIMEOUT_SECONDS,
  writeSuiteConfig,
  type Suite,
  type SuiteUser,
  type SuiteUsers,
} from './suite.js';

const RECORD = path.join(KEEL_ROOT, 'bench/results/compat.json');

interface Args {
  only: RunName[];
  tests: RegExp | undefined;
  out: string | undefined;
  keep: boolean;
  confirm: boolean;
  /** More `keel gateway` flags for the runs through keel (`--keel-args '--unsigned-requests forward'`). */
  keelArgs: string[];
}

function parseArgs(argv: string[]): Args {
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
    return v;
  };
  const known = new Set(['--only', '--tests', '--keel-args', '--out', '--keep', '--no-confirm']);
  // The value of --keel-args starts with -- itself: it is not an option of the harness.
  const at = argv.indexOf('--keel-args');
  const keelArgsText = at < 0 ? undefined : argv[at + 1];
  for (const [i, a] of argv.entries())
    if (a.startsWith('--') && !known.has(a) && !(at >= 0 && i === at + 1))
      throw new Error(`unknown option ${a}; see bench/compat/run.ts`);
  const keelArgs = (keelArgsText ?? '').split(/\s+/).filter((s) => s !== '');
  if (at >= 0 && keelArgs.length === 0) throw new Error('--keel-args needs a value');
  const onlyText = value('--only');
  const only = onlyText === undefined ? [...RUNS] : onlyText.split(',').filter((s) => s !== '');
  for (const r of only)
    if (!(RUNS as readonly string[]).includes(r))
      throw new Error(`--only takes some of ${RUNS.join(',')}; got ${r}`);
  const testsText = value('--tests');
  // Other keel flags measure something else than the recorded defaults: a trial run too.
  const trial = onlyText !== undefined || testsText !== undefined || keelArgs.length > 0;
  const out = value('--out') ?? (trial ? undefined : RECORD);
  return {
    only: RUNS.filter((r) => only.includes(r)),
    tests: testsText === undefined ? undefined : new RegExp(testsText),
    out,
    keep: argv.includes('--keep'),
    confirm: !argv.includes('--no-confirm'),
    keelArgs,
  };
}

// Client keys for the runs through keel: one per user of the suite, so the gateway sees the
// suite's users as different clients, as it would see different people. Made anew for each run.
function clientUsers(): SuiteUsers {
  const user = (name: string): SuiteUser => ({
    accessKey: `KEELCOMPAT${name.toUpperCase()}`.padEnd(20, '0').slice(0, 20),
    secretKey: randomBytes(20).toString('hex'),
  });
  return {
    main: user('main'),
    alt: user('alt'),
    tenant: user('tenant'),
    iam: user('iam'),
    iamRoot: user('iamroot'),
    iamAltRoot: user('iamalt'),
  };
}

// Straight to s3rver, every user is s3rver's one account: it knows no other key.
const originUsers: SuiteUsers = {
  main: ORIGIN_CREDENTIALS,
  alt: ORIGIN_CREDENTIALS,
  tenant: ORIGIN_CREDENTIALS,
  iam: ORIGIN_CREDENTIALS,
  iamRoot: ORIGIN_CREDENTIALS,
  iamAltRoot: ORIGIN_CREDENTIALS,
};

interface RunOutput {
  record: RunRecord;
  results: Map<string, TestResult>;
}

async function runOne(
  name: RunName,
  pass: 'first' | 'again',
  suite: Suite,
  nodeIds: string[],
  work: string,
  keelArgs: string[],
): Promise<RunOutput> {
  const label = pass === 'first' ? name : `${name}, again`;
  const dir = path.join(work, pass === 'first' ? name : `${name}-again`);
  await mkdir(path.join(dir, 'origin'), { recursive: true });
  const started = Date.now();
  process.stdout.write(`\n[${label}] starting the origin${name === 'direct' ? '' : ' and keel'}…\n`);
  const origin = await startOrigin(path.join(dir, 'origin'));
  const keelLog = path.join(dir, 'keel.log');
  let keel: Keel | undefined;
  let output: RunOutput;
  try {
    let host = '127.0.0.1';
    let port = origin.port;
    let users = originUsers;
    if (name !== 'direct') {
      users = clientUsers();
      keel = await startKeel({
        auth: name,
        upstream: origin.url,
        clientKeys: Object.values(users),
        cacheDir: path.join(dir, 'cache'),
        logFile: keelLog,
        args: keelArgs,
      });
      ({ host, port } = keel);
    }
    const endpoint = keel
      ? `keel --auth ${name}${keelArgs.map((a) => ` ${a}`).join('')} at ${keel.url} → s3rver at ${origin.url}`
      : `s3rver at ${origin.url}`;
    process.stdout.write(`[${label}] ${nodeIds.length} tests against ${endpoint}\n`);
    const configFile = await writeSuiteConfig(dir, host, port, users);
    const junitFile = path.join(dir, 'junit.xml');
    const logFile = path.join(dir, 'pytest.log');
    const code = await runPytest({ label, suite, configFile, nodeIds, junitFile, logFile });
    const results = await readJunit(junitFile).catch((err: unknown) => {
      throw new Error(
        `[${label}] pytest (exit code ${code}) wrote no readable junit XML (${String(err)}); see ${logFile} (--keep keeps it)`,
      );
    });
    const metrics = keel ? await keel.metrics() : '';
    const serverExits = [origin.exited(), keel?.exited()].filter((e): e is string => e !== undefined);
    const record: RunRecord = {
      endpoint: keel ? `keel gateway --auth ${name} → s3rver` : 's3rver',
      counts: countOutcomes(results),
      seconds: Math.round((Date.now() - started) / 1000),
      pytestExitCode: code,
      originFaults: locateFaults(origin.faults, results),
      serverExits,
      ...(keel
        ? {
            breakerOpenings: sumByLabel(metrics, 'keel_breaker_transitions_total', 'breaker', { to: 'open' }),
            requestsByOutcome: sumByLabel(metrics, 'keel_gateway_requests_total', 'outcome'),
          }
        : {}),
    };
    output = { record, results };
  } finally {
    await keel?.stop();
    await origin.stop();
  }
  // keel's log is complete only once it has stopped.
  if (keel) output.record.alertsFired = await alertsFired(keelLog);
  return output;
}

/** keel's alerts raised during a run, by name, from its log (`--alerts log`, the default). */
async function alertsFired(logFile: string): Promise<Record<string, number>> {
  const log = await readFile(logFile, 'utf8').catch(() => '');
  const fired: Record<string, number> = {};
  for (const m of log.matchAll(/alert firing: (\w+)/g)) if (m[1]) fired[m[1]] = (fired[m[1]] ?? 0) + 1;
  return fired;
}

function gitOf(dir: string, args: string[]): string | undefined {
  const r = spawnSync('git', ['-C', dir, ...args], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function s3rverVersion(): string {
  const require = createRequire(path.join(KEEL_ROOT, 'package.json'));
  return (require('s3rver/package.json') as { version: string }).version;
}

function printSummary(
  records: Partial<Record<RunName, RunRecord>>,
  differences: Partial<Record<KeelRun, Difference[]>>,
  unstable: Partial<Record<KeelRun, Difference[]>>,
): void {
  process.stdout.write('\nrun        passed failed  error skipped  total  seconds\n');
  for (const run of RUNS) {
    const r = records[run];
    if (!r) continue;
    const c = r.counts;
    const cols = [c.passed, c.failed, c.error, c.skipped, c.total, r.seconds].map((n, i) =>
      String(n).padStart(i === 5 ? 8 : 6),
    );
    process.stdout.write(`${run.padEnd(10)}${cols.join(' ')}\n`);
    for (const e of r.serverExits) process.stdout.write(`  ${run}: a server ${e}\n`);
    for (const f of r.originFaults)
      process.stdout.write(`  ${run}: origin fault in ${f.test ?? '?'}: ${f.message}\n`);
  }
  for (const [run, diffs] of Object.entries(differences)) {
    process.stdout.write(`\npass directly, fail through keel --auth ${run}: ${diffs.length}\n`);
    for (const d of diffs)
      process.stdout.write(`  ${d.test}: ${d.keel}: ${(d.reason ?? '').slice(0, 160)}\n`);
  }
  for (const [run, diffs] of Object.entries(unstable))
    if (diffs.length > 0)
      process.stdout.write(
        `\nunstable (the difference did not hold the second time), --auth ${run}: ${diffs.map((d) => d.test).join(', ')}\n`,
      );
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  keepTemporaryDirectories(args.keep);
  const suite = locateSuite();
  if (suite.commit !== undefined && suite.commit !== SUITE_COMMIT)
    process.stderr.write(
      `compat: warning: the suite is at ${suite.commit}, the recorded results at ${SUITE_COMMIT}; results may differ\n`,
    );
  const python = checkPython();
  const work = await temporaryDirectory('keel-compat-');
  // The suite reads its configuration while pytest collects; no server is needed for that.
  const collectConfig = await writeSuiteConfig(work, '127.0.0.1', 1, originUsers);
  let nodeIds = selectTests(collectTests(suite, collectConfig));
  if (args.tests) nodeIds = nodeIds.filter((id) => args.tests?.test(id));
  if (nodeIds.length === 0) throw new Error('no test selected');
  process.stdout.write(
    `compat: ${nodeIds.length} tests of ${SUITE_TEST_FILE} (${suite.dir}), runs: ${args.only.join(', ')}; ` +
      `Python ${python.python} (${PYTHON}), pytest ${python.pytest}, boto3 ${python.boto3}\n`,
  );
  const records: Partial<Record<RunName, RunRecord>> = {};
  const results: Partial<Record<RunName, Map<string, TestResult>>> = {};
  for (const run of args.only) {
    const out = await runOne(run, 'first', suite, nodeIds, work, args.keelArgs);
    records[run] = out.record;
    results[run] = out.results;
  }
  const direct = results.direct;
  const keelRuns = KEEL_RUNS.filter((r) => results[r] !== undefined);
  // Second pass: every test whose outcome differs runs again, in every run, on fresh servers.
  const differing = direct
    ? differingTests(
        direct,
        keelRuns.map((r) => results[r] as Map<string, TestResult>),
      )
    : new Set<string>();
  const again: Partial<Record<RunName, Map<string, TestResult>>> = {};
  let secondPass: { tests: number; seconds: number } | undefined;
  if (args.confirm && differing.size > 0) {
    const started = Date.now();
    const ids = nodeIds.filter((id) => differing.has(testName(id)));
    process.stdout.write(
      `\ncompat: ${ids.length} test${ids.length === 1 ? '' : 's'} differ between runs; running them again on fresh servers\n`,
    );
    for (const run of args.only)
      again[run] = (await runOne(run, 'again', suite, ids, work, args.keelArgs)).results;
    secondPass = { tests: ids.length, seconds: Math.round((Date.now() - started) / 1000) };
  }
  const regressions: Partial<Record<KeelRun, Difference[]>> = {};
  const improvements: Partial<Record<KeelRun, Difference[]>> = {};
  const unstable: Partial<Record<KeelRun, Difference[]>> = {};
  const differently: Partial<Record<KeelRun, DifferentFailure[]>> = {};
  if (direct)
    for (const run of keelRuns) {
      const keel = results[run] as Map<string, TestResult>;
      const sort = (found: Difference[]): Difference[] => {
        if (!secondPass) return found;
        const { confirmed, unstable: notHeld } = confirm(found, { direct: again.direct, keel: again[run] });
        (unstable[run] ??= []).push(...notHeld);
        return confirmed;
      };
      regressions[run] = sort(passDirectFailThroughKeel(direct, keel));
      improvements[run] = sort(failDirectPassThroughKeel(direct, keel));
      differently[run] = failBothDifferently(direct, keel);
    }
  printSummary(records, regressions, unstable);
  const keelCommit = gitOf(KEEL_ROOT, ['rev-parse', 'HEAD']);
  const keelChanges = gitOf(KEEL_ROOT, ['status', '--porcelain', '--', '.', ':!bench']);
  const report = {
    about:
      'ceph/s3-tests run directly against s3rver and through keel gateway by bench/compat/run.ts; ' +
      'docs/compat.md says how to read this file',
    date: new Date().toISOString(),
    suite: {
      repository: SUITE_REPOSITORY,
      commit: suite.commit ?? `${SUITE_COMMIT} (expected; the checkout has no .git to confirm it)`,
      file: SUITE_TEST_FILE,
      tests: nodeIds.length,
      include: Object.fromEntries(Object.entries(INCLUDE).map(([k, v]) => [k, v.source])),
      exclude: Object.fromEntries(Object.entries(EXCLUDE).map(([k, v]) => [k, v.source])),
      ...(args.tests ? { onlyTestsMatching: args.tests.source } : {}),
      ...(args.keelArgs.length > 0 ? { keelArgs: args.keelArgs } : {}),
      testTimeoutSeconds: TEST_TIMEOUT_SECONDS,
    },
    environment: {
      node: process.version,
      python: `${python.python} (${PYTHON})`,
      pytest: python.pytest,
      boto3: python.boto3,
      botocore: python.botocore,
      debianPackages: DEBIAN_PACKAGES,
      s3rver: s3rverVersion(),
      keelCommit:
        keelCommit === undefined
          ? 'unknown'
          : `${keelCommit}${keelChanges ? ' with uncommitted changes' : ''}`,
    },
    runs: records,
    ...(secondPass ? { secondPass } : {}),
    passDirectFailThroughKeel: regressions,
    failDirectPassThroughKeel: improvements,
    unstable,
    failBothDifferently: differently,
    outcomes: outcomesByTest(results),
  };
  if (args.out) {
    await mkdir(path.dirname(args.out), { recursive: true });
    await writeFile(args.out, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`\ncompat: wrote ${path.relative(process.cwd(), args.out) || args.out}\n`);
  } else
    process.stdout.write(
      '\ncompat: trial run (--only or --tests): nothing written; --out <file> writes it\n',
    );
}

try {
  await main();
} catch (err) {
  process.stderr.write(`compat: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
