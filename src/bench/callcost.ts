/**
 * What a patched call costs: nanoseconds per call of bench_fn_0, measured inside the target
 * (`callcost`: a tight loop of direct calls), unpatched and through each kind of redirection:
 * the 5-byte `E9 rel32` jump, the 14-byte `FF 25` absolute jump (placement 'far'), and, on the
 * hot-patchable build, the zero-stop entry (a short jump into the padding, then the jump there).
 */
import { applyPatch, revertFunctions } from '../engine/patch.js';
import { fixturePath } from '../harness/index.js';
import { Benchd, BENCH_PATCH, functionSpecs } from './benchd.js';
import { ratio, rounded, summarize, type Stats } from './stats.js';

export interface CallCostRow {
  /** unpatched | near | far | zero-stop */
  variant: string;
  /** benchd or benchd-zs */
  binary: string;
  /** What the call goes through: none, rel32 (E9), abs64 (FF 25), padding. */
  jump: string;
  nsPerCall?: Stats;
  /** Median ns per call / the same binary's unpatched median. */
  ratio?: number;
  error?: string;
}

export interface CallCostSection {
  function: string;
  /** Calls per measurement. */
  calls: number;
  /** Measurements per row (the statistics are over these). */
  repeats: number;
  rows: CallCostRow[];
}

async function measure(t: Benchd, calls: number, repeats: number): Promise<Stats | undefined> {
  const v: number[] = [];
  for (let i = 0; i < repeats; i++) v.push(await t.callCost(0, calls));
  return rounded(summarize(v), 3);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export async function callCostSection(calls: number, repeats: number, log: (line: string) => void): Promise<CallCostSection> {
  const rows: CallCostRow[] = [];
  const patchPath = fixturePath(BENCH_PATCH);
  const functions = functionSpecs(1);
  const add = (row: CallCostRow, base?: CallCostRow) => {
    if (base) row.ratio = ratio(row.nsPerCall?.median, base.nsPerCall?.median);
    rows.push(row);
    log(`call cost ${row.binary} ${row.variant}: ${row.nsPerCall ? `${row.nsPerCall.median} ns` : row.error}${row.ratio !== undefined ? ` (${row.ratio}×)` : ''}`);
  };

  // Only the main thread: nothing else competes with the measuring loop.
  const t = await Benchd.start({ threads: 0, mode: 'idle', functions: 1, gap: false });
  try {
    const base: CallCostRow = { variant: 'unpatched', binary: 'benchd', jump: 'none', nsPerCall: await measure(t, calls, repeats) };
    add(base);
    for (const placement of ['near', 'far'] as const) {
      const row: CallCostRow = { variant: placement, binary: 'benchd', jump: '?' };
      try {
        const a = await applyPatch({ pid: t.pid, patchPath, functions, placement });
        row.jump = a.sites[0].kind;
        await t.expectAnswers([0], true);
        row.nsPerCall = await measure(t, calls, repeats);
        await revertFunctions({ pid: t.pid, functions: ['bench_fn_0'] });
      } catch (e) {
        row.error = message(e);
      }
      add(row, base);
    }
  } finally {
    await t.kill();
  }

  const zs = await Benchd.start({ threads: 0, mode: 'idle', functions: 1, gap: false, zeroStop: true });
  try {
    const base: CallCostRow = { variant: 'unpatched', binary: 'benchd-zs', jump: 'none', nsPerCall: await measure(zs, calls, repeats) };
    add(base);
    const row: CallCostRow = { variant: 'zero-stop', binary: 'benchd-zs', jump: 'padding' };
    try {
      await applyPatch({ pid: zs.pid, patchPath, functions, mode: 'zero-stop' });
      await zs.expectAnswers([0], true);
      row.nsPerCall = await measure(zs, calls, repeats);
    } catch (e) {
      row.error = message(e);
    }
    add(row, base);
  } finally {
    await zs.kill();
  }
  return { function: 'bench_fn_0', calls, repeats, rows };
}
