/**
 * Applying and reverting hotpatches: from a verified package to a change of every process that
 * runs the baseline's code. A hotpatch applies only where BOTH truths equal its baseline: the
 * installed system (on disk) and what the processes execute (the build-ids they mapped).
 * Hotpatches are cumulative: level N replaces N-1 in one transaction per process, and the
 * functions N no longer patches get their original bytes back.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { changeFunctions, type ChangeReport, type ObjectChange, type PatchMode, type SiteAction } from '../engine/patch.js';
import { changePlan, type ChangePlan } from '../engine/plan.js';
import type { JumpKind } from '../x64/jump.js';
import { ElfFile, inlinedCopyWarnings, type InlineWarning } from '../elf/index.js';
import { HpError, type ErrorCode } from '../errors.js';
import { describeHotpatchFunction, type HotpatchManifest } from '../package/index.js';
import { baselineFiles, baselinePathOf, filePath, searchScope, type BaselineFiles } from './baseline.js';
import { allPids, processesUnder, searchProcesses, type RunningProcess } from './discover.js';
import type { AgentLogger } from './log.js';
import { storedManifest, storedManifests, storedPayloadPath } from './store.js';

/** Reverted: a revert changed the process (its functions went back a level). */
export type ProcessOutcome = 'Patched' | 'Reverted' | 'AlreadyAtLevel' | 'Failed' | 'Skipped';

/** What a level change did in one process. */
export interface ProcessResult {
  pid: number;
  comm: string;
  outcome: ProcessOutcome;
  reason?: string;
  errorCode?: ErrorCode;
  /** Failed or Skipped: whether the process was left exactly as it was (a refusal before any write, or a rollback that undid it all). */
  unchanged?: boolean;
  /** How the process was switched: 'zero-stop' stopped no thread (pauseUs 0). */
  mode?: 'stop' | 'zero-stop';
  pauseUs?: number;
  threads?: number;
  sites?: { object: string; function: string; action: SiteAction; kind: JumpKind; form: 'entry' | 'padding' }[];
}

/** A process in a dry run of a level change (ChangeOptions.dryRun): Planned where it would change, with its `plan`. */
export interface PlannedProcessResult extends Omit<ProcessResult, 'outcome'> {
  outcome: ProcessOutcome | 'Planned';
  /** What the change would map and write in this process (nothing was). */
  plan?: ChangePlan;
}

export interface LevelState {
  baselineId: string;
  sequence: number;
  packageId: string;
  kb: string;
}

/** The manifest of the hotpatch level a state points at (from the store). */
export function levelManifest(home: string, level: LevelState | undefined): HotpatchManifest | undefined {
  if (!level) return undefined;
  const m = storedManifest(home, level.packageId);
  return m && m.kind === 'hotpatch' ? m : undefined;
}

/** The stored hotpatch of `baselineId` with the highest sequence below `sequence`, if any. */
export function previousLevel(home: string, baselineId: string, sequence: number): HotpatchManifest | undefined {
  return storedManifests(home)
    .filter((m): m is HotpatchManifest => m.kind === 'hotpatch' && m.baselineId === baselineId && m.sequence < sequence)
    .sort((a, b) => b.sequence - a.sequence)[0];
}

export interface Compatibility {
  activeBaseline?: string;
  pendingBaseline?: string;
  current?: LevelState;
}

/**
 * Refuses a hotpatch that does not fit what is installed, saying what would be needed; and one
 * whose functions are not what the installed files hold (`payload`: the package's verified
 * payload, for its patch objects). Checks of the running processes come later, per process.
 */
