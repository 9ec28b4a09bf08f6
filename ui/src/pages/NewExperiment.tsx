import { type FormEvent, useEffect, useMemo, useState } from 'react';
import { Link, useNavigate } from 'react-router';
import { ApiError, fieldErrors, getJson, postForText, postJson } from '../api';
import { roleAtLeast } from '../auth';
import { ErrorBox } from '../components/common';
import { Field } from '../components/Field';
import { ParamsForm, paramsOf, type RawParams } from '../components/ParamsForm';
import { criterionLabel, fmtNum, fmtPct } from '../format';
import { useSession } from '../session';
import type { CommandResult, CreateBody, FleetPreview, Template } from '../types';

const VARIANTS = ['baseline', 'candidate'] as const;
type Variant = (typeof VARIANTS)[number];
const CRITERIA = [
  'minCardinalityReductionPct',
  'maxCriticalProcessLossPct',
  'maxCollectorCpuOverheadPct',
] as const;

interface FormState {
  name: string;
  description: string;
  templates: Record<Variant, string>;
  params: Record<Variant, RawParams>;
  hosts: string;
  namespace: string;
  nodeSelector: string;
  durationSeconds: string;
  critical: string[];
  criteria: Record<(typeof CRITERIA)[number], string>;
  dryRun: string[];
}

const INITIAL: FormState = {
  name: '',
  description: '',
  templates: { baseline: 'process-baseline-v1', candidate: 'process-topk-v1' },
  params: { baseline: {}, candidate: {} },
  hosts: '3',
  namespace: 'phoenix-experiments',
  nodeSelector: '',
  durationSeconds: '60',
  critical: [''],
  criteria: {
    minCardinalityReductionPct: '50',
    maxCriticalProcessLossPct: '0',
    maxCollectorCpuOverheadPct: '10',
  },
  dryRun: [],
};

/** A number field's value, or the text as typed (the server then says what is wrong with it). */
const num = (s: string): number | string => (s.trim() !== '' && Number.isFinite(Number(s)) ? Number(s) : s);

/** The create body, and for each critical pattern sent its row in the form (empty rows are not sent). */
function bodyOf(form: FormState, templates: Template[]): { body: CreateBody; criticalRows: number[] } {
  const criticalRows: number[] = [];
  const critical: string[] = [];
  form.critical.forEach((p, row) => {
    if (p.trim() === '') return;
    criticalRows.push(row);
    critical.push(p);
  });
  const nodeSelector = Object.fromEntries(
    form.nodeSelector
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => {
        const i = l.indexOf('=');
        return i === -1 ? [l, ''] : [l.slice(0, i).trim(), l.slice(i + 1).trim()];
      }),
  );
  const variant = (v: Variant) => ({
    template: form.templates[v],
    params: paramsOf(
      templates.find((t) => t.name === form.templates[v]),
      form.params[v],
    ),
  });
  const body = {
    name: form.name,
    ...(form.description.trim() ? { description: form.description } : {}),
    baseline: variant('baseline'),
    candidate: variant('candidate'),
    target: { namespace: form.namespace, nodeSelector, hosts: num(form.hosts) },
    durationSeconds: num(form.durationSeconds),
    criticalProcesses: critical,
    successCriteria: {
      minCardinalityReductionPct: num(form.criteria.minCardinalityReductionPct),
      maxCriticalProcessLossPct: num(form.criteria.maxCriticalProcessLossPct),
      maxCollectorCpuOverheadPct: num(form.criteria.maxCollectorCpuOverheadPct),
      ...(form.dryRun.length > 0 ? { dryRun: form.dryRun } : {}),
    },
  } as CreateBody;
  return { body, criticalRows };
}

