import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config.js';
import { configRefusal } from './support/config.js';

/** PHOENIX_DEPLOYER=otelcol's configuration: a missing binary is said at start-up, by name. */
describe('configuration of the otelcol data plane', () => {
  const problem = configRefusal;

  it('names PHOENIX_OTELCOL when there is no collector binary', () => {
    assert.match(
      problem({ PHOENIX_DEPLOYER: 'otelcol', PHOENIX_OTELCOL: '/nonexistent/otelcol' }),
      /^PHOENIX_OTELCOL: no collector binary at \/nonexistent\/otelcol .*build:otelcol/,
    );
  });

  it('names PHOENIX_PROMETHEUS_BIN when Phoenix must run a Prometheus and cannot find one', () => {
    assert.match(
      problem({
        PHOENIX_DEPLOYER: 'otelcol',
        PHOENIX_OTELCOL: '/bin/true',
        PHOENIX_PROMETHEUS_BIN: 'no-such-prometheus-here',
      }),
      /^PHOENIX_PROMETHEUS_BIN: no-such-prometheus-here is not an executable/,
    );
  });

  it('needs no Prometheus binary with PROMETHEUS_URL, and no PROMETHEUS_URL with the managed one', () => {
    const own = loadConfig({
      PHOENIX_DEPLOYER: 'otelcol',
      PHOENIX_OTELCOL: '/bin/true',
      PHOENIX_PROMETHEUS_BIN: 'no-such-prometheus-here',
      PROMETHEUS_URL: 'http://prometheus:9090',
      PHOENIX_PROMETHEUS_SD_DIR: '/etc/prometheus/phoenix',
    });
    assert.equal(own.PHOENIX_PROMETHEUS_SD_DIR, '/etc/prometheus/phoenix');
    const managed = loadConfig({
      PHOENIX_DEPLOYER: 'otelcol',
      PHOENIX_ANALYZER: 'prometheus',
      PHOENIX_OTELCOL: '/bin/true',
      PHOENIX_PROMETHEUS_BIN: '/bin/true',
    });
    assert.equal(managed.PROMETHEUS_URL, undefined);
    assert.equal(managed.PHOENIX_OTELCOL_PROCESSES_PER_HOST, 50);
    assert.equal(managed.PHOENIX_OTELCOL_MAX_PROCESSES_PER_COLLECTOR, 10_000);
    assert.equal(managed.PHOENIX_OTELCOL_MAX_SHARDS, 8);
  });

  it('still requires PROMETHEUS_URL for the Prometheus analyzer over another deployer', () => {
    assert.match(problem({ PHOENIX_ANALYZER: 'prometheus' }), /^PROMETHEUS_URL: is required/);
  });

  it('refuses shard limits that are not positive integers', () => {
    assert.match(problem({ PHOENIX_OTELCOL_MAX_SHARDS: '0' }), /PHOENIX_OTELCOL_MAX_SHARDS/);
    assert.match(
      problem({ PHOENIX_OTELCOL_MAX_PROCESSES_PER_COLLECTOR: 'many' }),
      /PHOENIX_OTELCOL_MAX_PROCESSES_PER_COLLECTOR/,
    );
  });

  it('does not look for binaries with the default deployer', () => {
    assert.equal(loadConfig({ PHOENIX_OTELCOL: '/nonexistent' }).PHOENIX_DEPLOYER, 'local');
  });
});
