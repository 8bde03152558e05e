/**
 * A resilient HTTP GET built from keel's policies: the shape most services want in front of a
 * dependency. Run it against any URL: `node --import tsx examples/policies/resilient-http.ts <url>`.
 */
import {
  circuitBreaker,
  consecutive,
  exponential,
  keyed,
  pipeline,
  retry,
  timeout,
  systemClock,
  type Clock,
} from 'keel';

/** What a failed response turns into: classify() reads `status` and `headers['retry-after']`. */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly headers: Record<string, string>,
    url: string,
  ) {
    super(`GET ${url} answered ${status}`);
    this.name = 'HttpStatusError';
  }
}

/** Makes `get(url)`: one circuit breaker per host, 3 attempts, 2 s per attempt, 10 s in all. */
export function resilientHttp(clock: Clock = systemClock) {
  const breakers = keyed(
    (_host: string) => circuitBreaker({ clock, window: consecutive(5), halfOpenAfterMs: 5_000 }),
    {
      maxKeys: 1_000,
    },
  );
  const attempts = retry({ clock, maxAttempts: 3, backoff: exponential({ initialMs: 100, maxMs: 2_000 }) });
  return async function get(url: string): Promise<string> {
    const host = new URL(url).host;
    // Outermost first: a total deadline, then retries, each attempt through the host's breaker and
    // bounded on its own (see docs/policies.md for why this order).
    const policy = pipeline(
      timeout(10_000, { clock, name: `GET ${host}` }),
      attempts,
      breakers.get(host),
      timeout(2_000, { clock, name: `GET ${host} attempt` }),
    );
    return policy.execute(async ({ signal }) => {
      const res = await fetch(url, { signal });
      if (!res.ok) throw new HttpStatusError(res.status, Object.fromEntries(res.headers), url);
      return res.text();
    });
  };
}

if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  const url = process.argv[2] ?? 'http://127.0.0.1:8080/';
  resilientHttp()(url).then(
    (body) => console.log(body),
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
