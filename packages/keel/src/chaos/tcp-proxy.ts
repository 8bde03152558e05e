import { EventEmitter } from 'node:events';
import net from 'node:net';
import { keelError } from '../errors/index.js';
import { checkResolves, formatHostPort, parseHostPort, type HostPort } from './address.js';
import { parseToxic, updateToxic, type Toxic, type ToxicInput, type ToxicStream } from './toxics.js';

/** Options of {@link ChaosProxy.start}. */
export interface ChaosProxyOptions {
  /** Where to forward to, `host:port`. */
  upstream: string;
  /** Where to listen, `host:port`; port 0 picks a free one (default `127.0.0.1:0`). */
  listen?: string;
  /** A name for the control API (default `proxy-<port>`). */
  name?: string;
  /** Start accepting connections (default true). */
  enabled?: boolean;
  /** Source of randomness for toxicity and jitter (default `Math.random`). */
  random?: () => number;
}

/** The JSON form used by the Toxiproxy-compatible API. */
export interface ChaosProxyJSON {
  name: string;
  listen: string;
  upstream: string;
  enabled: boolean;
  toxics: Toxic[];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Most chunks buffered in one direction before the sending socket is paused. */
const HIGH_WATER_CHUNKS = 16;

/** A bandwidth-limited link this far behind its schedule went quiet: its pacing starts again. */
const PACE_SLACK_MS = 20;

interface Chunk {
  data: Buffer;
  at: number;
}

class Link {
  private queue: Chunk[] = [];
  private running = false;
  private srcEnded = false;
  /** The current paced run of a bandwidth toxic: since when, bytes sent, at what rate (bytes/s). */
  private paced = { since: 0, bytes: 0, rate: 0 };
  bytes = 0;

  constructor(
    private readonly conn: Connection,
    readonly stream: ToxicStream,
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
  ) {
    src.on('data', (data: Buffer) => {
      this.queue.push({ data, at: Date.now() });
      if (this.queue.length >= HIGH_WATER_CHUNKS) src.pause();
      void this.pump();
    });
    src.on('end', () => {
      this.srcEnded = true;
      void this.pump();
    });
  }

