/**
 * The benchmark report: `report.json` (the BenchReport below, every field documented here) and
 * `report.md` (the same as tables, with a plain-English reading at the top).
 *
 * Units are in the field names: ...Us microseconds, ...Ms milliseconds, nsPerCall nanoseconds.
 * Every Stats is { n, min, median, p99, max } over n samples. A section that was not run is null.
 */
import type { CallCostSection } from './callcost.js';
import { CONTENTION_STEPS, type ContentionSection } from './contention.js';
import type { MachineInfo } from './machine.js';
import type { PauseCase, PauseSection } from './pause.js';
import type { RestartSection } from './restart.js';
import type { ScaleSection } from './scale.js';
import type { Stats, TailStats } from './stats.js';
import type { ZeroStopCase, ZeroStopSection } from './zero-stop.js';

export const REPORT_SCHEMA = 'hp-agent-bench/1';
export const SECTIONS = ['pause', 'contention', 'zeroStop', 'callCost', 'restart', 'scale'] as const;
export type SectionName = (typeof SECTIONS)[number];

export interface BenchReport {
  schema: typeof REPORT_SCHEMA;
  /** When the benchmark started (ISO 8601). */
  date: string;
  durationS: number;
  options: { runs: number; quick: boolean; sections: SectionName[] };
  /** Present (true) while the benchmark is still running: the report is rewritten as sections finish. */
  incomplete?: boolean;
  machine: MachineInfo;
  /** The plain-English reading printed at the top of report.md. */
  reading: string[];
  pause: PauseSection | null;
  /** `hp-agent try` (a fresh process per step) on busy threads calling the patched function: the tails. */
  contention: ContentionSection | null;
  zeroStop: ZeroStopSection | null;
  callCost: CallCostSection | null;
  restart: RestartSection | null;
  scale: ScaleSection | null;
  /** Sections that failed as a whole (the others still ran). */
  errors: { section: SectionName; message: string }[];
}

// ---- numbers ---------------------------------------------------------------------------------------

