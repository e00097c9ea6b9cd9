/**
 * What a caller of the engine says and hears: the changes it asks for (ChangeOptions, and the
 * one-object shorthands of `hp-agent try`) and the reports it gets back. The engine's steps
 * (read.ts, plan.ts, execute.ts) and its front door (patch.ts) share them.
 */
import type { LoadedObject, MapEntry } from '../proc/index.js';
import type { JumpKind } from '../x64/index.js';
import type { Consistency, PatchMode } from './modes.js';
import type { PatchLabel } from './record.js';
import type { BorrowedThread } from './remote.js';

export interface FunctionSpec {
  /** The function of the patched object to redirect. */
  name: string;
  /** The function of the patch that replaces it (default: the same name). */
  replacement?: string;
  /**
   * What the function's original bytes must be (a hotpatch manifest says it): its size, equal to
   * the symbol's, and the SHA-256 of its bytes. Checked against the process's memory before
   * anything is written (with the original bytes an earlier patch's record keeps where its jump
   * sits now).
   */
  original?: { size: number; sha256: string };
}

/** What one object of the process should look like after the change. */
export interface ObjectChange {
  /** Full path or file name of the patched object; default the main executable. */
  object?: string;
  /** The patch object holding the replacements (needed when `functions` is not empty). */
  patchPath?: string;
  functions: FunctionSpec[];
  /** Functions to give their original bytes back (those a previous level patched and this one does not). */
  restore?: string[];
}

export interface ChangeOptions {
  pid: number;
  changes: ObjectChange[];
  /** Which package this code comes from: recorded in the target and in the mapping's name. */
  label?: PatchLabel;
  /** Re-point functions that hp-agent already patched (cumulative hotpatches); else refuse them. */
  replace?: boolean;
  /** Refuse to restore a function that is not patched (revert), instead of skipping it. */
  requirePatched?: boolean;
  /** Default 'auto'. */
  mode?: PatchMode;
  /**
   * 'entry' (default): a thread already inside an old function finishes it in the old code.
   * 'function': the switch waits (up to timeoutMs, then FUNCTION_ACTIVE) until no thread runs the
   * code being replaced or has a return address into it on its stack; needs a stop.
   */
  consistency?: Consistency;
  timeoutMs?: number;
  realtime?: boolean;
  /**
   * The process's /proc/PID/maps as the caller read them a moment ago (it looked for the
   * process by them): saves reading them again. If the process mapped something meanwhile where
   * the patch was to go, the mapping is refused by the kernel (never overlaps) and the change is
   * planned again from fresh maps.
   */
  maps?: MapEntry[];
  /** Objects the caller loaded from those `maps` (looked up by full path). */
  objects?: LoadedObject[];
  /** Zero-stop: the pause between two writes to the same entry (see zero-stop.ts; default 1 ms). */
  stepDelayMs?: number;
  /**
   * 'near' (default) maps a patch within rel32 reach of its object; 'far' deliberately maps it
   * out of reach, so the 14-byte absolute jump is used (to test that path).
   */
  placement?: 'near' | 'far';
  /**
   * Plan only: every read and every check of a real change (so a change that would be refused is
   * refused the same way), then the plan is returned instead of carried out — nothing is mapped
   * in the target, no thread is borrowed or stopped, no byte is written.
   */
  dryRun?: boolean;
  /**
   * Change the init (pid 1) of a PID namespace too: the machine's init or a container's, whose
   * death takes every process of its namespace with it. Refused (TARGET_IS_INIT) unless set.
   */
  allowInit?: boolean;
}

export type SiteAction = 'patch' | 'repoint' | 'restore';

export interface SiteReport {
  action: SiteAction;
  object: string;
  function: string;
  replacement?: string;
  functionAddress: number;
  /** 'padding': the jump is in the hot-patchable entry's padding (siteAddress), `entry` says what the entry NOP became. */
  form: 'entry' | 'padding';
  siteAddress: number;
  kind: JumpKind;
  keptEndbr64: boolean;
  target?: number;
  /** Hex of the bytes at the site before the change. */
  before: string;
  /** Hex of the bytes at the site after it. */
  after: string;
  entry?: { siteAddress: number; entryNop: string; before: string; after: string };
}

export interface TransactionReport {
  /** Stop mode: first thread stopped → last resumed (µs); 0 in zero-stop mode. */
  pauseUs: number;
  /**
   * Every stop of the change added up (µs): the final one and each attempt that found a thread
   * in the way and let everyone go again. Equal to pauseUs when one attempt sufficed.
   */
  totalStoppedUs: number;
  /** Threads stopped or held (0 in zero-stop mode). */
  threads: number;
  /**
   * Of those, held asleep in a call a stop would cut short (epoll_wait, sigtimedwait, a recv
   * with a timeout…) instead of stopped: kept off the CPU for the pause, never interrupted.
   */
  held?: number;
  attempts: number;
  realtime: boolean;
}

export interface MappedPatchReport {
  object: string;
  path: string;
  buildId?: string;
  base: number;
  size: number;
  mapping: string;
  bindings: { name: string; address: number; from: string }[];
  /** An earlier mapping of the same bytes was pointed at again; nothing new was mapped. */
  reused?: boolean;
}

export interface ChangeReport extends Partial<TransactionReport> {
  pid: number;
  /** False when every function was already as asked: nothing was stopped or written. For a dry run: whether the change would write. */
  changed: boolean;
  /** A plan (ChangeOptions.dryRun): `patches` and `sites` say what the change would map and write; nothing was. */
  dryRun?: true;
  mode?: 'stop' | 'zero-stop';
  /** Zero-stop: first write → last write read back, pauses included (nothing stopped), µs. */
  switchUs?: number;
  /**
   * Zero-stop: the threads stopped to map a new patch (one asleep in a call when there is one,
   * its call restarted) and for how long — the switch itself stops none.
   */
  borrowed?: BorrowedThread[];
  objects: { path: string; buildId?: string }[];
  patches: MappedPatchReport[];
  sites: SiteReport[];
}

/** What every change of one process can ask for, whatever its functions (see ChangeOptions). */
type ProcessOptions = Pick<ChangeOptions, 'pid' | 'mode' | 'consistency' | 'timeoutMs' | 'realtime' | 'stepDelayMs' | 'allowInit'>;

/** `hp-agent try`: one object's functions to one patch. */
export interface ApplyOptions extends ProcessOptions, Pick<ChangeOptions, 'replace' | 'placement'> {
  patchPath: string;
  functions: FunctionSpec[];
  object?: string;
}

export interface ApplyReport extends TransactionReport {
  pid: number;
  mode: 'stop' | 'zero-stop';
  switchUs?: number;
  /** Zero-stop with a new patch: the thread borrowed to map it (see ChangeReport.borrowed). */
  borrowed?: BorrowedThread[];
  object: { path: string; buildId?: string };
  patch: { path: string; buildId?: string; base: number; size: number; mapping: string; reused?: boolean };
  bindings: { name: string; address: number; from: string }[];
  sites: SiteReport[];
}

/** `hp-agent try --revert`: one object's functions back to their original bytes. */
export interface RevertOptions extends ProcessOptions {
  functions: string[];
  object?: string;
}

export interface RevertReport extends TransactionReport {
  pid: number;
  mode: 'stop' | 'zero-stop';
  switchUs?: number;
  object: { path: string; buildId?: string };
  sites: SiteReport[];
}

export interface InspectOptions {
  pid: number;
  /** The functions' symbol names. */
  functions: string[];
  /** Path or file name of the object; default the executable. */
  object?: string;
}
