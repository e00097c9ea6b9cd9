// The agent killed at every step of a change (HP_AGENT_KILL_AT_STEP=N: its N-th ptrace request,
// write into a target or remote call, see native/ptrace_ops.cc) never hurts the service: it keeps
// answering, sees no EINTR, survives two more agent runs, and those runs end at the right level.
//
// `npm test` tries every seventh kill point; `npm run test:kill-points` tries every one
// (HP_KILL_POINTS=all).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach } from '../../src/harness/index.js';
import { processExists } from '../../src/proc/stat.js';
import { answers, BASELINE, bootMachine, cleanUp, expected, pkg, servicePid, type Machine } from './agent-helpers.js';
import { cliPath, disturbances, narrowedThreads, spawnWaiters } from './helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

const EVERY = process.env.HP_KILL_POINTS === 'all' ? 1 : 7;
const MAX_STEPS = 400;

interface Run {
  code: number | null;
  signal: string | null;
  out: string;
  /** Killed: how many threads were interrupted and not yet settled at that instant. */
  unsettled: number;
  /** Killed: how many of the agent's own threads were in SCHED_IDLE at that instant. */
  idled: number;
  /** Killed: how many threads of the target the fence held at that instant (native/fence.cc). */
  held: number;
}

const report = path.join(os.tmpdir(), `hp-kill-report-${process.pid}`);

/** The CLI as a separate process, killed at its `step`-th step (0: never; 'held': the first while threads are held). */
function run(args: string[], step: number | 'held', home?: string): Promise<Run> {
  fs.rmSync(report, { force: true });
  const env = { ...process.env, HP_AGENT_KILL_AT_STEP: String(step), HP_AGENT_KILL_REPORT: report, ...(home ? { HP_AGENT_HOME: home } : {}) };
  return new Promise((resolve) => {
    execFile(process.execPath, [cliPath, ...args], { timeout: 60_000, env }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: string }) | null;
      let [unsettled, idled, held] = [0, 0, 0];
      try {
        const said = /unsettled (\d+) idled (\d+) held (\d+)/.exec(fs.readFileSync(report, 'utf8'));
        [unsettled, idled, held] = [1, 2, 3].map((i) => Number(said?.[i] ?? 0));
      } catch {
        // not killed
      }
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, out: stdout + stderr, unsettled, idled, held });
    });
  });
}

/**
 * Kills `change` at step 1, 1+EVERY, … until it runs to its end; after each kill `check` looks
 * at the service and repairs it with two more agent runs. Returns the kill points tried.
 */
async function sweep(change: (step: number) => Promise<Run>, check: (step: number, killed: Run) => Promise<void>): Promise<number> {
  let kills = 0;
  for (let step = 1; step < MAX_STEPS; step += EVERY) {
    const r = await change(step);
    if (r.signal !== 'SIGKILL') {
      expect(r.code, `step ${step} ran to its end: ${r.out}`).toBe(0);
      expect(kills, 'the change was never killed').toBeGreaterThan(0);
      return kills;
    }
    kills++;
    await check(step, r);
  }
  throw new Error(`the change still had steps after ${MAX_STEPS}`);
}

