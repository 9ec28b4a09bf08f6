import assert from 'node:assert/strict';

export interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/**
 * A small but strict parser of the Prometheus text format (0.0.4): every sample line must parse, a
 * TYPE line appears once per family. Values may be NaN or ±Inf (prom-client writes them).
 */
export const parseExposition = (text: string): { samples: Sample[]; types: Map<string, string> } => {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      assert.ok(!types.has(name as string), `TYPE repeated for ${name}`);
      types.set(name as string, type as string);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
    let match: RegExpExecArray | null;
    let consumed = 0;
    // biome-ignore lint/suspicious/noAssignInExpressions: the classic exec loop
    while ((match = re.exec(body)) !== null) {
      labels[match[1] as string] = (match[2] as string).replace(/\\(.)/g, (_, c: string) =>
        c === 'n' ? '\n' : c,
      );
      consumed = re.lastIndex;
    }
    assert.equal(consumed, body.length, `bad labels: ${body}`);
    const raw = m[3] as string;
    const value =
      raw === '+Inf' ? Number.POSITIVE_INFINITY : raw === '-Inf' ? Number.NEGATIVE_INFINITY : Number(raw);
    assert.ok(!Number.isNaN(value) || raw === 'NaN', line);
    samples.push({ name: m[1] as string, labels, value });
  }
  return { samples, types };
};