export function NewExperimentPage() {
  const { session } = useSession();
  const navigate = useNavigate();
  const [templates, setTemplates] = useState<Template[]>([]);
  const [loadError, setLoadError] = useState<unknown>();
  const [form, setForm] = useState<FormState>(INITIAL);
  const [submitError, setSubmitError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const [preview, setPreview] = useState<{
    configs?: Partial<Record<Variant, string>>;
    fleet?: FleetPreview | 'unavailable';
    error?: unknown;
  }>();

  useEffect(() => {
    getJson<{ items: Template[] }>('/api/v1/templates').then(
      (r) => setTemplates(r.items),
      (err) => setLoadError(err),
    );
  }, []);

  const { body, criticalRows } = useMemo(() => bodyOf(form, templates), [form, templates]);
  const errors = useMemo(() => fieldErrors(submitError ?? preview?.error), [submitError, preview?.error]);

  // The server's paths (`body.criticalProcesses.0`, `body.candidate.params.k`) → the form's fields.
  const errorAt = (path: string): string | undefined => {
    const exact = errors.get(path);
    if (exact) return exact;
    for (const [p, m] of errors) if (p.startsWith(`${path}.`)) return m;
    return undefined;
  };
  const criticalError = (row: number): string | undefined => {
    const sent = criticalRows.indexOf(row);
    return sent === -1 ? undefined : errorAt(`body.criticalProcesses.${sent}`);
  };
  const shown = (path: string): boolean =>
    /^body\.(name|description|durationSeconds|criticalProcesses(\.\d+)?|target\.(hosts|namespace|nodeSelector)|successCriteria\.\w+|(baseline|candidate)\.(template|params\.\w+))(\.|$)/.test(
      path,
    );
  const unplaced = [...errors].filter(([p]) => !shown(p));

  const update = (patch: Partial<FormState>) => setForm((f) => ({ ...f, ...patch }));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setSubmitError(undefined);
    try {
      const created = await postJson<CommandResult>('/api/v1/experiments', body);
      navigate(`/experiments/${created.id}`, { state: { position: created.position } });
    } catch (err) {
      setSubmitError(err);
      if (err instanceof ApiError && err.status === 400) {
        // Move focus to the first field the server named, as the error summary lists them all.
        requestAnimationFrame(() => document.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus());
      }
    } finally {
      setBusy(false);
    }
  };

  const runPreview = async () => {
    setPreview({});
    setSubmitError(undefined);
    const configs: Partial<Record<Variant, string>> = {};
    try {
      for (const v of VARIANTS) {
        configs[v] = await postForText(`/api/v1/templates/${encodeURIComponent(form.templates[v])}/render`, {
          params: body[v].params,
          criticalProcesses: body.criticalProcesses,
          variant: v,
        });
      }
    } catch (err) {
      // The render route's paths are relative to its body: `body.params.k` → this variant's field.
      const variant = VARIANTS.find((v) => configs[v] === undefined) ?? 'baseline';
      if (err instanceof ApiError) {
        err.problem.errors = err.problem.errors?.map((x) => ({
          ...x,
          path: x.path.startsWith('body.params') ? x.path.replace('body.', `body.${variant}.`) : x.path,
        }));
      }
      setPreview({ configs, error: err });
      return;
    }
    let fleet: FleetPreview | 'unavailable' | undefined;
    try {
      fleet = await postJson<FleetPreview>('/api/v1/experiments/preview', body);
    } catch (err) {
      // An older server has no fleet preview (404/405): the configs are still worth showing.
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) fleet = 'unavailable';
      else return setPreview({ configs, error: err });
    }
    setPreview({ configs, fleet });
  };

  if (!roleAtLeast(session.role, 'operator')) {
    return (
      <section>
        <h1>New experiment</h1>
        <p>Creating experiments needs the operator role; your token has {session.role}.</p>
      </section>
    );
  }

  return (
    <section aria-labelledby="new-title">
      <div className="page-head">
        <h1 id="new-title">New experiment</h1>
        <Link to="/experiments">Back to the list</Link>
      </div>
      <ErrorBox error={loadError} />
      <form onSubmit={submit} noValidate className="new-experiment">
        {submitError !== undefined && (
          <div className="error-box" role="alert" aria-labelledby="error-summary">
            <p id="error-summary">
              {submitError instanceof ApiError
                ? `The server refused the experiment: ${submitError.problem.detail}`
                : String(submitError)}
            </p>
            {unplaced.length > 0 && (
              <ul>
                {unplaced.map(([p, m]) => (
                  <li key={p}>
                    <code>{p}</code>: {m}
                  </li>
                ))}
              </ul>
            )}
          </div>
        )}
        <fieldset>
          <legend>Experiment</legend>
          <Field id="name" label="Name" error={errorAt('body.name')}>
            <input
              type="text"
              value={form.name}
              onChange={(e) => update({ name: e.target.value })}
              required
            />
          </Field>
          <Field id="description" label="Description (optional)" error={errorAt('body.description')}>
            <input
              type="text"
              value={form.description}
              onChange={(e) => update({ description: e.target.value })}
            />
          </Field>
        </fieldset>

        <div className="variants">
          {VARIANTS.map((v) => {
            const template = templates.find((t) => t.name === form.templates[v]);
            return (
              <fieldset key={v}>
                <legend>{v === 'baseline' ? 'Baseline' : 'Candidate'}</legend>
                <Field
                  id={`${v}-template`}
                  label="Pipeline template"
                  help={template?.description}
                  error={errors.get(`body.${v}.template`)}
                >
                  <select
                    value={form.templates[v]}
                    onChange={(e) =>
                      update({
                        templates: { ...form.templates, [v]: e.target.value },
                        params: { ...form.params, [v]: {} },
                      })
                    }
                  >
                    {templates.map((t) => (
                      <option key={t.name} value={t.name}>
                        {t.name}
                      </option>
                    ))}
                  </select>
                </Field>
                {template && (
                  <ParamsForm
                    idPrefix={`${v}-param`}
                    template={template}
                    raw={form.params[v]}
                    onChange={(raw) => update({ params: { ...form.params, [v]: raw } })}
                    errorOf={(name) => errorAt(`body.${v}.params.${name}`)}
                  />
                )}
              </fieldset>
            );
          })}
        </div>

        <fieldset>
          <legend>Target and duration</legend>
          <div className="grid-3">
            <Field
              id="hosts"
              label="Hosts"
              help="How many hosts run the experiment."
              error={errorAt('body.target.hosts')}
            >
              <input
                type="number"
                min={1}
                max={1000}
                step={1}
                value={form.hosts}
                onChange={(e) => update({ hosts: e.target.value })}
              />
            </Field>
            <Field id="namespace" label="Namespace" error={errorAt('body.target.namespace')}>
              <input
                type="text"
                value={form.namespace}
                onChange={(e) => update({ namespace: e.target.value })}
              />
            </Field>
            <Field
              id="duration"
              label="Duration (seconds)"
              help="How long both variants run side by side."
              error={errorAt('body.durationSeconds')}
            >
              <input
                type="number"
                min={1}
                step={1}
                value={form.durationSeconds}
                onChange={(e) => update({ durationSeconds: e.target.value })}
              />
            </Field>
          </div>
          <Field
            id="node-selector"
            label="Node selector (optional)"
            help="key=value, one per line."
            error={errorAt('body.target.nodeSelector')}
          >
            <textarea
              rows={2}
              value={form.nodeSelector}
              spellCheck={false}
              onChange={(e) => update({ nodeSelector: e.target.value })}
            />
          </Field>
        </fieldset>

        <fieldset>
          <legend>Critical processes</legend>
          <p className="help">
            RE2 patterns on the executable name (as the collector matches them). A candidate that drops one of
            these fails the experiment.
          </p>
          {errors.get('body.criticalProcesses') && (
            <p className="field-error">{errors.get('body.criticalProcesses')}</p>
          )}
          {form.critical.map((pattern, row) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: the rows are controlled inputs identified by their place; the server's paths are indices too
            <div className="row-with-button" key={row}>
              <Field id={`critical-${row}`} label={`Pattern ${row + 1}`} error={criticalError(row)}>
                <input
                  type="text"
                  value={pattern}
                  spellCheck={false}
                  placeholder="^postgres$"
                  onChange={(e) =>
                    update({ critical: form.critical.map((p, i) => (i === row ? e.target.value : p)) })
                  }
                />
              </Field>
              <button
                type="button"
                className="secondary"
                aria-label={`Remove pattern ${row + 1}`}
                onClick={() => update({ critical: form.critical.filter((_, i) => i !== row) })}
              >
                Remove
              </button>
            </div>
          ))}
          <button
            type="button"
            className="secondary"
            onClick={() => update({ critical: [...form.critical, ''] })}
          >
            Add a pattern
          </button>
        </fieldset>

        <fieldset>
          <legend>Success criteria</legend>
          <div className="grid-3">
            {CRITERIA.map((c) => (
              <div key={c} className="criterion">
                <Field
                  id={`criterion-${c}`}
                  label={`${criterionLabel(c)} (${c.startsWith('min') ? 'at least' : 'at most'}, %)`}
                  error={errorAt(`body.successCriteria.${c}`)}
                >
                  <input
                    type="number"
                    min={0}
                    step="any"
                    value={form.criteria[c]}
                    onChange={(e) => update({ criteria: { ...form.criteria, [c]: e.target.value } })}
                  />
                </Field>
                <Field id={`dryrun-${c}`} label="Dry run: report, never decide">
                  <input
                    type="checkbox"
                    checked={form.dryRun.includes(c)}
                    onChange={(e) =>
                      update({
                        dryRun: e.target.checked ? [...form.dryRun, c] : form.dryRun.filter((x) => x !== c),
                      })
                    }
                  />
                </Field>
              </div>
            ))}
          </div>
          {errors.get('body.successCriteria.dryRun') && (
            <p className="field-error">{errors.get('body.successCriteria.dryRun')}</p>
          )}
        </fieldset>

        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create experiment'}
          </button>
          <button type="button" className="secondary" onClick={runPreview}>
            Preview configs
          </button>
        </div>
      </form>

      {preview && (
        <section aria-labelledby="preview-title" className="preview">
          <h2 id="preview-title">Preview</h2>
          {preview.error !== undefined && <ErrorBox error={preview.error} />}
          {preview.fleet && preview.fleet !== 'unavailable' && <FleetSummary fleet={preview.fleet} />}
          {preview.fleet === 'unavailable' && (
            <p className="muted">
              This server does not offer a fleet preview; the rendered configs are below.
            </p>
          )}
          <div className="side-by-side">
            {VARIANTS.map((v) => (
              <figure key={v}>
                <figcaption>
                  {v}: {form.templates[v]}
                </figcaption>
                <section className="code" aria-label={`${v} collector config`}>
                  {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard */}
                  <pre tabIndex={0}>{preview.configs?.[v] ?? (preview.error ? '' : 'Rendering…')}</pre>
                </section>
              </figure>
            ))}
          </div>
        </section>
      )}
    </section>
  );
}

