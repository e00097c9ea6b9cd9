// Availability under load (issue 11 §7): greetd answers a client loop on its Unix socket while
// the signed hotpatch 2026.10-hp1 is applied and reverted through the command line, each run a
// fresh `hp-agent` process as users run it, and every tenth cycle the agent is SIGKILLed in the
// middle of its change (HP_AGENT_KILL_AT_STEP=N, N drawn at random among the steps of that
// change) and the next run repairs it. Every answer must be the old or the new level's, none may
// fail; the service keeps its PID and its threads, and its memory maps grow by the patch
// mappings the level needs and nothing more.
//
// `npm test` runs 30 cycles (3 kills), not the issue's 100: on this shared 2-core machine a cycle
// (two agent start-ups, their changes and the level checks, next to a client that keeps a core
// busy) takes 1.5-3.5 s. `npm run soak` runs 1,000 (HP_SOAK_CYCLES) and writes the figures to
// bench/out/soak.json and soak.md (HP_SOAK_REPORT=DIR).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import type { SoakClientReport } from '../../src/bench/soak-client.js';
import { agent, answers, bootMachine, cleanUp, expected, pkg, servicePid, type AgentResult } from './agent-helpers.js';
import { cliPath, patchMappings, threadCount } from './helpers.js';

const CYCLES = Number(process.env.HP_SOAK_CYCLES) || 30;
const KILL_EVERY = 10;
/** Client connections asking at once (greetd has 4 workers; the test's own checks use the rest). */
const CONNECTIONS = 2;
/**
 * First guess at the steps of a change (ptrace requests, writes, remote calls: an apply or a
 * revert of hp1 on greetd takes some 20-30). A kill drawn past the end lets the change finish;
 * the range then shrinks to below that draw and the kill is tried again at the next cycle.
 */
const FIRST_STEP_GUESS = 60;

const OLD = 'b1';
const NEW = 'b1+hp1';
const HOTPATCH = '2026.10-hp1';
const KB = 'KB5046101';
const clientScript = path.resolve(path.dirname(cliPath), '../dist/bench/soak-client.js');

let client: ChildProcess | undefined;
afterEach(() => {
  client?.kill('SIGKILL');
  client = undefined;
});
afterEach(cleanUp);

const mapsLines = (pid: number) => fs.readFileSync(`/proc/${pid}/maps`, 'utf8').trimEnd().split('\n');

/** Starts the client loop (its own process) and resolves once it is asking. */
async function startClient(sock: string): Promise<{ stop: () => Promise<SoakClientReport> }> {
  const allowed = Object.fromEntries(Object.keys(expected[OLD]).map((q) => [q, [...new Set([expected[OLD][q], expected[NEW][q]])]]));
  const child = spawn(process.execPath, [clientScript, sock, String(CONNECTIONS), JSON.stringify(allowed)], { stdio: ['pipe', 'pipe', 'inherit'] });
  client = child;
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  expect(first.value, 'the client loop did not start').toBe('READY');
  return {
    stop: async () => {
      child.stdin!.end('stop\n');
      const last = await lines.next();
      expect(last.done, 'the client loop printed no report').toBe(false);
      return JSON.parse(last.value as string) as SoakClientReport;
    },
  };
}

