/**
 * The ceph/s3-tests suite, run with Debian's Python: where it is, what the Python side needs, its
 * configuration file, and one pytest run with progress on the terminal.
 *
 * The suite is third-party code and is not in this repository: the runner takes its location from
 * `S3TESTS_DIR` and never writes into it (no `.pytest_cache`, no `__pycache__`, no config file).
 * Nothing is installed or fetched at run time.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startChild } from './processes.js';

/** Where the suite comes from. */
export const SUITE_REPOSITORY = 'https://github.com/ceph/s3-tests';
/** The commit the selection and the recorded results were made with. */
export const SUITE_COMMIT = '8f0ae7b404a3a2fcf7038bf1e6bf29544fe9b6a3';
/** The suite's file of S3 object and bucket tests, relative to its root. */
export const SUITE_TEST_FILE = 's3tests/functional/test_s3.py';

/**
 * Debian's interpreter, where `apt-get install python3-pytest python3-boto3 …` puts the modules.
 * Not `python3` from PATH: on a machine with pyenv (or a virtualenv) that is another interpreter,
 * which does not see Debian's packages.
 */
export const PYTHON = '/usr/bin/python3';

/** The Debian packages the Python side needs (the suite's imports, and pytest-timeout). */
export const DEBIAN_PACKAGES = [
  'python3-pytest',
  'python3-pytest-timeout',
  'python3-boto3',
  'python3-munch',
  'python3-isodate',
  'python3-dateutil',
  'python3-tz',
  'python3-requests',
] as const;

/** One test gets this long before pytest-timeout fails it: a request that never gets an answer must not stop the run. */
export const TEST_TIMEOUT_SECONDS = 180;

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The suite on disk, and the commit it is at when that can be read. */
export interface Suite {
  dir: string;
  /** The checkout's commit (`git rev-parse HEAD`); undefined for a copy without `.git`. */
  commit: string | undefined;
}

const howToGetIt = [
  `  git clone ${SUITE_REPOSITORY} /path/to/s3-tests`,
  `  git -C /path/to/s3-tests checkout ${SUITE_COMMIT}`,
  '  S3TESTS_DIR=/path/to/s3-tests npm run compat',
].join('\n');

/**
 * Finds the suite from `S3TESTS_DIR`.
 * @throws when the variable is unset or does not point at an s3-tests checkout (the message says how to get one).
 */
