/** `hp-agent try`: a patch author's command — redirect functions of one process, or revert them. */
import fs from 'node:fs';
import type { Argv } from 'yargs';
import { appendHistory } from '../agent/history.js';
import { processesMapping } from '../agent/discover.js';
import { agentHome } from '../agent/home.js';
import { acquireTryLock } from '../agent/lock.js';
import type { z } from 'zod';
import type { Output } from '../contract/index.js';
import type { tryApplyOutput as TryApplySchema, tryRevertOutput as TryRevertSchema } from '../contract/commands.js';
import { inlinedCopyWarnings, readElfFile, type InlineWarning } from '../elf/index.js';
import { HpError } from '../errors.js';
import { applyPatch, PATCH_MODES, planPatch, planRevert, revertFunctions, type ApplyReport, type FunctionSpec, type PatchMode, type RevertReport, type SiteReport } from '../engine/patch.js';
import { changePlan, type ChangePlan } from '../engine/plan.js';
import { EXIT, printer } from './output.js';
import { hexAddr } from '../hex.js';
import { changePlanHuman, sitesTable } from './plan.js';
import { existingFile, nonEmpty, pidValues, usage, wholeNumber } from './usage.js';

interface TryArgs {
  patch?: string;
  pid?: number[];
  all: boolean;
  wait: number;
  function: string[];
  object?: string;
  revert: boolean;
  json: boolean;
  timeout: number;
  realtime: boolean;
  far: boolean;
  mode: PatchMode;
  consistency: 'entry' | 'function';
  replace: boolean;
  allowInit: boolean;
  dryRun: boolean;
}

export function parseFunctionSpec(spec: string): FunctionSpec {
  const [name, replacement, extra] = spec.split('=');
  if (!name || extra !== undefined || replacement === '') {
    throw new HpError('USAGE', `--function expects NAME or NAME=REPLACEMENT, got "${spec}"`);
  }
  return replacement ? { name, replacement } : { name };
}

/** The engine's sites with their addresses as the output contract writes them: 0x… strings. */
function sitesOutput(sites: SiteReport[]) {
  return sites.map(({ functionAddress, siteAddress, target, entry, ...s }) => ({
    ...s,
    functionAddress: hexAddr(functionAddress),
    siteAddress: hexAddr(siteAddress),
    ...(target !== undefined ? { target: hexAddr(target) } : {}),
    ...(entry ? { entry: { ...entry, siteAddress: hexAddr(entry.siteAddress) } } : {}),
  }));
}

function tryApplyOutput(r: ApplyReport): z.output<typeof TryApplySchema> {
  return { ...r, patch: { ...r.patch, base: hexAddr(r.patch.base) }, bindings: r.bindings.map((b) => ({ ...b, address: hexAddr(b.address) })), sites: sitesOutput(r.sites) };
}

function tryRevertOutput(r: RevertReport): z.output<typeof TryRevertSchema> {
  return { ...r, sites: sitesOutput(r.sites) };
}

function pauseLine(r: ApplyReport | RevertReport): string {
  if (r.mode === 'zero-stop') {
    // The switch stops nobody; mapping a new patch borrowed a thread, and that is said too.
    const borrowed = 'borrowed' in r && r.borrowed?.length ? r.borrowed : [];
    const held = borrowed.map((b) => `thread ${b.tid} ${b.interruptedSyscall ? '(asleep in a call, restarted) ' : ''}held ${b.heldUs} µs to map the patch`);
    return `zero-stop: no thread stopped for the switch (${r.switchUs} µs)` + (held.length ? `; ${held.join(', ')}` : '');
  }
  return `pause ${r.pauseUs} µs, ${r.threads} thread${r.threads === 1 ? '' : 's'} stopped` +
    (r.attempts > 1 ? `, ${r.attempts} attempts (${r.totalStoppedUs} µs stopped in all)` : '');
}

/**
 * A change `try` made (or refused, or failed to make) goes into the agent's history when there is
 * an agent home (HP_AGENT_HOME, or the default): an unsigned change of a running process is the
 * change an operator most needs to find afterwards. No home: nothing is created.
 */
async function recordTry(a: TryArgs, pid: number, outcome: { report?: ApplyReport | RevertReport; error?: unknown }): Promise<void> {
  const home = agentHome();
  if (!fs.statSync(home, { throwIfNoEntry: false })?.isDirectory()) return;
  const e = outcome.error as HpError | undefined;
  const r = outcome.report;
  const detail = {
    pid,
    ...(a.patch ? { patch: a.patch } : {}),
    object: r?.object.path ?? a.object ?? '(the executable)',
    functions: a.function,
    ...(r ? { mode: r.mode, pauseUs: r.pauseUs } : {}),
    ...(e ? { code: e.code ?? 'INTERNAL', message: e.message } : {}),
  };
  const result = !e ? 'Succeeded' : e instanceof HpError && e.unchanged ? 'Refused' : 'Failed';
  await appendHistory(home, { action: a.revert ? 'try-revert' : 'try', result, detail }).catch(() => undefined);
}

