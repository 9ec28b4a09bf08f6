/**
 * The Phoenix side of an otelcol deployment, in a process of its own so a test can kill it outright:
 * deploys the variant given as JSON in argv[2] with an OtelcolDeployer on the folders of argv[3..4],
 * prints the outcome as one JSON line, and keeps its simulator running until killed.
 */
import { OtelcolDeployer } from '../../src/adapters/otelcol-deployer.js';

const [, , deployment, stateDir, sdDir, bin] = process.argv as [
  string,
  string,
  string,
  string,
  string,
  string,
];
const deployer = new OtelcolDeployer({ bin, stateDir, sdDir, processesPerHost: 25 });
const outcome = await deployer.deploy(JSON.parse(deployment));
process.stdout.write(`${JSON.stringify(outcome)}\n`);
setInterval(() => undefined, 60_000);