export function checkHotpatchFits(home: string, m: HotpatchManifest, c: Compatibility, payload: ReadonlyMap<string, Buffer>): void {
  if (m.baselineId !== c.activeBaseline && c.pendingBaseline === m.baselineId) {
    throw new HpError('REBOOT_REQUIRED', `${m.kb} (${m.id}) is for baseline ${m.baselineId}, which is installed but not running yet: reboot to start it, then apply the hotpatch. Nothing was changed`, { neededBaseline: m.baselineId });
  }
  if (!c.activeBaseline) {
    throw new HpError('BASELINE_NOT_INSTALLED', `${m.kb} (${m.id}) is a hotpatch for baseline ${m.baselineId}, but no baseline runs on this machine: install baseline ${m.baselineId} first (installing a baseline requires a reboot). Nothing was changed`, { neededBaseline: m.baselineId });
  }
  if (m.baselineId !== c.activeBaseline) {
    throw new HpError('BASELINE_MISMATCH', `${m.kb} (${m.id}) is for baseline ${m.baselineId}, but this machine runs baseline ${c.activeBaseline}: it needs baseline ${m.baselineId}, and installing a baseline requires a reboot. Nothing was changed`, { neededBaseline: m.baselineId, runningBaseline: c.activeBaseline });
  }
  if (c.current && c.current.baselineId === m.baselineId && c.current.sequence > m.sequence) {
    throw new HpError('HOTPATCH_SUPERSEDED', `${m.kb} (${m.id}, level ${m.sequence}) is superseded: level ${c.current.sequence} (${c.current.kb}) of baseline ${m.baselineId} is already applied and contains its fixes. Nothing was changed`, { appliedSequence: c.current.sequence });
  }
  // The installed files must be the ones the hotpatch was built against (shipped or described).
  const files = baselineFiles(home, m.baselineId);
  for (const t of m.targets) {
    const file = filePath(files, t.path);
    let elf: ElfFile;
    try {
      elf = ElfFile.fromFile(file);
    } catch {
      throw new HpError('BASELINE_FILE_MISSING', `${m.kb} patches ${t.path}, which baseline ${m.baselineId} does not have on disk (${file}). Nothing was changed`);
    }
    if (elf.buildId !== t.buildId) {
      throw new HpError('BASELINE_FILE_MISMATCH', `${m.kb} was built for ${t.path} with build-id ${t.buildId}, but the installed file has ${elf.buildId ?? 'none'}. Nothing was changed`);
    }
    checkTargetFunctions(m, t, elf, file, payload);
  }
}

/** Functions of the hotpatch that callers in the installed files hold inlined copies of (see inlined-copies.ts). */
export function hotpatchWarnings(home: string, m: HotpatchManifest): InlineWarning[] {
  const files = baselineFiles(home, m.baselineId);
  return m.targets.flatMap((t) => {
    const file = filePath(files, t.path);
    return file ? inlinedCopyWarnings(ElfFile.fromFile(file), t.path, t.functions.map((f) => f.symbol)) : [];
  });
}

/**
 * Every function a target names is what the installed file holds: a function symbol (not a
 * variable, not an indirect function) long enough for the jump, with the manifest's size and
 * the SHA-256 of its bytes; and every replacement is a function of the patch object. The
 * signature only proves who wrote the manifest, not that it describes these files.
 */
function checkTargetFunctions(m: HotpatchManifest, t: HotpatchManifest['targets'][number], elf: ElfFile, file: string, payload: ReadonlyMap<string, Buffer>): void {
  const data = payload.get(t.patchObject);
  if (!data) throw new HpError('PACKAGE_TAMPERED', `${m.kb} (${m.id}) has no payload ${t.patchObject} for ${t.path}. Nothing was changed`);
  const patch = ElfFile.fromBuffer(data, t.patchObject);
  for (const f of t.functions) {
    const from = { refusal: `${m.kb} (${m.id}) cannot patch ${f.symbol}`, target: t.path, baselineFile: file, patchObject: t.patchObject };
    const actual = describeHotpatchFunction(elf, patch, f, from);
    if (actual.size !== f.size) {
      throw new HpError('FUNCTION_SIZE_MISMATCH', `${from.refusal}: the manifest says it is ${f.size} bytes long, but in the installed ${t.path} it is ${actual.size} bytes. Nothing was changed`, { target: t.path, function: f.symbol, expected: f.size, actual: actual.size });
    }
    if (actual.sha256 !== f.sha256) {
      throw new HpError('ORIGINAL_BYTES_MISMATCH', `${from.refusal}: the manifest gives the SHA-256 of its original bytes as ${f.sha256}, but its ${actual.size} bytes in the installed ${t.path} hash to ${actual.sha256}; the package was not built for this code. Nothing was changed`, { target: t.path, function: f.symbol, expected: f.sha256, actual: actual.sha256 });
    }
  }
}

