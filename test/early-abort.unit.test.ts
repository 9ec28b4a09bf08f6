import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assessProbe, type MissingSince, type ProbeFindings } from '../src/domain/early-abort.js';
import {
  decide,
  type ExistingExperiment,
  type ExperimentEvent,
  evolve,
  fold,
} from '../src/domain/experiment.js';
import type { ExperimentSpec } from '../src/domain/experiment-spec.js';
import { type ProbeCompletedAnswer, react, SAGA_ACTOR } from '../src/domain/lifecycle-saga.js';

/**
 * Early abort without I/O: given the missing processes earlier probes recorded, when a probe arrives,
 * then nothing, a recorded change, or an abort with its evidence; and the saga's part, given the
 * experiment's events.
 */

const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
const healthy = { restarts: 0, droppedPoints: 0 };
const probe = (s: number, missing: string[] | null, health: Partial<ProbeFindings['collectorHealth']> = {}) =>
  ({
    at: at(s),
    missingCriticalProcesses: missing,
    collectorHealth: { baseline: healthy, candidate: healthy, ...health },
  }) satisfies ProbeFindings;

describe('assessProbe: when a probe arrives', () => {
  const cases: {
    name: string;
    given: MissingSince[];
    when: ProbeFindings;
    grace?: number;
    expected: 'none' | { record: MissingSince[] } | { abort: RegExp; kind: string; overdue: string[] };
  }[] = [
    { name: 'a healthy run stays quiet', given: [], when: probe(30, []), expected: 'none' },
    {
      name: 'a newly missing process is recorded from this probe on',
      given: [],
      when: probe(30, ['node-1/sshd']),
      expected: { record: [{ process: 'node-1/sshd', since: at(30) }] },
    },
    {
      name: 'still missing within the grace: nothing new to record',
      given: [{ process: 'node-1/sshd', since: at(30) }],
      when: probe(140, ['node-1/sshd']),
      expected: 'none',
    },
    {
      name: 'missing for the whole grace: abort, naming it and since when',
      given: [{ process: 'node-1/sshd', since: at(30) }],
      when: probe(150, ['node-1/sshd']),
      expected: {
        abort: /1 critical process missing from the candidate for more than 120 s: node-1\/sshd/,
        kind: 'critical_process_missing',
        overdue: ['node-1/sshd'],
      },
    },
    {
      name: 'back before the grace ran out: the record is cleared, no abort',
      given: [{ process: 'node-1/sshd', since: at(30) }],
      when: probe(140, []),
      expected: { record: [] },
    },
    {
      name: 'gone again after coming back: the grace starts over',
      given: [],
      when: probe(200, ['node-1/sshd']),
      expected: { record: [{ process: 'node-1/sshd', since: at(200) }] },
    },
    {
      name: 'a probe that could not tell keeps what was recorded, and still aborts on it',
      given: [{ process: 'node-1/sshd', since: at(0) }],
      when: probe(125, null),
      expected: { abort: /node-1\/sshd/, kind: 'critical_process_missing', overdue: ['node-1/sshd'] },
    },
    {
      name: 'a grace of its own',
      given: [{ process: 'node-2/kubelet', since: at(0) }],
      when: probe(10, ['node-2/kubelet']),
      grace: 10,
      expected: {
        abort: /for more than 10 s/,
        kind: 'critical_process_missing',
        overdue: ['node-2/kubelet'],
      },
    },
    {
      name: 'a collector restart aborts at once',
      given: [],
      when: probe(30, [], { candidate: { restarts: 1, droppedPoints: 0 } }),
      expected: {
        abort: /the candidate collector restarted 1 time since the run started/,
        kind: 'collector_unhealthy',
        overdue: [],
      },
    },
    {
      name: 'dropped points abort at once, whichever variant',
      given: [],
      when: probe(30, [], { baseline: { restarts: 0, droppedPoints: 250 } }),
      expected: {
        abort: /the baseline collector dropped 250 points/,
        kind: 'collector_unhealthy',
        overdue: [],
      },
    },
    {
      name: 'unknown health is no evidence',
      given: [],
      when: probe(30, [], { candidate: { restarts: null, droppedPoints: null } }),
      expected: 'none',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = assessProbe(c.given, c.when, c.grace);
      if (c.expected === 'none') assert.deepEqual(got, { action: 'none' });
      else if ('record' in c.expected)
        assert.deepEqual(got, { action: 'record', missing: c.expected.record });
      else {
        assert.equal(got.action, 'abort');
        if (got.action !== 'abort') return;
        assert.match(got.reason, c.expected.abort);
        assert.equal(got.evidence.kind, c.expected.kind);
        assert.deepEqual(
          got.evidence.missingCriticalProcesses.map((m) => m.process),
          c.expected.overdue,
        );
        assert.equal(got.evidence.at, c.when.at);
      }
    });
  }
});

