import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { homeLayout } from '../../src/agent/home.js';
import {
  beginOperation,
  canTransitionReboot,
  defaultState,
  endOperation,
  loadState,
  pendingOperation,
  REBOOT_STATUSES,
  saveState,
  transitionReboot,
  type AgentState,
  type RebootStatus,
} from '../../src/agent/state.js';

let home: string;

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-state-'));
});

afterEach(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof HpError ? e.code : `not an HpError: ${String(e)}`;
  }
  return undefined;
}

async function codeOfAsync(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (e instanceof HpError ? e.code : `not an HpError: ${String(e)}`),
  );
}

const sample: AgentState = {
  schemaVersion: 1,
  enrollment: 'Enabled',
  rebootStatus: 'Required',
  activeBaseline: { id: 'base-1', kb: 'KB5000001', packageId: 'base-1', installedAt: '2025-01-14T10:00:00.000Z' },
  pendingBaseline: { id: 'base-2', kb: 'KB5000002', packageId: 'base-2', installedAt: '2025-04-08T10:00:00.000Z' },
  hotpatch: { baselineId: 'base-1', sequence: 2, packageId: 'hp-1-2', kb: 'KB5000003', appliedAt: '2025-03-11T10:00:00.000Z' },
  services: [{ name: 'web', pid: 1234, startTime: 987654, file: '/x/system/base-1/bin/web', baselineId: 'base-1', startedAt: '2025-01-14T10:01:00.000Z' }],
};

describe('agent state', () => {
  it('defaults when there is no state file', async () => {
    expect(await loadState(home)).toEqual(defaultState());
    expect(defaultState()).toEqual({ schemaVersion: 1, enrollment: 'Enabled', rebootStatus: 'NotNeeded', services: [] });
  });

  it('round-trips through an atomic save with mode 0600', async () => {
    await saveState(home, sample);
    expect(await loadState(home)).toEqual(sample);
    expect(fs.statSync(homeLayout(home).state).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(home)).toEqual(['state.json']);
  });

  it('fills defaults for fields an older file lacks', async () => {
    fs.writeFileSync(homeLayout(home).state, JSON.stringify({ schemaVersion: 1 }));
    expect(await loadState(home)).toEqual(defaultState());
  });

  it('refuses a damaged, malformed or foreign-version state instead of starting over', async () => {
    const file = homeLayout(home).state;
    fs.writeFileSync(file, '{"schemaVersion": 1, "enroll');
    expect(await codeOfAsync(loadState(home))).toBe('STATE_CORRUPT');
    fs.writeFileSync(file, JSON.stringify({ schemaVersion: 1, enrollment: 'Maybe' }));
    expect(await codeOfAsync(loadState(home))).toBe('STATE_CORRUPT');
    fs.writeFileSync(file, JSON.stringify({ schemaVersion: 2 }));
    expect(await codeOfAsync(loadState(home))).toBe('STATE_UNSUPPORTED');
  });

  it('refuses to save an invalid state and leaves the file unchanged', async () => {
    await saveState(home, sample);
    const before = fs.readFileSync(homeLayout(home).state, 'utf8');
    const bad = { ...sample, rebootStatus: 'Rebooting' } as unknown as AgentState;
    expect(await codeOfAsync(saveState(home, bad))).toBe('STATE_INVALID');
    expect(fs.readFileSync(homeLayout(home).state, 'utf8')).toBe(before);
  });
});

describe('reboot status', () => {
  const allowed: [RebootStatus, RebootStatus][] = [
    ['NotNeeded', 'Required'],
    ['Required', 'Started'],
    ['Started', 'Completed'],
    ['Started', 'Failed'],
    ['Completed', 'NotNeeded'],
    ['Completed', 'Required'],
    ['Failed', 'NotNeeded'],
    ['Failed', 'Required'],
    ['Unknown', 'NotNeeded'],
    ['Unknown', 'Required'],
  ];

  it('moves only along NotNeeded -> Required -> Started -> Completed | Failed', () => {
    for (const from of REBOOT_STATUSES) {
      for (const to of REBOOT_STATUSES) {
        const state = { ...defaultState(), rebootStatus: from };
        const ok = from === to || allowed.some(([f, t]) => f === from && t === to);
        expect(canTransitionReboot(from, to), `${from} -> ${to}`).toBe(ok);
        if (ok) {
          const next = transitionReboot(state, to);
          expect(next.rebootStatus).toBe(to);
          expect(state.rebootStatus).toBe(from); // not mutated
        } else {
          expect(codeOf(() => transitionReboot(state, to)), `${from} -> ${to}`).toBe('BAD_REBOOT_TRANSITION');
        }
      }
    }
  });

  it('says what is allowed when it refuses', () => {
    expect(() => transitionReboot({ ...defaultState(), rebootStatus: 'NotNeeded' }, 'Completed')).toThrow(
      /from NotNeeded to Completed: from NotNeeded it may only move to Required/,
    );
  });

  it('a whole cycle', () => {
    let s = defaultState();
    for (const to of ['Required', 'Started', 'Completed', 'Required', 'Started', 'Failed', 'NotNeeded'] as const) {
      s = transitionReboot(s, to);
    }
    expect(s.rebootStatus).toBe('NotNeeded');
  });
});

describe('half-done operations', () => {
  it('are on disk while running, found by the next run, and cleared at the end', async () => {
    const s = await loadState(home);
    expect(pendingOperation(s)).toBeUndefined();
    await beginOperation(home, s, 'reboot', { from: 'base-1', to: 'base-2' });
    // "the agent is killed here": the next run reads the state from disk
    const next = await loadState(home);
    expect(pendingOperation(next)).toMatchObject({ kind: 'reboot', detail: { from: 'base-1', to: 'base-2' } });
    expect(await codeOfAsync(beginOperation(home, next, 'apply'))).toBe('OPERATION_PENDING');
    const repaired = await endOperation(home, { ...next, rebootStatus: 'Required' });
    expect(pendingOperation(repaired)).toBeUndefined();
    expect(await loadState(home)).toEqual({ ...defaultState(), rebootStatus: 'Required' });
  });
});
