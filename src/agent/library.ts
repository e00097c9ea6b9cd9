/**
 * The agent's operations for programs: what `hp-agent apply`, `revert`, `status`, `history`,
 * `reboot`, `boot` and `pack` do, each one call with one typed options object (like the engine's
 * `applyPatch`), returning the object the command prints with `--json`. The command line calls
 * these same functions, so a program and a person get the same checks, lock, state and history.
 *
 * Each call is one agent run (withSession): it takes the agent's lock (one agent at a time per
 * home), repairs an interrupted operation first, records history. Errors are HpError with the
 * codes the command line maps to exit codes (USAGE for options that are not valid: nothing ran).
 *
 * A process cannot patch its own children (Node reaps them with waitpid(), which would swallow
 * their ptrace stops: refused with TARGET_IS_OUR_CHILD). The services the agent starts are
 * detached grandchildren, so a program may boot them and patch them; a target it spawned itself
 * must be patched from another process (the command line, or a program of its own).
 */
import { existingFile, nonEmpty, pidValues, wholeNumber } from '../cli/usage.js';
import { packBaseline, packHotpatch, type PackBaselineOptions, type PackHotpatchOptions, type PackResult } from '../package/index.js';
import { readHistory, type HistoryRead } from './history.js';
import {
  applyPackage,
  boot as bootOp,
  planApply as planApplyOp,
  planRebootRun,
  planRevert as planRevertOp,
  reboot as rebootOp,
  revertPackage,
  status as statusOp,
  type ApplyPlan,
  type InstallResult,
  type RevertPlan,
  type RevertResult,
} from './operations.js';
import type { RebootPlan, RebootResult } from './reboot.js';
import { withSession } from './session.js';
import type { StatusReport } from './status.js';

export interface AgentOptions {
  /** The agent's home; default $HP_AGENT_HOME, else /var/lib/hp-agent. */
  home?: string;
  /** How long to wait for another agent's lock: ms, or true for ever (default 30 s). */
  wait?: number | boolean;
  /** Mirror the log on stderr. */
  verbose?: boolean;
}

export interface AgentApplyOptions extends AgentOptions {
  /** The package file (.hpkg). */
  package: string;
  /** Only these processes (hotpatch). */
  pids?: number[];
  /** Developer switch: accept an unsigned or untrusted package. */
  allowUnsigned?: boolean;
  /** Install a baseline released before the one running or installed. */
  allowDowngrade?: boolean;
  /** Processes changed so far, of those found so far (the total grows while /proc is searched). */
  onProgress?: (done: number, total: number) => void;
}

export interface AgentRevertOptions extends AgentOptions {
  /** The applied hotpatch: its package id or KB. */
  package: string;
  pids?: number[];
}

export type AgentStatusOptions = Omit<AgentOptions, 'wait'>;

export interface AgentHistoryOptions extends Omit<AgentOptions, 'wait'> {
  /** How far back, in days (default 30, Azure's window). */
  days?: number;
}

const session = (o: AgentOptions, command: string, readOnly = false) => ({ command, home: o.home, verbose: o.verbose, wait: o.wait, readOnly });
const pids = (v: number[] | undefined, name: string) => (v === undefined ? undefined : pidValues(name)(v));

/** Install a baseline (staged: it takes effect at the next reboot) or apply a hotpatch live. */
export async function apply(o: AgentApplyOptions): Promise<InstallResult> {
  const file = existingFile('package')(o.package);
  const only = pids(o.pids, 'pids');
  return withSession(session(o, `apply ${file}`), (s) =>
    applyPackage(s, file, { pids: only, allowUnsigned: o.allowUnsigned, allowDowngrade: o.allowDowngrade, onProgress: o.onProgress }));
}

/** Roll the applied hotpatch back live, to the previous level or to the plain baseline. */
export async function revert(o: AgentRevertOptions): Promise<RevertResult> {
  const id = nonEmpty('package')(o.package);
  const only = pids(o.pids, 'pids');
  return withSession(session(o, `revert ${id}`), (s) => revertPackage(s, id, { pids: only }));
}

/** What the machine really runs, read from the processes' memory. */
export async function status(o: AgentStatusOptions = {}): Promise<StatusReport> {
  return withSession(session(o, 'status', true), (s) => statusOp(s));
}

/** The update history, newest first. */
export async function history(o: AgentHistoryOptions = {}): Promise<HistoryRead> {
  const days = o.days === undefined ? 30 : wholeNumber('days', 'a number of days', 1, 36_500)(o.days);
  return withSession(session(o, 'history', true), (s) => readHistory(s.home, { sinceDays: days }));
}

/** Simulated reboot: stop the services, switch to the installed baseline, start them. */
export async function reboot(o: AgentOptions = {}): Promise<RebootResult> {
  return withSession(session(o, 'reboot'), (s) => rebootOp(s));
}

/** The machine powered on: start the installed baseline's services and its hotpatch level. */
export async function boot(o: AgentOptions = {}): Promise<RebootResult> {
  return withSession(session(o, 'boot'), (s) => bootOp(s));
}

/*
 * Dry runs (`--dry-run`): the plan, from the same checks and the same planner as the real run,
 * refused as it would be. A dry run reads only: no lock is taken, nothing is written to the
 * processes, the store, the state or the history.
 */

/** What `apply` would do (`apply --dry-run`). */
export async function planApply(o: Omit<AgentApplyOptions, 'onProgress' | 'wait'>): Promise<ApplyPlan> {
  const file = existingFile('package')(o.package);
  const only = pids(o.pids, 'pids');
  return withSession(session(o, `apply --dry-run ${file}`, true), (s) => planApplyOp(s, file, { pids: only, allowUnsigned: o.allowUnsigned, allowDowngrade: o.allowDowngrade }));
}

/** What `revert` would do (`revert --dry-run`). */
export async function planRevert(o: Omit<AgentRevertOptions, 'wait'>): Promise<RevertPlan> {
  const id = nonEmpty('package')(o.package);
  const only = pids(o.pids, 'pids');
  return withSession(session(o, `revert --dry-run ${id}`, true), (s) => planRevertOp(s, id, { pids: only }));
}

/** What `reboot` would do (`reboot --dry-run`). */
export async function planReboot(o: AgentStatusOptions = {}): Promise<RebootPlan> {
  return withSession(session(o, 'reboot --dry-run', true), async (s) => planRebootRun(s, 'reboot'));
}

/** What `boot` would do (`boot --dry-run`). */
export async function planBoot(o: AgentStatusOptions = {}): Promise<RebootPlan> {
  return withSession(session(o, 'boot --dry-run', true), async (s) => planRebootRun(s, 'boot'));
}

export type AgentPackOptions = ({ kind: 'baseline' } & PackBaselineOptions) | ({ kind: 'hotpatch' } & PackHotpatchOptions);

/**
 * Build and sign a package from an author's files (`hp-agent pack`): build-ids, hashes and each
 * patched function's original bytes are read from the files. Needs no agent home.
 */
export async function pack(o: AgentPackOptions): Promise<PackResult> {
  return o.kind === 'baseline' ? packBaseline(o) : packHotpatch(o);
}
