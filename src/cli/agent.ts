/** The agent's commands: apply, revert, status, history, reboot, boot. */
import cliProgress from 'cli-progress';
import type { Argv } from 'yargs';
import type { Output, OutputCommand } from '../contract/index.js';
import { apply, boot, history, planApply, planBoot, planReboot, planRevert, reboot, revert, status } from '../agent/library.js';
import type { InstallResult, RevertResult } from '../agent/operations.js';
import type { RebootPlan, RebootResult } from '../agent/reboot.js';
import type { HistoryRead } from '../agent/history.js';
import type { PlannedProcessResult as ProcessResult } from '../agent/hotpatch.js';
import type { StatusReport } from '../agent/status.js';
import { EXIT, printer, table } from './output.js';
import { statusProblems } from '../agent/status-check.js';
import { existingFile, nonEmpty, pidValues, wholeNumber } from './usage.js';
import { applyPlanHuman, rebootPlanHuman, revertPlanHuman } from './plan.js';
import { runCommand } from './run.js';
import { scheduleCommand } from './schedule.js';
import { updateStatusLines } from './update.js';

export interface Common {
  json: boolean;
  verbose: boolean;
  wait: number;
}

export const common = (y: Argv) =>
  y
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object (stable field names, Azure spellings)' })
    .option('verbose', { type: 'boolean', default: false, describe: 'mirror the log (JSON lines in $HP_AGENT_HOME/logs/agent.log) on stderr' })
    .option('wait', { requiresArg: true, default: 30000, coerce: wholeNumber('--wait', 'milliseconds', 0), describe: 'ms to wait for another running agent to finish' });

/**
 * --dry-run: the plan, from the same checks and the same planner as the real run, and nothing
 * written. It runs in a read-only session: no lock is taken, and neither the state nor the
 * history can be written.
 */
const dryRunOption = { type: 'boolean', default: false, describe: 'print what would be done (processes, functions, sites, bytes; services; reboot) and change nothing' } as const;

/** --pid of apply and revert: checked while parsing, like every other value. */
const pidOption = { array: true, requiresArg: true, coerce: pidValues(), describe: 'only these processes (repeatable)' } as const;

function processTable(ps: ProcessResult[]): string {
  if (ps.length === 0) return 'no running process maps the patched files (new processes get the level at start/boot)';
  return table(
    ['PID', 'PROCESS', 'RESULT', 'PAUSE µs', 'SITES', 'REASON'],
    ps.map((p) => [String(p.pid), p.comm, p.outcome, p.mode === 'zero-stop' ? '0 (zero-stop)' : p.pauseUs !== undefined ? String(p.pauseUs) : '-', p.sites ? p.sites.map((s) => `${s.function}:${s.action}`).join(' ') : '-', p.reason ?? '']),
  );
}

/**
 * Failed everywhere is "refused" (3) when every process was left exactly as it was (the patch is
 * not an ELF, names a symbol the process lacks, uses TLS…: refused before a byte was written),
 * and "failed" (4) only when some process may have been changed.
 */
function processExit(ps: ProcessResult[], failedOverall: boolean): number {
  if (failedOverall) return ps.every((p) => p.outcome !== 'Patched' && p.unchanged !== false) ? EXIT.refused : EXIT.failed;
  return ps.some((p) => p.outcome === 'Failed' || p.outcome === 'Skipped') ? EXIT.partial : EXIT.ok;
}

function installHuman(r: InstallResult): string {
  const p = r.patches[0];
  const head = `${p.kbId} ${p.patchId} (${p.rebootBehavior}): ${p.installationState}; status ${r.status}; rebootStatus ${r.rebootStatus}`;
  if (p.rebootBehavior === 'AlwaysRequiresReboot') {
    return `${head}\nthe baseline is installed but nothing running changed: run "hp-agent reboot" to start it`;
  }
  const level = r.hotpatchLevel ? `hotpatch level ${r.hotpatchLevel.baselineId} #${r.hotpatchLevel.sequence}` : 'hotpatch level unchanged';
  return `${head}; ${level}\n${processTable(r.processes)}`;
}