  /** Processes what is queued (also called when a toxic that held the link is removed). */
  async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const item = this.queue.shift();
        if (!item) break;
        if (this.queue.length < HIGH_WATER_CHUNKS / 2 && this.src.isPaused()) this.src.resume();
        await this.process(item);
        if (this.conn.closed) return;
      }
      // A timeout toxic holds the close too: the connection just goes quiet.
      if (this.srcEnded && !this.conn.closed && !this.conn.active(this.stream, 'timeout')) {
        const slowClose = this.conn.active(this.stream, 'slow_close');
        if (slowClose) await sleep(slowClose.attributes.delay);
        this.srcEnded = false;
        this.dst.end();
      }
    } finally {
      this.running = false;
      if (this.src.isPaused() && !this.conn.closed) this.src.resume();
    }
  }

  private async process(item: Chunk): Promise<void> {
    const c = this.conn;
    if (c.active(this.stream, 'timeout')) return; // dropped while a timeout toxic holds the link
    const slowOpen = c.active(this.stream, 'slow_open');
    if (slowOpen && this.bytes === 0) await sleep(c.startedAt + slowOpen.attributes.delay - Date.now());
    const latency = c.active(this.stream, 'latency');
    if (latency) {
      const jitter = latency.attributes.jitter ?? 0;
      const delay = latency.attributes.latency + (jitter > 0 ? (c.random() * 2 - 1) * jitter : 0);
      await sleep(item.at + delay - Date.now());
    }
    if (c.closed) return;
    let data = item.data;
    let closeAfter = false;
    const limit = c.active(this.stream, 'limit_data');
    if (limit) {
      const remaining = limit.attributes.bytes - this.bytes;
      if (remaining <= data.length) {
        data = data.subarray(0, Math.max(0, remaining));
        closeAfter = true;
      }
    }
    const slicer = c.active(this.stream, 'slicer');
    const pieces = slicer ? this.slice(data, slicer.attributes) : [data];
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i] as Buffer;
      if (i > 0 && slicer) await sleep((slicer.attributes.delay ?? 0) / 1000);
      await this.writeThrottled(piece);
      if (c.closed) return;
    }
    if (closeAfter) c.destroy();
  }

  private slice(data: Buffer, a: { average_size: number; size_variation?: number }): Buffer[] {
    const out: Buffer[] = [];
    let offset = 0;
    while (offset < data.length) {
      const variation = a.size_variation ?? 0;
      const size = Math.max(1, Math.round(a.average_size + (this.conn.random() * 2 - 1) * variation));
      out.push(data.subarray(offset, offset + size));
      offset += size;
    }
    return out;
  }

  private async writeThrottled(data: Buffer): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      const bandwidth = this.conn.active(this.stream, 'bandwidth');
      // Without a bandwidth toxic, one write; with one, 100 ms worth at a time.
      const bytesPerSec = bandwidth ? bandwidth.attributes.rate * 1000 : Infinity;
      const step = bandwidth ? Math.max(1, Math.floor(bytesPerSec / 10)) : data.length;
      const piece = data.subarray(offset, offset + step);
      offset += piece.length;
      if (bandwidth) this.pace(Date.now(), bytesPerSec);
      await this.write(piece);
      this.bytes += piece.length;
      this.conn.countBytes(this.stream, piece.length);
      if (bandwidth) {
        // Paced on every byte since the run began, not chunk by chunk: a timer that fires late
        // (a millisecond or two per 64 KiB chunk, many streams at once) is made up by the next
        // chunks, so the link carries the rate it is given, never more.
        this.paced.bytes += piece.length;
        await sleep(this.paced.since + (this.paced.bytes / bytesPerSec) * 1000 - Date.now());
      }
      if (this.conn.closed) return;
    }
  }

  /**
   * Starts a new paced run when the rate changed or the link went quiet (nothing to send for
   * longer than {@link PACE_SLACK_MS} past its schedule): quiet time is not saved up for a burst.
   */
  private pace(now: number, bytesPerSec: number): void {
    const due = this.paced.since + (this.paced.bytes / bytesPerSec) * 1000;
    if (this.paced.rate !== bytesPerSec || now > due + PACE_SLACK_MS)
      this.paced = { since: now, bytes: 0, rate: bytesPerSec };
  }

  private write(data: Buffer): Promise<void> {
    if (this.dst.destroyed || data.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.dst.write(data)) resolve();
      else {
        const done = (): void => {
          this.dst.off('drain', done);
          this.dst.off('close', done);
          resolve();
        };
        this.dst.on('drain', done);
        this.dst.on('close', done);
      }
    });
  }
}

class Connection {
  readonly startedAt = Date.now();
  closed = false;
  private readonly affected = new Map<string, boolean>();
  /** Pending reset_peer/timeout timers, by toxic name. */
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly links: readonly Link[];

  constructor(
    private readonly proxy: ChaosProxy,
    readonly client: net.Socket,
    readonly server: net.Socket,
  ) {
    this.links = [new Link(this, 'upstream', client, server), new Link(this, 'downstream', server, client)];
    const onClose = (): void => {
      this.destroy();
    };
    client.on('close', onClose);
    server.on('close', onClose);
    client.on('error', () => undefined);
    server.on('error', () => undefined);
    for (const toxic of proxy.toxicList()) this.onToxicAdded(toxic);
  }

  random(): number {
    return this.proxy.random();
  }

  countBytes(stream: ToxicStream, n: number): void {
    this.proxy.counters[stream] += n;
  }

  /** The toxic of `type` acting on `stream` of this connection, if any (toxicity decided once). */
  active<T extends Toxic['type']>(stream: ToxicStream, type: T): Toxic<T> | undefined {
    for (const toxic of this.proxy.toxicList()) {
      if (toxic.type !== type || toxic.stream !== stream) continue;
      let hit = this.affected.get(toxic.name);
      if (hit === undefined) {
        hit = toxic.toxicity >= 1 || this.random() < toxic.toxicity;
        this.affected.set(toxic.name, hit);
      }
      if (hit) return toxic as Toxic<T>;
    }
    return undefined;
  }

