import { createHash } from 'node:crypto';

const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;
const HEX_ID = /\b(?:0x)?[0-9a-f]{8,}\b/gi;
const PATH = /(?:[a-z]+:\/\/[^\s"']+)|(?:(?:\/|[A-Za-z]:\\)[^\s"':]+)/g;
const QUOTED = /(["'`])(?:(?!\1).){0,200}\1/g;
const NUMBER = /\d+(?:\.\d+)?/g;

/**
 * The message with what varies between occurrences of one failure taken out: URLs and paths,
 * quoted values, UUIDs and hex ids, numbers.
 */
export function normaliseMessage(message: string): string {
  return message
    .replace(UUID, '<id>')
    .replace(PATH, '<path>')
    .replace(QUOTED, '<q>')
    .replace(HEX_ID, '<id>')
    .replace(NUMBER, '<n>')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 500);
}

const FRAME = /^\s*at (?:(.+?) \()?(.+?):(\d+):\d+\)?$/;

/**
 * The first stack frame in the caller's own code, as `function@file:line` with the file relative
 * to the working directory: frames inside Node itself, node_modules and keel's error module are
 * skipped, so the same throw site gives the same frame in every process.
 */
export function callerFrame(stack: string | undefined): string {
  if (!stack) return '';
  const cwd = process.cwd();
  for (const line of stack.split('\n')) {
    const m = FRAME.exec(line);
    if (!m) continue;
    const fn = m[1] ?? '<anonymous>';
    let file = m[2] ?? '';
    if (file.startsWith('node:') || file.includes('node_modules') || file.startsWith('internal/')) continue;
    if (/[\\/](?:src|dist)[\\/]errors[\\/]/.test(file) && !/\.test\.[jt]s$/.test(file)) continue;
    file = file.replace(/^file:\/\//, '');
    if (file.startsWith(cwd)) file = file.slice(cwd.length + 1);
    return `${fn.replace(/^async /, '')}@${file}:${m[3] ?? ''}`;
  }
  return '';
}

/** A short stable hash of code, normalised message and caller frame. */
export function computeFingerprint(code: string, message: string, stack: string | undefined): string {
  return createHash('sha1')
    .update(`${code}\n${normaliseMessage(message)}\n${callerFrame(stack)}`)
    .digest('hex')
    .slice(0, 16);
}
