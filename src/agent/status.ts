/**
 * `hp-agent status`: what the machine really runs, read from the processes themselves — the
 * build-ids of the files they mapped and the bytes at the entry of every hotpatched function —
 * next to what the agent installed. A process that runs a hotpatched baseline but whose
 * functions do not carry the current level (one started after the hotpatch, say) is shown as
 * not compliant.
 */
import path from 'node:path';
import { inspectFunctions } from '../engine/patch.js';
import type { FunctionState } from '../engine/entries.js';
import type { HotpatchManifest } from '../package/index.js';
import { baselineFiles, baselinePathOf, installedBaselines, searchScope, type BaselineFiles } from './baseline.js';
import { processesUnder, type RunningProcess } from './discover.js';
import { homeLayout } from './home.js';
import { levelManifest, type LevelState } from './hotpatch.js';
import type { Enrollment, RebootStatus } from './state.js';
import { storedManifests } from './store.js';
import type { UpdateStatus } from '../update/config.js';

export interface FunctionStatus {
  object: string;
  function: string;
  /** original | patched | foreign | modified, from the process's memory. */
  state: FunctionState['state'];
  /** 'padding': a hot-patchable entry, switched (or switchable) without stopping the process. */
  form: 'entry' | 'padding';
  /** The package whose code the function runs now (patched functions). */
  packageId?: string;
  expectedPackageId?: string;
}

export interface ProcessStatus {
  pid: number;
  comm: string;
  /** The baseline whose files the process mapped (from the paths and build-ids it runs). */
  baselineId: string;
  hotpatchSequence: number;
  compliant: boolean;
  reasons: string[];
  files: { path: string; buildId?: string; deleted: boolean }[];
  functions: FunctionStatus[];
}

export interface StatusInput {
  home: string;
  enrollment: Enrollment;
  rebootStatus: RebootStatus;
  activeBaseline?: { id: string; kb: string };
  pendingBaseline?: { id: string; kb: string };
  hotpatch?: LevelState & { appliedAt?: string };
  services: { name: string; pid: number; baselineId: string; alive: boolean }[];
  interruptedOperation?: { kind: string; startedAt: string };
  runningOperation?: RunningOperation;
  /** The patch settings, the enrollment's reason and the last assessment (update/config.ts). */
  update?: UpdateStatus;
}

/** An operation another agent is doing right now (it holds the lock). */
export interface RunningOperation {
  kind: string;
  startedAt: string;
  pid: number;
  command: string;
}

/** A baseline, as every command's output names it. */
export interface BaselineOutput {
  baselineId: string;
  kbId: string;
}

/** A hotpatch level, as every command's output names it. */
export interface LevelOutput {
  baselineId: string;
  sequence: number;
  packageId: string;
  kbId: string;
}

/** The output's name for a level recorded in the state (which spells its KB `kb`). */
export function levelOutput(l: LevelState): LevelOutput {
  return { baselineId: l.baselineId, sequence: l.sequence, packageId: l.packageId, kbId: l.kb };
}

export interface StatusReport extends Partial<UpdateStatus> {
  enrollment: Enrollment;
  installedBaseline?: BaselineOutput;
  pendingBaseline?: BaselineOutput;
  runningBaselines: string[];
  rebootPending: boolean;
  rebootPendingReasons: string[];
  rebootStatus: RebootStatus;
  hotpatch?: LevelOutput & { appliedAt?: string };
  compliant: boolean;
  processes: ProcessStatus[];
  services: StatusInput['services'];
  /** An operation a killed agent left half-done; the next agent command finishes it. */
  interruptedOperation?: { kind: string; startedAt: string };
  /** An operation under way in another agent, alive and holding the lock (not interrupted). */
  runningOperation?: RunningOperation;
}

/**
 * The baseline whose files the process mapped: by folder for shipped files; for an installed
 * file, the baselines that describe it (the active one first, when several describe the same build).
 */
function baselineOf(system: string, proc: RunningProcess, installed: BaselineFiles[], active: string | undefined): string {
  const ids = new Set<string>();
  for (const f of proc.files) {
    if (f.path.startsWith(system + path.sep)) {
      ids.add(path.relative(system, f.path).split(path.sep)[0]);
      continue;
    }
    const claim = installed.filter((b) => baselinePathOf(b, f) !== undefined).map((b) => b.baselineId);
    if (claim.length) ids.add(active !== undefined && claim.includes(active) ? active : claim[0]);
  }
  return [...ids].join('+') || 'unknown';
}