function num(v: number | undefined, unit = ''): string {
  if (v === undefined || !Number.isFinite(v)) return '–';
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${v.toFixed(digits)}${unit}`;
}

/** "median / p99 / max" */
function triple(s: Stats | undefined): string {
  return s ? `${num(s.median)} / ${num(s.p99)} / ${num(s.max)}` : '–';
}

function med(s: Stats | undefined): string {
  return s ? num(s.median) : '–';
}

function threadsLabel(c: { threads: number; mode: string }): string {
  return `${c.threads} ${c.mode} thread${c.threads === 1 ? '' : 's'}`;
}

function caseLabel(c: PauseCase): string {
  return `${threadsLabel(c)}, ${c.functions} function${c.functions === 1 ? '' : 's'}${c.consistency === 'function' ? ', function consistency' : ''}`;
}

function table(header: string[], rows: string[][]): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

// ---- the reading -------------------------------------------------------------------------------------

/** A case slower than this (s) is named in the reading. */
const SLOW_CASE_S = 180;

export function reading(r: Omit<BenchReport, 'reading'>): string[] {
  const out: string[] = [];
  const pause = r.pause;
  if (pause) {
    const measured = pause.cases.filter((c) => c.applyPauseUs);
    if (measured.length) {
      const byPause = [...measured].sort((a, b) => a.applyPauseUs!.median - b.applyPauseUs!.median);
      const lo = byPause[0];
      const hi = byPause[byPause.length - 1];
      out.push(`The core's median pause per apply runs from ${num(lo.applyPauseUs!.median)} µs (${caseLabel(lo)}) to ${num(hi.applyPauseUs!.median)} µs (${caseLabel(hi)}).`);
    }
    // The 1.5× goal is for the switch itself (entry consistency); function consistency adds the
    // stack check to the same stop and is read on its own.
    const withRatio = measured.filter((c) => c.ratio !== undefined && c.consistency !== 'function');
    const checked = measured.filter((c) => c.ratio !== undefined && c.consistency === 'function');
    if (withRatio.length) {
      const within = withRatio.filter((c) => c.ratio! <= 1.5);
      const worst = [...withRatio].sort((a, b) => b.ratio! - a.ratio!)[0];
      const best = [...withRatio].sort((a, b) => a.ratio! - b.ratio!)[0];
      out.push(
        `Pause within 1.5× of the floor in ${within.length} of ${withRatio.length} cases; worst ${worst.ratio}× at ${caseLabel(worst)} (${num(worst.applyPauseUs!.median)} µs against a floor of ${num(worst.floorPauseUs?.median)} µs), best ${best.ratio}× at ${caseLabel(best)}.`,
      );
      const over = withRatio.filter((c) => c.ratio! > 1.5);
      if (over.length && over.length <= 6) out.push(`Over 1.5×: ${over.map((c) => `${caseLabel(c)} (${c.ratio}×)`).join('; ')}.`);
    } else {
      out.push('No pause/floor ratio: the floor was not measured.');
    }
    if (checked.length) {
      const sorted = [...checked].sort((a, b) => a.ratio! - b.ratio!);
      out.push(
        `With function consistency (the core also reads every thread's live stack during the stop) the pause is ${sorted.length === 1 ? `${sorted[0].ratio}×` : `${sorted[0].ratio}× to ${sorted[sorted.length - 1].ratio}×`} the floor: ` +
          sorted.map((c) => `${caseLabel(c)} ${num(c.applyPauseUs!.median)} µs (${c.ratio}×)`).join('; ') +
          '.',
      );
    }
    const gapHeavy = measured.filter((c) => c.applyGapUs && c.noiseGapUs && c.applyGapUs.median > 2 * c.applyPauseUs!.median && c.applyGapUs.median > 2 * Math.max(c.noiseGapUs.median, c.cpuNoiseGapUs?.median ?? 0));
    if (gapHeavy.length) {
      const g = [...gapHeavy].sort((a, b) => b.applyGapUs!.median / b.applyPauseUs!.median - a.applyGapUs!.median / a.applyPauseUs!.median)[0];
      out.push(
        `The thread spinning inside the target saw gaps more than twice the core's pause (and twice both noises) in ${gapHeavy.length} of ${measured.length} cases — e.g. ${num(g.applyGapUs!.median)} µs against a pause of ${num(g.applyPauseUs!.median)} µs at ${caseLabel(g)}: the target is also held up outside the measured transaction: by the agent's other work on it (remote system calls, memory writes, the moments around the stop).`,
      );
    } else if (measured.length) {
      out.push('The gap the target itself saw during an apply matches the core\'s pause (within 2×) or stays within twice the noise in every case.');
    }
    const failing = pause.cases.filter((c) => c.failures > 0);
    if (failing.length) out.push(`Failures in ${failing.length} case(s): ${failing.map((c) => `${caseLabel(c)}: ${c.failures} (${c.errors[0] ?? '?'})`).join('; ')}.`);
    const slow = pause.cases.filter((c) => (c.durationS ?? 0) > SLOW_CASE_S);
    if (slow.length) {
      out.push(
        `Pause cases over ${SLOW_CASE_S / 60} minutes (${r.options.runs} runs each): ${slow.map((c) => `${caseLabel(c)} ${num(c.durationS)} s`).join('; ')} — with more busy threads than CPUs the agent itself waits for a CPU, so each apply, revert and floor, and the two noise windows as long as the apply, take that much longer.`,
      );
    }
  }
  out.push(...contentionReading(r.contention));
  const zs = r.zeroStop;
  if (zs) {
    if (!zs.available) {
      out.push(`Zero-stop mode: ${zs.note}.`);
    } else {
      const measured = zs.cases.filter((c) => c.applyGapUs);
      const label = (c: ZeroStopCase) => `${threadsLabel(c)}, ${c.functions} function${c.functions === 1 ? '' : 's'}`;
      const fns = (c: ZeroStopCase) => `${c.functions} function${c.functions === 1 ? '' : 's'}`;
      const noiseOf = (c: ZeroStopCase) => Math.max(c.noiseGapUs?.median ?? 0, c.cpuNoiseGapUs?.median ?? 0);
      const worstGap = (c: ZeroStopCase) => Math.max(c.applyGapUs?.max ?? 0, c.revertGapUs?.max ?? 0);
      const counted = measured.filter((c) => c.stopped !== undefined);
      const switchesTotal = counted.reduce((sum, c) => sum + 2 * c.runs, 0);
      const stopCases = (pause?.cases ?? []).filter((c) => c.stopped !== undefined);
      const stopContrast = stopCases.length
        ? ` (stop-the-world, for contrast: ${stopCases.reduce((sum, c) => sum + c.stopped!, 0)} times in ${stopCases.reduce((sum, c) => sum + 2 * c.runs, 0)} applies and reverts)`
        : ' (a ptrace stop counts as one)';
      const quiet = measured.filter((c) => c.threads === 0);
      if (quiet.length) {
        out.push(
          'Zero-stop on a quiet target (no busy worker: only the gap recorder spins, the main thread sleeps): ' +
            quiet
              .map(
                (c) =>
                  `${fns(c)}, ${c.runs} runs — the spinning thread's worst gap during an apply or revert ${num(worstGap(c))} µs (median ${num(c.applyGapUs!.median)} µs), ` +
                  `against a worst noise gap of ${num(c.noiseGapUs?.max)} µs (median ${num(c.noiseGapUs?.median)} µs) with the agent asleep and ${num(c.cpuNoiseGapUs?.max)} µs (median ${num(c.cpuNoiseGapUs?.median)} µs) with it spinning; ` +
                  `stopped: ${c.stopped ?? '?'} times${c.preempted !== undefined ? ` (preempted ${c.preempted} times during the switches, ${c.idlePreempted} in the noise windows)` : ''}`,
              )
              .join('; ') +
            '. During an apply the agent itself (and the thread it borrows to map the patch) uses a CPU: the noise with the agent spinning is the fair comparison.',
        );
      }
      if (counted.length) {
        const bad = counted.filter((c) => c.stopped! > 0);
        out.push(
          bad.length
            ? `Zero-stop did stop the target: the gap recorder's voluntary context switches grew during the switches in ${bad.map((c) => `${label(c)} (${c.stopped} times)`).join('; ')}.`
            : `Stopped: 0 times — the gap recorder's voluntary context switches did not grow during any of the ${switchesTotal} zero-stop applies and reverts${stopContrast}. Its gaps come from being preempted, never from a stop.`,
        );
        const main = counted.filter((c) => c.mainThreadSwitches);
        const mainApply = main.reduce((sum, c) => sum + c.mainThreadSwitches!.apply, 0);
        const mainRevert = main.reduce((sum, c) => sum + c.mainThreadSwitches!.revert, 0);
        const applies = main.reduce((sum, c) => sum + c.runs, 0);
        if (mainApply + mainRevert > 0) {
          out.push(
            `Not stopped at all is true of the running threads only: mapping the patch borrows a thread asleep in a system call (here the main thread, in read()) for a few remote system calls — a ptrace stop of a thread that was not running, before the switch. Its voluntary context switches grew ${mainApply} times during the ${applies} applies (${num(mainApply / applies)} per apply) and ${mainRevert} times during the reverts (which map nothing).`,
          );
        }
      }
      const busy = measured.filter((c) => c.threads > 0);
      if (busy.length) {
        const within = busy.filter((c) => c.applyGapUs!.median <= 1.5 * noiseOf(c));
        const byThreads = [...new Set(busy.map((c) => c.threads))].map((n) => {
          const noises = busy.filter((c) => c.threads === n).map(noiseOf);
          const lo = Math.min(...noises);
          const hi = Math.max(...noises);
          return `${num(lo)}${hi > lo ? `–${num(hi)}` : ''} µs with ${n}`;
        });
        const loud = busy.filter((c) => noiseOf(c) >= 1000);
        out.push(
          `With busy workers the noise grows with their number (median noise gap, the larger of asleep/spinning: ${byThreads.join(', ')} busy thread(s) on ${r.machine.nproc} CPUs); ` +
            `the median gap during an apply is within 1.5× of it in ${within.length} of ${busy.length} busy cases.` +
            (loud.length ? ` In the ${loud.length} case(s) where the noise is a millisecond or more it dominates — it exceeds a ptrace stop — so there the gaps prove nothing either way; only the context-switch count does.` : ''),
        );
      }
      const unmeasured = zs.cases.filter((x) => !x.applyGapUs);
      for (const error of [...new Set(unmeasured.map((c) => c.errors[0] ?? 'no run succeeded'))]) {
        const cs = unmeasured.filter((c) => (c.errors[0] ?? 'no run succeeded') === error);
        out.push(`Zero-stop, no measurement for ${cs.map(label).join('; ')}: ${error}.`);
      }
      const slow = zs.cases.filter((c) => (c.durationS ?? 0) > SLOW_CASE_S);
      if (slow.length) out.push(`Zero-stop cases over ${SLOW_CASE_S / 60} minutes (${r.options.runs} runs each): ${slow.map((c) => `${label(c)} ${num(c.durationS)} s`).join('; ')}.`);
    }
  }
  const cc = r.callCost;
  if (cc) {
    const base = cc.rows.find((x) => x.variant === 'unpatched' && x.binary === 'benchd');
    const parts = cc.rows
      .filter((x) => x.variant !== 'unpatched' && x.nsPerCall)
      .map((x) => {
        const b = cc.rows.find((y) => y.variant === 'unpatched' && y.binary === x.binary);
        const extra = b?.nsPerCall ? x.nsPerCall!.median - b.nsPerCall.median : undefined;
        return `${x.variant} (${x.jump}) ${num(x.nsPerCall!.median)} ns${extra !== undefined ? `, ${extra >= 0 ? '+' : ''}${num(extra)} ns` : ''}${x.ratio !== undefined ? `, ${x.ratio}×` : ''}`;
      });
    if (base?.nsPerCall) out.push(`A call of the unpatched function costs ${num(base.nsPerCall.median)} ns; patched: ${parts.length ? parts.join('; ') : 'not measured'}.`);
  }
  const rs = r.restart;
  if (rs?.totalMs) {
    const pauses = pause?.cases.filter((c) => c.applyPauseUs).map((c) => c.applyPauseUs!.median) ?? [];
    const restartUs = rs.totalMs.median * 1000;
    let compare = '.';
    if (pauses.length) {
      const shortest = Math.min(...pauses);
      const longest = Math.max(...pauses);
      compare =
        `; the median hotpatch pauses above run from ${num(shortest)} to ${num(longest)} µs, so a restart's outage is ${num(restartUs / shortest)}× the shortest` +
        (longest < restartUs ? ` and ${num(restartUs / longest)}× the longest` : ` (the longest pause is ${num(longest / restartUs)}× a restart)`) +
        ' — and a restart also drops connections and warm state.';
    }
    out.push(`Restarting the fixture service takes ${num(rs.totalMs.median)} ms to its first good answer (median of ${rs.runs})${compare}`);
  }
  const sc = r.scale;
  if (sc) {
    // The goal: 1,000 processes in under 1 s. Both series are read against it.
    const goal = (n: number, ms: number) => (n >= 1000 ? (ms < 1000 ? ' — UNDER the 1 s goal' : ' — OVER the 1 s goal') : ' (1,000 processes not run: no verdict on the 1 s goal)');
    const agents = (sc.agent ?? []).filter((a) => a.applyWallMs > 0);
    const a = agents[agents.length - 1];
    if (a) {
      const clean = a.patched === a.processes && a.sampleOk === a.sampleChecked;
      const rounds = a.roundsApplyWallMs ?? [];
      const spread = rounds.length > 1 ? ` (median of ${rounds.length} rounds on fresh processes: ${rounds.map((ms) => num(ms / 1000)).join(', ')} s)` : '';
      out.push(
        `\`hp-agent apply\` as its own process (Node's start-up included) patched ${a.patched} of ${a.processes} processes in ${num(a.applyWallMs / 1000)} s wall${spread} (${num(a.perProcessMs)} ms per process; start-up alone ${num(a.startupMs)} ms, the apply's own work ${num(a.applyWorkMs)} ms)` +
          (clean ? goal(a.processes, a.applyWallMs) : ` — not a clean run: ${a.error ?? 'failures'}`) +
          `; \`hp-agent revert\` ${num(a.revertWallMs / 1000)} s.`,
      );
    } else if (sc.agentError || sc.agent?.length) {
      out.push(`\`hp-agent apply\` was not measured: ${sc.agentError ?? sc.agent[0]?.error ?? 'no run'}.`);
    }
    for (const p of sc.points.length ? [sc.points[sc.points.length - 1]] : []) {
      if (p.best) {
        out.push(`The engine in the bench's own process (no start-up, no discovery) patched ${p.processes} processes in ${num(p.best.applyTotalMs / 1000)} s (${num(p.best.applyPerProcessMs)} ms per process, best concurrency ${p.best.concurrency})${goal(p.processes, p.best.applyTotalMs)}.`);
      } else {
        out.push(`The engine in-process, ${p.processes} processes: no clean run (${p.error ?? p.tries.find((t) => t.error)?.error ?? 'failures'}).`);
      }
    }
    const engine = sc.points.filter((p) => p.best).map((p) => ({ n: p.processes, ms: p.best!.applyTotalMs }));
    const cli = agents.map((x) => ({ n: x.processes, ms: x.applyWallMs }));
    const curve = (pts: { n: number; ms: number }[]) => pts.map((p) => `${p.n}: ${num(p.ms)} ms`).join(', ');
    // Linear growth shows as a steady cost per extra process between the two largest points.
    const marginal = (pts: { n: number; ms: number }[]) => {
      if (pts.length < 2) return '';
      const [x, y] = pts.slice(-2);
      return y.n >= 100 && y.n > x.n ? `; ${num((y.ms - x.ms) / (y.n - x.n))} ms per extra process from ${x.n} to ${y.n}` : '';
    };
    const parts = [cli.length > 1 ? `hp-agent apply ${curve(cli)}${marginal(cli)}` : '', engine.length > 1 ? `engine in-process (best concurrency) ${curve(engine)}${marginal(engine)}` : ''].filter(Boolean);
    if (parts.length) out.push(`Scale curve, processes → wall time: ${parts.join('. ')}.`);
  }
  for (const e of r.errors) out.push(`The ${e.section} section failed: ${e.message}`);
  return out;
}

