/**
 * Zero-stop mode (src/engine/zerostop.ts, when it exists): benchd-zs (hot-patchable entries) with
 * busy workers, patched by `zeroStopApply`; the target's spinning gap recorder must see no gap
 * beyond the noise it sees with nothing happening. The module is optional: without it (or
 * without the export) the section says "not available".
 */
import { setTimeout as delay } from 'node:timers/promises';
import { revertFunctions } from '../engine/patch.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, functionNames, functionSpecs, sampleIndexes } from './benchd.js';
import { rounded, summarize, type Stats } from './stats.js';

type ZeroStopFn = (opts: { pid: number; patchPath: string; functions: { name: string; replacement?: string }[] }) => Promise<unknown>;
type ZeroStopRevertFn = (opts: { pid: number; functions: string[] }) => Promise<unknown>;

export interface ZeroStopEngine {
  apply: ZeroStopFn;
  /** zeroStopRevert when exported, else the engine's revertFunctions. */
  revert: ZeroStopRevertFn;
  revertName: string;
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
  /** The same window with nothing happening, µs. */
  noiseGapUs?: Stats;
  applyWallMs?: Stats;
  revertWallMs?: Stats;
  /** pauseUs as zeroStopApply reports it (0 expected), when it reports one. */
  reportedPauseUs?: Stats;
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
  if (typeof mod.zeroStopApply !== 'function') return 'not available: src/engine/zerostop.ts does not export zeroStopApply';
  const revert = typeof mod.zeroStopRevert === 'function' ? (mod.zeroStopRevert as ZeroStopRevertFn) : (o: { pid: number; functions: string[] }) => revertFunctions(o);
  return { apply: mod.zeroStopApply as ZeroStopFn, revert, revertName: typeof mod.zeroStopRevert === 'function' ? 'zeroStopRevert' : 'revertFunctions' };
}

function remember(errors: string[], e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  if (!errors.includes(message) && errors.length < 5) errors.push(message);
}

function pauseOf(report: unknown): number | undefined {
  const p = (report as { pauseUs?: unknown } | undefined)?.pauseUs;
  return typeof p === 'number' ? p : undefined;
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
    const pauses: number[] = [];
    const maxFailures = Math.max(3, runs >> 2);
    while (out.runs < runs && out.failures < maxFailures) {
      await t.resetGap();
      let t0 = performance.now();
      let report: unknown;
      try {
        report = await engine.apply({ pid: t.pid, patchPath, functions: specs });
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        continue;
      }
      applyWall.push(performance.now() - t0);
      applyGap.push(await t.gapUs());
      const p = pauseOf(report);
      if (p !== undefined) pauses.push(p);
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), true);

      await t.resetGap();
      t0 = performance.now();
      try {
        await engine.revert({ pid: t.pid, functions: names });
      } catch (e) {
        out.failures++;
        remember(out.errors, e);
        break; // the target stays patched: no further apply is possible on it
      }
      revertWall.push(performance.now() - t0);
      revertGap.push(await t.gapUs());
      if (out.runs === 0) await t.expectAnswers(sampleIndexes(functions), false);
      out.runs++;
    }
    const window = summarize(applyWall)?.median ?? 1;
    const noise: number[] = [];
    for (let i = 0; i < Math.min(runs, 20); i++) {
      await t.resetGap();
      await delay(window);
      noise.push(await t.gapUs());
    }
    Object.assign(out, {
      applyGapUs: rounded(summarize(applyGap)),
      revertGapUs: rounded(summarize(revertGap)),
      noiseGapUs: rounded(summarize(noise)),
      applyWallMs: rounded(summarize(applyWall), 2),
      revertWallMs: rounded(summarize(revertWall), 2),
      reportedPauseUs: rounded(summarize(pauses)),
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
  return { available: true, note: `zeroStopApply from src/engine/zerostop.ts; reverted with ${engine.revertName}`, cases };
}