describe('availability under load', () => {
  it(`serves every request through ${CYCLES} apply/revert cycles of the CLI, the agent killed every ${KILL_EVERY}th`, async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const threads = threadCount(pid);
    const mapsBefore = mapsLines(pid);
    const load = await startClient(m.sock);

    const upper = { apply: FIRST_STEP_GUESS, revert: FIRST_STEP_GUESS };
    const kills: string[] = [];
    let due: 'apply' | 'revert' | undefined;
    let lastKilled = false;
    let patchLinesNeeded: number | undefined;
    /** Each agent run's wall-clock window, to tell which stalls it may have caused. */
    const runs: { what: string; start: number; end: number }[] = [];

    /** One run of the CLI, killed at a random step of its change when a kill is due for it. Returns whether it was. */
    const change = async (what: 'apply' | 'revert', cycle: number): Promise<boolean> => {
      const step = due === what ? 1 + Math.floor(Math.random() * upper[what]) : 0;
      const args = what === 'apply' ? ['apply', pkg(HOTPATCH)] : ['revert', KB];
      const start = Date.now();
      const r: AgentResult = await agent(m.home, args, step ? { env: { HP_AGENT_KILL_AT_STEP: String(step) } } : {});
      runs.push({ what: `${what} ${cycle}${r.signal === 'SIGKILL' ? ' killed' : ''}`, start, end: Date.now() });
      const where = `cycle ${cycle}, ${what}${step ? ` armed at step ${step}` : ''}${lastKilled ? ' (after a kill)' : ''}: ${r.stdout}${r.stderr}`;
      expect(servicePid(m), where).toBe(pid);
      if (r.signal === 'SIGKILL') {
        expect(step, where).toBeGreaterThan(0);
        kills.push(`${what}@${step}`);
        due = undefined;
        lastKilled = true;
        return true;
      }
      // The run after a kill may find the change undone by its repair (revert: nothing to revert).
      expect(lastKilled ? [0, 3] : [0], where).toContain(r.code);
      if (step) upper[what] = Math.max(1, step - 1); // drawn past the end of the change: try lower next time
      lastKilled = false;
      expect(await answers(m.sock, what === 'apply' ? NEW : OLD), where).toEqual(expected[what === 'apply' ? NEW : OLD]);
      return false;
    };

    // A kill drawn past the end of its change is tried again at the next cycle, past CYCLES too.
    let cycles = 0;
    while (cycles < CYCLES || (due && cycles < CYCLES + KILL_EVERY)) {
      const cycle = ++cycles;
      if (cycle <= CYCLES && cycle % KILL_EVERY === 0) due = (cycle / KILL_EVERY) % 2 === 1 ? 'apply' : 'revert';
      await change('apply', cycle);
      if (cycle === 1) patchLinesNeeded = mapsLines(pid).filter((l) => l.includes('/memfd:hp-agent:')).length;
      await change('revert', cycle);
    }
    if (lastKilled) await change('revert', cycles + 1); // the last kill is repaired too
    const served = await load.stop();

    // A stall [endedAt - ms, endedAt] overlapping an agent run may be its doing; else it is the
    // machine's (the client, the service and the other work on it share the CPUs).
    const during = (st: { ms: number; endedAt: number }) => runs.find((r) => r.start <= st.endedAt && st.endedAt - st.ms <= r.end)?.what ?? 'no agent running';
    const stalls = served.stalls.slice(0, 5).map((st) => `${st.ms.toFixed(1)} ms (${during(st)})`);
    const mapsAfter = mapsLines(pid);
    const patchLines = mapsAfter.filter((l) => l.includes('/memfd:hp-agent:'));
    const summary = {
      cycles,
      kills: kills.length,
      killPoints: kills,
      served: served.served,
      failed: served.failed,
      wrong: served.wrong,
      maxStallMs: Math.round(served.maxStallMs * 10) / 10,
      longestStalls: stalls,
      durationS: Math.round(served.durationMs / 100) / 10,
      mapsBefore: mapsBefore.length,
      mapsAfter: mapsAfter.length,
      patchMappings: [...new Set(patchMappings(pid))],
      threads: threadCount(pid),
    };
    console.log(
      `soak: ${cycles} apply/revert cycles, ${kills.length} kills (${kills.join(' ')}): ${served.served} requests served, ` +
        `${served.failed} failed, ${served.wrong} wrong in ${summary.durationS} s; longest stalls ${stalls.join(', ')}; maps ${mapsBefore.length} → ${mapsAfter.length} lines ` +
        `(${patchLines.length} of patch mappings), ${summary.threads} threads`,
    );
    if (process.env.HP_SOAK_REPORT) writeReport(process.env.HP_SOAK_REPORT, summary);

    expect(served.samples, 'failed or wrong answers').toEqual([]);
    expect(served.failed).toBe(0);
    expect(served.wrong).toBe(0);
    expect(served.served).toBeGreaterThan(CYCLES);
    expect(kills.length, `kills: ${kills.join(' ')}`).toBeGreaterThanOrEqual(Math.floor(CYCLES / KILL_EVERY));
    expect(servicePid(m)).toBe(pid);
    expect(threadCount(pid)).toBe(threads);
    expect(await answers(m.sock, OLD)).toEqual(expected[OLD]);
    // Mapped once at the first apply, re-used by every later one: the maps hold what they held
    // before plus the level's patch mappings, whatever the kills interrupted.
    expect(patchLines.length).toBe(patchLinesNeeded);
    expect(mapsAfter.filter((l) => !l.includes('/memfd:hp-agent:')).length).toBe(mapsBefore.length);
  }, CYCLES * 10_000 + 60_000);
});

function writeReport(dir: string, s: Record<string, unknown> & { longestStalls: string[]; cycles: number; kills: number; served: number; failed: number; wrong: number; maxStallMs: number; durationS: number }): void {
  fs.mkdirSync(dir, { recursive: true });
  const report = { date: new Date().toISOString(), cpus: os.availableParallelism(), loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100), ...s };
  fs.writeFileSync(path.join(dir, 'soak.json'), JSON.stringify(report, null, 2) + '\n');
  const md = [
    '# Soak: availability under load',
    '',
    `${report.date}, ${report.cpus} CPUs, load average ${report.loadAverage.join(' ')} at the end.`,
    '',
    `greetd answered a client loop (${CONNECTIONS} connections) while \`hp-agent apply ${HOTPATCH}\` and \`hp-agent revert ${KB}\` ran ${s.cycles} times each, the agent SIGKILLed mid-change ${s.kills} times.`,
    '',
    '| requests served | failed | wrong | longest stall | duration | maps before → after | threads |',
    '|---|---|---|---|---|---|---|',
    `| ${s.served} | ${s.failed} | ${s.wrong} | ${s.maxStallMs} ms | ${s.durationS} s | ${s.mapsBefore} → ${s.mapsAfter} | ${s.threads} |`,
    '',
    `Longest stalls (a client's time between two answers) and the agent run they overlapped: ${s.longestStalls.join(', ')}.`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'soak.md'), md);
}
