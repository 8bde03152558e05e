import type { Logger } from 'pino';
import type { Alert, AlertHandler } from './types.js';

const LEVEL = { info: 'info', warning: 'warn', error: 'error', critical: 'fatal' } as const;

/** Writes each alert as one log line at a level matching its severity (`critical` → `fatal`). */
export function logAlertHandler(logger: Logger, name = 'log'): AlertHandler {
  return {
    name,
    send(alerts: readonly Alert[]): void {
      for (const alert of alerts) {
        const level = alert.status === 'resolved' ? 'info' : LEVEL[alert.severity];
        logger[level]({ alert }, `alert ${alert.status}: ${alert.name}: ${alert.summary}`);
      }
    },
  };
}