function progressBar(json: boolean) {
  if (json || !process.stderr.isTTY) return { update: undefined, stop: () => undefined };
  // The count must always show: the bar gives up width first on a narrow terminal (room is kept
  // for counts up to 99,999: the total grows while the search runs).
  const barsize = progressBarSize(99_999, process.stderr.columns);
  const bar = new cliProgress.SingleBar({ format: 'patching {bar} {value}/{total} processes', stream: process.stderr, barsize }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    // The total grows while the search still finds processes (each is changed as it is found).
    update: (done: number, total: number) => {
      if (!started && total < 5) return;
      if (!started) bar.start(total, done);
      else bar.setTotal(total);
      started = true;
      bar.update(done);
    },
    stop: () => started && bar.stop(),
  };
}

function statusHuman(s: StatusReport): string {
  const lines = [
    table(
      ['ENROLLMENT', 'INSTALLED BASELINE', 'RUNNING', 'PENDING', 'HOTPATCH', 'REBOOT PENDING', 'REBOOT STATUS'],
      [[
        s.enrollment,
        s.installedBaseline ? `${s.installedBaseline.baselineId} (${s.installedBaseline.kbId})` : '-',
        s.runningBaselines.join(', ') || '-',
        s.pendingBaseline ? `${s.pendingBaseline.baselineId} (${s.pendingBaseline.kbId})` : '-',
        s.hotpatch ? `#${s.hotpatch.sequence} ${s.hotpatch.packageId} (${s.hotpatch.kbId})` : '-',
        s.rebootPending ? 'yes' : 'no',
        s.rebootStatus,
      ]],
    ),
  ];
  lines.push(...updateStatusLines(s));
  if (s.runningOperation) lines.push('', `an agent (PID ${s.runningOperation.pid}, "${s.runningOperation.command}") is running "${s.runningOperation.kind}" (started ${s.runningOperation.startedAt})`);
  if (s.interruptedOperation) lines.push('', `an agent was interrupted during "${s.interruptedOperation.kind}" (started ${s.interruptedOperation.startedAt}); the next apply, revert, reboot or boot finishes it`);
  if (s.rebootPendingReasons.length) lines.push('', 'reboot pending because:', ...s.rebootPendingReasons.map((r) => `  - ${r}`));
  if (s.processes.length) {
    lines.push('', table(
      ['PID', 'PROCESS', 'BASELINE', 'LEVEL', 'COMPLIANT', 'FUNCTIONS (from memory)'],
      s.processes.map((p) => [String(p.pid), p.comm, p.baselineId, String(p.hotpatchSequence), p.compliant ? 'yes' : 'NO', p.functions.map((f) => `${f.function}=${f.state === 'patched' ? f.packageId : f.state}`).join(' ') || '-']),
    ));
    for (const p of s.processes.filter((x) => !x.compliant)) lines.push(...p.reasons.map((r) => `  ${p.pid}: ${r}`));
  } else {
    lines.push('', 'no process runs an installed baseline');
  }
  return lines.join('\n');
}

