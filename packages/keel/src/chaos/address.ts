import { lookup } from 'node:dns/promises';
import { keelError } from '../errors/index.js';

/** A parsed `host:port` (IPv6 hosts in brackets: `[::1]:8080`). */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port`.
 * @throws KeelError `INVALID_INPUT` saying what is wrong with `value` (named `field`).
 */
export function parseHostPort(value: unknown, field: string, allowPortZero = false): HostPort {
  if (typeof value !== 'string' || value.trim() === '') {
    throw keelError(
      'INVALID_INPUT',
      `${field} must be "host:port", got ${JSON.stringify(value)}`,
      {},
      { stack: false },
    );
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535 || (port === 0 && !allowPortZero)) {
    throw keelError(
      'INVALID_INPUT',
      `${field} must be "host:port" with a port of 1-65535, got ${JSON.stringify(value)}`,
      {},
      { stack: false },
    );
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** Formats a host and port as `host:port`, bracketing IPv6 hosts. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Checks that an upstream's host name resolves.
 * @throws KeelError `INVALID_INPUT` when it does not.
 */
export async function checkResolves(address: HostPort, field: string): Promise<void> {
  try {
    await lookup(address.host);
  } catch (err) {
    throw keelError(
      'INVALID_INPUT',
      `${field} host ${JSON.stringify(address.host)} does not resolve`,
      {},
      { cause: err },
    );
  }
}
