import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type CollectorConfig,
  OttlSyntaxError,
  ottlString,
  parseOttlCondition,
  parseOttlStatement,
  renderVariant,
  validateCollectorConfig,
} from '../src/domain/pipelines/index.js';

const base = (): CollectorConfig => {
  const rendered = renderVariant({
    experimentId: 'e',
    variant: 'candidate',
    template: 'process-aggregated-v1',
    criticalProcesses: ['^postgres$'],
  });
  if (!rendered.ok) throw new Error('render failed');
  return structuredClone(rendered.config);
};

const problems = (mutate: (c: CollectorConfig) => void) => {
  const config = base();
  mutate(config);
  return validateCollectorConfig(config);
};

const assertProblem = (mutate: (c: CollectorConfig) => void, path: string, message: RegExp) => {
  const found = problems(mutate);
  assert.ok(
    found.some((p) => p.path === path && message.test(p.message)),
    `expected ${path} ~ ${message}, got ${JSON.stringify(found)}`,
  );
};

const processors = (c: CollectorConfig) =>
  (c.service.pipelines.metrics as { processors: string[] }).processors;

describe('validateCollectorConfig: what the real collector refuses (see otelcol-validator-parity)', () => {
  const transform = (c: CollectorConfig, statement: string) => {
    c.processors['transform/x'] = { metric_statements: [{ context: 'metric', statements: [statement] }] };
    processors(c).splice(2, 0, 'transform/x');
  };

  it('refuses aggregate_on_attributes("avg") and takes "mean", as the collector does', () => {
    assertProblem(
      (c) => transform(c, 'aggregate_on_attributes("avg", [])'),
      'processors.transform/x.metric_statements.0.statements.0',
      /must be one of sum, mean/,
    );
    assert.deepEqual(
      problems((c) => transform(c, 'aggregate_on_attributes("mean", [])')),
      [],
    );
  });

  it('refuses a metric path the metric context does not have', () => {
    assertProblem(
      (c) => transform(c, 'set(metric.bogus, "x")'),
      'processors.transform/x.metric_statements.0.statements.0',
      /not a metric field/,
    );
  });

  it('refuses a batch max size below the batch size and a timeout that is not a duration', () => {
    assertProblem(
      (c) => Object.assign(c.processors.batch as object, { send_batch_size: 100, send_batch_max_size: 10 }),
      'processors.batch.send_batch_max_size',
      /greater than or equal/,
    );
    assert.deepEqual(
      problems((c) =>
        Object.assign(c.processors.batch as object, { send_batch_size: 100, send_batch_max_size: 0 }),
      ),
      [],
    );
    assertProblem(
      (c) => Object.assign(c.processors.batch as object, { timeout: 'soon' }),
      'processors.batch.timeout',
      /duration/,
    );
  });

  it('takes a lone groupbyattrs key, which the collector reads as a list of one', () => {
    assert.deepEqual(
      problems((c) => {
        c.processors['groupbyattrs/merge'] = { keys: 'process.pid' };
      }),
      [],
    );
  });
});