export function locateSuite(): Suite {
  const dir = process.env.S3TESTS_DIR;
  if (!dir)
    throw new Error(
      `S3TESTS_DIR is not set. The compatibility harness runs ceph/s3-tests, which is not part of this ` +
        `repository; get it once (about 2 MB) and point S3TESTS_DIR at it:\n${howToGetIt}`,
    );
  if (!existsSync(path.join(dir, SUITE_TEST_FILE)))
    throw new Error(
      `S3TESTS_DIR=${dir} has no ${SUITE_TEST_FILE}: it is not an s3-tests checkout. Get one:\n${howToGetIt}`,
    );
  const git = spawnSync('git', ['-C', dir, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
  const commit = git.status === 0 ? git.stdout.trim() : undefined;
  return { dir: path.resolve(dir), commit };
}

/** Versions of the Python side, for the record. */
export interface PythonSide {
  python: string;
  pytest: string;
  boto3: string;
  botocore: string;
}

/**
 * Checks that Debian's Python can import everything the suite and the harness need.
 * @throws when it cannot (the message names the apt-get command).
 */
export function checkPython(): PythonSide {
  const probe = [
    'import json, sys',
    'import pytest, pytest_timeout, boto3, botocore, munch, isodate, dateutil, pytz, requests',
    'print(json.dumps({"python": sys.version.split()[0], "pytest": pytest.__version__, ' +
      '"boto3": boto3.__version__, "botocore": botocore.__version__}))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', probe], { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(
      `${PYTHON} cannot run the suite (${r.error?.message ?? r.stderr.trim().split('\n').pop() ?? 'failed'}). ` +
        `Install Debian's packages:\n  apt-get install -y ${DEBIAN_PACKAGES.join(' ')}`,
    );
  return JSON.parse(r.stdout) as PythonSide;
}

/** An S3 user of the suite's configuration. */
export interface SuiteUser {
  accessKey: string;
  secretKey: string;
}

/** The users the suite's configuration file names: every section must exist, even those this selection does not use. */
export interface SuiteUsers {
  main: SuiteUser;
  alt: SuiteUser;
  tenant: SuiteUser;
  iam: SuiteUser;
  iamRoot: SuiteUser;
  iamAltRoot: SuiteUser;
}

/** Writes the suite's configuration (S3TEST_CONF, s3tests.conf format) for an endpoint, and returns its path. */
export async function writeSuiteConfig(
  dir: string,
  host: string,
  port: number,
  users: SuiteUsers,
): Promise<string> {
  const section = (name: string, id: string, u: SuiteUser, extra: string[] = []): string[] => [
    `[${name}]`,
    `display_name = ${id}`,
    `user_id = ${id}`,
    `email = ${id}@example.com`,
    `access_key = ${u.accessKey}`,
    `secret_key = ${u.secretKey}`,
    ...extra,
    '',
  ];
  const lines = [
    '[DEFAULT]',
    `host = ${host}`,
    `port = ${port}`,
    'is_secure = False',
    'ssl_verify = False',
    '',
    '[fixtures]',
    // Every bucket the suite creates starts with this, so a run's buckets are easy to tell apart.
    'bucket prefix = keel-compat-{random}-',
    '',
    ...section('s3 main', 'main', users.main, ['api_name = default']),
    ...section('s3 alt', 'alt', users.alt),
    ...section('s3 tenant', 'tenant', users.tenant, ['tenant = testx']),
    ...section('iam', 'iam', users.iam),
    ...section('iam root', 'iamroot', users.iamRoot),
    ...section('iam alt root', 'iamaltroot', users.iamAltRoot),
  ];
  const file = path.join(dir, 's3tests.conf');
  await writeFile(file, lines.join('\n'));
  return file;
}

// The environment of a pytest run: the suite's config, no bytecode or cache written into the
// suite, the harness's plugin importable, and none of the caller's AWS settings (a profile,
// region or proxy of theirs would change what is measured).
function pytestEnv(configFile: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^(AWS_|S3TEST|PYTHON|HTTPS?_PROXY|NO_PROXY)/i.test(k)) env[k] = v;
  return {
    ...env,
    S3TEST_CONF: configFile,
    PYTHONDONTWRITEBYTECODE: '1',
    // Through a pipe Python buffers its output in blocks, and the progress would come in bursts.
    PYTHONUNBUFFERED: '1',
    PYTHONPATH: HERE,
    AWS_CONFIG_FILE: path.join(path.dirname(configFile), 'aws-config-none'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(path.dirname(configFile), 'aws-credentials-none'),
    AWS_DEFAULT_REGION: 'us-east-1',
  };
}

const BASE_ARGS = ['-m', 'pytest', '-p', 'no:cacheprovider', '-p', 'keel_compat_plugin', '--color=no'];

/**
 * Lists the suite's tests (`pytest --collect-only`) as node ids.
 * @throws when pytest cannot collect them (its output is in the message).
 */
export function collectTests(suite: Suite, configFile: string): string[] {
  const r = spawnSync(PYTHON, [...BASE_ARGS, '--collect-only', '-q', SUITE_TEST_FILE], {
    cwd: suite.dir,
    env: pytestEnv(configFile),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const ids = r.stdout.split('\n').filter((l) => l.startsWith(`${SUITE_TEST_FILE}::`));
  if (r.status !== 0 || ids.length === 0)
    throw new Error(`pytest could not collect ${SUITE_TEST_FILE}:\n${(r.stdout + r.stderr).slice(-3_000)}`);
  return ids;
}

/** What a pytest run needs. */
export interface PytestRun {
  label: string;
  suite: Suite;
  configFile: string;
  nodeIds: string[];
  junitFile: string;
  /** pytest's whole terminal output goes here. */
  logFile: string;
}

const RESULT_LINE = /::(test_\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b/;

/**
 * Runs pytest on the selected tests, writing junit XML, and prints a progress line every 20 tests
 * (and at the end). Resolves with pytest's exit code (1 when tests failed: not an error here).
 */
export async function runPytest(run: PytestRun): Promise<number> {
  const args = [
    ...BASE_ARGS,
    '-o',
    'junit_family=xunit1',
    `--junitxml=${run.junitFile}`,
    `--timeout=${TEST_TIMEOUT_SECONDS}`,
    '-v',
    '--tb=short',
    ...run.nodeIds,
  ];
  const child = startChild(PYTHON, args, {
    cwd: run.suite.dir,
    env: pytestEnv(run.configFile),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(run.logFile);
  const started = Date.now();
  const seen = new Map<string, string>();
  const counts = (): string => {
    const c: Record<string, number> = {};
    for (const s of seen.values()) c[s] = (c[s] ?? 0) + 1;
    return Object.entries(c)
      .map(([k, n]) => `${n} ${k.toLowerCase()}`)
      .join(', ');
  };
  const progress = (): void => {
    const s = Math.round((Date.now() - started) / 1000);
    process.stdout.write(
      `[${run.label}] ${seen.size}/${run.nodeIds.length} tests, ${counts()} (${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s)\n`,
    );
  };
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    log.write(chunk);
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const m = RESULT_LINE.exec(line);
      if (!m?.[1] || !m[2]) continue;
      // A teardown error is a second line for a test already counted: its worst outcome stays.
      const before = seen.size;
      if (!seen.has(m[1]) || m[2] !== 'PASSED') seen.set(m[1], m[2]);
      if (seen.size > before && seen.size % 20 === 0) progress();
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  });
  await new Promise<void>((resolve) => log.end(resolve));
  progress();
  return code;
}