const ID = 'exp-1';
const spec: ExperimentSpec = {
  name: 'minimal vs baseline',
  baseline: { template: 'process-baseline-v1', params: {} },
  candidate: { template: 'process-minimal-v1', params: {} },
  target: { namespace: 'ns', nodeSelector: {}, hosts: 2 },
  durationSeconds: 600,
  criticalProcesses: ['^sshd$'],
  successCriteria: {
    minCardinalityReductionPct: 50,
    maxCriticalProcessLossPct: 0,
    maxCollectorCpuOverheadPct: 10,
    criticalGraceSeconds: 60,
  },
};
const running: ExperimentEvent[] = [
  { type: 'ExperimentCreated', data: { at: at(-10), experimentId: ID, spec } },
  { type: 'ExperimentStarted', data: { at: at(-5) } },
  { type: 'VariantDeployed', data: { at: at(-1), variant: 'baseline' } },
  { type: 'VariantDeployed', data: { at: at(0), variant: 'candidate' } },
  { type: 'ExperimentRunStarted', data: { at: at(0), runEndsAt: at(600), reason: 'both variants deployed' } },
];
const answer = (findings: ProbeFindings, commandId = 'probe-cmd'): ProbeCompletedAnswer => ({
  type: 'ProbeCompleted',
  commandId,
  experimentId: ID,
  at: findings.at,
  correlationId: ID,
  findings,
});

describe('the saga on probes', () => {
  it('asks for a probe of a running experiment, with an id from the experiment and the interval', () => {
    const state = { spec, started: true, runStartedAt: at(0), ended: false };
    const r = react(undefined, { type: 'probe-due', experimentId: ID, state, slot: 7 });
    assert.equal(r.commands.length, 1);
    const c = r.commands[0];
    assert.ok(c?.kind === 'worker' && c.command.type === 'ProbeExperiment');
    assert.equal(c.command.causationId, `probe:${ID}:7`);
    assert.equal(c.command.runStartedAt, at(0));
    for (const s of [
      { ...state, ended: true },
      { ...state, runStartedAt: null },
      { ...state, started: false },
      undefined,
    ])
      assert.deepEqual(
        react(undefined, { type: 'probe-due', experimentId: ID, state: s, slot: 7 }).commands,
        [],
      );
  });

  it('records a change, then fails the run with the evidence once the grace has passed', () => {
    const first = react(undefined, {
      type: 'probe',
      result: answer(probe(30, ['node-0001/sshd']), 'p1'),
      experiment: fold(running),
    });
    assert.equal(first.commands.length, 1);
    const record = first.commands[0];
    assert.ok(record?.kind === 'experiment' && record.command.type === 'RecordProbe');
    assert.equal(record.commandId, 'result:p1');
    assert.equal(record.actor, SAGA_ACTOR);
    // The decider records it as an ExperimentProbed event; the state keeps since when.
    const probed = decide(record.command, fold(running));
    assert.deepEqual(
      probed.map((e) => e.type),
      ['ExperimentProbed'],
    );
    const after = fold(probed, fold(running));

    const quiet = react(undefined, {
      type: 'probe',
      result: answer(probe(60, ['node-0001/sshd']), 'p2'),
      experiment: after,
    });
    assert.deepEqual(quiet.commands, []);

    const abort = react(undefined, {
      type: 'probe',
      result: answer(probe(95, ['node-0001/sshd']), 'p3'),
      experiment: after,
    });
    const fail = abort.commands[0];
    assert.ok(fail?.kind === 'experiment' && fail.command.type === 'FailExperiment');
    assert.match(
      fail.command.reason,
      /^early abort: 1 critical process missing from the candidate for more than 60 s: node-0001\/sshd/,
    );
    assert.equal(fail.command.abort?.missingCriticalProcesses[0]?.since, at(30));
    const failed = fold(decide(fail.command, after), after) as ExistingExperiment;
    assert.equal(failed.status, 'failed');
    assert.equal(failed.abort?.kind, 'critical_process_missing');
    assert.match(failed.statusReason ?? '', /early abort/);
  });

  it('ignores a probe that comes back after the run ended', () => {
    const ended = [...running, { type: 'ExperimentRunCompleted', data: { at: at(600) } } as ExperimentEvent];
    const r = react(undefined, {
      type: 'probe',
      result: answer(probe(601, [], { candidate: { restarts: 3, droppedPoints: 0 } })),
      experiment: fold(ended),
    });
    assert.deepEqual(r.commands, []);
  });

  it('RecordProbe is refused once the run is over (a late probe changes nothing)', () => {
    const done = evolve(fold(running), { type: 'ExperimentRunCompleted', data: { at: at(600) } });
    assert.throws(
      () => decide({ type: 'RecordProbe', missing: [], at: at(601) }, done),
      /not allowed in state 'analyzing'/,
    );
  });
});