function FleetSummary({ fleet }: { fleet: FleetPreview }) {
  return (
    <dl className="figures" aria-label="Fleet preview">
      <div>
        <dt>Hosts</dt>
        <dd>{fmtNum(fleet.hosts)}</dd>
      </div>
      <div>
        <dt>Series (baseline → candidate)</dt>
        <dd>
          {fmtNum(fleet.baseline.series)} → {fmtNum(fleet.candidate.series)}
        </dd>
      </div>
      <div>
        <dt>Datapoints/min</dt>
        <dd>
          {fmtNum(fleet.baseline.datapointsPerMinute)} → {fmtNum(fleet.candidate.datapointsPerMinute)}
        </dd>
      </div>
      <div>
        <dt>Series removed</dt>
        <dd>
          {fmtNum(fleet.removedSeries)} ({fmtPct(fleet.removedSeriesPct)})
        </dd>
      </div>
      <div>
        <dt>Critical processes in baseline</dt>
        <dd>{fmtNum(fleet.criticalInBaseline)}</dd>
      </div>
      <div>
        <dt>Critical processes dropped</dt>
        <dd>
          {fleet.droppedCriticalProcesses.length === 0 ? 'none' : fleet.droppedCriticalProcesses.join(', ')}
        </dd>
      </div>
    </dl>
  );
}
