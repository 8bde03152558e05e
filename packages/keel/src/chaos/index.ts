/**
 * Fault injection for testing recovery: a TCP proxy with Toxiproxy's toxics and control API,
 * HTTP-level faults, and file-system faults.
 * @packageDocumentation
 */
import { httpProxy } from './http-faults.js';
import { proxy } from './tcp-proxy.js';

export { ChaosProxy, proxy, type ChaosProxyJSON, type ChaosProxyOptions } from './tcp-proxy.js';
export {
  parseToxic,
  TOXIC_TYPES,
  type Toxic,
  type ToxicAttributes,
  type ToxicInput,
  type ToxicStream,
  type ToxicType,
} from './toxics.js';
export { ChaosControlServer, TOXIPROXY_API_VERSION, type ChaosControlOptions } from './control-api.js';

/** The in-process API: `await chaos.proxy({ upstream: '127.0.0.1:5432' })`, `await chaos.httpProxy({ upstream })`. */
export const chaos = { proxy, httpProxy } as const;
export {
  faultyFs,
  fsError,
  type FaultyFs,
  type FaultyFsOptions,
  type FsFault,
  type FsFaultCode,
  type FsLike,
  type FsOperation,
  type FsStall,
} from './fs-faults.js';
export {
  HttpFaultProxy,
  httpProxy,
  type HttpFaultAction,
  type HttpFaultProxyOptions,
  type HttpFaultRule,
} from './http-faults.js';
export { parseHttpFaultSpec } from './http-fault-spec.js';
