/**
 * Fault injection for testing recovery: a TCP proxy with Toxiproxy's toxics and control API,
 * HTTP-level faults, and file-system faults.
 * @packageDocumentation
 */
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

/** The in-process API: `await chaos.proxy({ upstream: '127.0.0.1:5432' })`. */
export const chaos = { proxy } as const;
export {
  faultyFs,
  fsError,
  type FaultyFs,
  type FaultyFsOptions,
  type FsFault,
  type FsFaultCode,
  type FsLike,
  type FsOperation,
} from './fs-faults.js';