describe('the agent killed at every step', () => {
  it('of `try` and `try --revert`: every waiting thread goes on untouched, and the next runs finish the change', async () => {
    const t = await spawnWaiters();
    const pid = String(t.pid);
    const apply = (step: number | 'held') => run(['try', fixturePath('loop_fix.so'), '--pid', pid, '--function', 'compute=compute_v2', '--mode', 'stop'], step);
    const revert = (step: number | 'held') => run(['try', '--revert', '--pid', pid, '--function', 'compute', '--mode', 'stop'], step);
    // The threads asleep in epoll_wait & co. are held by the fence, never interrupted
    // (native/fence.cc): no kill, wherever it falls, may cost one of them an EINTR. A kill while
    // they are held leaves them on one CPU, which the next run gives back (fence_journal.cc).
    let eintrs = 0;
    let windowKills = 0;
    let heldKills = 0;
    const expectHealthy = async (step: number, answersAllowed: string[], killed?: Run) => {
      expect(processExists(t.pid), `killed at step ${step}: the target died`).toBe(true);
      expect(answersAllowed, `killed at step ${step}`).toContain(await t.request('call'));
      const [, e, early] = /eintr (\d+) early (\d+)/.exec(await disturbances(t))!.map(Number);
      expect(early, `killed at step ${step}: a wait returned early`).toBe(0);
      if (killed && killed.unsettled > 0) {
        windowKills++;
        // Inside a stop the agent's other threads stand aside (native/own_threads.cc).
        expect(killed.idled, `killed at step ${step} inside a stop`).toBeGreaterThan(0);
      }
      if (killed && killed.held > 0) {
        heldKills++;
        // Killed while holding them: they run on, each on the one CPU the fence gave it.
        expect(narrowedThreads(t.pid), `killed at step ${step} while ${killed.held} thread(s) were held`).toHaveLength(killed.held);
      }
      if (!killed) expect(narrowedThreads(t.pid), `after the run that followed a kill at step ${step}`).toEqual([]);
      expect(e, `killed at step ${step}: a call returned EINTR`).toBe(0);
      eintrs = e;
    };
    const applied = await sweep(apply, async (step, killed) => {
      await expectHealthy(step, ['42', '182'], killed);
      // Finished by the next run, or already finished before the kill (then refused as such).
      const again = await apply(0);
      expect(again.code === 0 || /FUNCTION_ALREADY_PATCHED/.test(again.out), `after a kill at step ${step}: ${again.out}`).toBe(true);
      await expectHealthy(step, ['182']);
      const back = await revert(0);
      expect(back.code, `after a kill at step ${step}: ${back.out}`).toBe(0);
      await expectHealthy(step, ['42']);
    });
    expect(await t.request('call')).toBe('182');
    const reverted = await sweep(revert, async (step, killed) => {
      await expectHealthy(step, ['42', '182'], killed);
      const again = await revert(0);
      expect([0, 3], `after a kill at step ${step}: ${again.out}`).toContain(again.code);
      await expectHealthy(step, ['42']);
      expect((await apply(0)).code).toBe(0);
      await expectHealthy(step, ['182']);
    });
    expect(await t.request('call')).toBe('42');
    // Whatever the sampling, the agent is killed once while it holds threads (at the write).
    const held = await apply('held');
    expect(held.signal, held.out).toBe('SIGKILL');
    expect(held.held).toBeGreaterThan(0);
    await expectHealthy(0, ['42'], held);
    expect((await apply(0)).code).toBe(0);
    await expectHealthy(0, ['182']);
    expect((await revert(0)).code).toBe(0);
    expect(applied + reverted).toBeGreaterThan(6);
    console.log(`try: ${applied} + ${reverted} kills, ${windowKills} inside an interrupt's window, ${heldKills} while threads were held, ${eintrs} EINTR(s)`);
  }, 900_000);

  it('of a hotpatch apply, a cumulative apply and a revert: the service answers, and the next runs end at the right level', async () => {
    const m: Machine = await bootMachine();
    const pid = servicePid(m);
    const apply = (id: string) => (step: number) => run(['apply', pkg(id), '--json'], step, m.home);
    const revert = (kb: string) => (step: number) => run(['revert', kb, '--json'], step, m.home);
    const level = async (step: number, allowed: string[], after = '') => {
      expect(processExists(pid), `killed at step ${step}: the service died`).toBe(true);
      expect(servicePid(m)).toBe(pid);
      const now = await answers(m.sock);
      const match = allowed.find((l) => JSON.stringify(now) === JSON.stringify(pickLevel(l, now)));
      expect(match, `killed at step ${step}: answers ${JSON.stringify(now)} are none of ${allowed.join(', ')}${after}`).toBeDefined();
      return match;
    };
    const pickLevel = (l: string, now: Record<string, string>) => Object.fromEntries(Object.keys(now).map((k) => [k, expected[l][k]]));
    // Right after a kill, each function may be at either level (the objects of a process switch
    // one transaction each): every answer must be one of the two levels' answers.
    const between = async (step: number, levels: string[]) => {
      expect(processExists(pid), `killed at step ${step}: the service died`).toBe(true);
      expect(servicePid(m)).toBe(pid);
      const now = await answers(m.sock);
      for (const [q, a] of Object.entries(now)) expect(levels.map((l) => expected[l][q]), `killed at step ${step}: "${q}"`).toContain(a);
    };
    const finish = async (step: number, change: (s: number) => Promise<Run>, want: string) => {
      const r = await change(0);
      expect([0, 3], `after a kill at step ${step}: ${r.out}`).toContain(r.code);
      expect(await level(step, [want], ` after the run that was to finish it, which said: ${r.out}`)).toBe(want);
      const status = await run(['status', '--json'], 0, m.home);
      expect(status.code, status.out).toBe(0);
      expect(narrowedThreads(pid), `after a kill at step ${step} and the run that was to finish it`).toEqual([]);
    };

    // hp1 onto the plain baseline; each kill repaired by applying hp1 again, then reverted.
    const hp1 = await sweep(apply('2026.10-hp1'), async (step) => {
      await between(step, ['b1', 'b1+hp1']);
      await finish(step, apply('2026.10-hp1'), 'b1+hp1');
      await finish(step, revert('KB5046101'), 'b1');
    });
    // hp2 over hp1 (re-point, restore, new mapping); repaired by applying hp2, then back to hp1.
    const hp2 = await sweep(apply('2026.10-hp2'), async (step) => {
      await between(step, ['b1+hp1', 'b1+hp2']);
      await finish(step, apply('2026.10-hp2'), 'b1+hp2');
      await finish(step, revert('KB5046102'), 'b1+hp1');
    });
    // The revert of hp2 back to hp1; repaired by reverting again, then hp2 once more.
    const back = await sweep(revert('KB5046102'), async (step) => {
      await between(step, ['b1+hp2', 'b1+hp1']);
      await finish(step, revert('KB5046102'), 'b1+hp1');
      await finish(step, apply('2026.10-hp2'), 'b1+hp2');
    });
    expect(await level(0, ['b1+hp1'])).toBe('b1+hp1');
    expect(hp1 + hp2 + back).toBeGreaterThan(2);
    expect(BASELINE).toBe('2026.10');
    console.log(`agent: ${hp1} + ${hp2} + ${back} kills, service alive and at the right level after each`);
  }, 900_000);
});