/** The goal of issue 11 §6: every step's p90 pause within this many times the floor's p90. */
export const TAIL_GOAL = 1.5;

const STEP_LABEL: Record<(typeof CONTENTION_STEPS)[number], string> = {
  apply: 'apply (new mapping)',
  revert: 'revert',
  reapply: 're-apply (mapping re-used)',
  revert2: 'revert again',
};

function contentionReading(c: ContentionSection | null): string[] {
  if (!c) return [];
  if (!c.rounds) return [`Contention (${c.target}): no round completed${c.errors[0] ? ` (${c.errors[0]})` : ''}.`];
  const steps = CONTENTION_STEPS.filter((s) => c.steps[s]?.pauseUs);
  const f = (x?: TailStats) => (x ? `${num(x.median)} / ${num(x.p90)} / ${num(x.max)} µs` : '–');
  const over = steps.filter((s) => (c.steps[s]!.p90Ratio ?? Infinity) > TAIL_GOAL);
  return [
    `Under contention (${c.target}: busy threads calling the patched function; \`hp-agent try\` as a fresh process, ${c.rounds} rounds), pause median / p90 / max: ` +
      steps.map((s) => `${STEP_LABEL[s]} ${f(c.steps[s]!.pauseUs)} (p90 ${c.steps[s]!.p90Ratio ?? '–'}× the floor's)`).join('; ') +
      `; the floor ${f(c.floorPauseUs)}. ` +
      (c.floorPauseUs ? (over.length ? `Over the ${TAIL_GOAL}× goal: ${over.map((s) => STEP_LABEL[s]).join(', ')}.` : `Every step's p90 within ${TAIL_GOAL}× of the floor's.`) : 'No floor: not measured.'),
  ];
}