/**
 * What to change in one process to bring it to level `m` from level `prev`. `m`'s patch objects
 * are in the store, or under `payloadDir` (a dry run of a package not stored yet: the store is
 * not written).
 */
export function changesFor(home: string, proc: RunningProcess, files: BaselineFiles, m: HotpatchManifest | undefined, prev: HotpatchManifest | undefined, payloadDir?: string): ObjectChange[] | { refuse: string } {
  const changes: ObjectChange[] = [];
  const paths = new Set([...(m?.targets ?? []).map((t) => t.path), ...(prev?.targets ?? []).map((t) => t.path)]);
  for (const rel of paths) {
    // The file as this process mapped it: under the system folder, or an installed file by its build-id.
    const mapped = proc.files.find((f) => baselinePathOf(files, f) === rel);
    if (!mapped) continue;
    const file = mapped.path;
    const target = m?.targets.find((t) => t.path === rel);
    const before = prev?.targets.find((t) => t.path === rel);
    if (target && mapped.buildId !== target.buildId) {
      return { refuse: `runs ${rel} with build-id ${mapped.buildId ?? 'none'}, not the baseline's ${target.buildId} (restart or reboot it onto the installed baseline)` };
    }
    changes.push({
      object: file,
      patchPath: target ? (payloadDir ? path.join(payloadDir, target.patchObject) : storedPayloadPath(home, m!.id, target.patchObject)) : undefined,
      // The package's size and SHA-256 of each original: the engine checks the process's bytes.
      functions: (target?.functions ?? []).map((f) => ({ name: f.symbol, replacement: f.replacement, original: { size: f.size, sha256: f.sha256 } })),
      restore: (before?.functions ?? []).map((f) => f.symbol),
    });
  }
  return changes;
}

export interface ApplyLevelOptions {
  home: string;
  /** The level to go to; undefined = the plain baseline. */
  manifest: HotpatchManifest | undefined;
  /** The level the processes are at now (what to re-point or restore). */
  previous: HotpatchManifest | undefined;
  baselineId: string;
  pids?: number[];
  concurrency?: number;
  timeoutMs?: number;
  onProgress?: (done: number, total: number) => void;
  /** Where each thread's share is reported (and a worker thread that could not run, whose share this thread takes). */
  log?: AgentLogger;
  /** Plan only (ChangeOptions.dryRun): each process's result says what would change; nothing is written. */
  dryRun?: boolean;
  /** Where `manifest`'s payload is when it is not in the store (see changesFor). */
  payloadDir?: string;
}

/**
 * A share of the processes to bring to a level: what one thread works through (see applyLevel).
 * Plain data, so it can be handed to a worker thread.
 */
export interface LevelShare {
  home: string;
  files: BaselineFiles;
  manifest: HotpatchManifest | undefined;
  previous: HotpatchManifest | undefined;
  label: ChangeReportLabel;
  timeoutMs?: number;
  concurrency: number;
  /** The processes to bring to the level, found already; or the PIDs to look through first. */
  procs?: RunningProcess[];
  pids?: number[];
  dryRun?: boolean;
  payloadDir?: string;
}

/** Whether a process maps a file the level (or the one before) patches. */
function runsLevelFiles(files: BaselineFiles, m: HotpatchManifest | undefined, prev: HotpatchManifest | undefined): (p: RunningProcess) => boolean {
  const paths = new Set([...(m?.targets ?? []), ...(prev?.targets ?? [])].map((t) => t.path));
  return (p) => p.files.some((f) => paths.has(baselinePathOf(files, f) ?? ''));
}

export interface ShareEvents {
  /** Processes of the share found to run the level's files: a count, said as they are found (each before it is changed). */
  found?: (count: number) => void;
  done?: () => void;
}

/**
 * Brings a share's processes to the level, `concurrency` at a time; results in the order found.
 * Without a list, each process is changed as soon as the search finds it: the search (JavaScript,
 * on this thread) and the changes under way (mostly the core's ptrace work, on the pool's
 * threads) overlap instead of taking turns.
 */
