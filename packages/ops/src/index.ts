/**
 * Operations for keel services: metrics, health checks with auto-recovery, alerts, disk
 * monitoring and cleanup, degradation modes, graceful shutdown, the admin HTTP server and logging.
 * @packageDocumentation
 */
export {
  Metrics,
  createMetrics,
  formatFromAccept,
  type MetricsFormat,
  type MetricsOptions,
} from './metrics.js';
export { bindPolicyMetrics, BREAKER_STATE_VALUE, type PolicyMetricsOptions } from './policy-metrics.js';
export {
  HealthRegistry,
  HEALTH_CONTENT_TYPE,
  httpStatusOfHealth,
  type HealthStatus,
  type Probe,
  type CheckOutcome,
  type HealthCheck,
  type CheckEntry,
  type HealthReport,
  type HealthRegistryOptions,
} from './health.js';
export {
  AutoRecovery,
  defaultRecoveryBackoff,
  type AutoRecoveryOptions,
  type RecoveryAttempt,
  type RecoveryState,
  type RecoveryStatus,
} from './recovery.js';
export {
  AlertManager,
  alertFingerprint,
  alertSeverityOf,
  type AlertManagerOptions,
} from './alerts/manager.js';
export { sanitiseAlert, sanitiseText } from './alerts/sanitise.js';
export { logAlertHandler } from './alerts/log-handler.js';
export { jsonlFileAlertHandler, type JsonlFileOptions } from './alerts/jsonl-file-handler.js';
export {
  webhookAlertHandler,
  alertmanagerHandler,
  toAlertmanager,
  type WebhookOptions,
  type WebhookHandler,
} from './alerts/webhook-handler.js';
export {
  ALERT_SEVERITIES,
  type Alert,
  type AlertHandler,
  type AlertInput,
  type AlertInputBase,
  type AlertRoute,
  type AlertSeverity,
} from './alerts/types.js';
export {
  DiskMonitor,
  spaceOf,
  type SpaceReading,
  type DiskMonitorOptions,
  type DiskUsage,
  type DiskLevel,
  type StatfsResult,
} from './disk-monitor.js';
export {
  cleanupDisk,
  CLEANUP_PRESETS,
  type CleanupOptions,
  type CleanupReport,
  type CleanupRule,
  type RemovedFile,
} from './disk-cleanup.js';
export {
  GracefulShutdown,
  type GracefulShutdownOptions,
  type ShutdownResult,
  type SignalSource,
} from './shutdown.js';
export {
  AdminServer,
  parseAdminToken,
  RECENT_ACTIONS,
  type AdminServerOptions,
  type AdminRoute,
  type AdminRouteOptions,
  type AdminToken,
  type AdminScope,
  type AdminCaller,
  type AdminAction,
  type StatusProvider,
} from './admin-server.js';
export { Dashboard, type DashboardOptions, type DashboardSnapshot } from './dashboard/dashboard.js';
export { RateMeter, quantileBetween, type HistogramReading } from './dashboard/rates.js';
export { actionsView } from './dashboard/actions-view.js';
export { queueView, type DashboardQueue, type QueueViewOptions } from './dashboard/queue-view.js';
export { groupsView, type DashboardGroups, type GroupsViewOptions } from './dashboard/groups-view.js';
export type {
  DashboardView,
  DashboardPanel,
  DashboardAction,
  DashboardCell,
  DashboardLevel,
  DashboardRoute,
  DashboardRow,
  DashboardStat,
  DashboardUnit,
  StatsPanel,
  ChartPanel,
  TablePanel,
  LogPanel,
} from './dashboard/view.js';
export { createLogger, type LoggerFactoryOptions } from './logger.js';
export { DegradationRegistry, type DegradationMode, type ComponentMode } from './degradation.js';
export { JsonStateFile } from './state-store.js';
export { ProcessRestarts, type ProcessRestartsOptions, type PreviousRun } from './restarts.js';
export { PRIVATE_FILE_MODE, PRIVATE_DIR_MODE, fixFileMode, privateDir } from './private-files.js';
