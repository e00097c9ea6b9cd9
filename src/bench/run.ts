/**
 * Runs the benchmark of issue 4 and writes its report (report.json, report.md): the pause
 * matrix against the floor, zero-stop mode, the cost of a patched call, a restart for
 * comparison, and many processes at once. Each section is independent: one that fails is
 * reported as failed and the others still run. Every target started is killed at the end.
 */
import fs from 'node:fs';
import path from 'node:path';
import { killAllTargets } from '../harness/index.js';
import { callCostSection } from './callcost.js';
import { contentionSection } from './contention.js';
import { machineInfo } from './machine.js';
import { pauseSection, type PauseMatrix } from './pause.js';
import { reading, renderMarkdown, REPORT_SCHEMA, SECTIONS, type BenchReport, type SectionName } from './report.js';
import { restartSection } from './restart.js';
import { AGENT_ROUNDS, scaleSection } from './scale.js';
import { zeroStopSection } from './zero-stop.js';

export interface BenchPlan {
  runs: number;
  quick: boolean;
  sections: SectionName[];
  pause: PauseMatrix;
  /** Rounds of the contention case (apply, revert, re-apply, revert through the CLI). */
  contentionRounds: number;
  zeroStop: { threads: number[]; functions: number[] };
  callCost: { calls: number; repeats: number };
  restartRuns: number;
  scale: { processes: number[]; concurrencies: number[]; agentRounds: number };
}

/** The full matrix of issue 4, or the small one of --quick. */
export function benchPlan(opts: { quick?: boolean; runs?: number; sections?: SectionName[] } = {}): BenchPlan {
  const quick = opts.quick ?? false;
  const runs = opts.runs ?? (quick ? 5 : 100);
  const sections = opts.sections ?? [...SECTIONS];
  return quick
    ? {
        runs,
        quick,
        sections,
        pause: { threads: [1, 4], modes: ['idle', 'busy'], functions: [1], functionConsistency: { threads: [4], modes: ['idle'], functions: [1] } },
        // Each round is four `hp-agent try` runs next to five spinning threads (~2 s each on 2 CPUs).
        contentionRounds: opts.runs ?? 2,
        zeroStop: { threads: [0, 1], functions: [1] },
        callCost: { calls: 200_000, repeats: 5 },
        restartRuns: 3,
        scale: { processes: [1, 10], concurrencies: [1, 2], agentRounds: 2 },
      }
    : {
        runs,
        quick,
        sections,
        pause: {
          threads: [1, 4, 16, 64],
          modes: ['idle', 'busy'],
          functions: [1, 16, 256],
          // What the stack check of function consistency adds to the stop (busy threads that keep
          // calling the patched functions would mostly wait out their retries instead).
          functionConsistency: { threads: [1, 4, 16, 64], modes: ['idle'], functions: [1, 256] },
        },
        contentionRounds: opts.runs ?? 30,
        // 0 busy threads: only the recorder spins, the one case quiet enough to show a gap of nothing.
        // The switch writes all functions in rounds (a 1 ms pause per round): 256 cost as much as 1.
        zeroStop: { threads: [0, 1, 4, 16, 64], functions: [1, 16, 256] },
        callCost: { calls: 1_000_000, repeats: 21 },
        restartRuns: 20,
        scale: { processes: [1, 10, 100, 1000], concurrencies: [1, 2, 4, 8], agentRounds: AGENT_ROUNDS },
      };
}

export interface BenchResult {
  report: BenchReport;
  markdown: string;
  jsonPath: string;
  markdownPath: string;
}

export async function runBench(plan: BenchPlan, outDir: string, log: (line: string) => void = () => undefined): Promise<BenchResult> {
  const started = performance.now();
  const date = new Date().toISOString();
  const machine = machineInfo();
  const errors: BenchReport['errors'] = [];
  const wants = (s: SectionName) => plan.sections.includes(s);
  async function section<T>(name: SectionName, run: () => Promise<T>): Promise<T | null> {
    if (!wants(name)) return null;
    try {
      return await run();
    } catch (e) {
      errors.push({ section: name, message: e instanceof Error ? e.message : String(e) });
      log(`${name}: failed: ${errors[errors.length - 1].message}`);
      return null;
    } finally {
      await killAllTargets().catch((e: unknown) => log(`killing targets: ${String(e)}`));
    }
  }

  const results: Pick<BenchReport, SectionName> = { pause: null, contention: null, zeroStop: null, callCost: null, restart: null, scale: null };
  fs.mkdirSync(outDir, { recursive: true });
  const jsonPath = path.join(outDir, 'report.json');
  const markdownPath = path.join(outDir, 'report.md');
  const write = (final: boolean): { report: BenchReport; markdown: string } => {
    if (final) machine.loadAverageEnd = machineInfo().loadAverage;
    const partial = {
      schema: REPORT_SCHEMA,
      date,
      durationS: Math.round((performance.now() - started) / 100) / 10,
      options: { runs: plan.runs, quick: plan.quick, sections: plan.sections },
      machine,
      ...results,
      errors,
      ...(final ? {} : { incomplete: true }),
    } satisfies Omit<BenchReport, 'reading'>;
    // the reading right after the machine, for people opening the JSON
    const { pause, contention, zeroStop, callCost, restart, scale } = results;
    const report: BenchReport = { schema: partial.schema, date, durationS: partial.durationS, options: partial.options, machine, ...(final ? {} : { incomplete: true }), reading: reading(partial), pause, contention, zeroStop, callCost, restart, scale, errors };
    const markdown = renderMarkdown(report);
    // written to a temporary name and renamed: a reader never sees half a report
    for (const [file, text] of [[jsonPath, `${JSON.stringify(report, null, 2)}\n`], [markdownPath, `${markdown}\n`]]) {
      fs.writeFileSync(`${file}.tmp`, text);
      fs.renameSync(`${file}.tmp`, file);
    }
    return { report, markdown };
  };

  // Quick sections first, so a run cut short still reports them; every section and every pause
  // case rewrites the (incomplete) report.
  results.callCost = await section('callCost', () => callCostSection(plan.callCost.calls, plan.callCost.repeats, log));
  write(false);
  results.restart = await section('restart', () => restartSection(plan.restartRuns, log));
  write(false);
  results.scale = await section('scale', () => scaleSection(plan.scale.processes, plan.scale.concurrencies, log, plan.scale.processes, plan.scale.agentRounds));
  write(false);
  results.contention = await section('contention', () => contentionSection(plan.contentionRounds, log));
  write(false);
  results.zeroStop = await section('zeroStop', () => zeroStopSection(plan.zeroStop.threads, plan.zeroStop.functions, plan.runs, log));
  write(false);
  // a section that fails part way keeps the cases it finished
  results.pause = await section('pause', () =>
    pauseSection(plan.pause, {
      runs: plan.runs,
      log,
      onProgress: (p) => {
        results.pause = p;
        write(false);
      },
    }),
  ).then((done) => done ?? results.pause);
  const { report, markdown } = write(true);
  return { report, markdown, jsonPath, markdownPath };
}
