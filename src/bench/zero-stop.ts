/**
 * Zero-stop mode (src/engine/zerostop.ts, when it exists): benchd-zs (hot-patchable entries) with
 * busy workers, patched by `zeroStopApply`; the target's spinning gap recorder must see no gap
 * beyond the noise it sees with nothing happening. The module is optional: without it (or
 * without the export) the section says "not available".
 */
import { setTimeout as delay } from 'node:timers/promises';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, functionNames, functionSpecs, sampleIndexes, spinFor } from './benchd.js';
import { rounded, summarize, type Stats } from './stats.js';

/** zeroStopApply(pid, opts) and zeroStopRevert(pid, opts) of src/engine/zerostop.ts. */
type ZeroStopFn = (pid: number, opts: { patchPath: string; functions: { name: string; replacement?: string }[] }) => Promise<unknown>;
type ZeroStopRevertFn = (pid: number, opts: { functions: string[] }) => Promise<unknown>;

export interface ZeroStopEngine {
  apply: ZeroStopFn;
  revert: ZeroStopRevertFn;
}

export interface ZeroStopCase {
  threads: number;
  mode: 'busy';
  functions: number;
  /** `benchd-zs THREADS busy FUNCTIONS`. */
  target: string;
  runs: number;
  /** Largest gap the spinning recorder saw during each apply / revert, µs. */
  applyGapUs?: Stats;
  revertGapUs?: Stats;
  /** Each run, as long as its apply with nothing happening, µs. */
  noiseGapUs?: Stats;
  /** The same with the agent spinning on a CPU (contention alone, nothing touches the target), µs. */
  cpuNoiseGapUs?: Stats;
  applyWallMs?: Stats;
  revertWallMs?: Stats;
  /** The switch as zeroStopApply reports it (durationUs: first write → last write read back, nothing stopped), µs. */
  switchUs?: Stats;
  failures: number;
  errors: string[];
}

export interface ZeroStopSection {
  available: boolean;
  note: string;
  cases: ZeroStopCase[];
}

const MODULE = '../engine/zerostop.js';

/** The zero-stop engine if src/engine/zerostop.ts exists and exports zeroStopApply. */
export async function loadZeroStop(): Promise<ZeroStopEngine | string> {
  let mod: Record<string, unknown>;
  try {
    // A computed specifier: the module may not exist yet when this compiles.
    const specifier = MODULE;
    mod = (await import(specifier)) as Record<string, unknown>;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return err.code === 'ERR_MODULE_NOT_FOUND' ? 'not available: src/engine/zerostop.ts does not exist yet' : `not available: src/engine/zerostop.ts fails to load: ${err.message}`;
  }
  if (typeof mod.zeroStopApply !== 'function' || typeof mod.zeroStopRevert !== 'function') {
    return 'not available: src/engine/zerostop.ts does not export zeroStopApply and zeroStopRevert';
  }
  return { apply: mod.zeroStopApply as ZeroStopFn, revert: mod.zeroStopRevert as ZeroStopRevertFn };
}

function remember(errors: string[], e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  if (!errors.includes(message) && errors.length < 5) errors.push(message);
}

function durationOf(report: unknown): number | undefined {
  const d = (report as { durationUs?: unknown } | undefined)?.durationUs;
  return typeof d === 'number' ? d : undefined;
}

export async function zeroStopCase(engine: ZeroStopEngine, threads: number, functions: number, runs: number): Promise<ZeroStopCase> {
  const out: ZeroStopCase = { threads, mode: 'busy', functions, target: `benchd-zs ${threads} busy ${functions}`, runs: 0, failures: 0, errors: [] };
  const patchPath = fixturePath(BENCH_PATCH);
  const specs = functionSpecs(functions);
  const names = functionNames(functions);
  const t = await Benchd.start({ threads, mode: 'busy', functions, zeroStop: true });
  try {
    const applyGap: number[] = [];
    const revertGap: number[] = [];
    const applyWall: number[] = [];
    const revertWall: number[] = [];
    const switches: number[] = [];
    const noise: number[] = [];
    const cpuNoise: number[] = [];
    const maxFailures = Math.max(3, runs >> 2);
    while (out.runs < runs && out.failures < maxFailures) {
      await t.resetGap();
      let t0 = performance.now();
      let report: unknown;
      try {
        report = await engine.apply(t.pid, { patchPath, functions: specs });
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        continue;
      }
      applyWall.push(performance.now() - t0);
      applyGap.push(await t.gapUs());
      const d = durationOf(report);
      if (d !== undefined) switches.push(d);
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), true);

      await t.resetGap();
      t0 = performance.now();
      try {
        await engine.revert(t.pid, { functions: names });
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        break; // the target stays patched: no further apply is possible on it
      }
      revertWall.push(performance.now() - t0);
      revertGap.push(await t.gapUs());
      await t.resetGap();
      await delay(applyWall[applyWall.length - 1]);
      noise.push(await t.gapUs());
      await t.resetGap();
      spinFor(applyWall[applyWall.length - 1]);
      cpuNoise.push(await t.gapUs());
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), false);
      out.runs++;
    }
    Object.assign(out, {
      applyGapUs: rounded(summarize(applyGap)),
      revertGapUs: rounded(summarize(revertGap)),
      noiseGapUs: rounded(summarize(noise)),
      cpuNoiseGapUs: rounded(summarize(cpuNoise)),
      applyWallMs: rounded(summarize(applyWall), 2),
      revertWallMs: rounded(summarize(revertWall), 2),
      switchUs: rounded(summarize(switches)),
    });
    return out;
  } finally {
    await t.kill();
  }
}

export async function zeroStopSection(threadCounts: number[], functionCounts: number[], runs: number, log: (line: string) => void): Promise<ZeroStopSection> {
  const engine = await loadZeroStop();
  if (typeof engine === 'string') {
    log(`zero-stop: ${engine}`);
    return { available: false, note: engine, cases: [] };
  }
  const cases: ZeroStopCase[] = [];
  for (const threads of threadCounts) {
    for (const functions of functionCounts) {
      let c: ZeroStopCase;
      try {
        c = await zeroStopCase(engine, threads, functions, runs);
      } catch (e) {
        c = { threads, mode: 'busy', functions, target: `benchd-zs ${threads} busy ${functions}`, runs: 0, failures: 1, errors: [] };
        remember(c.errors, e);
      }
      cases.push(c);
      log(`zero-stop ${threads} busy ${functions} fn: ${c.runs} runs, gap ${c.applyGapUs?.median ?? '-'} µs (noise ${c.noiseGapUs?.median ?? '-'} µs)${c.errors.length ? `, ${c.errors[0]}` : ''}`);
    }
  }
  return { available: true, note: 'zeroStopApply and zeroStopRevert of src/engine/zerostop.ts', cases };
}
