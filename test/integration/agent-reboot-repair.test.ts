// Every step of a reboot is repairable (issue 11 §2), and a boot or a refusal says what really
// happened (issue 10, defects 2, 5 and 7). The agent runs as its own process and is killed at a
// named step by the test-only hook HP_AGENT_TEST_KILL_AT (src/agent/kill-point.ts): SIGKILL, so
// no handler, finally or lock release runs. Afterwards the machine must hold no duplicate service,
// and the next command must finish the reboot and say so.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { storedPackageDir } from '../../src/agent/store.js';
import { processExists, processState } from '../../src/proc/stat.js';
import { agent, answers, BASELINE, bootMachine, cleanUp, expected, newHome, pkg, servicePid, startAgent, type AgentResult, type Machine } from './agent-helpers.js';
import { demoPublicKey } from '../../src/demo/fixture-packages.js';


/** PIDs of the live processes whose executable is the home's `bin/greetd` (of any baseline). */
function greetdProcesses(home: string): number[] {
  const system = path.join(home, 'system') + path.sep;
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const exe = fs.readlinkSync(`/proc/${name}/exe`);
      if (exe.startsWith(system) && exe.endsWith('/bin/greetd') && processExists(Number(name))) out.push(Number(name));
    } catch {
      // gone, or not ours
    }
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The launcher a killed agent left behind may still be starting its service: wait until the
 * number of greetd processes has not changed for a moment, then return them.
 */
async function settledGreetd(home: string): Promise<number[]> {
  let last = greetdProcesses(home);
  for (let quiet = 0; quiet < 5; ) {
    await sleep(100);
    const now = greetdProcesses(home);
    quiet = now.join() === last.join() ? quiet + 1 : 0;
    last = now;
  }
  return last;
}

function expectKilled(r: AgentResult): void {
  expect(r.signal, `the agent was not killed: exit ${r.code} ${r.stdout}${r.stderr}`).toBe('SIGKILL');
}

/** One greetd runs, the state records exactly it, it answers at `level`, and status is clean. */
async function expectOneServiceAt(m: Machine, level: string): Promise<void> {
  const running = greetdProcesses(m.home);
  expect(running, 'greetd processes').toHaveLength(1);
  expect(servicePid(m)).toBe(running[0]);
  expect(await answers(m.sock, level)).toEqual(expected[level]);
  const st = await agent(m.home, ['status']);
  expect(st.json.interruptedOperation).toBeUndefined();
  expect(st.json.compliant, JSON.stringify(st.json.processes)).toBe(true);
  expect(st.json.processes.map((p: any) => p.pid)).toEqual(running);
}

// Every step of reboot where the agent can die, in the order it reaches them.
const REBOOT_STEPS = [
  'reboot:intent-saved', // intent recorded, nothing done
  'reboot:stopped', // the old service stopped
  'reboot:switched', // baseline pointers written
  'reboot:before-launch',
  'service:launcher-spawned', // the launcher runs; its service's PID is not known to the agent yet
  'reboot:launched', // PID recorded in the intent
  'service:launched', // ... but no pid file written yet
  'service:pid-file-written', // waiting for READY
  'reboot:ready', // the service is ready, not yet in state.services
  'reboot:before-level', // services up, hotpatch level not re-applied yet
  'reboot:after-level', // level re-applied, intent not cleared yet
];

describe('an agent killed at any step of a reboot', () => {
  // One machine at hotpatch level 1 for every step: each test leaves it repaired and checked.
  let m: Machine;
  beforeAll(async () => {
    m = await bootMachine();
    expect((await agent(m.home, ['apply', pkg('2026.10-hp1')])).code).toBe(0);
  });
  afterAll(cleanUp);

  for (const step of REBOOT_STEPS) {
    it(`at ${step}: no duplicate service, status tells, the next reboot finishes it (at the hotpatch level)`, async () => {
      await expectOneServiceAt(m, 'b1+hp1');
      expectKilled(await agent(m.home, ['reboot'], { env: { HP_AGENT_TEST_KILL_AT: step } }));
      expect((await settledGreetd(m.home)).length).toBeLessThanOrEqual(2);
      const st = await agent(m.home, ['status']);
      expect(st.code).toBe(0);
      expect(st.json.interruptedOperation).toMatchObject({ kind: 'reboot' });
      expect(st.json.runningOperation).toBeUndefined();

      const next = await agent(m.home, ['reboot']);
      expect(next.code, next.stdout + next.stderr).toBe(0);
      expect(next.json.repaired).toMatchObject({ kind: 'reboot' });
      expect(next.json.hotpatch).toMatchObject({ packageId: '2026.10-hp1', status: 'Succeeded' });
      await expectOneServiceAt(m, 'b1+hp1');
    });
  }
});