function rebootHuman(r: RebootResult): string {
  const lines: string[] = [];
  if (r.repaired) lines.push(`finished the ${r.kind} an interrupted agent began at ${r.repaired.startedAt}`);
  const list = (xs: { name: string; pid: number }[]) => xs.map((x) => `${x.name} (PID ${x.pid})`).join(', ');
  if (r.kind === 'reboot') {
    const to = r.toBaselineId ?? '(no baseline)';
    const what = r.fromBaselineId && r.fromBaselineId !== to ? `${r.fromBaselineId} → ${to}` : to;
    lines.push(`rebooted ${what}; rebootStatus ${r.rebootStatus}; downtime ${r.downtimeMs} ms`);
  } else if (r.started.length === 0 && r.stopped.length === 0) {
    lines.push(`already booted: baseline ${r.toBaselineId ?? '(none)'}${r.kept.length ? `, ${list(r.kept)} running` : ''}; nothing was started`);
  } else {
    const switched = r.fromBaselineId && r.fromBaselineId !== r.toBaselineId ? ` (was ${r.fromBaselineId})` : '';
    lines.push(`booted baseline ${r.toBaselineId ?? '(none)'}${switched}; rebootStatus ${r.rebootStatus}`);
  }
  if (r.stopped.length) lines.push(`stopped: ${r.stopped.map((x) => `${x.name} (PID ${x.pid}, ${x.how}${x.why ? `: ${x.why}` : ''})`).join(', ')}`);
  if (r.kept.some((k) => k.how === 'adopted')) lines.push(`adopted (started by the interrupted agent): ${list(r.kept.filter((k) => k.how === 'adopted'))}`);
  if (r.started.length) lines.push(table(['SERVICE', 'PID', 'READY ms'], r.started.map((s) => [s.name, String(s.pid), String(s.readyMs)])));
  if (r.hotpatch) {
    const h = r.hotpatch;
    const head = h.status === 'Succeeded' ? `hotpatch level #${h.sequence} (${h.packageId}) re-applied at boot:` : `hotpatch level #${h.sequence} (${h.packageId}) could NOT be re-applied at boot (${h.status}): the services run without it`;
    lines.push(head, processTable(h.processes));
  }
  return lines.join('\n');
}

/** 0; or, when the services run but the hotpatch level failed, 4 (in every process) or 5 (in some). */
function rebootExit(r: RebootResult): number {
  if (!r.hotpatch || r.hotpatch.status === 'Succeeded') return EXIT.ok;
  return r.hotpatch.status === 'Failed' ? EXIT.failed : EXIT.partial;
}

/** What a command did (or, with --dry-run, would do): its --json body, its text for people, how it ends. */
export interface Outcome<Body> {
  body: Body;
  human: () => string;
  /** For people, on stderr; --json carries them in the body. */
  warnings?: readonly { message: string }[];
  /** The exit code; none: 0. */
  exit?: number;
}

/** One of the agent's commands: its yargs definition, what it runs, and what it runs with --dry-run. */
export interface AgentCommand<C extends OutputCommand, A> {
  command: string | [string, ...string[]];
  describe: string;
  /** Its own options, after the common ones (--dry-run is added when it has a dry run). */
  options?: (y: Argv) => Argv;
  run: (args: A & Common) => Promise<Outcome<Output<C>>>;
  dryRun?: (args: A & Common) => Promise<Outcome<Output<C>>>;
}

/**
 * Registers a command with the one handler they share: it runs the dry run under --dry-run, else
 * the command; prints the outcome (one JSON object, or text and warnings) or the error; and sets
 * the exit code from it.
 */
export function agentCommand<C extends OutputCommand, A>(c: AgentCommand<C, A>): (y: Argv) => Argv {
  const options = (y: Argv) => {
    const withOwn = c.options ? c.options(common(y)) : common(y);
    return c.dryRun ? withOwn.option('dry-run', dryRunOption) : withOwn;
  };
  const handler = async (parsed: unknown) => {
    const args = parsed as A & Common & { dryRun?: boolean };
    const out = printer(args.json);
    try {
      const o = await (args.dryRun && c.dryRun ? c.dryRun(args) : c.run(args));
      out.result(o.body, o.human);
      out.warn(o.warnings);
      if (o.exit !== undefined) process.exitCode = o.exit;
    } catch (e) {
      process.exitCode = out.error(e);
    }
  };
  return (y) => y.command(c.command, c.describe, options, handler);
}

type ApplyArgs = { package: string; pid?: number[]; allowUnsigned: boolean; allowDowngrade: boolean };

