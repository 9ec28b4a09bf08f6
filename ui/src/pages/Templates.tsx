import { useEffect, useState } from 'react';
import { Link, useParams } from 'react-router';
import { getJson, postForText } from '../api';
import { ErrorBox } from '../components/common';
import { ParamsForm, paramsOf, type RawParams } from '../components/ParamsForm';
import type { Template } from '../types';

/** The pipeline library: each template's description and parameters, and the config it renders. */
export function TemplatesPage() {
  const { name } = useParams();
  const [templates, setTemplates] = useState<Template[]>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    getJson<{ items: Template[] }>('/api/v1/templates').then((r) => setTemplates(r.items), setError);
  }, []);
  const selected = templates?.find((t) => t.name === name);
  return (
    <section aria-labelledby="templates-title">
      <h1 id="templates-title">Pipeline templates</h1>
      <ErrorBox error={error} />
      <div className="templates-layout">
        <nav aria-label="Templates">
          <ul className="template-list">
            {templates?.map((t) => (
              <li key={t.name}>
                <Link to={`/templates/${t.name}`} aria-current={t.name === name ? 'page' : undefined}>
                  <strong>{t.name}</strong>
                  <span>{t.description}</span>
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="template-detail">
          {selected ? (
            <TemplateDetail key={selected.name} template={selected} />
          ) : (
            templates && (
              <p className="muted">Choose a template to see its parameters and the config it renders.</p>
            )
          )}
        </div>
      </div>
    </section>
  );
}

function TemplateDetail({ template }: { template: Template }) {
  const [raw, setRaw] = useState<RawParams>({});
  const [yaml, setYaml] = useState<string>();
  const [error, setError] = useState<unknown>();
  const render = async (params: Record<string, unknown>) => {
    setError(undefined);
    try {
      setYaml(await postForText(`/api/v1/templates/${encodeURIComponent(template.name)}/render`, { params }));
    } catch (err) {
      setError(err);
    }
  };
  // biome-ignore lint/correctness/useExhaustiveDependencies: render once per template with its defaults
  useEffect(() => {
    void render({});
  }, [template.name]);
  const errors = new Map<string, string>();
  if (error && typeof error === 'object' && 'problem' in error) {
    for (const e of (error as { problem: { errors?: { path: string; message: string }[] } }).problem.errors ??
      [])
      errors.set(e.path, e.message);
  }
  return (
    <section aria-labelledby="template-title">
      <h2 id="template-title">{template.name}</h2>
      <p>{template.description}</p>
      {template.tuning !== 'none' && (
        <p className="help">
          Tuned from the baseline before it is measured (
          {template.tuning === 'keepList' ? 'a keep-list' : 'thresholds'}
          ): the config below is its bootstrap.
        </p>
      )}
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void render(paramsOf(template, raw));
        }}
      >
        <fieldset>
          <legend>Parameters</legend>
          <ParamsForm
            idPrefix={`tpl-${template.name}`}
            template={template}
            raw={raw}
            onChange={setRaw}
            errorOf={(n) =>
              [...errors].find(([p]) => p === `body.params.${n}` || p.startsWith(`body.params.${n}.`))?.[1]
            }
          />
        </fieldset>
        {template.params.length > 0 && (
          <button type="submit" className="secondary">
            Render with these parameters
          </button>
        )}
      </form>
      <ErrorBox error={error} />
      <h3>Rendered collector config</h3>
      <section className="code" aria-label={`${template.name} collector config`}>
        {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard */}
        <pre tabIndex={0} className="yaml">
          {yaml ?? 'Rendering…'}
        </pre>
      </section>
    </section>
  );
}
