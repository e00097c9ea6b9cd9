/**
 * The benchmark report: `report.json` (the BenchReport below, every field documented here) and
 * `report.md` (the same as tables, with a plain-English reading at the top).
 *
 * Units are in the field names: ...Us microseconds, ...Ms milliseconds, nsPerCall nanoseconds.
 * Every Stats is { n, min, median, p99, max } over n samples. A section that was not run is null.
 */
import type { CallCostSection } from './callcost.js';
import type { MachineInfo } from './machine.js';
import type { PauseCase, PauseSection } from './pause.js';
import type { RestartSection } from './restart.js';
import type { ScaleSection } from './scale.js';
import type { Stats } from './stats.js';
import type { ZeroStopCase, ZeroStopSection } from './zero-stop.js';

export const REPORT_SCHEMA = 'hp-agent-bench/1';
export const SECTIONS = ['pause', 'zeroStop', 'callCost', 'restart', 'scale'] as const;
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
  return `${threadsLabel(c)}, ${c.functions} function${c.functions === 1 ? '' : 's'}`;
}

function table(header: string[], rows: string[][]): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

// ---- the reading -------------------------------------------------------------------------------------

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
    const withRatio = measured.filter((c) => c.ratio !== undefined);
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
      out.push(`No pause/floor ratio: ${pause.floorNote ?? 'the floor was not measured'}.`);
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
  }
  const zs = r.zeroStop;
  if (zs) {
    if (!zs.available) {
      out.push(`Zero-stop mode: ${zs.note}.`);
    } else {
      const measured = zs.cases.filter((c) => c.applyGapUs);
      const noiseOf = (c: ZeroStopCase) => Math.max(c.noiseGapUs?.median ?? 0, c.cpuNoiseGapUs?.median ?? 0);
      const within = measured.filter((c) => c.applyGapUs!.median <= 1.5 * noiseOf(c));
      const beyond = measured.filter((c) => !within.includes(c));
      const label = (c: ZeroStopCase) => `${threadsLabel(c)}, ${c.functions} function${c.functions === 1 ? '' : 's'}`;
      if (measured.length) {
        const quiet = [...measured].sort((a, b) => noiseOf(a) - noiseOf(b))[0];
        out.push(
          `Zero-stop: the spinning thread's median gap during an apply stayed within the noise (≤ 1.5× the larger of the two noise medians) in ${within.length} of ${measured.length} cases` +
            (beyond.length ? `; beyond it: ${beyond.map((c) => `${label(c)} (${num(c.applyGapUs!.median)} µs against ${num(noiseOf(c))} µs)`).join('; ')}` : '') +
            `. Least noisy case, ${label(quiet)}: gap ${num(quiet.applyGapUs!.median)} µs against a noise of ${num(quiet.noiseGapUs?.median)} µs (agent asleep) / ${num(quiet.cpuNoiseGapUs?.median)} µs (agent spinning).` +
            (noiseOf(quiet) > 1000
              ? ' With busy workers competing for the CPUs the noise itself is milliseconds — more than a ptrace stop — so these figures cannot prove that no thread was stopped; that needs fewer busy threads than CPUs on a quiet machine.'
              : ''),
        );
      }
      for (const c of zs.cases.filter((x) => !x.applyGapUs)) out.push(`Zero-stop, ${label(c)}: no measurement (${c.errors[0] ?? 'no run succeeded'}).`);
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
    for (const p of sc.points.length ? [sc.points[sc.points.length - 1]] : []) {
      if (p.best) {
        const goal = p.processes >= 1000 ? (p.best.applyTotalMs < 1000 ? ' — under the 1 s goal' : ' — the goal is under 1 s') : '';
        out.push(`${p.processes} processes patched in ${num(p.best.applyTotalMs / 1000)} s (${num(p.best.applyPerProcessMs)} ms per process, best concurrency ${p.best.concurrency})${goal}.`);
      } else {
        out.push(`${p.processes} processes: no clean run (${p.error ?? p.tries.find((t) => t.error)?.error ?? 'failures'}).`);
      }
    }
    const curve = sc.points.filter((p) => p.best).map((p) => `${p.processes}: ${num(p.best!.applyTotalMs)} ms`);
    if (curve.length > 1) out.push(`Scale curve (best concurrency): ${curve.join(', ')}.`);
  }
  for (const e of r.errors) out.push(`The ${e.section} section failed: ${e.message}`);
  return out;
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
    'Reproduce: `npm run bench` (options after `--`: `--runs N`, `--quick`, `--out DIR`, `--only pause,zeroStop,callCost,restart,scale`).',
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
        'The target also has its main thread and the recorder (the "stopped" column). Figures: median / p99 / max, µs unless marked.',
      '',
    );
    if (!r.pause.floorAvailable) lines.push(`**Floor not measured:** ${r.pause.floorNote}`, '');
    lines.push(
      ...table(
        ['threads', 'mode', 'fns', 'stopped', 'runs', 'apply pause', 'floor pause', 'ratio', 'revert pause', 'apply gap', 'floor gap', 'noise gap', 'cpu noise gap', 'apply wall ms', 'revert wall ms', 'notes'],
        r.pause.cases.map((c) => [
          String(c.threads),
          c.mode,
          String(c.functions),
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
          [
            c.realtime ? 'realtime' : '',
            c.maxSteppedThreads ? `stepped ≤${c.maxSteppedThreads}` : '',
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

  if (r.zeroStop) {
    lines.push('## Zero-stop', '');
    if (!r.zeroStop.available) {
      lines.push(`Not available: ${r.zeroStop.note.replace(/^not available: /, '')}.`, '');
    } else {
      lines.push(`${r.zeroStop.note}. \`benchd-zs THREADS busy FUNCTIONS\` (built with \`-fpatchable-function-entry=7,5\`); figures median / p99 / max, µs.`, '');
      lines.push(
        ...table(
          ['threads', 'fns', 'runs', 'apply gap', 'revert gap', 'noise gap', 'cpu noise gap', 'switch (nothing stopped)', 'apply wall ms', 'revert wall ms', 'notes'],
          r.zeroStop.cases.map((c) => [String(c.threads), String(c.functions), String(c.runs), triple(c.applyGapUs), triple(c.revertGapUs), triple(c.noiseGapUs), triple(c.cpuNoiseGapUs), triple(c.switchUs), med(c.applyWallMs), med(c.revertWallMs), c.failures ? `${c.failures} failure(s): ${(c.errors[0] ?? '').slice(0, 120)}` : '']),
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
    lines.push('## Many processes', '', `N × \`${s.target}\`, one function patched in each through the engine (in-process), at concurrency ${s.concurrencies.join(', ')}; then reverted. ms.`, '');
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
