/**
 * Pauses under contention (issue 11 §6): a target whose busy threads keep calling the very
 * function being patched (`benchd 4 busy 1`: four workers calling bench_fn_0, the spinning gap
 * recorder, the main thread asleep in read), patched the way a user patches it — `hp-agent try`
 * as a fresh process each time, its pause read from `--json`. Each round:
 *
 *   apply    bench_fix.so copied to a directory of its own for the round, so the agent maps it
 *            anew (a mapping is re-used only for the same patch file);
 *   revert
 *   reapply  the same file again: its mapping is still in the process and is re-used, so this
 *            is a plain stop (no thread borrowed, nothing mapped);
 *   revert2
 *   floor    native.floor on the same sites of the same (unpatched) target: seize, interrupt,
 *            wait for every thread, write the bytes already there, resume — nothing else.
 *
 * Reported: median, p90 and max of each step's pause and of the floor, and each step's p90 over
 * the floor's p90 (the goal: 1.5× at most). Tails, not medians: one slow stop in ten is what a
 * service notices. Also each step's totalStopped (every attempt's stop, a retried one included)
 * and the most attempts one step took.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../native.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, functionName, sampleIndexes } from './benchd.js';
import { cliProblem, runCli } from './scale-agent.js';
import { tailRatio, tailStats, type TailStats } from './stats.js';

export const CONTENTION_STEPS = ['apply', 'revert', 'reapply', 'revert2'] as const;
export type ContentionStep = (typeof CONTENTION_STEPS)[number];

export interface ContentionStepResult {
  /** The pause the target felt (the core's pauseUs: first thread interrupted → last resumed), µs. */
  pauseUs?: TailStats;
  /** Every stop of the step added up (a failed attempt's stop included), µs. */
  totalStoppedUs?: TailStats;
  /** The CLI, spawn → exit, ms. */
  wallMs?: TailStats;
  /** Most stops (attempts) one run of the step took. */
  maxAttempts: number;
  /** Runs whose mapping was re-used (reapply: all of them; apply: none). */
  reused: number;
  /** p90 of the pause over the floor's p90. */
  p90Ratio?: number;
  /** Every run's pause, in order (for the spread). */
  samplesUs: number[];
}

export interface ContentionSection {
  /** The target's command line. */
  target: string;
  /** Threads the core stopped. */
  targetThreads?: number;
  /** Rounds completed (the statistics are over these). */
  rounds: number;
  steps: Partial<Record<ContentionStep, ContentionStepResult>>;
  /** The floor's pause (first interrupt → last resume), µs; real-time like the agent's stop. */
  floorPauseUs?: TailStats;
  floorSamplesUs: number[];
  durationS?: number;
  failures: number;
  errors: string[];
}

/** What one `hp-agent try --json` said about its stop. */
interface TryStop {
  pauseUs: number;
  totalStoppedUs: number;
  attempts: number;
  threads: number;
  reused: boolean;
  /** Addresses as the output contract prints them: "0x…" strings. */
  sites: { siteAddress: string; after: string }[];
  wallMs: number;
}

const TARGET = { threads: 4, mode: 'busy' as const, functions: 1 };

async function tryCli(args: string[]): Promise<TryStop> {
  const r = await runCli(undefined, ['try', ...args, '--json'], 120_000);
  if (r.code !== 0 || !r.json) throw new Error(`hp-agent try ${args.join(' ')}: ${cliProblem(r)}`);
  const j = r.json;
  return {
    pauseUs: Number(j.pauseUs),
    // older builds did not report it: the pause is then all we know
    totalStoppedUs: Number(j.totalStoppedUs ?? j.pauseUs),
    attempts: Number(j.attempts),
    threads: Number(j.threads),
    reused: j.patch?.reused === true,
    sites: j.sites ?? [],
    wallMs: r.wallMs,
  };
}

