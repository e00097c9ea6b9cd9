// Two agents at once on one machine: one agent at a time may change it (the lock). A second
// agent told not to wait is refused with AGENT_BUSY naming the holder's PID and command, and
// changes nothing; one that waits runs after the first. Whatever the interleaving, the state the
// agent records ends up equal to what the processes' memory says.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  agent,
  answers,
  bootMachine,
  cleanUp,
  expected,
  expectRefused,
  expectUnchanged,
  history,
  pkg,
  servicePid,
  snapshot,
  startAgent,
  type AgentResult,
  type Machine,
} from './agent-helpers.js';

afterEach(cleanUp);

const HP1 = pkg('2026.10-hp1');
const HP2 = pkg('2026.10-hp2');
const LEVEL_OF: Record<string, string> = { '2026.10-hp1': 'b1+hp1', '2026.10-hp2': 'b1+hp2' };

/** Busy-wait (a few ms at most in practice) until `pid` holds the home's lock. */
function waitForLockHolder(home: string, pid: number, timeoutMs = 10_000): void {
  const lock = path.join(home, 'lock');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (JSON.parse(fs.readFileSync(lock, 'utf8')).pid === pid) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`agent ${pid} did not take the lock within ${timeoutMs} ms`);
  }
}

/** The level state.json records, the level memory shows (status), and the daemon's answers agree. */
async function expectConsistent(m: Machine, packageId: string): Promise<void> {
  const state = JSON.parse(fs.readFileSync(path.join(m.home, 'state.json'), 'utf8'));
  expect(state.hotpatch.packageId).toBe(packageId);
  const st = await agent(m.home, ['status']);
  expect(st.code, st.stdout + st.stderr).toBe(0);
  expect(st.json.compliant).toBe(true);
  expect(st.json.hotpatch.packageId).toBe(packageId);
  const pid = servicePid(m);
  expect(st.json.processes.map((p: any) => p.pid)).toEqual([pid]);
  const proc = st.json.processes[0];
  expect(proc.compliant).toBe(true);
  for (const f of proc.functions) if (f.expectedPackageId) expect(f.packageId, f.function).toBe(packageId);
  expect(proc.functions.some((f: any) => f.state === 'patched')).toBe(true);
  expect(await answers(m.sock, LEVEL_OF[packageId])).toEqual(expected[LEVEL_OF[packageId]]);
}

function expectBusyNaming(r: AgentResult, holder: { pid: number; command: string }): void {
  expectRefused(r, 'AGENT_BUSY');
  expect(r.json.error.holder.pid).toBe(holder.pid);
  expect(r.json.error.holder.command).toBe(holder.command);
  expect(r.json.error.message).toContain(String(holder.pid));
  expect(r.json.error.message).toContain(holder.command);
}

describe('two agents at once', () => {
  it('--wait 0 is refused with AGENT_BUSY while another agent holds the lock; --wait runs after it', async () => {
    const m = await bootMachine();
    const first = startAgent(m.home, ['apply', HP1]);
    // Freeze the first agent while it holds the lock, so the overlap is certain.
    waitForLockHolder(m.home, first.pid);
    process.kill(first.pid, 'SIGSTOP');
    try {
      const before = await snapshot(m);
      const busy = await agent(m.home, ['apply', HP2, '--wait', '0']);
      expectBusyNaming(busy, { pid: first.pid, command: `apply ${HP1}` });
      await expectUnchanged(m, before);

      const second = startAgent(m.home, ['apply', HP2, '--wait', '20000']);
      await new Promise((r) => setTimeout(r, 300));
      expect(second.child.exitCode).toBe(null); // still waiting for the lock
      process.kill(first.pid, 'SIGCONT');

      const [r1, r2] = await Promise.all([first.done, second.done]);
      expect(r1.code, r1.stdout + r1.stderr).toBe(0);
      expect(r1.json.hotpatchLevel.packageId).toBe('2026.10-hp1');
      expect(r2.code, r2.stdout + r2.stderr).toBe(0);
      expect(r2.json.hotpatchLevel.packageId).toBe('2026.10-hp2');
      expect(r2.json.processes.map((p: any) => [p.pid, p.outcome])).toEqual([[before.pid, 'Patched']]);
      // hp2 replaced hp1: banner back to the original, add_numbers fixed.
      const sites = Object.fromEntries(r2.json.processes[0].sites.map((s: any) => [s.function, s.action]));
      expect(Object.keys(sites).sort()).toEqual(['add_numbers', 'banner', 'format_greeting']);
    } finally {
      if (first.child.exitCode === null && first.child.signalCode === null) process.kill(first.pid, 'SIGCONT');
    }
    await expectConsistent(m, '2026.10-hp2');
    const applies = (await history(m.home)).filter((e) => e[0] === 'apply');
    expect(applies).toEqual([
      ['apply', 'Succeeded', '2026.10-hp1', undefined],
      ['apply', 'Succeeded', '2026.10-hp2', undefined],
    ]);
    // The agent refused the lock recorded that too.
    expect((await history(m.home)).filter((e) => e[3] === 'AGENT_BUSY')).toEqual([['refuse', 'Refused', undefined, 'AGENT_BUSY']]);
  });

  it('a real race of apply hp1 (--wait 0) and apply hp2 (--wait 20000) always ends at hp2', async () => {
    const m = await bootMachine();
    const a = startAgent(m.home, ['apply', HP1, '--wait', '0']);
    const b = startAgent(m.home, ['apply', HP2, '--wait', '20000']);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    // hp2 waits if it must, so it always gets its turn.
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    expect(rb.json.hotpatchLevel.packageId).toBe('2026.10-hp2');
    // hp1 either ran first, or was refused: busy (naming hp2's agent) or superseded (after it).
    if (ra.code === 0) {
      expect(ra.json.hotpatchLevel.packageId).toBe('2026.10-hp1');
    } else if (ra.json?.error?.code === 'AGENT_BUSY') {
      expectBusyNaming(ra, { pid: b.pid, command: `apply ${HP2}` });
    } else {
      expectRefused(ra, 'HOTPATCH_SUPERSEDED');
    }
    await expectConsistent(m, '2026.10-hp2');
  });

  it('a race of reboot (--wait 0) and apply hp1 (--wait 20000): the service ends at hp1, whoever won', async () => {
    const m = await bootMachine();
    const pid0 = servicePid(m);
    const a = startAgent(m.home, ['reboot', '--wait', '0']);
    const b = startAgent(m.home, ['apply', HP1, '--wait', '20000']);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    const rebooted = ra.code === 0;
    if (!rebooted) expectBusyNaming(ra, { pid: b.pid, command: `apply ${HP1}` });
    // A reboot restarts the daemon; one that came after the hotpatch re-applied it at boot.
    if (rebooted) expect(servicePid(m)).not.toBe(pid0);
    else expect(servicePid(m)).toBe(pid0);
    await expectConsistent(m, '2026.10-hp1');
    const actions = (await history(m.home)).slice(2).map((e) => `${e[0]} ${e[1]}`);
    // The agent refused the lock says so in the history too.
    expect(actions.sort()).toEqual((rebooted ? ['apply Succeeded', 'reboot Succeeded'] : ['apply Succeeded', 'refuse Refused']).sort());
  });
});