describe('an agent killed during a reboot onto a new baseline, or a boot', () => {
  afterEach(cleanUp);

  for (const step of ['service:launcher-spawned', 'service:pid-file-written', 'reboot:before-level']) {
    it(`at ${step} of a reboot onto a new baseline: the next boot finishes it on the new baseline`, async () => {
      const m = await bootMachine();
      expect((await agent(m.home, ['apply', pkg('2026.11')])).code).toBe(0);
      expectKilled(await agent(m.home, ['reboot'], { env: { HP_AGENT_TEST_KILL_AT: step } }));
      await settledGreetd(m.home);

      const booted = await agent(m.home, ['boot']);
      expect(booted.code, booted.stdout + booted.stderr).toBe(0);
      expect(booted.json).toMatchObject({ repaired: { kind: 'reboot' }, toBaselineId: '2026.11', rebootStatus: 'Completed' });
      await expectOneServiceAt(m, 'b2');
      const st = (await agent(m.home, ['status'])).json;
      expect(st).toMatchObject({ installedBaseline: { baselineId: '2026.11' }, runningBaselines: ['2026.11'], rebootPending: false });
    });
  }

  it('killed while waiting for READY in a boot: the next boot adopts that service instead of refusing', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    process.kill(pid, 'SIGKILL'); // the machine "lost" its service: boot must start it again
    expectKilled(await agent(m.home, ['boot'], { env: { HP_AGENT_TEST_KILL_AT: 'service:pid-file-written' } }));
    const left = await settledGreetd(m.home);
    expect(left).toHaveLength(1);

    const booted = await agent(m.home, ['boot']);
    expect(booted.code, booted.stdout + booted.stderr).toBe(0);
    expect(booted.json.kept).toEqual([{ name: 'greetd', pid: left[0], how: 'adopted' }]);
    await expectOneServiceAt(m, 'b1');
    expect(servicePid(m)).toBe(left[0]);
  });
});

describe('a repair killed too', () => {
  afterEach(cleanUp);

  it('keeps the intent until its work is done: the third run still finishes it, and revert finds the level', async () => {
    const m = await bootMachine();
    // The apply dies after the process was patched, before it recorded the level.
    expectKilled(await agent(m.home, ['apply', pkg('2026.10-hp1')], { env: { HP_AGENT_TEST_KILL_AT: 'level:after-processes' } }));
    expect(await answers(m.sock, 'b1+hp1')).toEqual(expected['b1+hp1']);
    // The next apply starts repairing, and dies too.
    expectKilled(await agent(m.home, ['apply', pkg('2026.10-hp1')], { env: { HP_AGENT_TEST_KILL_AT: 'repair:before-work' } }));
    const st = (await agent(m.home, ['status'])).json;
    expect(st.interruptedOperation).toMatchObject({ kind: 'level' });

    const reverted = await agent(m.home, ['revert', '2026.10-hp1']);
    expect(reverted.code, reverted.stdout + reverted.stderr).toBe(0);
    expect(await answers(m.sock, 'b1')).toEqual(expected.b1);
    const after = (await agent(m.home, ['status'])).json;
    expect(after.interruptedOperation).toBeUndefined();
    expect(after.hotpatch).toBeUndefined();
    expect(after.compliant).toBe(true);
  });
});

describe('the hotpatch level re-applied at boot', () => {
  afterEach(cleanUp);

  it('is reported, recorded and makes reboot exit 4 when it fails', async () => {
    const m = await bootMachine();
    expect((await agent(m.home, ['apply', pkg('2026.10-hp1')])).code).toBe(0);
    // The stored patch objects are gone: the level cannot be mapped into the new process.
    fs.rmSync(path.join(storedPackageDir(m.home, '2026.10-hp1'), 'payload'), { recursive: true, force: true });

    const r = await agent(m.home, ['reboot']);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    expect(r.json).toMatchObject({ status: 'CompletedWithWarnings', hotpatch: { packageId: '2026.10-hp1', status: 'Failed' } });
    expect(r.json.hotpatch.processes).toMatchObject([{ outcome: 'Failed' }]);
    expect(await answers(m.sock, 'b1')).toEqual(expected.b1);
    const last = (await agent(m.home, ['history'])).json.entries[0];
    expect(last).toMatchObject({ action: 'reboot', result: 'CompletedWithWarnings', detail: { hotpatch: '2026.10-hp1', hotpatchResult: 'Failed' } });
    // status says the truth: the process does not run the level.
    const st = (await agent(m.home, ['status'])).json;
    expect(st.compliant).toBe(false);
    expect(st.interruptedOperation).toBeUndefined();

    const human = await agent(m.home, ['reboot'], { json: false });
    expect(human.code).toBe(4);
    expect(human.stdout).toMatch(/could NOT be re-applied at boot \(Failed\)/);
  });
});