  onToxicAdded(toxic: Toxic): void {
    if (toxic.type !== 'reset_peer' && toxic.type !== 'timeout') return;
    if (!this.active(toxic.stream, toxic.type)) return;
    const ms = (toxic.attributes as { timeout: number }).timeout;
    if (toxic.type === 'timeout' && ms === 0) return; // holds until removed
    const timer = setTimeout(() => {
      this.timers.delete(toxic.name);
      if (toxic.type === 'reset_peer') this.reset();
      else this.destroy();
    }, ms);
    this.timers.set(toxic.name, timer);
  }

  /** A changed reset_peer/timeout toxic counts its time again from now (as Toxiproxy restarts it). */
  onToxicUpdated(toxic: Toxic): void {
    this.cancelTimer(toxic.name);
    this.onToxicAdded(toxic);
    for (const link of this.links) void link.pump();
  }

  onToxicRemoved(name: string): void {
    this.cancelTimer(name);
    this.affected.delete(name);
    for (const link of this.links) void link.pump();
  }

  private cancelTimer(name: string): void {
    const timer = this.timers.get(name);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.timers.delete(name);
  }

  /** Closes both sides with a TCP RST. */
  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    this.client.resetAndDestroy();
    this.server.resetAndDestroy();
    this.proxy.forget(this);
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    this.client.destroy();
    this.server.destroy();
    this.proxy.forget(this);
  }

  private clearTimers(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}

/** Events of a {@link ChaosProxy}. */
export interface ChaosProxyEvents {
  connection: [];
  error: [Error];
}

/**
 * A TCP proxy that forwards to an upstream and injects faults ("toxics") on the way, like
 * Toxiproxy: latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, and
 * slow_open. Toxics can be added and removed while connections are open.
 */
export class ChaosProxy extends EventEmitter<ChaosProxyEvents> {
  readonly name: string;
  upstreamAddress: HostPort;
  private listenAddress: HostPort;
  private server: net.Server | undefined;
  private readonly toxics = new Map<string, Toxic>();
  private readonly connections = new Set<Connection>();
  readonly random: () => number;
  /** @internal */
  readonly counters = { upstream: 0, downstream: 0, connections: 0 };

  private constructor(name: string, listen: HostPort, upstream: HostPort, random: () => number) {
    super();
    this.name = name;
    this.listenAddress = listen;
    this.upstreamAddress = upstream;
    this.random = random;
  }

  /**
   * Creates a proxy and (unless `enabled: false`) starts listening.
   * @throws KeelError `INVALID_INPUT` for a malformed address or an upstream that does not resolve;
   *   `CONFLICT` when the listen port is in use.
   */
  static async start(options: ChaosProxyOptions): Promise<ChaosProxy> {
    const listen = parseHostPort(options.listen ?? '127.0.0.1:0', 'listen', true);
    const upstream = parseHostPort(options.upstream, 'upstream');
    await checkResolves(upstream, 'upstream');
    const proxy = new ChaosProxy(options.name ?? '', listen, upstream, options.random ?? Math.random);
    if (options.enabled !== false) await proxy.enable();
    if (!options.name) (proxy as { name: string }).name = `proxy-${proxy.port}`;
    return proxy;
  }

  /** The address it listens on, `host:port` (the real port once listening). */
  get listen(): string {
    return formatHostPort(this.listenAddress.host, this.listenAddress.port);
  }

  /** The port it listens on. */
  get port(): number {
    return this.listenAddress.port;
  }

  /** The upstream, `host:port`. */
  get upstream(): string {
    return formatHostPort(this.upstreamAddress.host, this.upstreamAddress.port);
  }

  /** True while accepting connections. */
  get enabled(): boolean {
    return this.server !== undefined;
  }

  /** Bytes forwarded each way and connections accepted since the proxy started. */
  stats(): { bytesUpstream: number; bytesDownstream: number; connections: number } {
    return {
      bytesUpstream: this.counters.upstream,
      bytesDownstream: this.counters.downstream,
      connections: this.counters.connections,
    };
  }

