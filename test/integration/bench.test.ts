// `npm run bench` (src/bench/): the runner's --quick mode on a tiny matrix writes report.json and
// report.md with the documented fields (src/bench/report.ts). No timing is asserted: the
// benchmark is a report, not a test.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../src/bench/report.js';
import { representativeRound, type AgentScalePoint } from '../../src/bench/scale.js';
import { ratio, summarize, tailRatio, tailStats } from '../../src/bench/stats.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const statsShape = { n: expect.any(Number), min: expect.any(Number), median: expect.any(Number), p99: expect.any(Number), max: expect.any(Number) };

describe('bench statistics', () => {
  it('gives median, nearest-rank p99 and max', () => {
    const s = summarize(Array.from({ length: 100 }, (_, i) => 100 - i))!;
    expect(s).toEqual({ n: 100, min: 1, median: 50.5, p99: 99, max: 100 });
    expect(summarize([3, 1, 2])).toEqual({ n: 3, min: 1, median: 2, p99: 3, max: 3 });
    expect(summarize([])).toBeUndefined();
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(3, 0)).toBeUndefined();
  });
});

describe('tail statistics (the contention case)', () => {
  it('gives median, nearest-rank p90 and max, rounded, and the ratio of two p90s', () => {
    // 30 pauses: the 27th smallest (the fourth largest) is the p90, whatever the order they came in
    const values = Array.from({ length: 30 }, (_, i) => (i * 7) % 30 + 100.04);
    expect(tailStats(values)).toEqual({ n: 30, min: 100, median: 114.5, p90: 126, max: 129 });
    expect(tailStats([5, 1, 3, Number.NaN], 0)).toEqual({ n: 3, min: 1, median: 3, p90: 5, max: 5 });
    expect(tailStats([])).toBeUndefined();
    expect(tailRatio(tailStats([300, 300, 900]), tailStats([200, 200, 600]))).toBe(1.5);
    expect(tailRatio(tailStats([1]), undefined)).toBeUndefined();
  });
});

describe('the rounds of the many-processes apply', () => {
  const round = (applyWallMs: number, over: Partial<AgentScalePoint> = {}): AgentScalePoint => ({
    processes: 10, startupMs: 100, applyWallMs, perProcessMs: applyWallMs / 10, applyExitCode: 0, patched: 10, failed: 0,
    revertWallMs: applyWallMs / 2, revertPerProcessMs: applyWallMs / 20, revertExitCode: 0, reverted: 10, revertFailed: 0,
    sampleChecked: 10, sampleOk: 10, revertSampleOk: 10, ...over,
  });

  it('stands for them with the median round, listing every round in order', () => {
    const r = representativeRound([round(900), round(1200), round(700)]);
    expect(r.applyWallMs).toBe(900);
    expect(r.roundsApplyWallMs).toEqual([900, 1200, 700]);
    expect(r.roundsRevertWallMs).toEqual([450, 600, 350]);
    expect(representativeRound([round(800), round(600)]).applyWallMs).toBe(600);
  });

  it('never hides a failed round behind a good median', () => {
    expect(representativeRound([round(500), round(900, { patched: 9, failed: 1 }), round(600)]).applyWallMs).toBe(900);
    expect(representativeRound([round(500), round(600), round(700, { revertSampleOk: 9 })]).applyWallMs).toBe(700);
    expect(representativeRound([round(500, { error: 'apply: exit 4' }), round(600)]).error).toBe('apply: exit 4');
    expect(() => representativeRound([])).toThrow();
  });
});

