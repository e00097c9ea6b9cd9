/**
 * Zero-stop mode: benchd-zs (hot-patchable entries) patched by applyPatch / revertFunctions with
 * mode 'zero-stop' (src/engine/patch.ts), which switches the entries with plain writes and stops
 * no thread. Two proofs, per case:
 *
 *  - the target's spinning gap recorder must see no gap beyond the noise it sees with nothing
 *    happening (only telling with fewer busy threads than CPUs: the 0-worker case). The windows
 *    are timed on the monotonic clock and the target is asked once per run (`gaps`, see pause.ts);
 *  - the recorder's voluntary context switches must not grow across an apply or a revert: it
 *    never blocks by itself, and a ptrace stop is a voluntary switch (`stopped` must be 0).
 *
 * The main thread, asleep in read(), is counted as well: mapping the patch borrows a sleeping
 * thread for a few remote system calls (a ptrace stop of a thread that was not running).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { applyPatch, revertFunctions, type ApplyReport, type RevertReport } from '../engine/patch.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, contextSwitches, functionNames, functionSpecs, sampleIndexes, spinFor, timed } from './benchd.js';
import { rounded, summarize, type Stats } from './stats.js';

export interface ZeroStopCase {
  /** Busy worker threads (0: only the recorder spins, besides the main thread asleep on stdin). */
  threads: number;
  mode: 'busy';
  functions: number;
  /** `benchd-zs THREADS busy FUNCTIONS`. */
  target: string;
  runs: number;
  /** Wall time of the whole case (target started → killed), s. */
  durationS?: number;
  /** Largest gap the spinning recorder saw during each apply / revert, µs. */
  applyGapUs?: Stats;
  revertGapUs?: Stats;
  /** Each run, as long as its apply with nothing happening, µs. */
  noiseGapUs?: Stats;
  /** The same with the agent spinning on a CPU (contention alone, nothing touches the target), µs. */
  cpuNoiseGapUs?: Stats;
  applyWallMs?: Stats;
  revertWallMs?: Stats;
  /** The engine's switchUs for apply and revert (first write → last write read back, nothing stopped), µs. */
  switchUs?: Stats;
  revertSwitchUs?: Stats;
  /**
   * Times the recorder was stopped: the sum over every apply and revert of the growth of its
   * voluntary_ctxt_switches (/proc/PID/task/TID/status). Must be 0.
   */
  stopped?: number;
  /** The same count over the noise windows (nothing happening): the control, expected 0. */
  idleSwitches?: number;
  /**
   * Times the recorder was preempted (nonvoluntary_ctxt_switches) during the applies and reverts,
   * and during the noise windows: what its gaps come from when nothing stops it.
   */
  preempted?: number;
  idlePreempted?: number;
  /**
   * Voluntary context switches of the target's main thread (asleep in read() on stdin) during the
   * applies and during the reverts. Not a running thread: the loader borrows a sleeping thread
   * for the remote system calls that map the patch (memfd_create, mmap, ...), a ptrace stop of
   * that thread, so this grows with every apply; the switch itself (and so a revert) borrows none.
   */
  mainThreadSwitches?: { apply: number; revert: number };
  failures: number;
  errors: string[];
}

export interface ZeroStopSection {
  available: boolean;
  note: string;
  cases: ZeroStopCase[];
}

const NOTE = "applyPatch and revertFunctions with mode 'zero-stop' (src/engine/patch.ts)";

function remember(errors: string[], e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  if (!errors.includes(message) && errors.length < 5) errors.push(message);
}

/** Throws unless the engine says it switched without stopping anything. */
function checkZeroStop(what: string, r: ApplyReport | RevertReport): void {
  if (r.mode !== 'zero-stop' || r.threads !== 0 || r.pauseUs !== 0 || r.switchUs === undefined) {
    throw new Error(`${what} reported mode ${r.mode}, ${r.threads} thread(s) stopped, pause ${r.pauseUs} µs, switch ${r.switchUs} µs: not a zero-stop switch`);
  }
}

