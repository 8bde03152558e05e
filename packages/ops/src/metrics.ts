import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
  openMetricsContentType,
  prometheusContentType,
} from 'prom-client';

/** Exposition formats the admin server can answer with. */
export type MetricsFormat = 'text' | 'openmetrics';

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Collect Node's default process metrics (CPU, memory, event loop lag, GC). Default true. */
  defaultMetrics?: boolean;
  /** Labels added to every series (e.g. `{ app: 'gateway' }`). Default none. */
  defaultLabels?: Record<string, string>;
}

/**
 * One app's metrics: a private prom-client {@link Registry} (never the global one), so two apps
 * (or two tests) in one process never collide. Get-or-create helpers return the existing metric
 * when a name is registered twice, which lets several components share a counter safely.
 */
export class Metrics {
  /** The prom-client registry; register your own metrics with `registers: [metrics.registry]`. */
  readonly registry: Registry;
  private readonly defaultLabels: Record<string, string> | undefined;

  constructor(options: MetricsOptions = {}) {
    this.registry = new Registry();
    this.defaultLabels = options.defaultLabels;
    if (options.defaultLabels) this.registry.setDefaultLabels(options.defaultLabels);
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** A counter (name must end in `_total`), created once. */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    if (!name.endsWith('_total')) throw new Error(`metric ${name}: counter names end in _total`);
    const existing = this.registry.getSingleMetric(name);
    if (existing instanceof Counter) return existing;
    if (existing) throw new Error(`metric ${name} is already registered as another type`);
    return new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  /**
   * A gauge, created once. `collect` runs at every scrape (read a size or a state there); a
   * promise it returns is awaited before the gauge is rendered.
   */
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: (gauge: Gauge<L>) => void | Promise<void>,
  ): Gauge<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing instanceof Gauge) return existing;
    if (existing) throw new Error(`metric ${name} is already registered as another type`);
    return new Gauge<L>({
      name,
      help,
      labelNames,
      registers: [this.registry],
      ...(collect
        ? {
            collect(this: Gauge<L>) {
              return collect(this);
            },
          }
        : {}),
    });
  }

  /** A histogram in base units (seconds, bytes), created once. */
  histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets: number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  ): Histogram<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing instanceof Histogram) return existing;
    if (existing) throw new Error(`metric ${name} is already registered as another type`);
    return new Histogram<L>({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  /** The content type of an exposition in `format`. */
  contentType(format: MetricsFormat): string {
    return format === 'openmetrics' ? openMetricsContentType : prometheusContentType;
  }

  /** Renders every metric in `format` (Prometheus text by default). */
  async render(format: MetricsFormat = 'text'): Promise<string> {
    return format === 'openmetrics' ? this.openMetricsView().metrics() : this.registry.metrics();
  }

  /**
   * A throwaway OpenMetrics registry over stand-ins of this registry's metrics. prom-client renames
   * every counter it renders as OpenMetrics (`metric.name` loses its `_total`), so rendering the
   * shared metric objects, or a `Registry.merge` of them, would rename them in the text exposition
   * for the rest of the process. Each stand-in has its own name and reads its metric's values.
   */
  private openMetricsView(): Registry<typeof openMetricsContentType> {
    const view = new Registry() as unknown as Registry<typeof openMetricsContentType>;
    view.setContentType(openMetricsContentType);
    if (this.defaultLabels) view.setDefaultLabels(this.defaultLabels);
    for (const metric of this.registry.getMetricsAsArray() as unknown as Renderable[])
      view.registerMetric(standIn(metric) as unknown as Parameters<typeof view.registerMetric>[0]);
    return view;
  }
}

/** What the registry renders a metric from: its type, and its values under its name. */
interface Renderable {
  name: string;
  type: string;
  get(): Promise<{ name: string }>;
  /** Histograms render through this rather than `get`. */
  getForPromString?: () => Promise<{ name: string }>;
}

/**
 * An object the registry renders like `metric` but under a name of its own: the registry may
 * rename the stand-in (it does, for OpenMetrics counters), never the metric.
 */
function standIn(metric: Renderable): Renderable {
  const read = metric.getForPromString?.bind(metric);
  const stand: Renderable = {
    name: metric.name,
    type: metric.type,
    get: async () => ({ ...(await metric.get()), name: stand.name }),
    ...(read ? { getForPromString: async () => ({ ...(await read()), name: stand.name }) } : {}),
  };
  return stand;
}

/** Creates one app's {@link Metrics} (a private registry with Node's default metrics). */
export function createMetrics(options?: MetricsOptions): Metrics {
  return new Metrics(options);
}

/** Picks the exposition format from an HTTP `Accept` header (OpenMetrics when asked for). */
export function formatFromAccept(accept: string | undefined): MetricsFormat {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'text';
}