const rebootPlanOutcome = (p: RebootPlan): Outcome<Output<'reboot'>> => ({ body: p, human: () => rebootPlanHuman(p) });
const rebootOutcome = (r: RebootResult): Outcome<Output<'reboot'>> => ({ body: r, human: () => rebootHuman(r), exit: rebootExit(r) });

/** In the order `hp-agent --help` lists them. */
const AGENT_COMMANDS = [
  agentCommand<'apply', ApplyArgs>({
    command: 'apply <package>',
    describe: 'Install a package: a baseline is staged (reboot required); a hotpatch is applied live',
    options: (c) =>
      c
        .positional('package', { type: 'string', demandOption: true, coerce: existingFile('package'), describe: 'a signed .hpkg file' })
        .option('pid', { ...pidOption, describe: 'only these processes (hotpatch; repeatable)' })
        .option('allow-unsigned', { type: 'boolean', default: false, describe: 'developer switch: accept an unsigned or untrusted package' })
        .option('allow-downgrade', { type: 'boolean', default: false, describe: 'install a baseline released before the one running or installed (it takes effect at the next reboot)' }),
    dryRun: async (a) => {
      const p = await planApply({ package: a.package, pids: a.pid, allowUnsigned: a.allowUnsigned, allowDowngrade: a.allowDowngrade, verbose: a.verbose });
      // The exit code the apply would end with (a dry run's own failure aside).
      return { body: p, human: () => applyPlanHuman(p), warnings: p.warnings, exit: processExit(p.processes, p.patches[0].installationState === 'Failed') };
    },
    run: async (a) => {
      const bar = progressBar(a.json);
      let r: InstallResult;
      try {
        r = await apply({ package: a.package, pids: a.pid, allowUnsigned: a.allowUnsigned, allowDowngrade: a.allowDowngrade, onProgress: bar.update, verbose: a.verbose, wait: a.wait });
      } finally {
        bar.stop();
      }
      return { body: r, human: () => installHuman(r), warnings: r.warnings, exit: processExit(r.processes, r.status === 'Failed') };
    },
  }),
  agentCommand<'revert', { package: string; pid?: number[] }>({
    command: 'revert <package>',
    describe: 'Roll the applied hotpatch back live, to the previous level or to the plain baseline',
    options: (c) => c.positional('package', { type: 'string', demandOption: true, coerce: nonEmpty('package'), describe: 'the applied hotpatch: package id or KB' }).option('pid', pidOption),
    dryRun: async (a) => {
      const p = await planRevert({ package: a.package, pids: a.pid, verbose: a.verbose });
      const failed = p.processes.filter((x) => x.outcome === 'Failed' || x.outcome === 'Skipped').length;
      return { body: p, human: () => revertPlanHuman(p), exit: processExit(p.processes, failed > 0 && failed === p.processes.length) };
    },
    run: async (a) => {
      const r: RevertResult = await revert({ package: a.package, pids: a.pid, verbose: a.verbose, wait: a.wait });
      return {
        body: r,
        human: () => `reverted ${r.from.kbId} ${r.from.packageId} → ${'packageId' in r.to ? `${r.to.kbId} ${r.to.packageId} (#${r.to.sequence})` : `plain baseline ${r.to.baselineId}`}; status ${r.status}\n${processTable(r.processes)}`,
        exit: processExit(r.processes, r.status === 'Failed'),
      };
    },
  }),
  agentCommand<'status', { check: boolean }>({
    command: 'status',
    describe: 'What the machine really runs: baselines, reboot pending, hotpatch level per process (read from memory)',
    options: (c) =>
      c.option('check', {
        type: 'boolean',
        default: false,
        describe: `exit ${EXIT.refused} and say why when a process is not compliant, a service is not running, a reboot is pending or an operation was interrupted (for monitoring and CI)`,
      }),
    run: async (a) => {
      const r = await status({ verbose: a.verbose });
      if (!a.check) return { body: r, human: () => statusHuman(r) };
      const problems = statusProblems(r);
      return {
        body: { ...r, check: { healthy: problems.length === 0, problems } },
        human: () => `${statusHuman(r)}\n\n${problems.length === 0 ? 'check: healthy' : ['check: NOT healthy', ...problems.map((p) => `  - ${p}`)].join('\n')}`,
        exit: problems.length === 0 ? EXIT.ok : EXIT.refused,
      };
    },
  }),
  agentCommand<'history', { days: number }>({
    command: 'history',
    describe: 'Update history: what was installed, reverted, rebooted, when, with what result',
    options: (c) => c.option('days', { requiresArg: true, default: 30, coerce: wholeNumber('--days', 'a number of days', 1, 36_500), describe: 'how far back, in days' }),
    run: async (a) => {
      const r = historyOutput(await history({ days: a.days, verbose: a.verbose }));
      return {
        body: r,
        human: () =>
          r.entries.length === 0 ? `no updates in the last ${a.days} days` : table(['TIME', 'ACTION', 'KB', 'PACKAGE', 'RESULT', 'DETAIL'], r.entries.map((e) => [e.time, e.action, e.kbId ?? '-', e.packageId ?? '-', e.result, e.detail ? summarize(e.detail) : ''])),
      };
    },
  }),
  agentCommand<'reboot', object>({
    command: 'reboot',
    describe: 'Simulated reboot: stop the services, switch to the installed baseline, start them, report the downtime',
    dryRun: async (a) => rebootPlanOutcome(await planReboot({ verbose: a.verbose })),
    run: async (a) => rebootOutcome(await reboot({ verbose: a.verbose, wait: a.wait })),
  }),
  agentCommand<'boot', object>({
    command: 'boot',
    describe: 'The machine powered on: start the installed baseline\'s services (and its hotpatch level)',
    dryRun: async (a) => rebootPlanOutcome(await planBoot({ verbose: a.verbose })),
    run: async (a) => rebootOutcome(await boot({ verbose: a.verbose, wait: a.wait })),
  }),
];

export function agentCommands(y: Argv): Argv {
  return AGENT_COMMANDS.reduce((parser, add) => add(parser), runCommand(scheduleCommand(y)));
}

/**
 * The history as the output contract names it: the history file keeps each entry as it was
 * written (`kb`), the output says `kbId` as every other command does.
 */
function historyOutput(r: HistoryRead): Output<'history'> {
  return {
    entries: r.entries.map(({ time, action, packageId, kb, result, detail, activityId }) => ({
      time,
      action,
      ...(packageId !== undefined ? { packageId } : {}),
      ...(kb !== undefined ? { kbId: kb } : {}),
      result,
      ...(detail !== undefined ? { detail } : {}),
      activityId,
    })),
    corruptLines: r.corruptLines,
  };
}

function summarize(detail: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(detail)) {
    if (k === 'kbIds' && Array.isArray(v)) parts.push(`KBs: ${v.join(' ') || '-'}`);
    else if (Array.isArray(v)) parts.push(`${k}: ${v.length}${outcomes(v)}`);
    else if (v !== null && typeof v === 'object') continue;
    else parts.push(`${k}: ${String(v)}`);
  }
  return parts.join(', ').slice(0, 80);
}

/** " (1 Reverted, 2 Failed)": what became of the processes of an apply or revert row. */
function outcomes(items: unknown[]): string {
  const counts = new Map<string, number>();
  for (const i of items) {
    const o = (i as { outcome?: unknown } | null)?.outcome;
    if (typeof o === 'string') counts.set(o, (counts.get(o) ?? 0) + 1);
  }
  return counts.size ? ` (${[...counts].map(([o, n]) => `${n} ${o}`).join(', ')})` : '';
}

/** Bar width that leaves room for "patching  N/N processes" on a terminal `columns` wide (default 40). */
export function progressBarSize(total: number, columns: number | undefined): number {
  if (!columns) return 40;
  const text = `patching  ${total}/${total} processes`.length;
  return Math.max(1, Math.min(40, columns - text - 1));
}
