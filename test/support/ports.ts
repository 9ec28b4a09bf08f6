/**
 * Ports for the test processes a suite starts (collectors, Prometheus), picked free by the kernel.
 */
import { createServer } from 'node:net';

/** Ports {@link freePort} handed out lately: never handed out twice within a test process. */
const handedOut = new Set<number>();

/**
 * A port nobody listens on right now (the kernel's pick), for a collector's listeners, and not one
 * this process handed out before (the kernel may pick a port again once it is closed). Something else
 * can still take it before the process binds it: {@link withFreshPorts} starts again then.
 */
export const freePort = async (): Promise<number> => {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const port = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
};

/** The process exited because a port picked free was taken before it could bind it. */
export class PortTakenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortTakenError';
  }
}

/**
 * Runs `start` (which picks its ports with {@link freePort} and starts what listens on them) again,
 * on new ports, when a port was taken between the pick and the bind ({@link PortTakenError}); at most
 * `tries` times. Other failures are not retried.
 */
export const withFreshPorts = async <T>(start: () => Promise<T>, tries = 3): Promise<T> => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (!(err instanceof PortTakenError) || attempt >= tries) throw err;
    }
  }
};
