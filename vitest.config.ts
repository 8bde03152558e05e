import { readFileSync } from 'node:fs';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

// Tests run the packages from source: each package name resolves to its src entry, as the root
// tsconfig's `paths` say (one list for tsc, tsx and vitest). Exact matches only, so `keel` does
// not capture `keel/cache`.
const tsconfig = JSON.parse(readFileSync(new URL('./tsconfig.json', import.meta.url), 'utf8')) as {
  compilerOptions: { paths: Record<string, [string]> };
};
const alias = Object.entries(tsconfig.compilerOptions.paths).map(([name, [target]]) => ({
  find: new RegExp(`^${name.replace(/[/]/g, '\\/')}$`),
  replacement: path.resolve(import.meta.dirname, target),
}));

// Tests of several real processes whose bounds depend on timing (a fleet losing a worker, processes
// sharing one cache's size limit): they run after the rest, one file at a time, so the parallel
// suite's load does not decide them.
const ALONE = [
  'test/gateway-workers.test.ts',
  'test/gateway-workers-breaker.test.ts',
  'test/gateway-workers-rules.test.ts',
  'test/cache-multiprocess.test.ts',
  'test/gateway-fleet.test.ts',
  'test/gateway-fleet-failures.test.ts',
];

export default defineConfig({
  resolve: { alias },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'parallel',
          include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts', 'examples/**/*.test.ts'],
          exclude: [...ALONE, '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'alone',
          include: ALONE,
          fileParallelism: false,
          typecheck: { enabled: false },
          sequence: { groupOrder: 1 },
        },
      },
    ],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    env: {
      // The AWS SDK (a dev dependency: tests use its S3 client) warns once per process that its
      // releases after January 2027 need Node 22; this is the SDK's own switch for that notice.
      // Set here, it reaches every test process and the child processes tests spawn.
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
    // Type tests (test/types/*.test-d.ts) are checked by tsc under a user's plain strict settings.
    typecheck: {
      enabled: true,
      include: ['test/types/**/*.test-d.ts'],
      tsconfig: 'test/types/tsconfig.json',
    },
  },
});
