/**
 * A bounded record of one variant's scrapes over a run: per host, the figures the paired statistics
 * compare (series, data points per minute, collector CPU and memory, points received per minute, processes the scraper saw).
 *
 * Memory is fixed when the variant deploys: `capacity` samples × hosts × 6 figures, as float32
 * (24 bytes per host and sample) plus two float64 times per sample. At the default 120 samples a
 * 1,000-host variant holds 2.9 MB, an experiment (two variants) 5.8 MB, whatever the run's length:
 * when the record is full, every other sample is dropped and from then on only every second scrape is
 * kept (the stride doubles), so the samples stay evenly spaced over the whole run instead of losing
 * its beginning as a ring buffer would.
 */
export interface HostFigures {
  readonly series: number;
  readonly datapointsPerMinute: number;
  readonly collectorCpuCores: number;
  readonly collectorMemoryBytes: number;
  readonly inputPointsPerMinute: number;
  /** Processes the scraper saw. */
  readonly inputProcesses: number;
}

/** One kept sample: its times and every host's figures. */
export interface HistorySample {
  readonly wallMs: number;
  readonly simulatedSeconds: number;
  readonly host: (h: number) => HostFigures;
}

export const DEFAULT_HISTORY_CAPACITY = 120;

const FIGURES = 6;

export class ScrapeHistory {
  /** Wall-clock milliseconds of each kept sample. */
  private readonly wall: Float64Array;
  /** Simulated seconds of each kept sample. */
  private readonly simulated: Float64Array;
  /** `values[(sample * hosts + host) * FIGURES + figure]`. */
  private readonly values: Float32Array;
  private count = 0;
  private stride = 1;
  /** Scrapes offered since the last kept one. */
  private sinceKept = 0;

  constructor(
    readonly hosts: number,
    readonly capacity = DEFAULT_HISTORY_CAPACITY,
  ) {
    if (!Number.isInteger(capacity) || capacity < 2) throw new RangeError('capacity must be an integer ≥ 2');
    this.wall = new Float64Array(capacity);
    this.simulated = new Float64Array(capacity);
    this.values = new Float32Array(capacity * hosts * FIGURES);
  }

  /** Bytes this record holds (fixed at construction). */
  get bytes(): number {
    return this.wall.byteLength + this.simulated.byteLength + this.values.byteLength;
  }

  get size(): number {
    return this.count;
  }

  /** Offers one scrape; `figure(h)` is read only when the scrape is kept. */
  record(wallMs: number, simulatedSeconds: number, figure: (host: number) => HostFigures): void {
    this.sinceKept++;
    if (this.count === this.capacity) this.halve();
    if (this.count > 0 && this.sinceKept < this.stride) return;
    this.sinceKept = 0;
    const i = this.count++;
    this.wall[i] = wallMs;
    this.simulated[i] = simulatedSeconds;
    for (let h = 0; h < this.hosts; h++) {
      const f = figure(h);
      const o = (i * this.hosts + h) * FIGURES;
      this.values[o] = f.series;
      this.values[o + 1] = f.datapointsPerMinute;
      this.values[o + 2] = f.collectorCpuCores;
      this.values[o + 3] = f.collectorMemoryBytes;
      this.values[o + 4] = f.inputPointsPerMinute;
      this.values[o + 5] = f.inputProcesses;
    }
  }

  /**
   * Keeps every other sample counted back from the newest (which stays, so the next kept scrape is a
   * new stride after it) and doubles the stride.
   */
  private halve(): void {
    const perSample = this.hosts * FIGURES;
    const first = (this.count - 1) % 2;
    let kept = 0;
    for (let i = first; i < this.count; i += 2, kept++) {
      this.wall[kept] = this.wall[i] as number;
      this.simulated[kept] = this.simulated[i] as number;
      this.values.copyWithin(kept * perSample, i * perSample, (i + 1) * perSample);
    }
    this.count = kept;
    this.stride *= 2;
  }

  /** The kept samples whose wall time is within [fromMs, toMs], oldest first. */
  *between(fromMs: number, toMs: number): Generator<HistorySample> {
    for (let i = 0; i < this.count; i++) {
      const wallMs = this.wall[i] as number;
      if (wallMs < fromMs || wallMs > toMs) continue;
      const base = i * this.hosts * FIGURES;
      const values = this.values;
      yield {
        wallMs,
        simulatedSeconds: this.simulated[i] as number,
        host: (h: number) => {
          const o = base + h * FIGURES;
          return {
            series: values[o] as number,
            datapointsPerMinute: values[o + 1] as number,
            collectorCpuCores: values[o + 2] as number,
            collectorMemoryBytes: values[o + 3] as number,
            inputPointsPerMinute: values[o + 4] as number,
            inputProcesses: values[o + 5] as number,
          };
        },
      };
    }
  }
}
