/**
 * Many processes: start N small targets (`benchd 1 idle 1 nogap`: a main thread and one idle
 * worker), patch bench_fn_0 in all of them through the engine, in this process, at several
 * concurrencies, and time it (then revert, to try the next concurrency on the same processes).
 * A sample of the processes must answer the patched value. Every target is killed at the end.
 */
import { applyPatch, revertFunctions } from '../engine/patch.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, functionSpecs } from './benchd.js';

export interface ScaleTry {
  concurrency: number;
  /** Wall time to patch every process, ms; and that divided by the processes. */
  applyTotalMs: number;
  applyPerProcessMs: number;
  /** Wall time to revert them all (at the same concurrency), ms. */
  revertTotalMs: number;
  /** Processes the engine failed to patch or to revert. */
  failed: number;
  /** Processes asked `call 0` after the apply, and how many answered the patched value. */
  sampleChecked: number;
  sampleOk: number;
  error?: string;
}

export interface ScalePoint {
  processes: number;
  /** Wall time to start them all (until each printed READY), ms. */
  spawnMs: number;
  tries: ScaleTry[];
  /** The fastest apply among the tries without failures. */
  best?: { concurrency: number; applyTotalMs: number; applyPerProcessMs: number };
  error?: string;
}

export interface ScaleSection {
  /** Command line of each process. */
  target: string;
  concurrencies: number[];
  points: ScalePoint[];
}

const SPAWN_CONCURRENCY = 16;
const SAMPLE = 10;

/** Runs fn over items with at most `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Evenly spread indexes into a list of n, at most `count` of them. */
function spread(n: number, count: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: count }, (_, i) => Math.floor((i * (n - 1)) / (count - 1)));
}

async function tryConcurrency(targets: Benchd[], concurrency: number): Promise<ScaleTry> {
  const patchPath = fixturePath(BENCH_PATCH);
  const functions = functionSpecs(1);
  const out: ScaleTry = { concurrency, applyTotalMs: 0, applyPerProcessMs: 0, revertTotalMs: 0, failed: 0, sampleChecked: 0, sampleOk: 0 };
  const patched = new Set<number>();
  let t0 = performance.now();
  await pool(targets, concurrency, async (t, i) => {
    try {
      await applyPatch({ pid: t.pid, patchPath, functions });
      patched.add(i);
    } catch (e) {
      out.failed++;
      out.error ??= message(e);
    }
  });
  out.applyTotalMs = Math.round((performance.now() - t0) * 10) / 10;
  out.applyPerProcessMs = Math.round((out.applyTotalMs / targets.length) * 1000) / 1000;
  for (const i of spread(targets.length, SAMPLE)) {
    out.sampleChecked++;
    try {
      await targets[i].expectAnswers([0], true);
      out.sampleOk++;
    } catch (e) {
      out.error ??= message(e);
    }
  }
  t0 = performance.now();
  await pool([...patched], concurrency, async (i) => {
    try {
      await revertFunctions({ pid: targets[i].pid, functions: ['bench_fn_0'] });
    } catch (e) {
      out.failed++;
      out.error ??= message(e);
    }
  });
  out.revertTotalMs = Math.round((performance.now() - t0) * 10) / 10;
  return out;
}

export async function scalePoint(processes: number, concurrencies: number[], log: (line: string) => void): Promise<ScalePoint> {
  const targets: Benchd[] = [];
  const point: ScalePoint = { processes, spawnMs: 0, tries: [] };
  try {
    const t0 = performance.now();
    let spawnError: unknown;
    await pool(Array.from({ length: processes }), SPAWN_CONCURRENCY, async () => {
      if (spawnError) return;
      try {
        targets.push(await Benchd.start({ threads: 1, mode: 'idle', functions: 1, gap: false }));
      } catch (e) {
        spawnError = e;
      }
    });
    if (spawnError) throw spawnError;
    point.spawnMs = Math.round(performance.now() - t0);
    for (const c of concurrencies) {
      const r = await tryConcurrency(targets, c);
      point.tries.push(r);
      log(`scale ${processes} processes, concurrency ${c}: apply ${r.applyTotalMs} ms (${r.applyPerProcessMs} ms each), revert ${r.revertTotalMs} ms, sample ${r.sampleOk}/${r.sampleChecked}${r.failed ? `, ${r.failed} failed: ${r.error}` : ''}`);
    }
    const ok = point.tries.filter((r) => r.failed === 0 && r.sampleOk === r.sampleChecked);
    const best = ok.sort((a, b) => a.applyTotalMs - b.applyTotalMs)[0];
    if (best) point.best = { concurrency: best.concurrency, applyTotalMs: best.applyTotalMs, applyPerProcessMs: best.applyPerProcessMs };
  } catch (e) {
    point.error = message(e);
    log(`scale ${processes} processes: ${point.error}`);
  } finally {
    const results = await Promise.allSettled(targets.map((t) => t.kill()));
    const stuck = results.filter((r) => r.status === 'rejected').length;
    if (stuck) point.error = `${point.error ? `${point.error}; ` : ''}${stuck} target(s) did not die`;
  }
  return point;
}

export async function scaleSection(counts: number[], concurrencies: number[], log: (line: string) => void): Promise<ScaleSection> {
  const points: ScalePoint[] = [];
  for (const n of counts) points.push(await scalePoint(n, concurrencies, log));
  return { target: 'benchd 1 idle 1 nogap', concurrencies, points };
}