describe('status while an operation runs', () => {
  afterEach(cleanUp);

  it('says another agent is running it, not that one was interrupted', async () => {
    const m = await bootMachine();
    const running = startAgent(m.home, ['apply', pkg('2026.10-hp1')], { env: { HP_AGENT_TEST_STOP_AT: 'level:after-processes' } });
    // Wait until it stopped itself at that step (holding the lock, its intent recorded).
    const stateOf = () => processState(running.pid);
    for (let i = 0; i < 300 && stateOf() !== 'T'; i++) await sleep(50);
    expect(stateOf()).toBe('T');

    const st = (await agent(m.home, ['status'])).json;
    expect(st.interruptedOperation).toBeUndefined();
    expect(st.runningOperation).toMatchObject({ kind: 'level', pid: running.pid });
    const human = await agent(m.home, ['status'], { json: false });
    expect(human.stdout).toMatch(new RegExp(`an agent \\(PID ${running.pid}, "apply .*"\\) is running "level"`));
    expect(human.stdout).not.toMatch(/interrupted/);

    process.kill(running.pid, 'SIGCONT');
    expect((await running.done).code).toBe(0);
  });
});

describe('a refusal leaves no intent behind (issue 10, defect 2)', () => {
  afterEach(cleanUp);

  it('apply --pid of a process that runs no baseline file: exit 3, and status shows no interrupted operation', async () => {
    const m = await bootMachine();
    const r = await agent(m.home, ['apply', pkg('2026.10-hp1'), '--pid', String(process.pid)]);
    expect(r.json?.error?.code, r.stdout + r.stderr).toBe('PROCESS_NOT_RUNNING_BASELINE');
    expect(r.code).toBe(3);
    const st = (await agent(m.home, ['status'])).json;
    expect(st.interruptedOperation).toBeUndefined();
    expect(await answers(m.sock, 'b1')).toEqual(expected.b1);
  });
});

describe('what boot says (issue 10, defects 5 and 7)', () => {
  afterEach(cleanUp);

  it('the first boot says booted, the second that everything already runs (no "(nothing)", no downtime)', async () => {
    const m = await bootMachine();
    const again = await agent(m.home, ['boot'], { json: false });
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`^already booted: baseline ${BASELINE}, greetd \\(PID ${servicePid(m)}\\) running; nothing was started`));
    expect(again.stdout).not.toMatch(/downtime|\(nothing\)/);

    const home = newHome();
    expect((await agent(home, ['trust', 'add', demoPublicKey()])).code).toBe(0);
    expect((await agent(home, ['apply', pkg(BASELINE)])).code).toBe(0);
    const first = await agent(home, ['boot'], { json: false });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^booted baseline ${BASELINE}; rebootStatus Completed`));
    expect(first.stdout).not.toMatch(/\(nothing\)/);
  });

  it('a service that never becomes ready: boot fails (exit 4) and says what it stopped, started and left, not "nothing was changed"', async () => {
    const home = newHome();
    const src = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-never-'));
    try {
      fs.writeFileSync(path.join(src, 'never.c'), '#include <unistd.h>\nint main(void) { for (;;) pause(); }\n');
      execFileSync('gcc', ['-O2', '-Wl,--build-id', '-o', path.join(src, 'neverd'), path.join(src, 'never.c')]);
      const key = path.join(src, 'vendor');
      expect((await agent(home, ['keygen', '--out', key])).code).toBe(0);
      expect((await agent(home, ['trust', 'add', `${key}.pub`, '--name', 'vendor'])).code).toBe(0);
      const base = await agent(home, ['pack', 'baseline', '--out', path.join(src, 'base.hpkg'), '--id', 'never-1.0', '--title', 'never ready', '--planned', '--kb', 'KB5099101',
        '--file', `bin/neverd=${path.join(src, 'neverd')}:755`, '--service', 'neverd=bin/neverd', '--release-date', '2026-11-10', '--classification', 'Security', '--key', `${key}.key`]);
      expect(base.code, base.stderr).toBe(0);
      expect((await agent(home, ['apply', path.join(src, 'base.hpkg')])).code).toBe(0);

      const booted = await agent(home, ['boot'], { json: false });
      expect(booted.code, booted.stderr).toBe(4);
      expect(booted.stderr).toMatch(/failed \(SERVICE_NOT_READY\): boot failed: service neverd \(PID \d+\) did not write READY/);
      expect(booted.stderr).toMatch(/started: none; running now: none; baseline never-1\.0 is active, rebootStatus Failed/);
      expect(booted.stderr).not.toMatch(/nothing was changed/i);

      const st = (await agent(home, ['status'])).json;
      expect(st).toMatchObject({ rebootStatus: 'Failed', installedBaseline: { baselineId: 'never-1.0' }, services: [] });
      expect(st.interruptedOperation).toBeUndefined();
      expect(st.processes).toEqual([]);
      const last = (await agent(home, ['history'])).json.entries[0];
      expect(last).toMatchObject({ action: 'reboot', result: 'Failed', detail: { code: 'SERVICE_NOT_READY' } });
    } finally {
      fs.rmSync(src, { recursive: true, force: true });
    }
  }, 30_000);
});
