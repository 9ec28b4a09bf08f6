import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { toYaml } from '../src/domain/pipelines/index.js';
import {
  findCollector,
  freePort,
  PortTakenError,
  type RunningCollector,
  startCollector,
  withFreshPorts,
} from './support/otelcol.js';

/**
 * The tests' collectors listen on ports picked free, and a port can be taken between the pick and the
 * collector's bind (CI failed so: `bind: address already in use` while two collectors started at
 * once). The harness then starts the collector again on new ports instead of failing the suite.
 */

const collector = findCollector();
if (collector.skip) console.log(`# skipping the collector port tests: ${collector.skip}`);

/** The smallest collector: an OTLP receiver into the debug exporter, with its health check. */
const minimal = (otlp: number, health: number) =>
  toYaml({
    receivers: { otlp: { protocols: { http: { endpoint: `127.0.0.1:${otlp}` } } } },
    exporters: { debug: {} },
    extensions: { health_check: { endpoint: `127.0.0.1:${health}` } },
    service: {
      extensions: ['health_check'],
      telemetry: { metrics: { level: 'none' } },
      pipelines: { metrics: { receivers: ['otlp'], exporters: ['debug'] } },
    },
  });

describe('collector ports picked free', () => {
  it('freePort never hands out the same port twice in a process', async () => {
    const ports = new Set<number>();
    for (let i = 0; i < 200; i++) ports.add(await freePort());
    assert.equal(ports.size, 200);
  });

  describe('with the collector', { skip: collector.skip || false }, () => {
    const bin = collector.bin as string;
    const held: Server[] = [];
    const running: RunningCollector[] = [];
    after(async () => {
      for (const r of running) await r.stop();
      for (const h of held) h.close();
    });
    const hold = async (): Promise<number> => {
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      held.push(server);
      return (server.address() as { port: number }).port;
    };

    it('a port taken before the collector binds it is a PortTakenError; other failures are not', async () => {
      const taken = await hold();
      const health = await freePort();
      await assert.rejects(
        startCollector(bin, minimal(taken, health), `http://127.0.0.1:${health}/`),
        (err: Error) => err instanceof PortTakenError && /address already in use/.test(err.message),
      );
      const other = await freePort();
      await assert.rejects(
        startCollector(
          bin,
          'receivers: {}\nexporters: {}\nservice: {pipelines: {}}\n',
          `http://127.0.0.1:${other}/`,
        ),
        (err: Error) => !(err instanceof PortTakenError),
      );
    });

    it('withFreshPorts starts again on new ports, and gives up after its tries', async () => {
      const taken = await hold();
      let attempts = 0;
      const started = await withFreshPorts(async () => {
        attempts++;
        const otlp = attempts === 1 ? taken : await freePort();
        const health = await freePort();
        return startCollector(bin, minimal(otlp, health), `http://127.0.0.1:${health}/`);
      });
      running.push(started);
      assert.equal(attempts, 2, 'the first start met the taken port, the second started');

      let tries = 0;
      await assert.rejects(
        withFreshPorts(async () => {
          tries++;
          const health = await freePort();
          return startCollector(bin, minimal(taken, health), `http://127.0.0.1:${health}/`);
        }, 2),
        PortTakenError,
      );
      assert.equal(tries, 2);
    });
  });
});
