import { Counter } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createMetrics } from './metrics.js';

/** Names on the `# TYPE` lines of an exposition, with their types. */
function types(exposition: string): string[] {
  return [...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
}

describe('metrics rendering', () => {
  it('an OpenMetrics scrape leaves the text exposition and its counter names as they were', async () => {
    const metrics = createMetrics({ defaultMetrics: false, defaultLabels: { app: 'svc' } });
    metrics.counter('keel_things_total', 'Things.', ['kind']).inc({ kind: 'a' }, 3);
    metrics.gauge('keel_level', 'A level.').set(2);
    metrics.histogram('keel_wait_seconds', 'Waits.', [], [1]).observe(0.5);
    // A counter read at every scrape, as the gateway's cache counters are.
    new Counter({
      name: 'keel_scraped_total',
      help: 'Read at scrape.',
      registers: [metrics.registry],
      collect() {
        this.reset();
        this.inc(7);
      },
    });
    const before = await metrics.render('text');
    expect(before).toMatch(/^keel_things_total\{kind="a",app="svc"\} 3$/m);
    expect(before).toMatch(/^keel_scraped_total\{app="svc"\} 7$/m);

    const om = await metrics.render('openmetrics');
    expect(om).toMatch(/^# TYPE keel_things counter$/m);
    expect(om).toMatch(/^keel_things_total\{kind="a",app="svc"\} 3$/m);
    expect(om).toMatch(/^keel_scraped_total\{app="svc"\} 7$/m);
    expect(om.endsWith('# EOF\n')).toBe(true);

    const after = await metrics.render('text');
    expect(after).toBe(before);
    expect(types(after)).toEqual([
      'keel_things_total counter',
      'keel_level gauge',
      'keel_wait_seconds histogram',
      'keel_scraped_total counter',
    ]);
    // The shared metric objects keep their names, so get-or-create still finds them.
    expect(metrics.counter('keel_things_total', 'Things.', ['kind'])).toBe(
      metrics.registry.getSingleMetric('keel_things_total'),
    );
  });

  it('renders OpenMetrics twice alike, and a metric registered between scrapes in both formats', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.counter('keel_a_total', 'A.').inc();
    const first = await metrics.render('openmetrics');
    expect(await metrics.render('openmetrics')).toBe(first);
    metrics.counter('keel_b_total', 'B.').inc(2);
    expect(await metrics.render('openmetrics')).toMatch(/^keel_b_total 2$/m);
    expect(await metrics.render('text')).toMatch(/^keel_b_total 2$/m);
  });
});
