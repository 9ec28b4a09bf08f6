import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../src/config.js';

/** The message of the ConfigError `loadConfig` refuses `env` with; fails the test when it accepts it. */
export const configRefusal = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  assert.fail('the configuration was accepted');
};
