import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config.js';
import { configRefusal } from './support/config.js';

/** The workers' health port and the saga's sweep interval, as the environment gives them. */
describe('configuration of worker health and the sweep', () => {
  const problem = configRefusal;

  it('serves no worker health unless asked, and takes a port from 0 to 65535', () => {
    assert.equal(loadConfig({}).PHOENIX_WORKER_HEALTH_PORT, undefined);
    assert.equal(loadConfig({ PHOENIX_WORKER_HEALTH_PORT: '8081' }).PHOENIX_WORKER_HEALTH_PORT, 8081);
    assert.equal(loadConfig({ PHOENIX_WORKER_HEALTH_PORT: '0' }).PHOENIX_WORKER_HEALTH_PORT, 0);
    assert.match(problem({ PHOENIX_WORKER_HEALTH_PORT: '70000' }), /PHOENIX_WORKER_HEALTH_PORT/);
    assert.match(problem({ PHOENIX_WORKER_HEALTH_PORT: 'http' }), /PHOENIX_WORKER_HEALTH_PORT/);
  });

  it('sweeps every 10 minutes by default; 0 is at start only; under a minute is refused', () => {
    assert.equal(loadConfig({}).PHOENIX_SWEEP_INTERVAL_SECONDS, 600);
    assert.equal(loadConfig({ PHOENIX_SWEEP_INTERVAL_SECONDS: '0' }).PHOENIX_SWEEP_INTERVAL_SECONDS, 0);
    assert.equal(loadConfig({ PHOENIX_SWEEP_INTERVAL_SECONDS: '60' }).PHOENIX_SWEEP_INTERVAL_SECONDS, 60);
    assert.match(
      problem({ PHOENIX_SWEEP_INTERVAL_SECONDS: '5' }),
      /PHOENIX_SWEEP_INTERVAL_SECONDS.*0 \(at start only\) or at least 60/,
    );
  });
});
