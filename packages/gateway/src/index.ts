/**
 * The S3 caching gateway: an S3 REST endpoint in front of an S3 origin that serves reads from the
 * self-healing range cache, protects the origin and serves stale copies when it fails.
 * @packageDocumentation
 */
export { createGateway, type Gateway, type GatewayOptions } from './gateway.js';
export {
  OriginClient,
  type OriginClientOptions,
  type OriginCredentials,
  type OriginRequest,
  type OriginResponse,
} from './origin/origin-client.js';
export { OriginGuard, type OriginGuardOptions } from './origin/origin-guard.js';
export { GatewayMetrics } from './admin/metrics.js';
export type { CacheOutcome } from './read/object-read.js';
export { evaluateRange, type RangeDecision } from './read/range.js';
export { evaluateConditions, type ConditionOutcome, type ConditionHeaders } from './read/conditional.js';
export { parseS3Target, encodeKey, type S3Target, type MalformedTarget } from './s3/s3-request.js';
export { s3ErrorXml, S3Errors, type S3ErrorSpec } from './s3/s3-error.js';
export { verifySigV4, type ClientKey, type AuthResult } from './auth/sigv4-verify.js';
export {
  resolveGatewayConfig,
  LOG_LEVELS,
  MAX_WORKERS,
  type GatewayConfig,
  type LogLevel,
} from './config.js';
export { runGateway, type RunningGateway, type RunOptions } from './run.js';
export { runPrimary, WORKER_RESTARTED_ALERT, type RunningFleet, type WorkerSlot } from './cluster/primary.js';
export { runWorker } from './cluster/worker.js';
export { startGatewayRecovery, type GatewayRecovery, type GatewayRecoveryOptions } from './admin/recovery.js';
export { loggableUrl } from './admin/request-log.js';
export {
  startAdminServer,
  registerGatewayHealth,
  gatewayStatus,
  repairCounts,
  type GatewayAdminOptions,
} from './admin/admin-server.js';
export {
  createGatewayAlerts,
  watchGatewayAlerts,
  GATEWAY_ALERTS,
  ALERT_RULES_FILE,
  ALERT_RULE_TESTS_FILE,
  ALERT_HANDLER_NAMES,
  type AlertHandlerName,
  type GatewayAlertOptions,
} from './admin/alerting.js';
export { startDemoOrigin, DEMO_OBJECTS } from './demo/demo.js';
export {
  CacheRuleList,
  CacheRules,
  MAX_CACHE_RULES,
  MAX_RULE_PATTERN_LENGTH,
  type CacheRule,
  type CacheRuleDefaults,
  type ResolvedCacheRule,
} from './rules/cache-rules.js';
export {
  RulesFile,
  MAX_RULES_FILE_BYTES,
  type RulesFileOptions,
  type RulesReload,
} from './rules/rules-file.js';
export { RULES_INVALID_ALERT } from './admin/rules-alerts.js';
