/**
 * The pause a live patch imposes, against the floor: for each case (worker threads × idle/busy ×
 * patched functions) one benchd target, and `runs` cycles of
 *
 *   floor   the raw primitives of the native core (seize, interrupt, wait for every thread, write
 *           the bytes that are already at each site, resume) on the same sites;
 *   apply   applyPatch (mode 'stop') of bench_fix.so over the first N functions (the engine, here);
 *   revert  revertFunctions of the same functions;
 *
 * then two noise windows as long as the apply (the agent asleep, the agent spinning). The agent
 * notes each call's window on the monotonic clock and asks the target once per cycle for the
 * longest part of each window its spinning gap recorder did not run (`gaps`), so the pause the
 * core measures is checked from inside the target without a reset/read round trip around each
 * call (with 64 busy threads each round trip waits up to a scheduling period for the recorder).
 * A cycle's order is fixed (floor, apply, revert), and the floor runs on the unpatched target
 * each time: same threads, same sites, same moment. Around each apply and revert the recorder's
 * voluntary context switches are read: every stop of it counts (`stopped`).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { applyPatch, revertFunctions, type ApplyReport } from '../engine/patch.js';
import { native } from '../native.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, contextSwitches, functionNames, functionSpecs, sampleIndexes, spinFor, timed, type Mode } from './benchd.js';
import { ratio, rounded, summarize, type Stats } from './stats.js';

export interface PauseConfig {
  threads: number;
  mode: Mode;
  functions: number;
  /**
   * 'entry' (default): the switch only needs every thread stopped. 'function': during the stop
   * the core also checks that no thread runs, or has a return address on its stack into, the code
   * being replaced (DESIGN §4), so the pause includes reading every thread's live stack.
   */
  consistency?: 'entry' | 'function';
}

export interface PauseCase extends PauseConfig {
  /** The target: `benchd THREADS MODE FUNCTIONS`. */
  target: string;
  /** Threads the core stopped: the workers, the main thread and the gap recorder. */
  targetThreads?: number;
  /** Apply+revert cycles that succeeded (the statistics are over these). */
  runs: number;
  /** Wall time of the whole case (target started → killed), s. */
  durationS?: number;
  /** Whether the engine's transactions ran at real-time priority (the floor ran the same way). */
  realtime?: boolean;
  /** Jump kind written at the sites (rel32 expected). */
  jump?: string;
  /** The core's pause (first thread interrupted → last resumed) for apply and for revert, µs. */
  applyPauseUs?: Stats;
  revertPauseUs?: Stats;
  /** Largest gap the target's spinning recorder saw during apply / revert / floor, µs. */
  applyGapUs?: Stats;
  revertGapUs?: Stats;
  floorGapUs?: Stats;
  /** Largest gap the recorder saw in each run over as long as that run's apply, with the agent asleep: the noise, µs. */
  noiseGapUs?: Stats;
  /** The same with the agent spinning on a CPU instead of sleeping (contention alone, not touching the target), µs. */
  cpuNoiseGapUs?: Stats;
  /** Wall time of applyPatch / revertFunctions as the caller sees it, ms. */
  applyWallMs?: Stats;
  revertWallMs?: Stats;
  /** The floor's pause (first interrupt → last resume) and total (first seize → last resume), µs. */
  floorPauseUs?: Stats;
  floorTotalUs?: Stats;
  /** median apply pause / median floor pause (and the same for revert). */
  ratio?: number;
  revertRatio?: number;
  /** Most transaction attempts one apply needed, and most threads single-stepped out of a site. */
  maxAttempts?: number;
  /**
   * Times the gap recorder was stopped during the counted applies and reverts: the growth of its
   * voluntary_ctxt_switches (a ptrace stop is one; the spinning recorder never blocks by itself).
   * At least 2 per run here, against 0 in zero-stop mode.
   */
  stopped?: number;
  /** Failed applies or reverts (each retried) and their distinct messages. */
  failures: number;
  errors: string[];
}

export interface PauseSection {
  cases: PauseCase[];
}