// ---- Markdown -----------------------------------------------------------------------------------------

export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push('# hp-agent benchmark', '');
  lines.push(
    `${r.date} · ${m.nproc} × ${m.cpu} · Linux ${m.kernel} · Node ${m.node} · ${m.memoryGiB} GiB · clocksource ${m.clocksource ?? '?'} · ` +
      `load ${m.loadAverage.join(' / ')} at start${m.loadAverageEnd ? `, ${m.loadAverageEnd.join(' / ')} at the end` : ''} · ${r.options.runs} runs per case${r.options.quick ? ' (quick)' : ''} · took ${Math.round(r.durationS)} s`,
    '',
    'Reproduce: `npm run bench` (options after `--`: `--runs N`, `--quick`, `--out DIR`, `--only pause,contention,zeroStop,callCost,restart,scale`).',
    '',
    ...(r.incomplete ? ['**Incomplete:** the benchmark is still running (or was stopped); this report is rewritten as each case finishes.', ''] : []),
    '## Reading',
    '',
    ...r.reading.map((x) => `- ${x}`),
    '',
  );

  if (r.pause) {
    lines.push(
      '## Pause',
      '',
      'Per case one `benchd THREADS MODE FUNCTIONS` target; each run: the floor (the core\'s raw primitives: seize, interrupt, wait for every thread, rewrite the same sites with the bytes already there, resume), then `applyPatch` of `bench_fix.so` over FUNCTIONS functions, then `revertFunctions`. ' +
        '"Pause" is the core\'s own measure (first thread interrupted → last resumed), "gap" the longest time the target\'s spinning recorder thread did not run during the call, "noise" the same over as long with the agent asleep, "cpu noise" with the agent spinning on a CPU instead (what competing for the CPUs alone costs; medians). ' +
        'The target also has its main thread and the recorder (the "stopped" column: threads stopped per apply). "Consistency": entry (the switch needs every thread stopped, nothing more) or function (during the same stop the core also checks that no thread runs, or has a return address into, the code being replaced: every thread\'s live stack is read). "Recorder stops": how much the recorder\'s voluntary context switches grew over all counted applies and reverts (each stop counts; compare zero-stop). "Time s": the whole case. Figures: median / p99 / max, µs unless marked.',
      '',
    );
    lines.push(
      ...table(
        ['threads', 'mode', 'fns', 'consistency', 'stopped', 'runs', 'apply pause', 'floor pause', 'ratio', 'revert pause', 'apply gap', 'floor gap', 'noise gap', 'cpu noise gap', 'apply wall ms', 'revert wall ms', 'recorder stops', 'time s', 'notes'],
        r.pause.cases.map((c) => [
          String(c.threads),
          c.mode,
          String(c.functions),
          c.consistency ?? 'entry',
          c.targetThreads !== undefined ? String(c.targetThreads) : '–',
          String(c.runs),
          triple(c.applyPauseUs),
          triple(c.floorPauseUs),
          c.ratio !== undefined ? `${c.ratio}×` : '–',
          triple(c.revertPauseUs),
          triple(c.applyGapUs),
          med(c.floorGapUs),
          `${med(c.noiseGapUs)} (max ${c.noiseGapUs ? num(c.noiseGapUs.max) : '–'})`,
          med(c.cpuNoiseGapUs),
          med(c.applyWallMs),
          med(c.revertWallMs),
          c.stopped !== undefined ? String(c.stopped) : '–',
          c.durationS !== undefined ? num(c.durationS) : '–',
          [
            c.realtime ? 'realtime' : '',
            c.maxAttempts && c.maxAttempts > 1 ? `attempts ≤${c.maxAttempts}` : '',
            c.failures ? `${c.failures} failure(s): ${(c.errors[0] ?? '').slice(0, 120)}` : '',
          ]
            .filter(Boolean)
            .join('; '),
        ]),
      ),
      '',
    );
  }

  if (r.contention) {
    const c = r.contention;
    const cell = (x?: TailStats) => (x ? `${num(x.median)} / ${num(x.p90)} / ${num(x.max)}` : '–');
    lines.push(
      '## Pauses under contention',
      '',
      `\`${c.target}\`: the workers keep calling the function being patched, the gap recorder spins, the main thread sleeps in read(). ` +
        'Each round runs `hp-agent try … --json` as a fresh process four times — apply (the patch file copied anew for the round, so it is mapped anew), revert, re-apply (the same file: its mapping is re-used, nothing is mapped), revert — ' +
        `then the floor (seize, interrupt, wait, rewrite the same bytes, resume) on the same target. ${c.rounds} rounds${c.durationS !== undefined ? `, ${num(c.durationS)} s` : ''}. ` +
        `µs, median / p90 / max; "p90 ×" is the step's p90 over the floor's (goal ≤ ${TAIL_GOAL}×); "stopped" adds up every stop of the step, a retried attempt's included.`,
      '',
      ...table(
        ['step', 'pause', 'p90 ×', 'stopped', 'attempts ≤', 'CLI wall ms'],
        [
          ...CONTENTION_STEPS.map((s) => {
            const x = c.steps[s];
            return [STEP_LABEL[s], cell(x?.pauseUs), x?.p90Ratio !== undefined ? `${x.p90Ratio}×` : '–', cell(x?.totalStoppedUs), x ? String(x.maxAttempts) : '–', x?.wallMs ? num(x.wallMs.median) : '–'];
          }),
          ['floor', cell(c.floorPauseUs), '1×', '–', '–', '–'],
        ],
      ),
      '',
      ...(c.errors.length ? [`${c.failures} failure(s): ${c.errors.join('; ')}`, ''] : []),
    );
  }

  if (r.zeroStop) {
    lines.push('## Zero-stop', '');
    if (!r.zeroStop.available) {
      lines.push(`Not available: ${r.zeroStop.note.replace(/^not available: /, '')}.`, '');
    } else {
      lines.push(
        `${r.zeroStop.note}. \`benchd-zs THREADS busy FUNCTIONS\` (built with \`-fpatchable-function-entry=7,5\`): THREADS busy workers (0: only the gap recorder spins), the main thread asleep on stdin. ` +
          '"Gap": the longest time the spinning recorder thread did not run during the call; "noise" the same over as long with the agent asleep, "cpu noise" with it spinning. ' +
          '"Switch": the engine\'s first write → last write read back (apply / revert). "Recorder stops": how much its voluntary context switches grew over all applies and reverts (a ptrace stop counts; it must be 0); ' +
          '"preempted": its involuntary switches during the applies and reverts / during the noise windows; "main thread": the main thread\'s voluntary switches during the applies / reverts (borrowed for the remote system calls that map the patch). Figures median / p99 / max, µs.',
        '',
      );
      lines.push(
        ...table(
          ['threads', 'fns', 'runs', 'apply gap', 'revert gap', 'noise gap', 'cpu noise gap', 'switch apply', 'switch revert', 'recorder stops', 'preempted', 'main thread', 'apply wall ms', 'revert wall ms', 'time s', 'notes'],
          r.zeroStop.cases.map((c) => [
            String(c.threads),
            String(c.functions),
            String(c.runs),
            triple(c.applyGapUs),
            triple(c.revertGapUs),
            triple(c.noiseGapUs),
            triple(c.cpuNoiseGapUs),
            triple(c.switchUs),
            triple(c.revertSwitchUs),
            c.stopped !== undefined ? String(c.stopped) : '–',
            c.preempted !== undefined ? `${c.preempted} / ${c.idlePreempted}` : '–',
            c.mainThreadSwitches ? `${c.mainThreadSwitches.apply} / ${c.mainThreadSwitches.revert}` : '–',
            med(c.applyWallMs),
            med(c.revertWallMs),
            c.durationS !== undefined ? num(c.durationS) : '–',
            c.failures ? `${c.failures} failure(s): ${(c.errors[0] ?? '').slice(0, 120)}` : '',
          ]),
        ),
        '',
      );
    }
  }

  if (r.callCost) {
    const c = r.callCost;
    lines.push('## Cost of a patched call', '', `\`callcost 0 ${c.calls}\` inside the target (a tight loop of direct calls of ${c.function}), ${c.repeats} measurements per row; ns per call, median / p99 / max.`, '');
    lines.push(
      ...table(
        ['binary', 'variant', 'jump', 'ns per call', 'ratio'],
        c.rows.map((x) => [x.binary, x.variant, x.jump, x.nsPerCall ? triple(x.nsPerCall) : (x.error ?? '–'), x.ratio !== undefined ? `${x.ratio}×` : '–']),
      ),
      '',
    );
  }

  if (r.restart) {
    const s = r.restart;
    lines.push('## Restart instead of hotpatch', '', `\`${s.service}\`: SIGKILL, start again, first good answer on its socket; ${s.runs} runs, ms, median / p99 / max.`, '');
    lines.push(...table(['kill', 'start → first answer', 'total'], [[triple(s.killMs), triple(s.startMs), triple(s.totalMs)]]), '');
    if (s.error) lines.push(`Error: ${s.error}`, '');
  }

  if (r.scale) {
    const s = r.scale;
    lines.push(
      '## Many processes',
      '',
      `N × \`${s.target}\` (the installed copy of a baseline built for the run), one function (bench_fn_0) patched in each, then reverted. ` +
        'The targets are held by a separate holder process: the patching process has none of them as its children (see src/bench/scale.ts for why that matters). ' +
        'A sample of up to 10 processes must answer the patched value after each apply and the original after each revert. ms unless marked.',
      '',
    );
    if (s.agent?.length || s.agentError) {
      lines.push(
        '### `hp-agent apply` (the command line, a separate process)',
        '',
        '`node bin/hp-agent.js apply HOTPATCH --json`, then `hp-agent revert ID --json`, timed spawn → exit (the agent finds the processes itself, at its own concurrency). ' +
          '"start-up" is `hp-agent --version` alone (Node and the CLI\'s modules loading); "to start" is spawn → the startDateTime the apply reports, "own work" that → exit. ' +
          'Each number of processes runs in rounds, each on freshly started processes (this machine\'s speed drifts from minute to minute); "rounds" lists every round\'s apply wall time, and the row shows the median round (or the first that failed).',
        '',
      );
      if (s.agentError) lines.push(`Not run: ${s.agentError}`, '');
      if (s.agent?.length) {
        lines.push(
          ...table(
            ['processes', 'start-up', 'apply wall', 'rounds', 'per process', 'to start', 'own work', 'patched', 'pause µs (median / max)', 'revert wall', 'reverted', 'sample ok (apply / revert)'],
            s.agent.map((a) => [
              String(a.processes),
              num(a.startupMs),
              num(a.applyWallMs),
              a.roundsApplyWallMs && a.roundsApplyWallMs.length > 1 ? a.roundsApplyWallMs.map((ms) => num(ms)).join(' / ') : '–',
              num(a.perProcessMs),
              num(a.applyStartMs),
              num(a.applyWorkMs),
              `${a.patched}/${a.processes}`,
              a.pauseUs ? `${num(a.pauseUs.median)} / ${num(a.pauseUs.max)}` : '–',
              num(a.revertWallMs),
              `${a.reverted}/${a.processes}`,
              `${a.sampleOk}/${a.sampleChecked} / ${a.revertSampleOk}/${a.sampleChecked}`,
            ]),
          ),
          '',
        );
        const agentErrs = s.agent.map((a) => a.error).filter(Boolean);
        if (agentErrs.length) lines.push(`Errors: ${[...new Set(agentErrs)].slice(0, 3).join('; ')}`, '');
      }
    }
    lines.push('### The engine in-process', '', `\`applyPatch\` / \`revertFunctions\` of src/engine in the bench's own process (no Node start-up, no discovery: it is given the pids), at concurrency ${s.concurrencies.join(', ')}.`, '');
    lines.push(
      ...table(
        ['processes', 'start all', ...s.concurrencies.map((c) => `apply ×${c}`), 'best', 'per process', 'revert (best)', 'sample ok'],
        s.points.map((p) => {
          const best = p.tries.find((t) => t.concurrency === p.best?.concurrency);
          return [
            String(p.processes),
            num(p.spawnMs),
            ...s.concurrencies.map((c) => {
              const t = p.tries.find((x) => x.concurrency === c);
              return t ? `${num(t.applyTotalMs)}${t.failed ? ` (${t.failed} failed)` : ''}` : '–';
            }),
            p.best ? `${num(p.best.applyTotalMs)} (×${p.best.concurrency})` : (p.error ?? '–'),
            p.best ? num(p.best.applyPerProcessMs) : '–',
            best ? num(best.revertTotalMs) : '–',
            best ? `${best.sampleOk}/${best.sampleChecked}` : '–',
          ];
        }),
      ),
      '',
    );
    const errs = s.points.flatMap((p) => [p.error, ...p.tries.map((t) => t.error)]).filter(Boolean);
    if (errs.length) lines.push(`Errors: ${[...new Set(errs)].slice(0, 3).join('; ')}`, '');
  }

  if (r.errors.length) lines.push('## Errors', '', ...r.errors.map((e) => `- ${e.section}: ${e.message}`), '');
  return lines.join('\n');
}
