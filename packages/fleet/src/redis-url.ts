import { keelError } from 'keel';

/**
 * Checks a coordinator URL (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS)
 * and returns it unchanged.
 * @throws KeelError `INVALID_CONFIG` saying what is wrong; the message never repeats the URL's
 * password (it shows {@link redactRedisUrl}'s form).
 */
export function parseRedisUrl(raw: string, setting = '--coordinator'): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw keelError(
      'INVALID_CONFIG',
      `${setting}: expected redis://host[:port][/db], got something that is not a URL`,
    );
  }
  const shown = redactRedisUrl(raw);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw keelError('INVALID_CONFIG', `${setting}: expected a redis:// or rediss:// URL, got ${shown}`);
  if (u.hostname === '') throw keelError('INVALID_CONFIG', `${setting}: the URL names no host: ${shown}`);
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d{1,2}$/.test(db))
    throw keelError('INVALID_CONFIG', `${setting}: the path is a database number (0-15), got ${shown}`);
  return raw;
}

/** The URL with its password (and a user name, which may be a token) replaced by `***`, for logs and errors. */
export function redactRedisUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password !== '') u.password = '***';
    if (u.username !== '' && u.password === '') u.username = '***';
    return u.toString();
  } catch {
    // Not a URL: whatever sits before an @ may be a secret.
    return raw.replace(/\/\/[^@/]*@/, '//***@');
  }
}