  /** Open proxied connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts accepting connections again (on the same port). */
  async enable(): Promise<void> {
    if (this.server) return;
    const server = net.createServer({ allowHalfOpen: true }, (client) => {
      this.accept(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'EADDRINUSE'
            ? keelError(
                'CONFLICT',
                `cannot listen on ${this.listen}: the address is already in use`,
                {},
                { cause: err },
              )
            : err,
        );
      });
      server.listen(this.listenAddress.port, this.listenAddress.host, () => {
        resolve();
      });
    });
    server.on('error', (err) => this.emit('error', err));
    const address = server.address();
    if (address && typeof address === 'object')
      this.listenAddress = { host: this.listenAddress.host, port: address.port };
    this.server = server;
  }

  /** Refuses new connections and cuts every open one. */
  async disable(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const c of [...this.connections]) c.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Disables the proxy for good. */
  async close(): Promise<void> {
    await this.disable();
    this.toxics.clear();
  }

  /**
   * Adds a toxic; it acts on open connections at once.
   * @throws KeelError `INVALID_INPUT` for a bad definition, `CONFLICT` when the name is taken.
   */
  add<T extends Toxic['type']>(input: ToxicInput<T>): Toxic<T> {
    const toxic = parseToxic(input);
    if (this.toxics.has(toxic.name)) {
      throw keelError(
        'CONFLICT',
        `toxic ${toxic.name} already exists on proxy ${this.name}`,
        {},
        { stack: false },
      );
    }
    this.toxics.set(toxic.name, toxic);
    for (const c of this.connections) c.onToxicAdded(toxic);
    return toxic as Toxic<T>;
  }

  /**
   * Changes a toxic's attributes or toxicity.
   * @throws KeelError `NOT_FOUND` or `INVALID_INPUT`.
   */
  update(name: string, patch: unknown): Toxic {
    const current = this.toxic(name);
    if (!current)
      throw keelError('NOT_FOUND', `toxic ${name} not found on proxy ${this.name}`, {}, { stack: false });
    const next = updateToxic(current, patch);
    this.toxics.set(name, next);
    for (const c of this.connections) c.onToxicUpdated(next);
    return next;
  }

  /** Removes a toxic; returns false when there was none of that name. */
  remove(name: string): boolean {
    const existed = this.toxics.delete(name);
    if (existed) for (const c of this.connections) c.onToxicRemoved(name);
    return existed;
  }

  /** Removes every toxic. */
  removeAll(): void {
    for (const name of [...this.toxics.keys()]) this.remove(name);
  }

  /** One toxic by name. */
  toxic(name: string): Toxic | undefined {
    return this.toxics.get(name);
  }

  /** Every toxic, in the order they were added. */
  toxicList(): Toxic[] {
    return [...this.toxics.values()];
  }

  /** Points the proxy at another upstream (new connections only). */
  async setUpstream(upstream: string): Promise<void> {
    const parsed = parseHostPort(upstream, 'upstream');
    await checkResolves(parsed, 'upstream');
    this.upstreamAddress = parsed;
  }

  /** Moves the proxy to another listen address (re-listens if enabled). */
  async setListen(listen: string): Promise<void> {
    const parsed = parseHostPort(listen, 'listen', true);
    const wasEnabled = this.enabled;
    await this.disable();
    const previous = this.listenAddress;
    this.listenAddress = parsed;
    if (wasEnabled) {
      try {
        await this.enable();
      } catch (err) {
        this.listenAddress = previous;
        await this.enable();
        throw err;
      }
    }
  }

  toJSON(): ChaosProxyJSON {
    return {
      name: this.name,
      listen: this.listen,
      upstream: this.upstream,
      enabled: this.enabled,
      toxics: this.toxicList(),
    };
  }

  /** @internal */
  forget(c: Connection): void {
    this.connections.delete(c);
  }

  private accept(client: net.Socket): void {
    client.pause();
    const server = net.connect({
      port: this.upstreamAddress.port,
      host: this.upstreamAddress.host,
      allowHalfOpen: true,
    });
    const connection = new Connection(this, client, server);
    this.connections.add(connection);
    this.counters.connections++;
    server.once('connect', () => {
      client.resume();
    });
    this.emit('connection');
  }
}

/** Starts a chaos proxy in front of `options.upstream` (see {@link ChaosProxy.start}). */
export function proxy(options: ChaosProxyOptions): Promise<ChaosProxy> {
  return ChaosProxy.start(options);
}