export async function applyShare(share: LevelShare, on: ShareEvents = {}): Promise<PlannedProcessResult[]> {
  let source: Iterator<RunningProcess, undefined>;
  if (share.procs) {
    source = share.procs.values();
    on.found?.(share.procs.length);
  } else {
    const relevant = runsLevelFiles(share.files, share.manifest, share.previous);
    const search = searchProcesses(searchScope(share.files.root, [share.files]), share.pids ?? []);
    source = {
      next: () => {
        for (let r = search.next(); !r.done; r = search.next()) {
          if (!relevant(r.value)) continue;
          on.found?.(1);
          return r;
        }
        return { done: true, value: undefined };
      },
    };
  }
  const results: PlannedProcessResult[] = [];
  const worker = async () => {
    for (let r = source.next(); !r.done; r = source.next()) {
      const i = results.push(undefined as unknown as PlannedProcessResult) - 1;
      results[i] = await applyToProcess(share, r.value);
      on.done?.();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, share.concurrency) }, worker));
  return results;
}

/**
 * From this many processes on the machine, the search and the work are spread over several
 * threads (one per two CPUs): a machine running a thousand services has well over this many, a usual one fewer
 * (where starting a second thread would cost more than it saves).
 */
const THREADS_FROM = 512;
const MAX_THREADS = 8;

/** Threads for a machine with `processes` processes; HP_AGENT_THREADS (1–8) overrides the choice. */
function threadsFor(processes: number): number {
  const forced = Number(process.env.HP_AGENT_THREADS);
  if (Number.isInteger(forced) && forced >= 1) return Math.min(forced, MAX_THREADS);
  // Half the CPUs: the other half is busy with what the JavaScript waits for — the kernel's
  // ptrace round trips and the targets' own threads. (Measured on 2 CPUs: a second thread did
  // not help, its cold JIT and the contention ate the gain.)
  return processes >= THREADS_FROM ? Math.max(1, Math.min(Math.floor(os.availableParallelism() / 2), MAX_THREADS)) : 1;
}

/** Brings every process that runs the baseline's target files to a level; one result per process. */
export async function applyLevel(o: ApplyLevelOptions & { dryRun: true }): Promise<PlannedProcessResult[]>;
export async function applyLevel(o: ApplyLevelOptions & { dryRun?: false }): Promise<ProcessResult[]>;
export async function applyLevel(o: ApplyLevelOptions): Promise<PlannedProcessResult[]> {
  const files = baselineFiles(o.home, o.baselineId);
  const label = o.manifest ? { packageId: o.manifest.id, kb: o.manifest.kb, baselineId: o.manifest.baselineId, sequence: o.manifest.sequence } : undefined;
  const share = (concurrency: number, of: { procs?: RunningProcess[]; pids?: number[] }): LevelShare => ({ home: o.home, files, manifest: o.manifest, previous: o.previous, label, timeoutMs: o.timeoutMs, concurrency, dryRun: o.dryRun, payloadDir: o.payloadDir, ...of });
  const concurrency = o.concurrency ?? 8;
  let done = 0;
  let total = 0;
  const events: ShareEvents = {
    found: (n) => (total += n),
    done: () => o.onProgress?.(++done, total),
  };

  if (o.pids) {
    // Named processes: every one must run the baseline, checked before any is changed.
    const procs = processesUnder(searchScope(files.root, [files]), o.pids);
    for (const pid of o.pids) {
      if (!procs.some((p) => p.pid === pid)) throw new HpError('PROCESS_NOT_RUNNING_BASELINE', `process ${pid} does not run any file of baseline ${o.baselineId}. Nothing was changed`);
    }
    return applyShare(share(concurrency, { procs: procs.filter(runsLevelFiles(files, o.manifest, o.previous)) }), events);
  }
  const pids = allPids();
  const threads = threadsFor(pids.length);
  if (threads <= 1) return applyShare(share(concurrency, { pids }), events);

  // Many processes: looking through /proc and changing processes is mostly JavaScript on one
  // thread, so each thread (this one included) takes every n-th PID, finds which of them run
  // the level's files and changes them with its own small pool.
  const perThread = Math.max(2, Math.ceil(concurrency / threads));
  const shares = Array.from({ length: threads }, (_, t) => share(perThread, { pids: pids.filter((_, i) => i % threads === t) }));
  const outcomes = await Promise.all(
    shares.map(async (sh, t) => {
      const run = t === 0 ? { results: await applyShare(sh, events), ranIn: 'main thread' as const } : await inWorker(sh, events);
      if (run.ranIn === 'main thread instead') o.log?.warn('a worker thread could not run; the main thread took its share', { share: t, reason: run.reason });
      o.log?.debug('share of the processes done', { share: t, of: threads, ranIn: run.ranIn, processes: run.results.length });
      return run.results;
    }),
  );
  return outcomes.flat().sort((a, b) => a.pid - b.pid);
}

