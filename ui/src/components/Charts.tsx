import type { ReactNode } from 'react';
import {
  Bar,
  BarChart,
  CartesianGrid,
  LabelList,
  Legend,
  Line,
  LineChart,
  ReferenceLine,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from 'recharts';
import { fmtBytes, fmtClock, fmtNum, fmtPct, fmtSig } from '../format';
import type { Analysis, MeasuredFigures } from '../types';

/**
 * The report's charts (Recharts: SVG, declarative, reference lines for the thresholds). Each chart is
 * a figure with a caption and its numbers in a table under it, for screen readers and for copying.
 */
const BASELINE = '#475569';
const CANDIDATE = '#0b6bcb';
const THRESHOLD = '#b42318';

type FigureKey = keyof MeasuredFigures;

const FIGURES: { key: FigureKey; title: string; format: (v: number | null) => string }[] = [
  { key: 'series', title: 'Active series', format: fmtNum },
  { key: 'datapointsPerMinute', title: 'Datapoints per minute', format: fmtNum },
  {
    key: 'collectorCpuCores',
    title: 'Collector CPU (cores)',
    format: fmtSig,
  },
  { key: 'collectorMemoryBytes', title: 'Collector memory', format: fmtBytes },
];

function ChartFigure({
  id,
  title,
  note,
  children,
  table,
}: {
  id: string;
  title: string;
  note?: ReactNode;
  children: ReactNode;
  table: { head: string[]; rows: (string | number)[][] };
}) {
  return (
    <figure className="chart" aria-labelledby={`${id}-caption`} data-chart={id}>
      <figcaption id={`${id}-caption`}>
        <strong>{title}</strong>
        {note && <span className="note"> {note}</span>}
      </figcaption>
      {/* The picture for the eye; the table below says the same to a screen reader. */}
      <div className="chart-body" aria-hidden="true">
        {children}
      </div>
      <details className="chart-data">
        <summary>Data of “{title}”</summary>
        <table>
          <thead>
            <tr>
              {table.head.map((h) => (
                <th key={h} scope="col">
                  {h}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {table.rows.map((r, i) => (
              // biome-ignore lint/suspicious/noArrayIndexKey: rows of a fixed table
              <tr key={i}>
                {r.map((c, j) => (
                  // biome-ignore lint/suspicious/noArrayIndexKey: cells of a fixed row
                  <td key={j}>{c}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

/** Where the candidate must be for a figure's criterion to pass, as a value on the chart. */
function thresholdFor(
  key: FigureKey,
  baseline: number | null,
  analysis: Analysis,
  criteria: Record<string, number>,
) {
  if (baseline === null) return undefined;
  if (key === 'series' && criteria.minCardinalityReductionPct !== undefined) {
    const pct = criteria.minCardinalityReductionPct;
    return { value: baseline * (1 - pct / 100), label: `pass line: −${fmtNum(pct)}%` };
  }
  if (key === 'collectorCpuCores' && criteria.maxCollectorCpuOverheadPct !== undefined) {
    const pct = criteria.maxCollectorCpuOverheadPct;
    return { value: baseline * (1 + pct / 100), label: `limit: +${fmtNum(pct)}%` };
  }
  void analysis;
  return undefined;
}

const mean = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
};

/** Baseline against candidate over the run (analysis.timeline), one chart per figure. */
export function TimelineCharts({
  analysis,
  criteria,
}: {
  analysis: Analysis;
  criteria: Record<string, number>;
}) {
  const timeline = analysis.timeline ?? [];
  return (
    <div className="charts">
      {FIGURES.map(({ key, title, format }) => {
        const data = timeline.map((t) => ({
          at: t.at,
          baseline: t.baseline[key],
          candidate: t.candidate[key],
        }));
        if (data.every((d) => d.baseline === null && d.candidate === null)) return null;
        const threshold = thresholdFor(key, mean(data.map((d) => d.baseline)), analysis, criteria);
        return (
          <ChartFigure
            key={key}
            id={`timeline-${key}`}
            title={title}
            note={threshold ? `(dashed: ${threshold.label} of the baseline's mean)` : undefined}
            table={{
              head: ['Time', 'Baseline', 'Candidate'],
              rows: data.map((d) => [fmtClock(d.at), format(d.baseline), format(d.candidate)]),
            }}
          >
            <ResponsiveContainer width="100%" height={240}>
              <LineChart
                accessibilityLayer={false}
                data={data}
                margin={{ top: 10, right: 16, bottom: 0, left: 8 }}
              >
                <CartesianGrid strokeDasharray="3 3" stroke="#d0d5dd" />
                <XAxis dataKey="at" tickFormatter={fmtClock} minTickGap={24} />
                <YAxis tickFormatter={(v: number) => format(v)} width={88} />
                <Tooltip labelFormatter={(l) => fmtClock(String(l))} formatter={(v) => format(Number(v))} />
                <Legend />
                <Line
                  type="monotone"
                  dataKey="baseline"
                  name="baseline"
                  stroke={BASELINE}
                  strokeWidth={2}
                  dot={false}
                  isAnimationActive={false}
                />
                <Line
                  type="monotone"
                  dataKey="candidate"
                  name="candidate"
                  stroke={CANDIDATE}
                  strokeWidth={2}
                  dot={false}
                  isAnimationActive={false}
                />
                {threshold && (
                  <ReferenceLine
                    y={threshold.value}
                    stroke={THRESHOLD}
                    strokeDasharray="6 4"
                    label={{
                      value: threshold.label,
                      position: 'insideTopRight',
                      fill: THRESHOLD,
                      fontSize: 12,
                    }}
                  />
                )}
              </LineChart>
            </ResponsiveContainer>
          </ChartFigure>
        );
      })}
    </div>
  );
}

/**
 * The figures the verdict was judged on, baseline beside candidate, with the line the candidate had
 * to stay under. Every analysis has these (the timeline is newer).
 */
export function SummaryCharts({
  analysis,
  cpu,
  criteria,
}: {
  analysis: Analysis;
  cpu: { baseline: number | null; candidate: number | null } | undefined;
  criteria: Record<string, number>;
}) {
  const charts: {
    key: FigureKey;
    title: string;
    baseline: number | null;
    candidate: number | null;
    format: (v: number | null) => string;
  }[] = [
    {
      key: 'series',
      title: 'Active series',
      baseline: analysis.baseline.series,
      candidate: analysis.candidate.series,
      format: fmtNum,
    },
    {
      key: 'datapointsPerMinute',
      title: 'Datapoints per minute',
      baseline: analysis.baseline.datapointsPerMinute,
      candidate: analysis.candidate.datapointsPerMinute,
      format: fmtNum,
    },
  ];
  if (cpu && (cpu.baseline !== null || cpu.candidate !== null)) {
    charts.push({
      key: 'collectorCpuCores',
      title: 'Collector CPU (cores per node)',
      ...cpu,
      format: fmtSig,
    });
  }
  return (
    <div className="charts">
      {charts.map((c) => {
        const threshold = thresholdFor(c.key, c.baseline, analysis, criteria);
        const data = [
          { variant: 'baseline', value: c.baseline, fill: BASELINE },
          { variant: 'candidate', value: c.candidate, fill: CANDIDATE },
        ];
        return (
          <ChartFigure
            key={c.key}
            id={`summary-${c.key}`}
            title={c.title}
            note={threshold ? `(dashed: ${threshold.label})` : undefined}
            table={{ head: ['Variant', c.title], rows: data.map((d) => [d.variant, c.format(d.value)]) }}
          >
            <ResponsiveContainer width="100%" height={220}>
              <BarChart
                accessibilityLayer={false}
                data={data}
                layout="vertical"
                margin={{ top: 16, right: 80, bottom: 0, left: 8 }}
              >
                <CartesianGrid strokeDasharray="3 3" stroke="#d0d5dd" />
                <XAxis type="number" tickFormatter={(v: number) => c.format(v)} domain={[0, 'auto']} />
                <YAxis type="category" dataKey="variant" width={76} />
                <Bar dataKey="value" name={c.title} isAnimationActive={false}>
                  <LabelList
                    dataKey="value"
                    position="right"
                    formatter={(v) => c.format(v === null || v === undefined ? null : Number(v))}
                  />
                </Bar>
                {threshold && (
                  <ReferenceLine
                    x={threshold.value}
                    stroke={THRESHOLD}
                    strokeDasharray="6 4"
                    label={{ value: threshold.label, position: 'top', fill: THRESHOLD, fontSize: 12 }}
                  />
                )}
              </BarChart>
            </ResponsiveContainer>
          </ChartFigure>
        );
      })}
    </div>
  );
}

/** The executables contributing the most baseline series, and what the candidate kept of them. */
export function TopExecutablesChart({ items }: { items: NonNullable<Analysis['topExecutables']> }) {
  const data = items.slice(0, 15);
  return (
    <ChartFigure
      id="top-executables"
      title="Executables with the most series"
      table={{
        head: ['Executable', 'Baseline series', 'Candidate series'],
        rows: data.map((d) => [d.executable, fmtNum(d.baselineSeries), fmtNum(d.candidateSeries)]),
      }}
    >
      <ResponsiveContainer width="100%" height={Math.max(200, data.length * 32 + 60)}>
        <BarChart
          accessibilityLayer={false}
          data={data}
          layout="vertical"
          margin={{ top: 8, right: 24, bottom: 0, left: 8 }}
        >
          <CartesianGrid strokeDasharray="3 3" stroke="#d0d5dd" />
          <XAxis type="number" />
          <YAxis type="category" dataKey="executable" width={130} interval={0} />
          <Tooltip />
          <Legend />
          <Bar dataKey="baselineSeries" name="baseline" fill={BASELINE} isAnimationActive={false} />
          <Bar dataKey="candidateSeries" name="candidate" fill={CANDIDATE} isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </ChartFigure>
  );
}

/** Each host's series reduction, against the required minimum. */
export function HostReductionChart({
  hosts,
  minPct,
}: {
  hosts: NonNullable<Analysis['hosts']>;
  minPct: number | undefined;
}) {
  const data = hosts.map((h) => ({ host: h.host, reduction: h.seriesReductionPct, samples: h.samples }));
  return (
    <ChartFigure
      id="host-reduction"
      title="Series reduction per host"
      note={minPct !== undefined ? `(dashed: at least ${fmtNum(minPct)}% required)` : undefined}
      table={{
        head: ['Host', 'Series reduction', 'Samples'],
        rows: data.map((d) => [d.host, fmtPct(d.reduction), d.samples]),
      }}
    >
      <ResponsiveContainer width="100%" height={Math.max(200, data.length * 28 + 60)}>
        <BarChart
          accessibilityLayer={false}
          data={data}
          layout="vertical"
          margin={{ top: 16, right: 48, bottom: 0, left: 8 }}
        >
          <CartesianGrid strokeDasharray="3 3" stroke="#d0d5dd" />
          <XAxis type="number" domain={[0, 100]} unit="%" />
          <YAxis type="category" dataKey="host" width={110} interval={0} />
          <Tooltip formatter={(v) => fmtPct(Number(v))} />
          <Bar dataKey="reduction" name="series reduction" fill={CANDIDATE} isAnimationActive={false}>
            <LabelList
              dataKey="reduction"
              position="right"
              formatter={(v) => fmtPct(v === null || v === undefined ? null : Number(v))}
            />
          </Bar>
          {minPct !== undefined && (
            <ReferenceLine
              x={minPct}
              stroke={THRESHOLD}
              strokeDasharray="6 4"
              label={{ value: `${fmtNum(minPct)}%`, position: 'top', fill: THRESHOLD, fontSize: 12 }}
            />
          )}
        </BarChart>
      </ResponsiveContainer>
    </ChartFigure>
  );
}
