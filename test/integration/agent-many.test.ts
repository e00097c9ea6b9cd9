// Many processes at once through `hp-agent apply` and `revert`. On a machine with many processes
// the agent spreads the search and the work over one thread per CPU (worker threads);
// HP_AGENT_THREADS forces the number. Every process must end up patched — answering the fixed
// value — and reverted, with the same PIDs, whichever thread handled it.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { patchedAnswer, unpatchedAnswer } from '../../src/bench/benchd.js';
import { removeAgentMachine, runCli, setUpAgentMachine, type AgentMachine } from '../../src/bench/scale-agent.js';
import { killTargetsAfterEach, spawnTarget, type Target } from '../../src/harness/index.js';

killTargetsAfterEach(afterEach);

const PROCESSES = 40;

let machine: AgentMachine | undefined;
afterEach(() => {
  removeAgentMachine(machine);
  machine = undefined;
  delete process.env.HP_AGENT_THREADS;
});

describe('hp-agent apply on many processes', () => {
  it.each([['3 threads', '3'], ['one thread', '1']])('patches and reverts every one of 40 processes of the installed baseline (%s)', async (_, threads) => {
    process.env.HP_AGENT_THREADS = threads;
    machine = await setUpAgentMachine();
    const targets: Target[] = [];
    for (let i = 0; i < PROCESSES; i++) targets.push(await spawnTarget(machine.binary, { args: ['1', 'idle', '1', 'nogap'] }));
    const pids = targets.map((t) => t.pid).sort((a, b) => a - b);

    const applied = await runCli(machine.home, ['apply', machine.hotpatchPackage, '--json']);
    expect(applied.code, applied.stderr).toBe(0);
    // Each share ran where it was meant to: a worker that silently fell back would show here.
    const shares = fs
      .readFileSync(path.join(machine.home, 'logs/agent.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { message: string; ranIn?: string; processes?: number })
      .filter((e) => e.message === 'share of the processes done');
    if (threads === '1') expect(shares).toEqual([]);
    else {
      expect(shares.map((e) => e.ranIn).sort()).toEqual(['main thread', 'worker thread', 'worker thread']);
      expect(shares.reduce((n, e) => n + e.processes!, 0)).toBe(PROCESSES);
    }
    expect(applied.json.processes.map((p: { pid: number }) => p.pid)).toEqual(pids);
    expect(applied.json.processes.every((p: { outcome: string }) => p.outcome === 'Patched')).toBe(true);
    for (const t of targets) expect(await t.request('call 0')).toBe(patchedAnswer(0));

    const reverted = await runCli(machine.home, ['revert', machine.hotpatchId, '--json']);
    expect(reverted.code, reverted.stderr).toBe(0);
    expect(reverted.json.processes.map((p: { pid: number; outcome: string }) => [p.pid, p.outcome])).toEqual(pids.map((pid) => [pid, 'Reverted']));
    for (const t of targets) {
      expect(await t.request('call 0')).toBe(unpatchedAnswer(0));
      expect(t.alive()).toBe(true);
    }
  }, 120_000);
});
