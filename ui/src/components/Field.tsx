import type { ReactElement, ReactNode } from 'react';
import { cloneElement } from 'react';

/**
 * A labelled form control with its help text and its error (from the server's problem+json), tied to
 * it with aria-describedby and aria-invalid so that a screen reader reads them with the control.
 */
export function Field({
  id,
  label,
  help,
  error,
  children,
  className,
}: {
  id: string;
  label: ReactNode;
  help?: ReactNode;
  error?: string | undefined;
  children: ReactElement<Record<string, unknown>>;
  className?: string;
}) {
  const describedBy = [help ? `${id}-help` : '', error ? `${id}-error` : ''].filter(Boolean).join(' ');
  const isCheckbox = children.props.type === 'checkbox';
  const control = cloneElement(children, {
    id,
    'aria-describedby': describedBy || undefined,
    'aria-invalid': error ? true : undefined,
  });
  return (
    <div
      className={`field${isCheckbox ? ' field-checkbox' : ''}${error ? ' has-error' : ''} ${className ?? ''}`}
    >
      {isCheckbox ? (
        <>
          {control}
          <label htmlFor={id}>{label}</label>
        </>
      ) : (
        <>
          <label htmlFor={id}>{label}</label>
          {control}
        </>
      )}
      {help && (
        <p id={`${id}-help`} className="help">
          {help}
        </p>
      )}
      {error && (
        <p id={`${id}-error`} className="field-error">
          {error}
        </p>
      )}
    </div>
  );
}
