import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OtelcolDeployer, simulatedScraper, simulationConfig } from '../src/adapters/otelcol-deployer.js';
import { renderVariant, TEMPLATE_NAMES } from '../src/domain/pipelines/index.js';

/**
 * The otelcol deployer turns the deployed config (what the worker rendered, tuning included) into the
 * config it runs here; these pin that it is the render's own simulation config, listeners aside.
 */
const PORTS = { otlp: 4001, prometheus: 4002, telemetry: 4003, health: 4004 };

const render = (template: string, simulation?: { otlpEndpoint: string }, otlpEndpoint?: string) => {
  const rendered = renderVariant({
    experimentId: 'exp-1',
    variant: 'candidate',
    template,
    params: { collectionIntervalSeconds: 7 },
    criticalProcesses: ['^kubelet$'],
    keepList: ['containerd'],
    thresholds: { cpuUtilization: 0.01, memoryBytes: 1e6 },
    ...(simulation ? { simulation } : {}),
    ...(otlpEndpoint ? { otlpEndpoint } : {}),
  });
  assert.ok(rendered.ok, JSON.stringify(rendered.ok ? [] : rendered.errors));
  return rendered;
};

describe('the otelcol deployer: the config it runs', () => {
  for (const template of TEMPLATE_NAMES) {
    it(`${template}: the simulator sends what the scraper of the deployed config would`, () => {
      const rendered = render(template);
      assert.deepEqual(simulatedScraper(rendered.config), rendered.processScraper);
    });

    it(`${template}: the render's simulation config, on the deployer's ports, without the unreachable default gateway`, () => {
      const deployed = render(template);
      const expected = render(template, { otlpEndpoint: `127.0.0.1:${PORTS.otlp}` }).config;
      const actual = simulationConfig(deployed.config, PORTS);
      assert.deepEqual(actual.receivers, expected.receivers);
      assert.deepEqual(actual.processors, expected.processors);
      assert.deepEqual(Object.keys(actual.exporters), ['prometheus']);
      assert.deepEqual(actual.service.pipelines.metrics?.exporters, ['prometheus']);
      assert.deepEqual(
        actual.service.pipelines.metrics?.processors,
        expected.service.pipelines.metrics?.processors,
      );
      assert.equal((actual.exporters.prometheus as { endpoint: string }).endpoint, '127.0.0.1:4002');
      assert.equal((actual.extensions.health_check as { endpoint: string }).endpoint, '127.0.0.1:4004');
      assert.deepEqual((actual.service.telemetry.metrics as { readers: unknown }).readers, [
        { pull: { exporter: { prometheus: { host: '127.0.0.1', port: 4003 } } } },
      ]);
      assert.equal((actual.service.telemetry.metrics as { level: string }).level, 'detailed');
      // The deployed config itself is left as it was.
      assert.ok('hostmetrics' in deployed.config.receivers);
    });
  }

  it('keeps an otlp exporter that points somewhere real', () => {
    const actual = simulationConfig(
      render('process-baseline-v1', undefined, 'gateway.local:4317').config,
      PORTS,
    );
    assert.deepEqual(actual.service.pipelines.metrics?.exporters, ['prometheus', 'otlp']);
  });

  it('has nothing to simulate without a process scraper', () => {
    const config = render('process-baseline-v1').config;
    assert.equal(simulatedScraper({ ...config, receivers: { otlp: {} } }), undefined);
  });

  it('refuses a fleet bigger than one collector is sent, before starting anything', async () => {
    const deployer = new OtelcolDeployer({
      bin: '/nonexistent/otelcol',
      stateDir: '/nonexistent/state',
      sdDir: '/nonexistent/targets',
      processesPerHost: 50,
    });
    const rendered = render('process-baseline-v1');
    const outcome = await deployer.deploy({
      experimentId: 'exp-1',
      variant: 'baseline',
      template: rendered.template,
      params: {},
      config: rendered.config,
      namespace: 'phoenix-experiments',
      nodeSelector: {},
      hosts: 201,
      criticalProcesses: [],
    });
    assert.deepEqual(outcome, {
      ok: false,
      reason:
        '201 hosts × 50 processes is 10050 simulated processes, more than one collector here is sent (10000): target fewer hosts or lower PHOENIX_OTELCOL_PROCESSES_PER_HOST',
    });
  });

  it('refuses an experiment id that could leave its folder', async () => {
    const deployer = new OtelcolDeployer({ bin: '/x', stateDir: '/nonexistent', sdDir: '/nonexistent' });
    const rendered = render('process-baseline-v1');
    const outcome = await deployer.deploy({
      experimentId: '../etc',
      variant: 'baseline',
      template: rendered.template,
      params: {},
      config: rendered.config,
      namespace: 'n',
      nodeSelector: {},
      hosts: 1,
      criticalProcesses: [],
    });
    assert.equal(outcome.ok, false);
    assert.deepEqual(await deployer.teardown('../etc'), { variants: [] });
    assert.equal(await deployer.isDeployed('../etc', 'baseline'), false);
  });
});
