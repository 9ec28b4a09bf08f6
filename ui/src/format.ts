const number = new Intl.NumberFormat('en', { maximumFractionDigits: 2 });

export const fmtNum = (v: number | null | undefined): string =>
  v === null || v === undefined ? '—' : number.format(v);

export const fmtPct = (v: number | null | undefined, signed = false): string =>
  v === null || v === undefined ? '—' : `${signed && v > 0 ? '+' : ''}${number.format(v)}%`;

export const fmtBytes = (v: number | null | undefined): string => {
  if (v === null || v === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${number.format(x)} ${units[i]}`;
};

export const fmtTime = (iso: string | null | undefined): string =>
  iso ? new Date(iso).toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' }) : '—';

export const fmtClock = (iso: string): string =>
  new Date(iso).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export function fmtAge(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export const fmtDuration = (ms: number | null | undefined): string => {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  return s < 120 ? `${number.format(s)} s` : `${number.format(s / 60)} min`;
};

/** A criterion key in words. */
export const CRITERION_LABELS: Record<string, string> = {
  minCardinalityReductionPct: 'Series reduction',
  maxCriticalProcessLossPct: 'Critical process loss',
  maxCollectorCpuOverheadPct: 'Collector CPU overhead',
  maxInputMismatchPct: 'Input parity',
  inputParity: 'Input parity',
  sampleSize: 'Sample size',
  collectorHealth: 'Collector health',
};

export const criterionLabel = (key: string): string =>
  CRITERION_LABELS[key] ?? (key.startsWith('query:') ? `Query ${key.slice(6)}` : key);

/** How a threshold reads: "≥ 50%" for a minimum, "≤ 10%" for a maximum. */
export const thresholdText = (criterion: string, threshold: number | null): string => {
  if (threshold === null) return '—';
  if (criterion.startsWith('min')) return `≥ ${fmtNum(threshold)}${criterion.endsWith('Pct') ? '%' : ''}`;
  if (criterion.startsWith('max')) return `≤ ${fmtNum(threshold)}${criterion.endsWith('Pct') ? '%' : ''}`;
  return fmtNum(threshold);
};

const significant = new Intl.NumberFormat('en', { maximumSignificantDigits: 3 });
/** Small quantities (CPU cores) to three significant digits: 0.000123, not 0. */
export const fmtSig = (v: number | null | undefined): string =>
  v === null || v === undefined ? '—' : significant.format(v);