describe('validateCollectorConfig', () => {
  it('accepts a rendered config', () => {
    assert.deepEqual(
      problems(() => {}),
      [],
    );
  });

  it('reports a processor referenced but not defined', () => {
    assertProblem(
      (c) => processors(c).splice(2, 0, 'filter/missing'),
      'service.pipelines.metrics.processors.2',
      /not defined/,
    );
  });

  it('reports a processor defined but not used', () => {
    assertProblem(
      (c) => {
        c.processors['filter/unused'] = { metrics: { metric: ['true'] } };
      },
      'processors.filter/unused',
      /not used/,
    );
  });

  it('reports an invented component type', () => {
    assertProblem(
      (c) => {
        c.processors.topk = { k: 10 };
        processors(c).splice(2, 0, 'topk');
      },
      'processors.topk',
      /not a processor of the collector Phoenix deploys/,
    );
  });

  it('requires memory_limiter first', () => {
    assertProblem(
      (c) => processors(c).reverse(),
      'service.pipelines.metrics.processors',
      /memory_limiter must be the first/,
    );
  });

  it('requires batch after any aggregation', () => {
    assertProblem(
      (c) => {
        const list = processors(c);
        list.splice(list.indexOf('batch'), 1);
        list.splice(2, 0, 'batch');
      },
      'service.pipelines.metrics.processors.4',
      /groupbyattrs\/merge aggregates data points and must come before batch/,
    );
  });

  it('requires the experiment attributes', () => {
    assertProblem(
      (c) => {
        (c.processors['resource/experiment'] as { attributes: unknown[] }).attributes.pop();
      },
      'service.pipelines.metrics.processors',
      /k8s\.node\.name/,
    );
  });

  it('reports unbalanced OTTL', () => {
    assertProblem(
      (c) => {
        const t = c.processors['transform/drop_pid'] as { metric_statements: { statements: string[] }[] };
        (t.metric_statements[0] as { statements: string[] }).statements[0] =
          'delete_key(attributes, "process.pid"';
      },
      'processors.transform/drop_pid.metric_statements.0.statements.0',
      /OTTL syntax: expected "\)"/,
    );
    assertProblem(
      (c) => {
        c.processors['filter/x'] = { metrics: { metric: ['IsMatch(name, "abc) and true'] } };
        processors(c).splice(2, 0, 'filter/x');
      },
      'processors.filter/x.metrics.metric.0',
      /unterminated string/,
    );
  });

  it('reports unknown OTTL functions, wrong contexts and bad regexes', () => {
    assertProblem(
      (c) => {
        c.processors['filter/x'] = { metrics: { metric: ['TopK(name, 10)'] } };
        processors(c).splice(2, 0, 'filter/x');
      },
      'processors.filter/x.metrics.metric.0',
      /unknown converter "TopK"/,
    );
    assertProblem(
      (c) => {
        c.processors['filter/x'] = { metrics: { metric: ['value_double > 1'] } };
        processors(c).splice(2, 0, 'filter/x');
      },
      'processors.filter/x.metrics.metric.0',
      /not available in the metric context/,
    );
    assertProblem(
      (c) => {
        c.processors['filter/x'] = { metrics: { metric: ['IsMatch(name, "(?=a)")'] } };
        processors(c).splice(2, 0, 'filter/x');
      },
      'processors.filter/x.metrics.metric.0',
      /lookahead/,
    );
    assertProblem(
      (c) => {
        const t = c.processors['transform/aggregate'] as { metric_statements: { context: string }[] };
        (t.metric_statements[0] as { context: string }).context = 'resource';
      },
      'processors.transform/aggregate.metric_statements.0.statements.0',
      /only works in the metric context/,
    );
  });

  it('requires resource_to_telemetry_conversion on the Prometheus exporter', () => {
    assertProblem(
      (c) => {
        delete (c.exporters.prometheus as Record<string, unknown>).resource_to_telemetry_conversion;
      },
      'exporters.prometheus.resource_to_telemetry_conversion.enabled',
      /target_info/,
    );
  });

  it('requires the collector telemetry', () => {
    assertProblem(
      (c) => {
        (c.service.telemetry as { metrics: { level: string } }).metrics.level = 'none';
      },
      'service.telemetry.metrics',
      /must be enabled/,
    );
  });

  it('checks the process scraper settings', () => {
    assertProblem(
      (c) => {
        (c.receivers.hostmetrics as { collection_interval: string }).collection_interval = 'soon';
      },
      'receivers.hostmetrics.collection_interval',
      /positive duration/,
    );
    assertProblem(
      (c) => {
        const scraper = (
          c.receivers.hostmetrics as { scrapers: { process: { metrics: Record<string, unknown> } } }
        ).scrapers.process;
        scraper.metrics['process.gpu.time'] = { enabled: true };
      },
      'receivers.hostmetrics.scrapers.process.metrics.process.gpu.time',
      /unknown metric/,
    );
  });

  it('reports an exporter that no pipeline uses and a pipeline without exporters', () => {
    const found = problems((c) => {
      (c.service.pipelines.metrics as { exporters: string[] }).exporters = [];
    });
    assert.ok(
      found.some(
        (p) => p.path === 'service.pipelines.metrics.exporters' && /needs exporters/.test(p.message),
      ),
    );
    assert.ok(found.some((p) => p.path === 'exporters.prometheus' && /not used/.test(p.message)));
  });
});

describe('OTTL parser', () => {
  it('parses conditions with precedence: not > and > or', () => {
    const ast = parseOttlCondition('not IsMatch(name, "a") and value_int < 5 or true');
    assert.equal(ast.kind, 'or');
    if (ast.kind !== 'or') return;
    assert.equal(ast.left.kind, 'and');
    if (ast.left.kind === 'and') assert.equal(ast.left.left.kind, 'not');
  });

  it('parses editor statements with where clauses', () => {
    const stmt = parseOttlStatement(
      'aggregate_on_attributes("sum", ["state"]) where name == "process.cpu.utilization"',
    );
    assert.equal(stmt.editor.name, 'aggregate_on_attributes');
    assert.deepEqual(stmt.editor.args[1], { kind: 'list', items: [{ kind: 'string', value: 'state' }] });
    assert.equal(stmt.where?.kind, 'compare');
  });

  it('round-trips any string through ottlString', () => {
    for (const text of ['plain', 'with "quotes"', 'back\\slash', '^a\\.b$', 'x\\"y']) {
      const ast = parseOttlCondition(`IsMatch(name, ${ottlString(text)})`);
      assert.ok(ast.kind === 'value' && ast.value.kind === 'call');
      if (ast.kind === 'value' && ast.value.kind === 'call')
        assert.deepEqual(ast.value.args[1], { kind: 'string', value: text });
    }
  });

  for (const bad of [
    '(a == 1',
    'a == 1)',
    'IsMatch(name, "x"',
    'a ==',
    'and a == 1',
    'name == "x" extra',
    'isMatch(name, "x")',
    'a + 1 > 2',
  ]) {
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => parseOttlCondition(bad), OttlSyntaxError);
    });
  }
});
