import { randomBytes } from 'node:crypto';
import { InProcessBroker } from '../../src/adapters/inprocess-bus.js';
import { NatsBus } from '../../src/adapters/nats-bus.js';
import type { Bus, DeployVariant } from '../../src/application/ports/bus.js';

/**
 * The buses a suite runs against: the in-process one and NATS JetStream at NATS_URL (skipped with the
 * reason when it is not set). Each `setup()` starts an isolated installation — a broker of its own, or
 * streams under a unique prefix — and `teardown()` removes it (NATS streams and consumers included).
 */
export interface BusSettings {
  readonly maxDeliveries: number;
  /** NATS only: how long an unacknowledged delivery waits before it is redelivered. */
  readonly ackWaitMs: number;
  readonly backoffMs: number;
}

export interface BusInstallation {
  /** A new client of the installation (a new connection, for NATS). */
  open(): Promise<Bus>;
  teardown(): Promise<void>;
  /** NATS only: the prefix of this installation's subjects and streams. */
  readonly prefix?: string;
}

export interface BusFixture {
  readonly name: string;
  readonly skip: string | undefined;
  setup(settings?: Partial<BusSettings>): Promise<BusInstallation>;
}

const DEFAULTS: BusSettings = { maxDeliveries: 4, ackWaitMs: 1_500, backoffMs: 50 };

export const natsUrl = (): string | undefined => process.env.NATS_URL || undefined;

export const natsSkipReason = (): string | undefined =>
  natsUrl() ? undefined : 'NATS_URL is not set: no real NATS server to test against (CI sets it)';

/** A prefix no other run uses, so parallel runs and leftovers never meet. */
export const uniquePrefix = (what = 'phxtest'): string => `${what}_${randomBytes(5).toString('hex')}`;

export const inProcessBusFixture = (): BusFixture => ({
  name: 'in-process',
  skip: undefined,
  async setup(settings = {}) {
    const s = { ...DEFAULTS, ...settings };
    const broker = new InProcessBroker({ maxDeliveries: s.maxDeliveries, backoffMs: s.backoffMs });
    const clients: Bus[] = [];
    return {
      async open() {
        const bus = broker.connect();
        clients.push(bus);
        return bus;
      },
      async teardown() {
        await Promise.all(clients.map((c) => c.close({ graceMs: 0 })));
        broker.close();
      },
    };
  },
});

export const natsBusFixture = (): BusFixture => ({
  name: 'NATS JetStream',
  skip: natsSkipReason(),
  async setup(settings = {}) {
    const s = { ...DEFAULTS, ...settings };
    const prefix = uniquePrefix();
    const clients: NatsBus[] = [];
    const open = async () => {
      const bus = await NatsBus.connect({
        servers: natsUrl()!,
        prefix,
        name: `test-${prefix}`,
        maxDeliveries: s.maxDeliveries,
        ackWaitMs: s.ackWaitMs,
        backoffMs: s.backoffMs,
        pullExpiresMs: 1_000,
        duplicateWindowMs: 60_000,
      });
      clients.push(bus);
      return bus;
    };
    return {
      prefix,
      open,
      async teardown() {
        const admin = await open();
        await admin.destroy();
        await Promise.all(clients.map((c) => c.close({ graceMs: 0 })));
      },
    };
  },
});

export const busFixtures = (): BusFixture[] => [inProcessBusFixture(), natsBusFixture()];

/** Polls until the predicate holds; fails with `what` after the timeout. */
export const waitFor = async (what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let counter = 0;
/** A minimal, valid DeployVariant command. */
type DeployInput = Omit<DeployVariant, 'params' | 'criticalProcesses' | 'nodeSelector'> &
  Partial<Pick<DeployVariant, 'params' | 'criticalProcesses' | 'nodeSelector'>>;

export const deployCommand = (overrides: Partial<DeployInput> = {}): DeployInput => ({
  type: 'DeployVariant',
  commandId: `cmd-${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`,
  experimentId: 'exp-1',
  variant: 'baseline',
  template: 'process-baseline-v1',
  hosts: 2,
  namespace: 'phoenix-experiments',
  ...overrides,
});
