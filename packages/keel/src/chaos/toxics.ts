import { keelError } from '../errors/index.js';

/** Which way a toxic acts: `upstream` is client → server, `downstream` server → client. */
export type ToxicStream = 'upstream' | 'downstream';

/** Toxic types, with Toxiproxy's names and attributes, plus `slow_open`. */
export type ToxicType =
  'latency' | 'bandwidth' | 'slow_close' | 'timeout' | 'reset_peer' | 'slicer' | 'limit_data' | 'slow_open';

/** Attributes per toxic type (Toxiproxy's field names; times in ms unless noted). */
export interface ToxicAttributes {
  latency: { latency: number; jitter?: number };
  /** `rate` in KB/s (1 KB = 1000 bytes, as Toxiproxy). */
  bandwidth: { rate: number };
  slow_close: { delay: number };
  /** Stop all data and close after `timeout` ms; 0 holds the connection until the toxic is removed. */
  timeout: { timeout: number };
  /** Reset the connection (TCP RST) `timeout` ms after it starts or after the toxic is added. */
  reset_peer: { timeout: number };
  /** `delay` in microseconds between slices. */
  slicer: { average_size: number; size_variation?: number; delay?: number };
  /** Close the connection after `bytes` bytes went through in this direction. */
  limit_data: { bytes: number };
  /** Hold the first byte of the connection for `delay` ms. */
  slow_open: { delay: number };
}

/** A toxic as the control API shows it. */
export interface Toxic<T extends ToxicType = ToxicType> {
  name: string;
  type: T;
  stream: ToxicStream;
  /** Probability (0..1) that a connection is affected (default 1). */
  toxicity: number;
  attributes: ToxicAttributes[T];
}

/** What a caller passes to add a toxic: name, stream and toxicity have defaults. */
export interface ToxicInput<T extends ToxicType = ToxicType> {
  type: T;
  name?: string;
  stream?: ToxicStream;
  toxicity?: number;
  attributes?: Partial<ToxicAttributes[T]>;
}

interface AttrSpec {
  required: readonly string[];
  optional: readonly string[];
}

const SPECS: Record<ToxicType, AttrSpec> = {
  latency: { required: ['latency'], optional: ['jitter'] },
  bandwidth: { required: ['rate'], optional: [] },
  slow_close: { required: ['delay'], optional: [] },
  timeout: { required: [], optional: ['timeout'] },
  reset_peer: { required: [], optional: ['timeout'] },
  slicer: { required: ['average_size'], optional: ['size_variation', 'delay'] },
  limit_data: { required: ['bytes'], optional: [] },
  slow_open: { required: ['delay'], optional: [] },
};

/** The toxic types this proxy knows. */
export const TOXIC_TYPES = Object.keys(SPECS) as ToxicType[];

function bad(message: string): never {
  throw keelError('INVALID_INPUT', message, {}, { stack: false });
}

/**
 * Validates a toxic definition and fills in defaults.
 * @throws KeelError `INVALID_INPUT` naming the field that is wrong.
 */
export function parseToxic(input: unknown): Toxic {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    bad('a toxic must be a JSON object');
  const t = input as Record<string, unknown>;
  if (typeof t.type !== 'string' || !(t.type in SPECS)) {
    bad(`unknown toxic type ${JSON.stringify(t.type)}; known types: ${TOXIC_TYPES.join(', ')}`);
  }
  const type = t.type as ToxicType;
  const stream = t.stream ?? 'downstream';
  if (stream !== 'upstream' && stream !== 'downstream') {
    bad(`toxic stream must be "upstream" or "downstream", got ${JSON.stringify(stream)}`);
  }
  const toxicity = t.toxicity ?? 1;
  if (typeof toxicity !== 'number' || !(toxicity >= 0 && toxicity <= 1)) {
    bad(`toxicity must be a number between 0 and 1, got ${JSON.stringify(toxicity)}`);
  }
  const name = t.name ?? `${type}_${stream}`;
  if (typeof name !== 'string' || name === '' || name.length > 200 || /[/?#]/.test(name)) {
    bad(`toxic name must be a non-empty string without / ? #, got ${JSON.stringify(name)}`);
  }
  return { name, type, stream, toxicity, attributes: parseAttributes(type, t.attributes ?? {}) };
}

function parseAttributes(type: ToxicType, raw: unknown): ToxicAttributes[ToxicType] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    bad(`attributes of a ${type} toxic must be an object`);
  const spec = SPECS[type];
  const attrs = raw as Record<string, unknown>;
  const out: Record<string, number> = {};
  for (const key of [...spec.required, ...spec.optional]) {
    const v = attrs[key];
    if (v === undefined) {
      if (spec.required.includes(key)) bad(`a ${type} toxic needs attributes.${key}`);
      out[key] = 0;
      continue;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      bad(`attributes.${key} of a ${type} toxic must be a non-negative number, got ${JSON.stringify(v)}`);
    }
    out[key] = v;
  }
  if (type === 'bandwidth' && out.rate === 0) bad('attributes.rate of a bandwidth toxic must be > 0 (KB/s)');
  if (type === 'slicer' && out.average_size === 0)
    bad('attributes.average_size of a slicer toxic must be > 0');
  return out as unknown as ToxicAttributes[ToxicType];
}

/** Applies a partial update (Toxiproxy's PATCH/POST on a toxic) and re-validates. */
export function updateToxic(current: Toxic, patch: unknown): Toxic {
  if (typeof patch !== 'object' || patch === null) bad('a toxic update must be a JSON object');
  const p = patch as Record<string, unknown>;
  if (p.type !== undefined && p.type !== current.type) bad('the type of an existing toxic cannot be changed');
  if (p.name !== undefined && p.name !== current.name) bad('the name of an existing toxic cannot be changed');
  const attributes = { ...current.attributes, ...((p.attributes as object | undefined) ?? {}) };
  return parseToxic({ ...current, ...p, attributes });
}