export function tryCommand(y: Argv): Argv {
  return y.command(
    'try [patch]',
    'Redirect functions of a running process to a patch object (or --revert them)',
    (c) =>
      c
        .positional('patch', { type: 'string', coerce: existingFile('patch object'), describe: 'the patch: a position-independent shared object (.so)' })
        .option('pid', { array: true, requiresArg: true, coerce: pidValues(), describe: 'a process to patch; repeatable' })
        .option('all', { type: 'boolean', default: false, describe: 'every process that maps the --object (found as apply finds processes)' })
        .option('wait', { requiresArg: true, default: 30000, coerce: wholeNumber('--wait', 'milliseconds', 0), describe: 'ms to wait for another running agent (or try) to finish' })
        .option('function', {
          type: 'string',
          array: true,
          demandOption: true,
          requiresArg: true,
          coerce: (specs: string[]) => (specs.forEach(parseFunctionSpec), specs),
          describe: 'NAME[=REPLACEMENT]: a function of the patched object and its replacement in the patch (default: same name); repeatable',
        })
        .option('object', { type: 'string', requiresArg: true, coerce: nonEmpty('--object'), describe: 'path or file name of the patched object (default: the executable)' })
        .option('revert', { type: 'boolean', default: false, describe: 'put the original bytes back instead' })
        .option('timeout', { requiresArg: true, default: 2000, coerce: wholeNumber('--timeout', 'milliseconds', 0), describe: 'ms to keep retrying while a thread executes the bytes to replace' })
        .option('realtime', { type: 'boolean', default: true, describe: 'stop the target at real-time priority (shorter pause)' })
        .option('mode', { type: 'string', choices: PATCH_MODES as unknown as string[], default: 'auto', describe: 'zero-stop (hot-patchable entries only, no thread stopped), stop (all threads stopped for the writes), or auto: zero-stop where possible' })
        .option('consistency', { type: 'string', choices: ['entry', 'function'], default: 'entry', describe: 'entry: threads already inside an old function finish it; function: wait until no thread runs the code being replaced or will return into it (needs a stop)' })
        .option('replace', { type: 'boolean', default: false, describe: 're-point functions this tool already patched instead of refusing them' })
        .option('allow-init', { type: 'boolean', default: false, describe: 'also change the init (PID 1) of the machine or of a PID namespace (a container\'s init), whose death kills its whole namespace' })
        .option('far', { type: 'boolean', default: false, describe: 'map the patch out of rel32 reach, forcing the 14-byte absolute jump (for testing)' })
        .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan (sites, bytes before/after, jump, mode, where the patch would be mapped) and write nothing' })
        .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
        .example('$0 try fix.so --pid 1234 --function compute=compute_v2', 'patch compute() of PID 1234')
        .example('$0 try --revert --pid 1234 --function compute', 'put compute() back')
        .example('$0 try fix.so --all --object /usr/sbin/nginx --function compute', 'patch every process that runs /usr/sbin/nginx')
        .check((a) => {
          const pids = (a.pid as number[] | undefined) ?? [];
          if (a.all && pids.length) throw usage('give either --pid or --all, not both');
          if (!a.all && pids.length === 0) throw usage('name the processes: --pid PID (repeatable) or --all');
          if (a.all && a.object === undefined) throw usage('--all patches every process that maps the object: name it with --object (a path or a file name)');
          if (a.revert) {
            const extra = [a.patch !== undefined && 'a patch object', a.replace && '--replace', a.far && '--far'].filter(Boolean);
            if (extra.length) throw usage(`--revert puts the original bytes back: do not give ${extra.join(' or ')}`);
          } else if (a.patch === undefined) {
            throw usage('a patch object is required (or --revert)');
          }
          if (a.mode === 'zero-stop' && a.consistency === 'function') {
            throw usage('--mode zero-stop cannot give --consistency function: proving no thread is inside an old function needs every thread stopped');
          }
          return true;
        }),
    async (argv) => {
      const a = argv as unknown as TryArgs;
      const out = printer(a.json);
      try {
        process.exitCode = await runTry(a, out);
      } catch (e) {
        process.exitCode = out.error(e);
      }
    },
  );
}

type Report = ApplyReport | RevertReport;
type ProcessOutcome<R = Report> = { pid: number; ok: true; report: R } | { pid: number; ok: false; error: HpError | Error };

