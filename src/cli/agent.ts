/** The agent's commands: apply, revert, status, history, reboot, boot. */
import cliProgress from 'cli-progress';
import type { Argv } from 'yargs';
import type { Output } from '../contract/index.js';
import { apply, boot, history, planApply, planBoot, planReboot, planRevert, reboot, revert, status } from '../agent/library.js';
import type { InstallResult, RebootResult, RevertResult } from '../agent/operations.js';
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

export function agentCommands(y: Argv): Argv {
  return runCommand(scheduleCommand(y))
    .command(
      'apply <package>',
      'Install a package: a baseline is staged (reboot required); a hotpatch is applied live',
      (c) =>
        common(c)
          .positional('package', { type: 'string', demandOption: true, coerce: existingFile('package'), describe: 'a signed .hpkg file' })
          .option('pid', { ...pidOption, describe: 'only these processes (hotpatch; repeatable)' })
          .option('allow-unsigned', { type: 'boolean', default: false, describe: 'developer switch: accept an unsigned or untrusted package' })
          .option('allow-downgrade', { type: 'boolean', default: false, describe: 'install a baseline released before the one running or installed (it takes effect at the next reboot)' })
          .option('dry-run', dryRunOption),
      async (a) => {
        const args = a as unknown as Common & { package: string; pid?: number[]; allowUnsigned: boolean; allowDowngrade: boolean; dryRun: boolean };
        const out = printer(args.json);
        if (args.dryRun) {
          try {
            const p = await planApply({ package: args.package, pids: args.pid, allowUnsigned: args.allowUnsigned, allowDowngrade: args.allowDowngrade, verbose: args.verbose });
            const body: Output<'apply'> = p;
            out.result(body, () => applyPlanHuman(p));
            out.warn(p.warnings);
            // The exit code the apply would end with (a dry run's own failure aside).
            process.exitCode = processExit(p.processes, p.patches[0].installationState === 'Failed');
          } catch (e) {
            process.exitCode = out.error(e);
          }
          return;
        }
        const bar = progressBar(args.json);
        try {
          const r = await apply({ package: args.package, pids: args.pid, allowUnsigned: args.allowUnsigned, allowDowngrade: args.allowDowngrade, onProgress: bar.update, verbose: args.verbose, wait: args.wait });
          bar.stop();
          const body: Output<'apply'> = r;
          out.result(body, () => installHuman(r));
          out.warn(r.warnings);
          process.exitCode = processExit(r.processes, r.status === 'Failed');
        } catch (e) {
          bar.stop();
          process.exitCode = out.error(e);
        }
      },
    )
    .command(
      'revert <package>',
      'Roll the applied hotpatch back live, to the previous level or to the plain baseline',
      (c) => common(c).positional('package', { type: 'string', demandOption: true, coerce: nonEmpty('package'), describe: 'the applied hotpatch: package id or KB' }).option('pid', pidOption).option('dry-run', dryRunOption),
      async (a) => {
        const args = a as unknown as Common & { package: string; pid?: number[]; dryRun: boolean };
        const out = printer(args.json);
        if (args.dryRun) {
          try {
            const p = await planRevert({ package: args.package, pids: args.pid, verbose: args.verbose });
            const body: Output<'revert'> = p;
            out.result(body, () => revertPlanHuman(p));
            const failed = p.processes.filter((x) => x.outcome === 'Failed' || x.outcome === 'Skipped').length;
            process.exitCode = processExit(p.processes, failed > 0 && failed === p.processes.length);
          } catch (e) {
            process.exitCode = out.error(e);
          }
          return;
        }
        try {
          const r: RevertResult = await revert({ package: args.package, pids: args.pid, verbose: args.verbose, wait: args.wait });
          const body: Output<'revert'> = r;
          out.result(body, () => `reverted ${r.from.kbId} ${r.from.packageId} → ${'packageId' in r.to ? `${r.to.kbId} ${r.to.packageId} (#${r.to.sequence})` : `plain baseline ${r.to.baselineId}`}; status ${r.status}\n${processTable(r.processes)}`);
          process.exitCode = processExit(r.processes, r.status === 'Failed');
        } catch (e) {
          process.exitCode = out.error(e);
        }
      },
    )
    .command(
      'status',
      'What the machine really runs: baselines, reboot pending, hotpatch level per process (read from memory)',
      (c) =>
        common(c).option('check', {
          type: 'boolean',
          default: false,
          describe: `exit ${EXIT.refused} and say why when a process is not compliant, a service is not running, a reboot is pending or an operation was interrupted (for monitoring and CI)`,
        }),
      async (a) => {
        const args = a as unknown as Common & { check: boolean };
        const out = printer(args.json);
        try {
          const r = await status({ verbose: args.verbose });
          if (!args.check) {
            const body: Output<'status'> = r;
            out.result(body, () => statusHuman(r));
            return;
          }
          const problems = statusProblems(r);
          const body: Output<'status'> = { ...r, check: { healthy: problems.length === 0, problems } };
          out.result(body, () =>
            `${statusHuman(r)}\n\n${problems.length === 0 ? 'check: healthy' : ['check: NOT healthy', ...problems.map((p) => `  - ${p}`)].join('\n')}`);
          process.exitCode = problems.length === 0 ? EXIT.ok : EXIT.refused;
        } catch (e) {
          process.exitCode = out.error(e);
        }
      },
    )
    .command(
      'history',
      'Update history: what was installed, reverted, rebooted, when, with what result',
      (c) => common(c).option('days', { requiresArg: true, default: 30, coerce: wholeNumber('--days', 'a number of days', 1, 36_500), describe: 'how far back, in days' }),
      async (a) => {
        const args = a as unknown as Common & { days: number };
        const out = printer(args.json);
        try {
          const r = historyOutput(await history({ days: args.days, verbose: args.verbose }));
          out.result(r, () =>
            r.entries.length === 0 ? `no updates in the last ${args.days} days` : table(['TIME', 'ACTION', 'KB', 'PACKAGE', 'RESULT', 'DETAIL'], r.entries.map((e) => [e.time, e.action, e.kbId ?? '-', e.packageId ?? '-', e.result, e.detail ? summarize(e.detail) : ''])));
        } catch (e) {
          process.exitCode = out.error(e);
        }
      },
    )
    .command(
      'reboot',
      'Simulated reboot: stop the services, switch to the installed baseline, start them, report the downtime',
      (c) => common(c).option('dry-run', dryRunOption),
      async (a) => {
        const args = a as unknown as Common & { dryRun: boolean };
        const out = printer(args.json);
        if (args.dryRun) {
          try {
            const p = await planReboot({ verbose: args.verbose });
            const body: Output<'reboot'> = p;
            out.result(body, () => rebootPlanHuman(p));
          } catch (e) {
            process.exitCode = out.error(e);
          }
          return;
        }
        try {
          const r = await reboot({ verbose: args.verbose, wait: args.wait });
          const body: Output<'reboot'> = r;
          out.result(body, () => rebootHuman(r));
          process.exitCode = rebootExit(r);
        } catch (e) {
          process.exitCode = out.error(e);
        }
      },
    )
    .command(
      'boot',
      'The machine powered on: start the installed baseline\'s services (and its hotpatch level)',
      (c) => common(c).option('dry-run', dryRunOption),
      async (a) => {
        const args = a as unknown as Common & { dryRun: boolean };
        const out = printer(args.json);
        if (args.dryRun) {
          try {
            const p = await planBoot({ verbose: args.verbose });
            const body: Output<'reboot'> = p;
            out.result(body, () => rebootPlanHuman(p));
          } catch (e) {
            process.exitCode = out.error(e);
          }
          return;
        }
        try {
          const r = await boot({ verbose: args.verbose, wait: args.wait });
          const body: Output<'reboot'> = r;
          out.result(body, () => rebootHuman(r));
          process.exitCode = rebootExit(r);
        } catch (e) {
          process.exitCode = out.error(e);
        }
      },
    );
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
