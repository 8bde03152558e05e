/** `@keel/ops` as installed: metrics, a health check, and the admin server answering both. */
import assert from 'node:assert/strict';
import { AdminServer, createMetrics, HealthRegistry } from '@keel/ops';

const metrics = createMetrics();
metrics.counter('keel_installed_checks_total', 'Checks made by the installed-package test.').inc();
const health = new HealthRegistry({ serviceId: 'installed', version: '0.0.0' });
health.register({ name: 'installed:alive', probes: ['liveness'], run: () => 'pass' });
const admin = new AdminServer({ health, metrics });
await admin.listen();
try {
  const live = await fetch(`${admin.url}/livez`);
  assert.equal(live.status, 200);
  const text = await (await fetch(`${admin.url}/metrics`)).text();
  assert.match(text, /^keel_installed_checks_total 1$/m);
} finally {
  await admin.close();
}
console.log('@keel/ops: ok');