/** Inlined copies of the patched functions in the objects named (checked once per file). */
function inlineWarnings(a: TryArgs, objects: ({ path: string; buildId?: string } | undefined)[]): InlineWarning[] {
  if (a.revert) return [];
  const functions = a.function.map((f) => parseFunctionSpec(f).name);
  const seen = new Set<string>();
  const out: InlineWarning[] = [];
  for (const o of objects) {
    if (!o) continue;
    const key = `${o.path}\0${o.buildId ?? ''}`;
    if (seen.has(key)) continue;
    seen.add(key);
    let elf;
    try {
      elf = readElfFile(o.path);
    } catch {
      continue; // the file is gone: nothing to read its DWARF from
    }
    if (o.buildId && elf.buildId !== o.buildId) continue; // replaced on disk since: not what runs
    out.push(...inlinedCopyWarnings(elf, o.path, functions));
  }
  return out;
}

/** One process's dry run: the plan of the same change, refused as it would be; nothing mapped, written or recorded. */
async function planOne(a: TryArgs, pid: number): Promise<ChangePlan> {
  return changePlan(a.revert
    ? await planRevert({ pid, functions: a.function.map((f) => parseFunctionSpec(f).name), object: a.object, mode: a.mode, consistency: a.consistency, allowInit: a.allowInit })
    : await planPatch({ pid, patchPath: a.patch!, functions: a.function.map(parseFunctionSpec), object: a.object, mode: a.mode, consistency: a.consistency, replace: a.replace, placement: a.far ? 'far' : 'near', allowInit: a.allowInit }));
}

/** One process: changed (and recorded in the history), or the error (recorded too). */
async function tryOne(a: TryArgs, pid: number): Promise<Report> {
  try {
    const report = a.revert
      ? await revertFunctions({ pid, functions: a.function.map((f) => parseFunctionSpec(f).name), object: a.object, mode: a.mode, consistency: a.consistency, timeoutMs: a.timeout, realtime: a.realtime, allowInit: a.allowInit })
      : await applyPatch({ pid, patchPath: a.patch!, functions: a.function.map(parseFunctionSpec), object: a.object, mode: a.mode, consistency: a.consistency, replace: a.replace, timeoutMs: a.timeout, realtime: a.realtime, placement: a.far ? 'far' : 'near', allowInit: a.allowInit });
    await recordTry(a, pid, { report });
    return report;
  } catch (e) {
    await recordTry(a, pid, { error: e });
    throw e;
  }
}

/** A report as the output contract has it (addresses as "0x…" strings). */
function reportOutput(r: Report): z.output<typeof TryApplySchema> | z.output<typeof TryRevertSchema> {
  return 'patch' in r ? tryApplyOutput(r) : tryRevertOutput(r);
}

function reportLine(a: TryArgs, r: Report): string {
  if (a.revert) return `reverted ${r.sites.length} function(s) in PID ${r.pid} (${r.object.path}) — ${pauseLine(r)}\n${sitesTable(r.sites)}`;
  const p = (r as ApplyReport).patch;
  return `patched ${r.sites.length} function(s) in PID ${r.pid} (${r.object.path}) with ${p.mapping} at ${hexAddr(p.base)} — ${pauseLine(r)}\n${sitesTable(r.sites)}`;
}

function errorBody(e: HpError | Error) {
  const err = e instanceof HpError ? e : undefined;
  return { code: err?.code ?? 'INTERNAL', message: e.message, unchanged: err?.unchanged ?? false };
}

/** The processes a try names: --pid's, or every one that maps --object (--all). */
function tryPids(a: TryArgs): number[] {
  const pids = a.all ? processesMapping(a.object!).filter((p) => p.files.length > 0).map((p) => p.pid) : [...new Set(a.pid!)];
  if (pids.length === 0) {
    throw new HpError('NO_PROCESSES', `no running process maps ${a.object}; nothing was changed`, { object: a.object });
  }
  return pids;
}

/** The exit code of a run over many processes. */
function manyExit(outcomes: ProcessOutcome<unknown>[]): number {
  const failed = outcomes.filter((o): o is Extract<ProcessOutcome, { ok: false }> => !o.ok);
  if (failed.length === 0) return EXIT.ok;
  if (failed.length < outcomes.length) return EXIT.partial;
  // Every process failed: refused when nothing was changed anywhere.
  return failed.every((o) => o.error instanceof HpError && o.error.unchanged) ? EXIT.refused : EXIT.failed;
}

/**
 * `try --dry-run`: each process's plan, from the same checks and planner as the change. It reads
 * only: no lock is taken (the agent's lock file is not written), nothing goes into the history.
 */
