import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  PROCESS_RESOURCE_ATTRIBUTES,
  type RenderVariantInput,
  renderVariant,
  TEMPLATE_NAMES,
  type TemplateName,
  validateCollectorConfig,
} from '../src/domain/pipelines/index.js';

/**
 * Rendering for simulation (issue 17 §3): the same config with the hostmetrics receiver replaced by an
 * otlp receiver, every processor and exporter unchanged, and the scraper's settings handed to the
 * simulator instead.
 */

const input = (template: TemplateName, extra: Partial<RenderVariantInput> = {}): RenderVariantInput => ({
  experimentId: 'sim-exp',
  variant: template === 'process-baseline-v1' ? 'baseline' : 'candidate',
  template,
  criticalProcesses: ['^postgres$'],
  ...extra,
});

/** The tuning each template can take, so tuned renders are covered as well as bootstraps. */
const TUNED: Partial<RenderVariantInput> = {
  keepList: ['nginx', 'java'],
  thresholds: { cpuUtilization: 0.02, memoryBytes: 64 * 1024 * 1024 },
};

describe('renderVariant with simulation', () => {
  for (const template of TEMPLATE_NAMES) {
    for (const [label, extra] of [
      ['defaults', {}],
      ['tuned, 5 s interval', { ...TUNED, params: { collectionIntervalSeconds: 5 } }],
    ] as const) {
      it(`${template} (${label}): only the receiver differs`, () => {
        const plain = renderVariant(input(template, extra));
        const sim = renderVariant(
          input(template, { ...extra, simulation: { otlpEndpoint: '127.0.0.1:14318' } }),
        );
        assert.ok(plain.ok && sim.ok);
        const { receivers: plainReceivers, ...plainRest } = plain.config;
        const { receivers: simReceivers, ...simRest } = sim.config;
        const withoutReceivers = (c: typeof plainRest) => ({
          ...c,
          service: {
            ...c.service,
            pipelines: Object.fromEntries(
              Object.entries(c.service.pipelines).map(([id, p]) => [id, { ...p, receivers: [] }]),
            ),
          },
        });
        assert.deepEqual(withoutReceivers(simRest), withoutReceivers(plainRest));
        assert.deepEqual(Object.keys(plainReceivers), ['hostmetrics']);
        assert.deepEqual(simReceivers, { otlp: { protocols: { http: { endpoint: '127.0.0.1:14318' } } } });
        assert.deepEqual(sim.config.service.pipelines.metrics?.receivers, ['otlp']);
        assert.deepEqual(plain.config.service.pipelines.metrics?.receivers, ['hostmetrics']);
        // The simulator is told what the replaced scraper would have emitted.
        assert.deepEqual(sim.processScraper, plain.processScraper);
        assert.equal(sim.pendingTuning, plain.pendingTuning);
        assert.deepEqual(validateCollectorConfig(sim.config), []);
        assert.match(sim.yaml, /simulation: an otlp receiver in place of hostmetrics/);
      });
    }
  }

  it('reports the scraper settings the hostmetrics receiver is rendered with', () => {
    for (const template of TEMPLATE_NAMES) {
      const rendered = renderVariant(input(template, { params: { collectionIntervalSeconds: 30 } }));
      assert.ok(rendered.ok);
      const scraper = (
        rendered.config.receivers.hostmetrics as {
          collection_interval: string;
          scrapers: {
            process: {
              metrics: Record<string, { enabled: boolean }>;
              resource_attributes?: Record<string, { enabled: boolean }>;
            };
          };
        }
      ).scrapers.process;
      const { processScraper } = rendered;
      assert.equal(processScraper.collectionIntervalSeconds, 30);
      for (const [name, { enabled }] of Object.entries(scraper.metrics)) {
        assert.equal(
          processScraper.metrics.some((m) => m.name === name),
          enabled,
          `${template}: ${name}`,
        );
      }
      const off = Object.entries(scraper.resource_attributes ?? {})
        .filter(([, v]) => !v.enabled)
        .map(([k]) => k);
      assert.deepEqual(
        processScraper.resourceAttributes,
        PROCESS_RESOURCE_ATTRIBUTES.filter((k) => !off.includes(k)),
        template,
      );
      const names = processScraper.metrics.map((m) => m.name);
      assert.deepEqual(names, [...names].sort(), 'in the scraper emit order');
    }
  });

  it('renders an OTLP/gRPC receiver when asked', () => {
    const rendered = renderVariant(
      input('process-baseline-v1', { simulation: { otlpEndpoint: 'localhost:4317', protocol: 'grpc' } }),
    );
    assert.ok(rendered.ok);
    assert.deepEqual(rendered.config.receivers, {
      otlp: { protocols: { grpc: { endpoint: 'localhost:4317' } } },
    });
  });

  it('refuses a bad simulation endpoint or protocol with the path that is wrong', () => {
    for (const [simulation, path] of [
      [{ otlpEndpoint: 'no-port' }, 'simulation.otlpEndpoint'],
      [{ otlpEndpoint: '127.0.0.1:99999' }, 'simulation.otlpEndpoint'],
      [{ otlpEndpoint: 'http://127.0.0.1:4318' }, 'simulation.otlpEndpoint'],
      [{ otlpEndpoint: 'a b:4318' }, 'simulation.otlpEndpoint'],
      [{ otlpEndpoint: 42 }, 'simulation.otlpEndpoint'],
      [{ otlpEndpoint: '127.0.0.1:4318', protocol: 'udp' }, 'simulation.protocol'],
    ] as const) {
      const rendered = renderVariant(
        input('process-topk-v1', { simulation: simulation as unknown as RenderVariantInput['simulation'] }),
      );
      assert.equal(rendered.ok, false, JSON.stringify(simulation));
      assert.deepEqual(
        rendered.errors.map((e) => e.path),
        [path],
        JSON.stringify(simulation),
      );
    }
  });
});