export async function zeroStopCase(threads: number, functions: number, runs: number): Promise<ZeroStopCase> {
  const started = performance.now();
  const out: ZeroStopCase = { threads, mode: 'busy', functions, target: `benchd-zs ${threads} busy ${functions}`, runs: 0, failures: 0, errors: [] };
  const patchPath = fixturePath(BENCH_PATCH);
  const specs = functionSpecs(functions);
  const names = functionNames(functions);
  const t = await Benchd.start({ threads, mode: 'busy', functions, zeroStop: true });
  try {
    const tid = await t.recorderTid();
    const applyGap: number[] = [];
    const revertGap: number[] = [];
    const applyWall: number[] = [];
    const revertWall: number[] = [];
    const applySwitch: number[] = [];
    const revertSwitch: number[] = [];
    const noise: number[] = [];
    const cpuNoise: number[] = [];
    const zero = () => ({ voluntary: 0, involuntary: 0, main: 0 });
    const sums = { apply: zero(), revert: zero(), idle: zero() };
    /** Runs fn in a timed window, adding the recorder's and main thread's context switches meanwhile to `sums[kind]`. */
    const counted = async <T>(kind: keyof typeof sums, fn: () => Promise<T> | T) => {
      const before = contextSwitches(t.pid, tid);
      const main = contextSwitches(t.pid, t.pid).voluntary;
      const r = await timed(fn);
      const after = contextSwitches(t.pid, tid);
      sums[kind].main += contextSwitches(t.pid, t.pid).voluntary - main;
      sums[kind].voluntary += after.voluntary - before.voluntary;
      sums[kind].involuntary += after.involuntary - before.involuntary;
      return r;
    };
    const maxFailures = Math.max(3, runs >> 2);
    while (out.runs < runs && out.failures < maxFailures) {
      let a: Awaited<ReturnType<typeof timed<ApplyReport>>>;
      try {
        a = await counted('apply', () => applyPatch({ pid: t.pid, patchPath, functions: specs, mode: 'zero-stop' }));
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        continue; // a failed apply changed nothing
      }
      checkZeroStop('applyPatch', a.value);
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), true);

      let r: Awaited<ReturnType<typeof timed<RevertReport>>>;
      try {
        r = await counted('revert', () => revertFunctions({ pid: t.pid, functions: names, mode: 'zero-stop' }));
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        break; // the target stays patched: no further apply is possible on it
      }
      checkZeroStop('revertFunctions', r.value);

      // The noise, in the same run (the machine's load changes): as long as the apply, doing nothing.
      const asleep = await counted('idle', () => delay(a.ms));
      const spinning = await counted('idle', () => spinFor(a.ms));
      const gaps = await t.gapsUs([a.window, r.window, asleep.window, spinning.window]);
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), false);

      applyGap.push(gaps[0]);
      revertGap.push(gaps[1]);
      noise.push(gaps[2]);
      cpuNoise.push(gaps[3]);
      applyWall.push(a.ms);
      revertWall.push(r.ms);
      applySwitch.push(a.value.switchUs!);
      revertSwitch.push(r.value.switchUs!);
      out.runs++;
    }
    Object.assign(out, {
      applyGapUs: rounded(summarize(applyGap)),
      revertGapUs: rounded(summarize(revertGap)),
      noiseGapUs: rounded(summarize(noise)),
      cpuNoiseGapUs: rounded(summarize(cpuNoise)),
      applyWallMs: rounded(summarize(applyWall), 2),
      revertWallMs: rounded(summarize(revertWall), 2),
      switchUs: rounded(summarize(applySwitch)),
      revertSwitchUs: rounded(summarize(revertSwitch)),
      // counted over the runs attempted (a failed apply still ran in the target)
      ...(out.runs > 0
        ? {
            stopped: sums.apply.voluntary + sums.revert.voluntary,
            idleSwitches: sums.idle.voluntary,
            preempted: sums.apply.involuntary + sums.revert.involuntary,
            idlePreempted: sums.idle.involuntary,
            mainThreadSwitches: { apply: sums.apply.main, revert: sums.revert.main },
          }
        : {}),
    });
    return out;
  } finally {
    await t.kill();
    out.durationS = Math.round((performance.now() - started) / 100) / 10;
  }
}

export async function zeroStopSection(threadCounts: number[], functionCounts: number[], runs: number, log: (line: string) => void): Promise<ZeroStopSection> {
  const cases: ZeroStopCase[] = [];
  for (const threads of threadCounts) {
    for (const functions of functionCounts) {
      const started = performance.now();
      let c: ZeroStopCase;
      try {
        c = await zeroStopCase(threads, functions, runs);
      } catch (e) {
        c = { threads, mode: 'busy', functions, target: `benchd-zs ${threads} busy ${functions}`, runs: 0, durationS: Math.round((performance.now() - started) / 100) / 10, failures: 1, errors: [] };
        remember(c.errors, e);
      }
      cases.push(c);
      log(
        `zero-stop ${String(threads).padStart(2)} busy ${String(functions).padStart(3)} fn: ${c.runs} runs, gap ${c.applyGapUs?.median ?? '-'} µs (noise ${c.noiseGapUs?.median ?? '-'} µs), switch ${c.switchUs?.median ?? '-'} µs, stopped ${c.stopped ?? '-'}` +
          `${c.errors.length ? `, ${c.errors[0]}` : ''} (${c.durationS ?? '-'} s)`,
      );
    }
  }
  return { available: true, note: NOTE, cases };
}