/** Runs `rounds` rounds on one fresh target, killed afterwards whatever happens. */
export async function contentionSection(rounds: number, log: (line: string) => void): Promise<ContentionSection> {
  const started = performance.now();
  const t = await Benchd.start(TARGET);
  const out: ContentionSection = { target: t.describe(), rounds: 0, steps: {}, floorSamplesUs: [], failures: 0, errors: [] };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-bench-contention-'));
  const pid = String(t.pid);
  const fn = functionName(0);
  const samples = Object.fromEntries(CONTENTION_STEPS.map((s) => [s, [] as TryStop[]])) as Record<ContentionStep, TryStop[]>;
  try {
    for (let round = 0; round < rounds && out.failures < Math.max(3, rounds >> 2); round++) {
      const patch = path.join(dir, `round-${round}`, BENCH_PATCH);
      fs.mkdirSync(path.dirname(patch));
      fs.copyFileSync(fixturePath(BENCH_PATCH), patch);
      const apply = ['--pid', pid, '--function', `${fn}=${fn}_v2`];
      const revert = ['--revert', '--pid', pid, '--function', fn];
      const got: Partial<Record<ContentionStep, TryStop>> = {};
      try {
        got.apply = await tryCli([patch, ...apply]);
        got.revert = await tryCli(revert);
        got.reapply = await tryCli([patch, ...apply]);
        got.revert2 = await tryCli(revert);
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        // a round cut short must not leave the function patched for the next one
        if ((got.apply && !got.revert) || (got.reapply && !got.revert2)) await tryCli(revert).catch(() => undefined);
        continue;
      }
      for (const s of CONTENTION_STEPS) samples[s].push(got[s]!);
      out.targetThreads = got.apply!.threads;
      // The bytes the revert put back, written over themselves: the floor of the same stop.
      const sites = await Promise.all(got.revert2!.sites.map(async (s) => ({ addr: Number(s.siteAddress), write: await native.readMemory(t.pid, Number(s.siteAddress), s.after.length / 2) })));
      const f = await native.floor(t.pid, sites, { realtime: true });
      out.floorSamplesUs.push(f.pauseNs / 1000);
      out.rounds++;
    }
    // Still the original function after all these rounds.
    await t.expectAnswers(sampleIndexes(1), false);
  } finally {
    await t.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  out.floorPauseUs = tailStats(out.floorSamplesUs, 1);
  for (const s of CONTENTION_STEPS) {
    const runs = samples[s];
    if (!runs.length) continue;
    const pauseUs = tailStats(runs.map((r) => r.pauseUs), 1);
    out.steps[s] = {
      pauseUs,
      totalStoppedUs: tailStats(runs.map((r) => r.totalStoppedUs), 1),
      wallMs: tailStats(runs.map((r) => r.wallMs), 1),
      maxAttempts: Math.max(...runs.map((r) => r.attempts)),
      reused: runs.filter((r) => r.reused).length,
      p90Ratio: tailRatio(pauseUs, out.floorPauseUs),
      samplesUs: runs.map((r) => r.pauseUs),
    };
  }
  out.durationS = Math.round((performance.now() - started) / 100) / 10;
  const f = (x?: TailStats) => (x ? `${x.median.toFixed(0)}/${x.p90.toFixed(0)}/${x.max.toFixed(0)}` : '-');
  log(
    `contention ${out.target}: ${out.rounds} rounds, pause µs median/p90/max: ` +
      CONTENTION_STEPS.map((s) => `${s} ${f(out.steps[s]?.pauseUs)} (p90 ${out.steps[s]?.p90Ratio ?? '-'}×)`).join(', ') +
      `, floor ${f(out.floorPauseUs)}${out.errors.length ? `; ${out.failures} failure(s): ${out.errors[0]}` : ''} (${out.durationS} s)`,
  );
  return out;
}

function remember(errors: string[], e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  if (!errors.includes(message) && errors.length < 5) errors.push(message);
}
