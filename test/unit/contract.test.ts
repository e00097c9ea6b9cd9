// The output contract's schemas: they accept what the commands print and reject a field that was
// renamed (the same thing must keep the same name in every command), by zod and by the shipped
// JSON Schema alike; the package ships a JSON Schema for every command; and the error object
// keeps its own code whatever the error's details are called.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { printer } from '../../src/cli/output.js';
import { OUTPUT_SCHEMAS, type OutputCommand } from '../../src/contract/index.js';
import { HpError } from '../../src/errors.js';
import { contractProblems } from '../contract-validate.js';

const ACTIVITY = '6f1c2b1e-8f4a-4c1e-9d2b-0a1b2c3d4e5f';
const level = { baselineId: '2026.10', sequence: 1, packageId: '2026.10-hp1', kbId: 'KB5046101' };
const proc = { pid: 1234, comm: 'greetd', outcome: 'Patched', mode: 'stop', pauseUs: 101.5, threads: 1, sites: [{ object: 'bin/greetd', function: 'greet', action: 'patch', kind: 'rel32', form: 'entry' }] };

/** A valid output of each command, as the command prints it. */
const samples: Partial<Record<OutputCommand, Record<string, unknown>>> = {
  apply: {
    status: 'Succeeded', installationActivityId: ACTIVITY, activityId: ACTIVITY, rebootStatus: 'NotNeeded', maintenanceWindowExceeded: false,
    excludedPatchCount: 0, notSelectedPatchCount: 0, pendingPatchCount: 0, installedPatchCount: 1, failedPatchCount: 0,
    patches: [{ patchId: '2026.10-hp1', name: 'fix', kbId: 'KB5046101', classifications: ['Security'], rebootBehavior: 'NeverReboots', installationState: 'Installed' }],
    startDateTime: '2026-10-13T10:00:00.000Z', processes: [proc], hotpatchLevel: level,
  },
  revert: { status: 'Succeeded', activityId: ACTIVITY, from: level, to: { baselineId: '2026.10', sequence: 0 }, processes: [{ ...proc, outcome: 'Reverted' }] },
  status: {
    enrollment: 'Enabled', installedBaseline: { baselineId: '2026.10', kbId: 'KB5046001' }, runningBaselines: ['2026.10'], rebootPending: false,
    rebootPendingReasons: [], rebootStatus: 'Completed', hotpatch: { ...level, appliedAt: '2026-10-13T10:00:00.000Z' }, compliant: true,
    processes: [{ pid: 1234, comm: 'greetd', baselineId: '2026.10', hotpatchSequence: 1, compliant: true, reasons: [], files: [{ path: '2026.10/bin/greetd', buildId: 'ab12', deleted: false }],
      functions: [{ object: 'bin/greetd', function: 'greet', state: 'patched', form: 'entry', packageId: '2026.10-hp1', expectedPackageId: '2026.10-hp1' }] }],
    services: [{ name: 'greetd', pid: 1234, baselineId: '2026.10', alive: true }],
  },
  history: { entries: [{ time: '2026-10-13T10:00:00.000Z', action: 'apply', packageId: '2026.10-hp1', kbId: 'KB5046101', result: 'Succeeded', detail: { sequence: 1 }, activityId: ACTIVITY }], corruptLines: 0 },
  reboot: {
    kind: 'reboot', status: 'Succeeded', rebootStatus: 'Completed', activityId: ACTIVITY, fromBaselineId: '2026.10', toBaselineId: '2026.11',
    stopped: [{ name: 'greetd', pid: 1234, how: 'SIGTERM' }], started: [{ name: 'greetd', pid: 1240, readyMs: 3 }], kept: [], downtimeMs: 5,
    hotpatch: { ...level, status: 'Succeeded', processes: [proc] },
  },
  try: {
    pid: 1234, mode: 'stop', pauseUs: 90.2, threads: 1, attempts: 1, realtime: true, object: { path: '/x/loop-pie', buildId: 'ab12' },
    patch: { path: '/x/loop_fix.so', base: '0x7f0000000000', size: 8192, mapping: 'hp-agent:loop_fix.so' }, bindings: [{ name: 'helper', address: '0x55d0c0001130', from: '/x/loop-pie' }],
    sites: [{ action: 'patch', object: '/x/loop-pie', function: 'compute', replacement: 'compute_v2', functionAddress: '0x55d0c0001139', form: 'entry', siteAddress: '0x55d0c0001139', kind: 'rel32', keptEndbr64: false, target: '0x7f0000001000', before: '554889e5c3', after: 'e9c2fe0f00' }],
  },
  'trust-list': { keys: [{ keyId: '0123456789abcdef', name: null, added: '2026-10-13T10:00:00.000Z' }] },
  error: { error: { code: 'NOT_CURRENT_LEVEL', message: 'no', unchanged: true, baselineId: '2026.10' } },
};