function remember(errors: string[], e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  if (!errors.includes(message) && errors.length < 5) errors.push(message);
}

export interface PauseRunOptions {
  runs: number;
  log: (line: string) => void;
  /** Called with the section so far after each case (the runner writes a partial report). */
  onProgress?: (partial: PauseSection) => void;
}

/** One case of the matrix on a fresh target, killed afterwards whatever happens. */
export async function pauseCase(cfg: PauseConfig, opts: PauseRunOptions): Promise<PauseCase> {
  const started = performance.now();
  const out: PauseCase = { ...cfg, consistency: cfg.consistency ?? 'entry', target: `benchd ${cfg.threads} ${cfg.mode} ${cfg.functions}`, runs: 0, failures: 0, errors: [] };
  const consistency = out.consistency;
  const patchPath = fixturePath(BENCH_PATCH);
  const functions = functionSpecs(cfg.functions);
  const names = functionNames(cfg.functions);
  const t = await Benchd.start({ threads: cfg.threads, mode: cfg.mode, functions: cfg.functions });
  try {
    // Warm-up (not counted): proves the patch takes and gives the sites for the floor.
    let warm: ApplyReport;
    try {
      warm = await applyPatch({ pid: t.pid, patchPath, functions, mode: 'stop', consistency });
      await t.expectAnswers(sampleIndexes(cfg.functions), true);
      await revertFunctions({ pid: t.pid, functions: names, mode: 'stop', consistency });
      await t.expectAnswers(sampleIndexes(cfg.functions), false);
    } catch (e) {
      out.failures++;
      remember(out.errors, e);
      return out;
    }
    out.targetThreads = warm.threads;
    out.realtime = warm.realtime;
    out.jump = [...new Set(warm.sites.map((s) => s.kind))].join(', ');
    const floorSites = await Promise.all(
      warm.sites.map(async (s) => ({ addr: s.siteAddress, write: await native.readMemory(t.pid, s.siteAddress, s.after.length / 2) })),
    );
    const tid = await t.recorderTid();
    const voluntary = () => contextSwitches(t.pid, tid).voluntary;

    const applyPause: number[] = [];
    const revertPause: number[] = [];
    const applyGap: number[] = [];
    const revertGap: number[] = [];
    const floorGap: number[] = [];
    const applyWall: number[] = [];
    const revertWall: number[] = [];
    const floorPause: number[] = [];
    const floorTotal: number[] = [];
    const noise: number[] = [];
    const cpuNoise: number[] = [];
    let maxAttempts = 0;
    let stopped = 0;
    const maxFailures = Math.max(5, opts.runs >> 2);

    while (out.runs < opts.runs && out.failures < maxFailures) {
      const floor = await timed(() => native.floor(t.pid, floorSites, { realtime: warm.realtime }));
      floorPause.push(floor.value.pauseNs / 1000);
      floorTotal.push(floor.value.totalNs / 1000);

      let s0 = voluntary();
      let a: Awaited<ReturnType<typeof timed<ApplyReport>>>;
      try {
        a = await timed(() => applyPatch({ pid: t.pid, patchPath, functions, mode: 'stop', consistency }));
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        floorGap.push(...(await t.gapsUs([floor.window])));
        continue; // a failed apply changed nothing
      }
      stopped += voluntary() - s0;

      s0 = voluntary();
      const r = await timed(async () => {
        for (let attempt = 0; attempt < 3; attempt++) {
          try {
            return await revertFunctions({ pid: t.pid, functions: names, mode: 'stop', consistency });
          } catch (e) {
            out.failures++;
            remember(out.errors, e);
          }
        }
        throw new Error(`${t.describe()}: the patch could not be reverted: ${out.errors.join('; ')}`);
      });
      stopped += voluntary() - s0;

      // The noise, in the same run (the machine's load changes): as long as the apply, doing nothing.
      const asleep = await timed(() => delay(a.ms));
      const spinning = await timed(() => spinFor(a.ms));

      const gaps = await t.gapsUs([a.window, r.window, asleep.window, spinning.window, floor.window]);
      applyGap.push(gaps[0]);
      revertGap.push(gaps[1]);
      noise.push(gaps[2]);
      cpuNoise.push(gaps[3]);
      floorGap.push(gaps[4]);
      applyPause.push(a.value.pauseUs);
      revertPause.push(r.value.pauseUs);
      applyWall.push(a.ms);
      revertWall.push(r.ms);
      maxAttempts = Math.max(maxAttempts, a.value.attempts, r.value.attempts);
      out.runs++;
    }
    // The patch must still work after all these cycles.
    await t.expectAnswers(sampleIndexes(cfg.functions), false);

    const us = (v: number[]) => rounded(summarize(v), 1);
    const ms = (v: number[]) => rounded(summarize(v), 2);
    Object.assign(out, {
      applyPauseUs: us(applyPause),
      revertPauseUs: us(revertPause),
      applyGapUs: us(applyGap),
      revertGapUs: us(revertGap),
      floorGapUs: us(floorGap),
      noiseGapUs: us(noise),
      cpuNoiseGapUs: us(cpuNoise),
      applyWallMs: ms(applyWall),
      revertWallMs: ms(revertWall),
      floorPauseUs: us(floorPause),
      floorTotalUs: us(floorTotal),
      maxAttempts,
      ...(out.runs > 0 ? { stopped } : {}),
    });
    out.ratio = ratio(summarize(applyPause)?.median, summarize(floorPause)?.median);
    out.revertRatio = ratio(summarize(revertPause)?.median, summarize(floorPause)?.median);
    return out;
  } finally {
    await t.kill();
    out.durationS = Math.round((performance.now() - started) / 100) / 10;
  }
}

