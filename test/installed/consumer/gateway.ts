/** `@keel/gateway` as installed: its exports load and the alert rules it ships are there. */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ALERT_RULES_FILE, DEMO_OBJECTS, resolveGatewayConfig } from '@keel/gateway';

const rules = await readFile(ALERT_RULES_FILE, 'utf8');
assert.match(rules, /^groups:/m);
const exported = fileURLToPath(import.meta.resolve('@keel/gateway/alerts.rules.yml'));
assert.equal(await readFile(exported, 'utf8'), rules);
assert.ok(DEMO_OBJECTS.length > 0);
assert.equal(typeof resolveGatewayConfig, 'function');
console.log('@keel/gateway: ok');