async function processStatus(s: StatusInput, system: string, proc: RunningProcess, baseline: string, level: HotpatchManifest | undefined, others: HotpatchManifest[]): Promise<ProcessStatus> {
  const reasons: string[] = [];
  const functions: FunctionStatus[] = [];
  if (baseline !== s.activeBaseline?.id) {
    reasons.push(`runs baseline ${baseline}, not the installed ${s.activeBaseline?.id ?? '(none)'}: it needs a restart (reboot)`);
  }
  const files = baselineFiles(s.home, baseline);
  // Every function any level of this baseline touches: the current level's must carry its code,
  // the others must be original.
  const expected = new Map<string, Map<string, string | undefined>>();
  for (const m of [...others, ...(level ? [level] : [])]) {
    for (const t of m.targets) {
      const fns = expected.get(t.path) ?? new Map<string, string | undefined>();
      for (const f of t.functions) fns.set(f.symbol, level && m.id === level.id ? level.id : fns.get(f.symbol));
      expected.set(t.path, fns);
    }
  }
  for (const [rel, fns] of expected) {
    // As the process mapped it: under the system folder, or an installed file found by its build-id.
    const file = proc.files.find((f) => baselinePathOf(files, f) === rel)?.path;
    if (!file) continue;
    let states;
    try {
      states = await inspectFunctions({ pid: proc.pid, functions: [...fns.keys()], object: file });
    } catch (e) {
      reasons.push(`cannot read ${rel}: ${(e as Error).message}`);
      continue;
    }
    for (const st of states) {
      const want = fns.get(st.function);
      const packageId = st.record?.label?.packageId;
      functions.push({ object: rel, function: st.function, state: st.state, form: st.form, packageId, expectedPackageId: want });
      if (want && (st.state !== 'patched' || packageId !== want)) {
        reasons.push(`${rel}:${st.function} runs ${st.state === 'patched' ? `code of ${packageId ?? 'an unlabelled patch'}` : `${st.state} code`}, not ${want}`);
      }
      if (!want && st.state !== 'original') reasons.push(`${rel}:${st.function} should be original but is ${st.state}${packageId ? ` (${packageId})` : ''}`);
    }
  }
  const patchedBy = new Set(functions.map((f) => f.packageId).filter(Boolean));
  return {
    pid: proc.pid,
    comm: proc.comm,
    baselineId: baseline,
    hotpatchSequence: level && patchedBy.has(level.id) ? level.sequence : 0,
    compliant: reasons.length === 0,
    reasons,
    files: proc.files.map((f) => ({ path: f.path.startsWith(system + path.sep) ? path.relative(system, f.path) : f.path, buildId: f.buildId, deleted: f.deleted })),
    functions,
  };
}

export async function computeStatus(s: StatusInput): Promise<StatusReport> {
  const { system } = homeLayout(s.home);
  const level = s.hotpatch && s.hotpatch.baselineId === s.activeBaseline?.id ? levelManifest(s.home, s.hotpatch) : undefined;
  const all = storedManifests(s.home).filter((m): m is HotpatchManifest => m.kind === 'hotpatch');
  const processes: ProcessStatus[] = [];
  // Installed baselines that describe files installed elsewhere: their processes are found by build-id.
  const installed = installedBaselines(s.home).map((id) => baselineFiles(s.home, id)).filter((b) => b.installed.length > 0);
  for (const proc of processesUnder(searchScope(system, installed))) {
    const baseline = baselineOf(system, proc, installed, s.activeBaseline?.id);
    const others = all.filter((m) => m.baselineId === baseline && m.id !== level?.id);
    processes.push(await processStatus(s, system, proc, baseline, baseline === s.activeBaseline?.id ? level : undefined, others));
  }
  const runningBaselines = [...new Set(processes.map((p) => p.baselineId))].sort();
  const reasons: string[] = [];
  if (s.pendingBaseline) reasons.push(`baseline ${s.pendingBaseline.id} (${s.pendingBaseline.kb}) is installed and takes effect at the next reboot`);
  for (const p of processes) {
    if (p.baselineId !== s.activeBaseline?.id) reasons.push(`process ${p.pid} (${p.comm}) still runs baseline ${p.baselineId}`);
  }
  return {
    enrollment: s.enrollment,
    ...s.update,
    installedBaseline: s.activeBaseline && { baselineId: s.activeBaseline.id, kbId: s.activeBaseline.kb },
    pendingBaseline: s.pendingBaseline && { baselineId: s.pendingBaseline.id, kbId: s.pendingBaseline.kb },
    runningBaselines,
    rebootPending: reasons.length > 0,
    rebootPendingReasons: reasons,
    rebootStatus: s.rebootStatus,
    hotpatch: s.hotpatch && { ...levelOutput(s.hotpatch), ...(s.hotpatch.appliedAt ? { appliedAt: s.hotpatch.appliedAt } : {}) },
    compliant: processes.every((p) => p.compliant),
    processes,
    services: s.services,
    interruptedOperation: s.interruptedOperation,
    runningOperation: s.runningOperation,
  };
}
