/**
 * The public API's shapes as the dashboard reads them (/work/shared/api.md, the OpenAPI document at
 * /docs). Fields that newer servers add are optional: the pages show each only when it is there.
 */
export const STATES = [
  'pending',
  'initializing',
  'running',
  'analyzing',
  'completed',
  'failed',
  'cancelled',
] as const;
export type State = (typeof STATES)[number];
export type Role = 'viewer' | 'operator' | 'admin';

export interface VariantSpec {
  template: string;
  params: Record<string, unknown>;
}

export interface SuccessCriteria {
  minCardinalityReductionPct: number;
  maxCriticalProcessLossPct: number;
  maxCollectorCpuOverheadPct: number;
  dryRun?: string[];
  minHosts?: number;
  minSamplesPerHost?: number;
  confidence?: number;
  maxInputMismatchPct?: number;
  criticalGraceSeconds?: number;
}

export interface CreateBody {
  name: string;
  description?: string;
  baseline: VariantSpec;
  candidate: VariantSpec;
  target: { namespace?: string; nodeSelector?: Record<string, string>; hosts: number };
  durationSeconds: number;
  criticalProcesses: string[];
  successCriteria: SuccessCriteria;
}

export interface MeasuredFigures {
  series: number | null;
  datapointsPerMinute: number | null;
  collectorCpuCores: number | null;
  collectorMemoryBytes: number | null;
}

export type CheckOutcome = 'pass' | 'fail' | 'no_data';

export interface CriterionCheck {
  criterion: string;
  threshold: number | null;
  value: number | null;
  outcome: CheckOutcome;
  reason: string;
  dryRun?: boolean;
  interval?: { low: number; high: number; confidence: number };
  test?: string;
}

export interface PairedComparison {
  hosts: number;
  samples: number;
  baselineMean: number;
  candidateMean: number;
  relativeChangePct: number;
  interval: { low: number; high: number; confidence: number } | null;
  test: {
    name: string;
    statistic: number;
    pValue: number | null;
    effectSize: { name: string; value: number } | null;
  } | null;
}

export interface EvidenceQuery {
  figure?: string;
  variant?: string;
  query?: string;
  samples?: number;
  [k: string]: unknown;
}

export interface Analysis {
  verdict: 'pass' | 'fail' | 'inconclusive';
  reasons: string[];
  baseline: { series: number; datapointsPerMinute: number };
  candidate: { series: number; datapointsPerMinute: number };
  cardinalityReductionPct: number | null;
  datapointReductionPct: number | null;
  criticalProcessLossPct: number | null;
  missingCriticalProcesses: string[];
  evidence?: Record<string, unknown>;
  checks?: CriterionCheck[];
  statistics?: Partial<Record<keyof MeasuredFigures, PairedComparison>>;
  timeline?: { at: string; baseline: MeasuredFigures; candidate: MeasuredFigures }[];
  hosts?: {
    host: string;
    samples: number;
    baseline: MeasuredFigures;
    candidate: MeasuredFigures;
    seriesReductionPct: number | null;
  }[];
  topExecutables?: { executable: string; baselineSeries: number; candidateSeries: number }[];
  parity?: {
    ok: boolean | null;
    baselineInputPointsPerMinute: number | null;
    candidateInputPointsPerMinute: number | null;
    mismatchPct: number | null;
    maxMismatchPct: number;
    reason: string;
  };
  cost?: {
    profile: string;
    currency: string;
    monthly: {
      target: { saving: number; low: number | null; high: number | null };
      fleet: { saving: number; low: number | null; high: number | null };
    };
    breakdown: Record<string, number>;
    assumptions: Record<string, number | string>;
  };
}

export type PromotionStatus =
  | 'requested'
  | 'committed'
  | 'rolled_out'
  | 'failed'
  | 'rollback_requested'
  | 'rolled_back'
  | 'rollback_failed';

export interface Experiment extends CreateBody {
  id: string;
  state: State;
  version: number;
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  analysis?: Analysis;
  promotion?: {
    status: PromotionStatus;
    repository?: string;
    path?: string;
    commit?: string;
    requestedBy: string;
    at: string;
    reason?: string;
  };
  rejudgements?: { at: string; actor: string; criteria: SuccessCriteria; analysis: Analysis }[];
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface HistoryEntry {
  from: State | null;
  to: State;
  reason: string | null;
  actor: string;
  at: string;
  durationMs: number | null;
}

export interface AuditEntry extends HistoryEntry {
  experimentId: string;
  experimentName: string;
  correlationId: string;
}

export interface TemplateParam {
  name: string;
  type: 'integer' | 'number' | 'boolean' | 'string' | 'array';
  description: string;
  default: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  enum?: string[];
  items?: { type: string; enum?: string[]; format?: string };
  maxItems?: number;
}

export interface Template {
  name: string;
  description: string;
  tuning: 'none' | 'keepList' | 'thresholds';
  params: TemplateParam[];
}

export interface CommandResult {
  id: string;
  state: State;
  version: number;
  position: string;
}

export interface FleetPreview {
  hosts: number;
  baseline: { series: number; datapointsPerMinute: number };
  candidate: { series: number; datapointsPerMinute: number };
  removedSeries: number;
  removedSeriesPct: number;
  criticalInBaseline: number;
  droppedCriticalProcesses: string[];
}

export interface LiveEvent {
  kind: 'event';
  position: string;
  experimentId: string;
  version: number;
  type: string;
  data: Record<string, unknown>;
  metadata: { actor?: string; occurredAt?: string; [k: string]: unknown };
}

export type LiveMessage = LiveEvent | { kind: 'live'; position: string };

/** RFC 9457 problem details as the API answers every error. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: { path: string; message: string }[];
}