const WORKER_URL = new URL('./level-worker.js', import.meta.url);

/**
 * Runs a share in a worker thread (level-worker.ts). If the worker cannot run (e.g. the code runs
 * from TypeScript sources, with no compiled worker next to it) the share runs here instead: the
 * same result, one thread fewer (said in `ranIn`). Bringing a process to a level twice is harmless.
 */
function inWorker(share: LevelShare, on: ShareEvents): Promise<{ results: PlannedProcessResult[]; ranIn: 'worker thread' | 'main thread instead'; reason?: string }> {
  const here = (reason: string) => applyShare(share, on).then((results) => ({ results, ranIn: 'main thread instead' as const, reason }));
  if (!fs.existsSync(fileURLToPath(WORKER_URL))) return here(`no compiled worker at ${fileURLToPath(WORKER_URL)}`);
  return new Promise((resolve) => {
    let settled = false;
    const fallBack = (why: unknown) => {
      if (settled) return;
      settled = true;
      void here(why instanceof Error ? why.message : `the worker exited (${String(why)}) before reporting`).then(resolve);
    };
    const w = new Worker(WORKER_URL, { workerData: share });
    w.on('message', (m: { found?: number; done?: true; results?: PlannedProcessResult[] }) => {
      if (m.found !== undefined) on.found?.(m.found);
      if (m.done) on.done?.();
      if (m.results && !settled) {
        settled = true;
        resolve({ results: m.results, ranIn: 'worker thread' });
      }
    });
    w.on('error', fallBack);
    w.on('exit', fallBack);
  });
}

async function applyToProcess(o: LevelShare, proc: RunningProcess): Promise<PlannedProcessResult> {
  const { label } = o;
  const base = { pid: proc.pid, comm: proc.comm };
  const changes = changesFor(o.home, proc, o.files, o.manifest, o.previous, o.payloadDir);
  if ('refuse' in changes) return { ...base, outcome: 'Skipped', reason: changes.refuse, errorCode: 'PROCESS_RUNS_OTHER_BUILD', unchanged: true };
  if (changes.length === 0) return { ...base, outcome: 'AlreadyAtLevel' };
  try {
    // A revert keeps the promise of the level it takes back.
    const consistency = (o.manifest ?? o.previous)?.consistency ?? 'entry';
    const r: ChangeReport = await changeFunctions({ pid: proc.pid, changes, label, replace: true, mode: patchModeOf(o.manifest), consistency, maps: proc.maps, objects: proc.objects, timeoutMs: o.timeoutMs, realtime: true, dryRun: o.dryRun });
    return {
      ...base,
      outcome: r.changed ? (r.dryRun ? 'Planned' : 'Patched') : 'AlreadyAtLevel',
      mode: r.mode,
      pauseUs: r.pauseUs,
      threads: r.threads,
      sites: r.sites.map((s) => ({ object: baselinePathOf(o.files, { path: s.object, buildId: proc.files.find((f) => f.path === s.object)?.buildId }) ?? s.object, function: s.function, action: s.action, kind: s.kind, form: s.form })),
      ...(r.dryRun ? { plan: changePlan(r) } : {}),
    };
  } catch (e) {
    const err = e instanceof HpError ? e : undefined;
    return { ...base, outcome: 'Failed', reason: (e as Error).message, errorCode: err?.code ?? 'INTERNAL', unchanged: err?.unchanged ?? false };
  }
}

/**
 * The package says how its functions switch; without a say the engine picks per process (and
 * 'function' consistency always stops: only stopped threads can be shown to be outside the old
 * code). A revert to the plain baseline has no package.
 */
function patchModeOf(m: HotpatchManifest | undefined): PatchMode {
  return m?.patchMode ?? 'auto';
}

export type ChangeReportLabel = { packageId: string; kb: string; baselineId: string; sequence: number } | undefined;