/** A deep copy of `value` with the key `from` renamed `to` at the path given (dots; numbers index arrays). */
function renamed(value: Record<string, unknown>, at: string, to: string): Record<string, unknown> {
  const copy = structuredClone(value);
  const keys = at.split('.');
  const last = keys.pop()!;
  let node: any = copy;
  for (const k of keys) node = node[k];
  expect(node, at).toHaveProperty(last);
  node[to] = node[last];
  delete node[last];
  return copy;
}

function replaced(value: Record<string, unknown>, at: string, v: unknown): Record<string, unknown> {
  const copy = structuredClone(value);
  const keys = at.split('.');
  const last = keys.pop()!;
  let node: any = copy;
  for (const k of keys) node = node[k];
  node[last] = v;
  return copy;
}

describe('output schemas', () => {
  it.each(Object.keys(samples) as OutputCommand[])('%s accepts what the command prints', (command) => {
    expect(contractProblems(command, samples[command])).toEqual([]);
  });

  // Each of these is a name the contract fixed: printing the old (or another) name must fail.
  it.each([
    ['apply', 'patches.0.kbId', 'kb'],
    ['apply', 'activityId', 'activityID'],
    ['apply', 'hotpatchLevel.kbId', 'kb'],
    ['revert', 'from.kbId', 'kb'],
    ['revert', 'to.baselineId', 'baseline'],
    ['status', 'installedBaseline.baselineId', 'id'],
    ['status', 'hotpatch.kbId', 'kb'],
    ['status', 'processes.0.baselineId', 'baseline'],
    ['history', 'entries.0.kbId', 'kb'],
    ['reboot', 'toBaselineId', 'toBaseline'],
    ['reboot', 'hotpatch.packageId', 'package'],
    ['try', 'sites.0.siteAddress', 'site'],
    ['trust-list', 'keys.0.keyId', 'id'],
    ['error', 'error.unchanged', 'changed'],
  ] as [OutputCommand, string, string][])('%s rejects %s renamed %s', (command, at, to) => {
    const problems = contractProblems(command, renamed(samples[command]!, at, to));
    expect(problems.some((p) => p.startsWith('zod'))).toBe(true);
    expect(problems.some((p) => p.startsWith('json-schema'))).toBe(true);
  });

  it.each([
    ['try', 'sites.0.functionAddress', 0x55d0c0001139],
    ['try', 'patch.base', 0x7f0000000000],
    ['apply', 'rebootStatus', 'Completed '],
    ['apply', 'activityId', 'not-a-uuid'],
  ] as [OutputCommand, string, unknown][])('%s rejects %s = %j (addresses are 0x strings; Azure spellings exact)', (command, at, v) => {
    const problems = contractProblems(command, replaced(samples[command]!, at, v));
    expect(problems.some((p) => p.startsWith('zod'))).toBe(true);
    expect(problems.some((p) => p.startsWith('json-schema'))).toBe(true);
  });

  it('the package ships the JSON Schema of every command', () => {
    const root = path.resolve(import.meta.dirname, '../..');
    const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    const files = new Set((packed.files as { path: string }[]).map((f) => f.path));
    for (const command of Object.keys(OUTPUT_SCHEMAS)) expect(files, command).toContain(`schemas/${command}.json`);
  });
});

describe('the error object', () => {
  it('keeps its own code, message and unchanged when a detail has the same name', () => {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true));
    let exit: number;
    try {
      // As history.ts reports a failed append: the errno is a detail called `code`.
      exit = printer(true).error(new HpError('WRITE_FAILED', 'cannot append to the history', { path: '/h/history.jsonl', code: 'ENOSPC', unchanged: false }, true));
    } finally {
      spy.mockRestore();
    }
    const body = JSON.parse(out.join(''));
    expect(body.error).toMatchObject({ code: 'WRITE_FAILED', message: 'cannot append to the history', unchanged: true, path: '/h/history.jsonl' });
    expect(exit).toBe(3);
    expect(contractProblems('error', body)).toEqual([]);
  });
});
