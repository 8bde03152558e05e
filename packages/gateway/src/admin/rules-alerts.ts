import { Counter, Gauge, type Registry } from 'prom-client';
import type { AlertManager } from '@keel/ops';
import type { RulesReload } from '../rules/rules-file.js';

/** The alert raised while the cache rules file cannot be applied (the same name as in alerts.rules.yml). */
export const RULES_INVALID_ALERT = 'KeelRulesInvalid';

const LABELS = { component: 'rules' } as const;

/**
 * Shows reloads of the cache rules file on `/metrics` and as an alert, and returns what to call
 * with each reload:
 * - `keel_gateway_rules_reloads_total{result="applied"|"invalid"}`;
 * - `keel_gateway_rules_invalid`, 1 while the file's last version could not be applied (the
 *   rules before it are in force), 0 otherwise (also without a rules file). With `--workers`,
 *   each worker reads the file: the fleet shows the largest worker's value;
 * - `KeelRulesInvalid` (warning) raised on an invalid reload, resolved by the next valid one.
 */
export function reportRulesReloads(
  registry: Registry,
  alerts: AlertManager,
  file: string | undefined,
): (reload: RulesReload) => void {
  const reloads = new Counter({
    name: 'keel_gateway_rules_reloads_total',
    help: 'Reloads of the cache rules file after it changed, by result: applied, or invalid (the rules before it stay in force).',
    labelNames: ['result'],
    registers: [registry],
  });
  const invalid = new Gauge({
    name: 'keel_gateway_rules_invalid',
    help: '1 while the last version of the cache rules file could not be applied (the rules before it are in force), else 0.',
    registers: [registry],
    aggregator: 'max',
  });
  invalid.set(0);
  return (reload) => {
    reloads.inc({ result: reload.result });
    if (reload.result === 'applied') {
      invalid.set(0);
      alerts.resolve(RULES_INVALID_ALERT, LABELS);
      return;
    }
    invalid.set(1);
    alerts.raise({
      name: RULES_INVALID_ALERT,
      severity: 'warning',
      summary: `${reload.error.message}; the ${reload.keptRules} cache rule(s) in force before stay in force until ${file ?? 'the file'} is fixed`,
      labels: LABELS,
    });
  };
}