describe('npm run bench -- --quick', () => {
  let out: string;
  let stdout: string;
  let report: BenchReport;

  beforeAll(async () => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-bench-'));
    ({ stdout } = await run(process.execPath, [path.join(root, 'dist/bench/main.js'), '--quick', '--out', out], { cwd: root, timeout: 100_000, maxBuffer: 16 << 20 }));
    report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as BenchReport;
  }, 110_000);

  afterAll(() => {
    if (out) fs.rmSync(out, { recursive: true, force: true });
  });

  it('writes both reports and prints the Markdown', () => {
    const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    for (const heading of ['# hp-agent benchmark', '## Reading', '## Pause', '## Zero-stop', '## Cost of a patched call', '## Restart instead of hotpatch', '## Many processes']) {
      expect(md).toContain(heading);
    }
    expect(stdout).toContain('## Reading');
  });

  it('says what ran, where and when', () => {
    expect(report).toMatchObject({ schema: 'hp-agent-bench/1', options: { runs: 5, quick: true } });
    expect(Number.isNaN(Date.parse(report.date))).toBe(false);
    expect(report.machine).toMatchObject({ nproc: expect.any(Number), cpu: expect.any(String), kernel: expect.any(String), loadAverage: expect.any(Array) });
    expect(report.reading.length).toBeGreaterThan(0);
    expect(report.errors).toEqual([]);
    expect(report.incomplete).toBeUndefined();
  });

  it('has the pause matrix: 1 and 4 threads, idle and busy, 1 function, against the floor; and one case with function consistency', () => {
    const pause = report.pause!;
    expect(pause.cases.map((c) => `${c.threads} ${c.mode} ${c.functions} ${c.consistency}`)).toEqual(['1 idle 1 entry', '1 busy 1 entry', '4 idle 1 entry', '4 busy 1 entry', '4 idle 1 function']);
    for (const c of pause.cases) {
      expect(c.runs, `${c.target}: ${c.errors.join('; ')}`).toBeGreaterThan(0);
      expect(c.targetThreads).toBe(c.threads + 2); // workers, main, gap recorder
      expect(c.durationS).toEqual(expect.any(Number));
      // every apply and revert stops the recorder (a voluntary context switch) at least once
      expect(c.stopped).toBeGreaterThanOrEqual(2 * c.runs);
      for (const field of ['applyPauseUs', 'revertPauseUs', 'applyGapUs', 'revertGapUs', 'noiseGapUs', 'cpuNoiseGapUs', 'applyWallMs', 'revertWallMs'] as const) {
        expect(c[field], `${c.target} ${field}`).toEqual(statsShape);
      }
      expect(c.floorPauseUs).toEqual(statsShape);
      expect(c.ratio).toEqual(expect.any(Number));
    }
  });

  it('has zero-stop, call cost and restart', () => {
    const zs = report.zeroStop!;
    expect(zs.note).toEqual(expect.any(String));
    expect(zs.available).toBe(true);
    expect(zs.cases.map((c) => `${c.threads} ${c.functions}`)).toEqual(['0 1', '1 1']);
    for (const c of zs.cases) {
      expect(c.runs, `${c.target}: ${c.errors.join('; ')}`).toBe(5);
      for (const field of ['applyGapUs', 'revertGapUs', 'noiseGapUs', 'cpuNoiseGapUs', 'switchUs', 'revertSwitchUs', 'applyWallMs', 'revertWallMs'] as const) {
        expect(c[field], `${c.target} ${field}`).toEqual(statsShape);
      }
      expect(c.durationS).toEqual(expect.any(Number));
      // nothing stopped the spinning recorder: its voluntary context switches did not grow
      expect(c.stopped, c.target).toBe(0);
    }
    const rows = report.callCost!.rows;
    expect(rows.map((r) => `${r.binary} ${r.variant}`)).toEqual(['benchd unpatched', 'benchd near', 'benchd far', 'benchd-zs unpatched', 'benchd-zs zero-stop']);
    expect(rows.slice(0, 3).map((r) => r.jump)).toEqual(['none', 'rel32', 'abs64']);
    for (const r of rows.slice(0, 4)) expect(r.nsPerCall, `${r.binary} ${r.variant}: ${r.error}`).toEqual(statsShape);
    expect(report.restart).toMatchObject({ runs: 3, totalMs: statsShape, killMs: statsShape, startMs: statsShape });
  });

  it('has scale: the engine in-process and `hp-agent apply` as a separate process, on targets held by another process', () => {
    const scale = report.scale!;
    expect(scale.points.map((p) => p.processes)).toEqual([1, 10]);
    for (const p of scale.points) {
      expect(p.tries.map((t) => t.concurrency)).toEqual([1, 2]);
      for (const t of p.tries) expect(t).toMatchObject({ failed: 0, sampleOk: t.sampleChecked, applyTotalMs: expect.any(Number), applyPerProcessMs: expect.any(Number) });
      expect(p.best).toMatchObject({ concurrency: expect.any(Number), applyTotalMs: expect.any(Number) });
    }
    // `hp-agent apply` / `revert` as separate processes, on the same targets
    expect(scale.agentError).toBeUndefined();
    expect(scale.agent.map((a) => a.processes)).toContain(10);
    for (const a of scale.agent) {
      expect(a, a.error).toMatchObject({ patched: a.processes, failed: 0, reverted: a.processes, revertFailed: 0, applyExitCode: 0, revertExitCode: 0, sampleOk: a.sampleChecked, revertSampleOk: a.sampleChecked });
      expect(a).toMatchObject({ startupMs: expect.any(Number), applyWallMs: expect.any(Number), perProcessMs: expect.any(Number), revertWallMs: expect.any(Number), applyWorkMs: expect.any(Number) });
      expect(a.sampleChecked).toBeGreaterThan(0);
      // --quick runs two rounds, each on freshly started processes.
      expect(a.roundsApplyWallMs).toHaveLength(2);
      expect(a.roundsApplyWallMs).toContain(a.applyWallMs);
    }
  });
});
