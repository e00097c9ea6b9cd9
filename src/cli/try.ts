/** `hp-agent try`: a patch author's command — redirect functions of one process, or revert them. */
import type { Argv } from 'yargs';
import { HpError } from '../errors.js';
import { applyPatch, PATCH_MODES, revertFunctions, type ApplyReport, type FunctionSpec, type PatchMode, type RevertReport } from '../engine/patch.js';
import { addr, EXIT, printer, spacedHex, table } from './output.js';
import { existingFile, nonEmpty, pidValue, usage, wholeNumber } from './usage.js';

interface TryArgs {
  patch?: string;
  pid: number;
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
}

export function parseFunctionSpec(spec: string): FunctionSpec {
  const [name, replacement, extra] = spec.split('=');
  if (!name || extra !== undefined || replacement === '') {
    throw new HpError('USAGE', `--function expects NAME or NAME=REPLACEMENT, got "${spec}"`);
  }
  return replacement ? { name, replacement } : { name };
}

function sitesTable(report: ApplyReport | RevertReport): string {
  return table(
    ['FUNCTION', 'ADDRESS', 'SITE', 'JUMP', 'ENDBR64', 'BEFORE', 'AFTER'],
    report.sites.map((s) => [
      s.replacement && s.replacement !== s.function ? `${s.function} → ${s.replacement}` : s.function,
      addr(s.functionAddress),
      addr(s.siteAddress),
      s.kind,
      s.keptEndbr64 ? 'kept' : '-',
      spacedHex(s.before) + (s.entry ? ` | entry ${spacedHex(s.entry.before)}` : ''),
      spacedHex(s.after) + (s.entry ? ` | entry ${spacedHex(s.entry.after)}` : ''),
    ]),
  );
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

export function tryCommand(y: Argv): Argv {
  return y.command(
    'try [patch]',
    'Redirect functions of a running process to a patch object (or --revert them)',
    (c) =>
      c
        .positional('patch', { type: 'string', coerce: existingFile('patch object'), describe: 'the patch: a position-independent shared object (.so)' })
        .option('pid', { requiresArg: true, demandOption: true, coerce: pidValue(), describe: 'the process to patch' })
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
        .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
        .example('$0 try fix.so --pid 1234 --function compute=compute_v2', 'patch compute() of PID 1234')
        .example('$0 try --revert --pid 1234 --function compute', 'put compute() back')
        .check((a) => {
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
        if (a.revert) {
          const report = await revertFunctions({ pid: a.pid, functions: a.function.map((f) => parseFunctionSpec(f).name), object: a.object, mode: a.mode, consistency: a.consistency, timeoutMs: a.timeout, realtime: a.realtime, allowInit: a.allowInit });
          out.result(report, () => `reverted ${report.sites.length} function(s) in PID ${report.pid} (${report.object.path}) — ${pauseLine(report)}\n${sitesTable(report)}`);
        } else {
          const report = await applyPatch({ pid: a.pid, patchPath: a.patch!, functions: a.function.map(parseFunctionSpec), object: a.object, mode: a.mode, consistency: a.consistency, replace: a.replace, timeoutMs: a.timeout, realtime: a.realtime, placement: a.far ? 'far' : 'near', allowInit: a.allowInit });
          out.result(report, () =>
            `patched ${report.sites.length} function(s) in PID ${report.pid} (${report.object.path}) with ${report.patch.mapping} at ${addr(report.patch.base)} — ${pauseLine(report)}\n${sitesTable(report)}`);
        }
        process.exitCode = EXIT.ok;
      } catch (e) {
        process.exitCode = out.error(e);
      }
    },
  );
}