export interface PauseMatrix {
  threads: number[];
  modes: Mode[];
  functions: number[];
  /** Cases run again with function consistency (the stack check during the stop), after the matrix. */
  functionConsistency?: { threads: number[]; modes: Mode[]; functions: number[] };
}

/** Every case of the matrix, in the order run: the entry-consistency matrix, then the function-consistency cases. */
export function pauseConfigs(matrix: PauseMatrix): PauseConfig[] {
  const grid = (m: { threads: number[]; modes: Mode[]; functions: number[] }, consistency: 'entry' | 'function') =>
    m.threads.flatMap((threads) => m.modes.flatMap((mode) => m.functions.map((functions): PauseConfig => ({ threads, mode, functions, consistency }))));
  return [...grid(matrix, 'entry'), ...(matrix.functionConsistency ? grid(matrix.functionConsistency, 'function') : [])];
}

export async function pauseSection(matrix: PauseMatrix, opts: PauseRunOptions): Promise<PauseSection> {
  const cases: PauseCase[] = [];
  for (const cfg of pauseConfigs(matrix)) {
    const { threads, mode, functions } = cfg;
    const started = performance.now();
    let c: PauseCase;
    try {
      c = await pauseCase(cfg, opts);
    } catch (e) {
      c = { ...cfg, target: `benchd ${threads} ${mode} ${functions}`, runs: 0, durationS: Math.round((performance.now() - started) / 100) / 10, failures: 1, errors: [] };
      remember(c.errors, e);
    }
    cases.push(c);
    opts.onProgress?.({ cases: [...cases] });
    const f = (s?: Stats) => (s ? s.median.toFixed(0) : '-');
    opts.log(
      `pause ${String(threads).padStart(2)} ${mode} ${String(functions).padStart(3)} fn${cfg.consistency === 'function' ? ' (function consistency)' : ''}: ${c.runs} runs, pause ${f(c.applyPauseUs)} µs, floor ${f(c.floorPauseUs)} µs, gap ${f(c.applyGapUs)} µs` +
        `${c.ratio !== undefined ? `, ratio ${c.ratio}` : ''}, stopped ${c.stopped ?? '-'}${c.errors.length ? `, ${c.failures} failure(s): ${c.errors[0]}` : ''} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
    );
  }
  return { cases };
}
