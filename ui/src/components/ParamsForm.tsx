import type { Template, TemplateParam } from '../types';
import { Field } from './Field';

/** A template's parameters as typed by the user: text per field (booleans as booleans). */
export type RawParams = Record<string, string | boolean>;

const isList = (p: TemplateParam) => p.type === 'array';

/** The form's text for a parameter's default. */
export const defaultText = (p: TemplateParam): string | boolean => {
  if (p.type === 'boolean') return p.default === true;
  if (isList(p)) return Array.isArray(p.default) ? (p.default as unknown[]).join('\n') : '';
  return p.default === undefined || p.default === null ? '' : String(p.default);
};

/**
 * The params to send: only those the user changed from the default (the server fills in the rest),
 * converted to the parameter's type. A number field that does not parse is sent as typed, so the
 * server's message names it.
 */
export function paramsOf(template: Template | undefined, raw: RawParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!template) return out;
  for (const p of template.params) {
    const v = raw[p.name];
    if (v === undefined || v === defaultText(p)) continue;
    if (p.type === 'boolean') out[p.name] = v === true;
    else if (p.type === 'integer' || p.type === 'number') {
      const s = String(v).trim();
      out[p.name] = s !== '' && Number.isFinite(Number(s)) ? Number(s) : s;
    } else if (isList(p)) {
      out[p.name] = String(v)
        .split('\n')
        .map((s) => s.trim())
        .filter((s) => s !== '');
    } else out[p.name] = v;
  }
  return out;
}

export function ParamsForm({
  idPrefix,
  template,
  raw,
  onChange,
  errorOf,
}: {
  idPrefix: string;
  template: Template;
  raw: RawParams;
  onChange: (raw: RawParams) => void;
  /** The server's message for `params.<name>` (or an item of it). */
  errorOf: (name: string) => string | undefined;
}) {
  if (template.params.length === 0) return <p className="muted">This template has no parameters.</p>;
  return (
    <div className="params">
      {template.params.map((p) => {
        const id = `${idPrefix}-${p.name}`;
        const value = raw[p.name] ?? defaultText(p);
        const set = (v: string | boolean) => onChange({ ...raw, [p.name]: v });
        const range =
          p.minimum !== undefined || p.maximum !== undefined
            ? ` (${p.minimum ?? p.exclusiveMinimum ?? '…'}–${p.maximum ?? '…'})`
            : '';
        const sentence = `${p.description}${range}`;
        const help = isList(p) ? `${sentence}${/[.!?]$/.test(sentence) ? '' : '.'} One per line.` : sentence;
        let control: JSX.Element;
        if (p.type === 'boolean') {
          control = (
            <input type="checkbox" checked={value === true} onChange={(e) => set(e.target.checked)} />
          );
        } else if (p.enum) {
          control = (
            <select value={String(value)} onChange={(e) => set(e.target.value)}>
              {p.enum.map((o) => (
                <option key={o} value={o}>
                  {o}
                </option>
              ))}
            </select>
          );
        } else if (isList(p)) {
          control = (
            <textarea
              rows={3}
              value={String(value)}
              spellCheck={false}
              onChange={(e) => set(e.target.value)}
            />
          );
        } else {
          control = (
            <input
              type={p.type === 'string' ? 'text' : 'number'}
              inputMode={p.type === 'integer' ? 'numeric' : p.type === 'number' ? 'decimal' : undefined}
              step={p.type === 'integer' ? 1 : 'any'}
              min={p.minimum}
              max={p.maximum}
              value={String(value)}
              onChange={(e) => set(e.target.value)}
            />
          );
        }
        return (
          <Field key={p.name} id={id} label={p.name} help={help} error={errorOf(p.name)}>
            {control}
          </Field>
        );
      })}
    </div>
  );
}