async function runTryPlan(a: TryArgs, out: ReturnType<typeof printer>): Promise<number> {
  const pids = tryPids(a);
  const verb = a.revert ? 'try --revert' : 'try';
  if (!a.all && pids.length === 1) {
    const plan = await planOne(a, pids[0]);
    const warnings = inlineWarnings(a, [plan.objects[0]]);
    const body: Output<'try'> = { ...plan, warnings };
    out.result(body, () => `dry run: nothing was written. ${verb} would change PID ${plan.pid} (${plan.objects[0]?.path ?? '-'})\n${changePlanHuman(plan)}`);
    out.warn(warnings);
    return EXIT.ok;
  }
  const outcomes: ProcessOutcome<ChangePlan>[] = [];
  for (const pid of pids) {
    try {
      outcomes.push({ pid, ok: true, report: await planOne(a, pid) });
    } catch (e) {
      outcomes.push({ pid, ok: false, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }
  const done = outcomes.filter((o): o is Extract<ProcessOutcome<ChangePlan>, { ok: true }> => o.ok);
  const failed = outcomes.length - done.length;
  const warnings = inlineWarnings(a, done.map((o) => o.report.objects[0]));
  const status = failed === 0 ? 'Succeeded' : done.length === 0 ? 'Failed' : 'CompletedWithWarnings';
  const value: Output<'try'> = {
    dryRun: true,
    status,
    processes: outcomes.map((o) => (o.ok ? { ok: true as const, ...o.report } : { pid: o.pid, ok: false as const, error: errorBody(o.error) })),
    warnings,
  };
  out.result(value, () =>
    [
      `dry run: nothing was written. ${verb} would change ${done.length} of ${outcomes.length} process(es); status ${status}`,
      ...outcomes.map((o) => (o.ok ? changePlanHuman(o.report) : `PID ${o.pid}: ${o.error instanceof HpError ? `${o.error.unchanged ? 'refused' : 'failed'} (${o.error.code})` : 'error'}: ${o.error.message}`)),
    ].join('\n\n'));
  out.warn(warnings);
  return manyExit(outcomes);
}

async function runTry(a: TryArgs, out: ReturnType<typeof printer>): Promise<number> {
  if (a.dryRun) return runTryPlan(a, out);
  const verb = a.revert ? 'try --revert' : `try ${a.patch}`;
  // One writer at a time into a process: the agent's lock, held for the whole run.
  const lock = await acquireTryLock(agentHome(), { wait: a.wait, command: `${verb} ${a.all ? `--all ${a.object}` : `--pid ${a.pid!.join(',')}`}` });
  try {
    const pids = tryPids(a);
    // One process, named by --pid: the result as it always was (one report, or the error).
    if (!a.all && pids.length === 1) {
      const report = await tryOne(a, pids[0]);
      const warnings = inlineWarnings(a, [report.object]);
      const body: Output<'try'> = { ...reportOutput(report), warnings };
      out.result(body, () => reportLine(a, report));
      out.warn(warnings);
      return EXIT.ok;
    }
    const outcomes: ProcessOutcome[] = [];
    for (const pid of pids) {
      try {
        outcomes.push({ pid, ok: true, report: await tryOne(a, pid) });
      } catch (e) {
        outcomes.push({ pid, ok: false, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    const done = outcomes.filter((o): o is Extract<ProcessOutcome, { ok: true }> => o.ok);
    const failed = outcomes.filter((o): o is Extract<ProcessOutcome, { ok: false }> => !o.ok);
    const warnings = inlineWarnings(a, done.map((o) => o.report.object));
    const status = failed.length === 0 ? 'Succeeded' : done.length === 0 ? 'Failed' : 'CompletedWithWarnings';
    const value: Output<'try'> = {
      status,
      processes: outcomes.map((o) => (o.ok ? { ok: true as const, ...reportOutput(o.report) } : { pid: o.pid, ok: false as const, error: errorBody(o.error) })),
      warnings,
    };
    out.result(value, () =>
      [
        `${a.revert ? 'reverted' : 'patched'} ${done.length} of ${outcomes.length} process(es); status ${status}`,
        ...outcomes.map((o) => (o.ok ? reportLine(a, o.report) : `PID ${o.pid}: ${o.error instanceof HpError ? `${o.error.unchanged ? 'refused' : 'failed'} (${o.error.code})` : 'error'}: ${o.error.message}`)),
      ].join('\n\n'));
    out.warn(warnings);
    if (failed.length === 0) return EXIT.ok;
    if (done.length > 0) return EXIT.partial;
    // Every process failed: refused when nothing was changed anywhere.
    return failed.every((o) => o.error instanceof HpError && o.error.unchanged) ? EXIT.refused : EXIT.failed;
  } finally {
    lock.release();
  }
}
