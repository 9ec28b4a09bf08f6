import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UnstorableEventError } from '../src/application/ports/event-store.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { mapKnownError, takeAccessTokens } from '../src/handlers/http/app.js';

describe('takeAccessTokens: the live feed token leaves the URL before anything logs it', () => {
  const cases: [string, string, string[]][] = [
    ['/api/v1/live', '/api/v1/live', []],
    ['/api/v1/live?from=0', '/api/v1/live?from=0', []],
    ['/api/v1/live?access_token=a.b.c', '/api/v1/live', ['a.b.c']],
    [
      '/api/v1/live?from=0&access_token=a.b.c&experimentId=x',
      '/api/v1/live?from=0&experimentId=x',
      ['a.b.c'],
    ],
    ['/api/v1/live?access%5Ftoken=a.b.c', '/api/v1/live', ['a.b.c']],
    ['/api/v1/live?%61ccess_token=a%2Eb.c', '/api/v1/live', ['a.b.c']],
    ['/api/v1/live?access_token=1&access_token=2', '/api/v1/live', ['1', '2']],
    ['/api/v1/live?access_token', '/api/v1/live', ['']],
    ['/api/v1/live?my_access_token=1&x=%20', '/api/v1/live?my_access_token=1&x=%20', []],
  ];
  for (const [url, rest, tokens] of cases) {
    it(url, () => assert.deepEqual(takeAccessTokens(url), { rest, tokens }));
  }
});

describe('PHOENIX_CORS_ORIGINS', () => {
  it('is a list of origins, none by default', () => {
    assert.deepEqual(loadConfig({}).PHOENIX_CORS_ORIGINS, []);
    assert.deepEqual(
      loadConfig({ PHOENIX_CORS_ORIGINS: ' https://dash.example.com, http://localhost:3000 ' })
        .PHOENIX_CORS_ORIGINS,
      ['https://dash.example.com', 'http://localhost:3000'],
    );
  });
  for (const bad of [
    '*',
    'https://dash.example.com/',
    'https://dash.example.com/app',
    'dash.example.com',
    'https://Dash.example.com',
    'https://dash.example.com:443',
    'ftp://x',
  ]) {
    it(`refuses '${bad}', naming the variable`, () => {
      assert.throws(
        () => loadConfig({ PHOENIX_CORS_ORIGINS: `https://ok.example.com,${bad}` }),
        (err: unknown) => err instanceof ConfigError && /^PHOENIX_CORS_ORIGINS: /.test(err.message),
      );
    });
  }
});

describe('mapKnownError', () => {
  it('answers an append the event store refused for its content with 400, not 500, and echoes nothing of it', () => {
    const mapped = mapKnownError(
      new UnstorableEventError('experiment-x', 'invalid input syntax: "secret\\u0000"'),
    );
    assert.equal(mapped?.problem.status, 400);
    assert.equal(mapped?.problem.type.endsWith('/validation'), true);
    assert.doesNotMatch(JSON.stringify(mapped?.problem), /secret/);
  });
});
