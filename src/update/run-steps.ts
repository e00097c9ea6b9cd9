/**
 * What automatic patching does at one instant, inside one agent session (the lock held): bring a
 * process that started after the hotpatch level was applied up to it; assess; and inside the
 * off-peak window install the Critical and Security updates the assessment found, availability
 * first — one service at a time, a health check after each, the rollout stopped at the first
 * failure and that service rolled back. Every action is reported (`emit`) and recorded in the
 * history with its reason: which window, which rule.
 */
import fs from 'node:fs';
import { HpError } from '../errors.js';
import { applyPackage, revertPackage, status as readStatus } from '../agent/operations.js';
import { installedBaselineManifest } from '../agent/baseline.js';
import { applyLevel, levelManifest, previousLevel } from '../agent/hotpatch.js';
import { serviceAlive } from '../agent/services.js';
import type { Session } from '../agent/session.js';
import { assessIn } from './assess.js';
import { isCriticalOrSecurity } from './azure.js';
import { installIn } from './install.js';
import type { FeedEntry } from './feed/index-format.js';
import { downloadPackage, readFeedIndex, type FeedSource } from './feed/source.js';
import type { Classification } from '../package/index.js';
import type { RebootStatus } from '../agent/state.js';
import { checkHealth } from './run-health.js';
import { effectiveTimeZone, updateSettingsOf, type UpdateSettings } from './settings.js';
import { daysSinceRelease, installDeadline, INSTALL_WITHIN_DAYS, withinInstallDays, type WindowSpan } from './window.js';

/** One thing the agent did (a line of `hp-agent run --json`). */
export interface RunAction {
  /** The agent's now (the simulated clock's, in a simulation). */
  time: string;
  action: 'start' | 'stop' | 'assess' | 'skip' | 'install' | 'service' | 'rollback' | 'reboot' | 'catch-up' | 'error';
  /** Why: which window, which rule. */
  reason: string;
  result?: 'Succeeded' | 'Failed' | 'CompletedWithWarnings';
  kbId?: string;
  packageId?: string;
  classification?: Classification;
  releaseDate?: string;
  /** Days from the release to this action, and whether that keeps the 30-day rule. */
  daysSinceRelease?: number;
  withinDays?: boolean;
  window?: { start: string; end: string };
  service?: string;
  pids?: number[];
  healthy?: boolean;
  detail?: string;
  rebootStatus?: RebootStatus;
  /** assess: the KBs available, and Azure's two counts. */
  kbIds?: string[];
  criticalAndSecurityPatchCount?: number;
  otherPatchCount?: number;
}

export interface StepContext {
  source: FeedSource;
  emit: (a: Omit<RunAction, 'time'>) => void;
  /** Packages already reported as skipped (a non-security update is said once, not every night). */
  skipped: Set<string>;
  /**
   * Hotpatches whose rollout failed a health check while this agent ran: not tried again every
   * night on the same services (a person decides: `hp-agent install`, or a later level replaces it).
   */
  unhealthy: Set<string>;
  /** patchMode AutomaticByOS: the assessment whose updates were installed (once each). */
  osInstalledFor?: string;
}

const windowOut = (w: WindowSpan) => ({ start: w.start.toISOString(), end: w.end.toISOString() });
const describeWindow = (w: WindowSpan, s: UpdateSettings) => `off-peak window ${s.offPeak.start}-${s.offPeak.end} ${effectiveTimeZone(s)} (${w.start.toISOString()} to ${w.end.toISOString()})`;

/** The 30-day rule, as a reason: on time, or late because the agent was not running in time. */
function dayRule(e: FeedEntry, at: Date): { reason: string; daysSinceRelease: number; withinDays: boolean } {
  const days = daysSinceRelease(e.releaseDate, at);
  const within = withinInstallDays(e.releaseDate, at);
  const reason = within
    ? `released ${e.releaseDate}, day ${days} of the ${INSTALL_WITHIN_DAYS} after release`
    : `released ${e.releaseDate}: the ${INSTALL_WITHIN_DAYS} days ended ${installDeadline(e.releaseDate).toISOString()} while the agent was not running; installed at the first window since`;
  return { reason, daysSinceRelease: days, withinDays: within };
}

/**
 * A process that started after the hotpatch level was applied (it runs the baseline's files, at a
 * lower level) gets the level at once: it is not a new update, so no window is waited for.
 */
export async function catchUp(s: Session, ctx: StepContext): Promise<void> {
  const level = s.state.hotpatch;
  const m = levelManifest(s.home, level);
  if (!level || !m || level.baselineId !== s.state.activeBaseline?.id) return;
  const st = await readStatus(s);
  const behind = st.processes.filter((p) => p.baselineId === level.baselineId && p.hotpatchSequence < level.sequence);
  if (behind.length === 0) return;
  const pids = behind.map((p) => p.pid);
  const processes = await applyLevel({ home: s.home, log: s.log, manifest: m, previous: previousLevel(s.home, m.baselineId, m.sequence), baselineId: m.baselineId, pids });
  const failed = processes.filter((p) => p.outcome === 'Failed' || p.outcome === 'Skipped');
  const result = failed.length === 0 ? 'Succeeded' : failed.length < processes.length ? 'CompletedWithWarnings' : 'Failed';
  const reason = `process${pids.length > 1 ? 'es' : ''} ${pids.join(', ')} of baseline ${level.baselineId} started below the applied hotpatch level ${level.sequence} (${level.kb}): brought up to it as soon as seen`;
  await s.record({ action: 'catch-up', packageId: m.id, kb: m.kb, result, detail: { reason, processes: processes.map((p) => ({ pid: p.pid, outcome: p.outcome, reason: p.reason })) } });
  ctx.emit({ action: 'catch-up', result, kbId: m.kb, packageId: m.id, pids, reason, detail: processes.map((p) => `${p.pid}: ${p.outcome}${p.reason ? ` (${p.reason})` : ''}`).join('; ') });
}

/** Assess (a step of its own, or the start of an installation); emits and returns what applies. */
export async function assessStep(s: Session, ctx: StepContext, at: Date, reason: string): Promise<FeedEntry[] | undefined> {
  const a = await assessIn(s, ctx.source, at);
  const r = a.result;
  ctx.emit({
    action: 'assess',
    result: r.status === 'Succeeded' ? 'Succeeded' : 'Failed',
    reason,
    kbIds: r.availablePatches.map((p) => p.kbId),
    criticalAndSecurityPatchCount: r.criticalAndSecurityPatchCount,
    otherPatchCount: r.otherPatchCount,
    ...(r.error ? { detail: `${r.error.code}: ${r.error.message}` } : {}),
  });
  return r.status === 'Succeeded' ? a.entries : undefined;
}

/**
 * Whether a window has work: the last assessment found Critical or Security updates, or failed;
 * a staged baseline waits for a reboot the setting now allows; hotpatching was switched on or off
 * since; or the feed has released something since (a machine whose agent was off finds here what
 * it missed). Reads the feed's index only — nothing is recorded — so a quiet night costs little.
 */
export async function installMayBeDue(s: Session, ctx: StepContext, at: Date): Promise<boolean> {
  const last = s.state.lastAssessment as { status: string; lastModifiedDateTime: string; criticalAndSecurityPatchCount?: number } | undefined;
  if (!last || last.status !== 'Succeeded' || (last.criticalAndSecurityPatchCount ?? 1) > 0) return true;
  // A baseline staged under rebootSetting Never waits for a reboot the setting may allow by now.
  if (s.state.pendingBaseline && updateSettingsOf(s.state).patchSettings.automaticByPlatformSettings.rebootSetting !== 'Never') return true;
  // Hotpatching switched since: other updates apply now (cumulative updates, or the next baseline).
  if (s.state.enrollmentDetail && s.state.enrollmentDetail.since > last.lastModifiedDateTime) return true;
  let index;
  try {
    index = await readFeedIndex(ctx.source, s.layout.trustedKeys, at, s.signal);
  } catch {
    return true; // the assessment will say what is wrong with the feed
  }
  const [since, today] = [last.lastModifiedDateTime.slice(0, 10), at.toISOString().slice(0, 10)];
  return index.packages.some((e) => e.releaseDate > since && e.releaseDate <= today);
}

/**
 * Inside an off-peak window: assess, then install what automatic patching may — Critical and
 * Security only — whole-file update first (it reboots only as rebootSetting allows), then the
 * hotpatch of the baseline that runs. Stops at the first failure.
 */
export async function installStep(s: Session, ctx: StepContext, at: Date, w: WindowSpan): Promise<void> {
  const settings = updateSettingsOf(s.state);
  const where = describeWindow(w, settings);
  if (!(await rebootOntoStaged(s, ctx, at, w, where))) return;
  // A baseline booted in this window can bring a hotpatch of its own: a few rounds at most.
  for (let round = 0; round < 3; round++) {
    const entries = await assessStep(s, ctx, at, `${where}: automatic patching (patchMode AutomaticByPlatform) assesses before it installs`);
    if (!entries) return;
    for (const e of entries.filter((x) => !isCriticalOrSecurity([x.classification]) && !ctx.skipped.has(x.id))) {
      ctx.skipped.add(e.id);
      const reason = `classification ${e.classification}: automatic patching installs Critical and Security updates only (install it with hp-agent install)`;
      await s.record({ action: 'auto-skip', packageId: e.id, kb: e.kb, result: 'Succeeded', detail: { reason } });
      ctx.emit({ action: 'skip', kbId: e.kb, packageId: e.id, classification: e.classification, releaseDate: e.releaseDate, reason });
    }
    for (const e of entries.filter((x) => ctx.unhealthy.has(x.id) && !ctx.skipped.has(x.id))) {
      ctx.skipped.add(e.id);
      ctx.emit({ action: 'skip', kbId: e.kb, packageId: e.id, classification: e.classification, releaseDate: e.releaseDate, reason: `${where}: ${e.kb} failed a health check in an earlier window and was rolled back; automatic patching does not try it again (install it by hand, or wait for the level that replaces it)` });
    }
    const e = entries.find((x) => isCriticalOrSecurity([x.classification]) && !ctx.unhealthy.has(x.id)) ?? (await securityLevelBelow(s, ctx, at, entries));
    if (!e) return;
    const ok = e.kind === 'baseline' ? await installBaseline(s, ctx, at, w, e, where) : await rolloutHotpatch(s, ctx, at, w, e, where);
    if (!ok) return;
  }
}

/**
 * Hotpatches are cumulative and assess lists only the latest level. When that level is not
 * Critical or Security, the machine may still lack a security level below it: the highest such
 * level (released, above what the machine has, not refused by a health check) is what automatic
 * patching installs.
 */
async function securityLevelBelow(s: Session, ctx: StepContext, at: Date, entries: FeedEntry[]): Promise<FeedEntry | undefined> {
  const latest = entries.find((x) => x.kind === 'hotpatch' && !isCriticalOrSecurity([x.classification]));
  if (!latest?.sequence) return undefined;
  const has = s.state.hotpatch?.baselineId === latest.baselineId ? s.state.hotpatch.sequence : 0;
  const today = at.toISOString().slice(0, 10);
  const index = await readFeedIndex(ctx.source, s.layout.trustedKeys, at, s.signal);
  return index.packages
    .filter((x) => x.kind === 'hotpatch' && x.baselineId === latest.baselineId && x.sequence !== undefined && x.sequence > has && x.sequence < latest.sequence! && x.releaseDate <= today)
    .filter((x) => isCriticalOrSecurity([x.classification]) && !ctx.unhealthy.has(x.id))
    .sort((a, b) => b.sequence! - a.sequence!)[0];
}

/**
 * A baseline an earlier window staged without rebooting (rebootSetting Never then) is rebooted
 * onto once the setting allows it, before anything else; true when nothing stands in the way.
 */
async function rebootOntoStaged(s: Session, ctx: StepContext, at: Date, w: WindowSpan, where: string): Promise<boolean> {
  const pending = s.state.pendingBaseline;
  const rebootSetting = updateSettingsOf(s.state).patchSettings.automaticByPlatformSettings.rebootSetting;
  if (!pending || rebootSetting === 'Never') return true;
  const reason = `${where}: baseline ${pending.id} (${pending.kb}) was staged ${pending.installedAt} without a reboot, and rebootSetting ${rebootSetting} allows one now`;
  let r;
  try {
    r = await installIn(s, ctx.source, { rebootSetting, kbNumbersToInclude: [pending.kb] }, at);
  } catch (err) {
    ctx.emit({ action: 'reboot', result: 'Failed', kbId: pending.kb, packageId: pending.packageId, window: windowOut(w), reason, detail: (err as Error).message });
    return false;
  }
  const health = await servicesHealth(s);
  const ok = r.rebootStatus === 'Completed' && health.every((h) => h.healthy);
  ctx.emit({ action: 'reboot', result: ok ? 'Succeeded' : 'Failed', kbId: pending.kb, packageId: pending.packageId, window: windowOut(w), rebootStatus: r.rebootStatus, reason, detail: health.map((h) => `${h.name}: ${h.detail}`).join('; ') });
  return ok;
}

/** Runs `work` on the package downloaded from the feed (verified against the index), then drops the download. */
async function withDownload<T>(s: Session, ctx: StepContext, e: FeedEntry, work: (file: string) => Promise<T>): Promise<T> {
  const file = await downloadPackage(ctx.source, e, s.layout.downloads, s.signal);
  try {
    return await work(file);
  } finally {
    await fs.promises.rm(file, { force: true });
  }
}

/** Failure of one package: recorded and emitted; false. */
async function failed(s: Session, ctx: StepContext, e: FeedEntry, w: WindowSpan, reason: string, err: unknown): Promise<false> {
  const detail = err instanceof Error ? `${err instanceof HpError ? `${err.code}: ` : ''}${err.message}` : String(err);
  await s.record({ action: 'auto-install', packageId: e.id, kb: e.kb, result: 'Failed', detail: { reason, window: windowOut(w), error: detail } });
  ctx.emit({ action: 'install', result: 'Failed', kbId: e.kb, packageId: e.id, classification: e.classification, releaseDate: e.releaseDate, window: windowOut(w), reason, detail });
  return false;
}

/**
 * A baseline or cumulative update: installed as `hp-agent install` installs it (staged, then
 * rebooted as rebootSetting allows), then every service's health checked. True when it runs and
 * every service is healthy.
 */
async function installBaseline(s: Session, ctx: StepContext, at: Date, w: WindowSpan, e: FeedEntry, where: string): Promise<boolean> {
  const rule = dayRule(e, at);
  const rebootSetting = updateSettingsOf(s.state).patchSettings.automaticByPlatformSettings.rebootSetting;
  const kind = e.equivalentHotpatch ? `cumulative update (the fixes of ${e.equivalentHotpatch} for a machine not enrolled in hotpatching)` : e.planned ? 'planned baseline' : 'unplanned baseline';
  const reason = `${where}; ${e.classification} ${kind}, ${rule.reason}; rebootSetting ${rebootSetting}`;
  const common = { kbId: e.kb, packageId: e.id, classification: e.classification, releaseDate: e.releaseDate, daysSinceRelease: rule.daysSinceRelease, withinDays: rule.withinDays, window: windowOut(w) };
  let r;
  try {
    r = await installIn(s, ctx.source, { rebootSetting, kbNumbersToInclude: [e.kb] }, at);
  } catch (err) {
    return failed(s, ctx, e, w, reason, err);
  }
  const patch = r.patches.find((p) => p.patchId === e.id);
  if (patch?.installationState !== 'Installed') return failed(s, ctx, e, w, reason, new Error(patch?.reason ?? r.error?.message ?? `${e.kb} was not installed`));
  const rebooted = r.rebootStatus === 'Completed' || r.rebootStatus === 'Failed';
  const health = rebooted ? await servicesHealth(s) : [];
  const sick = health.filter((h) => !h.healthy);
  const result = r.rebootStatus === 'Failed' || sick.length ? 'CompletedWithWarnings' : 'Succeeded';
  const detail = rebooted
    ? `rebooted (rebootStatus ${r.rebootStatus}); ${health.map((h) => `${h.name}: ${h.detail}`).join('; ')}`
    : `staged; not rebooted (rebootStatus ${r.rebootStatus}): ${rebootSetting === 'Never' ? 'rebootSetting Never leaves the reboot to someone else' : 'no reboot'}`;
  await s.record({ action: 'auto-install', packageId: e.id, kb: e.kb, result, detail: { reason, window: windowOut(w), rebootStatus: r.rebootStatus, health: health.map((h) => ({ service: h.name, healthy: h.healthy, detail: h.detail })) } });
  ctx.emit({ action: 'install', result, ...common, rebootStatus: r.rebootStatus, reason, detail });
  if (rebooted) ctx.emit({ action: 'reboot', result: r.rebootStatus === 'Completed' ? 'Succeeded' : 'Failed', kbId: e.kb, packageId: e.id, window: windowOut(w), rebootStatus: r.rebootStatus, reason: `${where}: ${e.kb} needs a reboot and rebootSetting ${rebootSetting} allows it`, detail });
  return rebooted && result === 'Succeeded';
}

/** The active baseline's services with their recorded processes. */
function activeServices(s: Session) {
  const active = s.state.activeBaseline?.id;
  const m = active ? installedBaselineManifest(s.home, active) : undefined;
  return (m?.services ?? []).map((svc) => ({ svc, rec: s.state.services.find((r) => r.name === svc.name && r.baselineId === active) }));
}

async function servicesHealth(s: Session) {
  return Promise.all(activeServices(s).map(async ({ svc, rec }) => ({ name: svc.name, ...(await checkHealth(s.home, svc, rec !== undefined && serviceAlive(rec))) })));
}

/**
 * A hotpatch, availability first: service by service (the processes each runs), a health check
 * after each; the first that fails stops the rollout and is rolled back to the level it had.
 * Processes outside the services get the level last. True when every service took it.
 */
async function rolloutHotpatch(s: Session, ctx: StepContext, at: Date, w: WindowSpan, e: FeedEntry, where: string): Promise<boolean> {
  const rule = dayRule(e, at);
  const reason = `${where}; ${e.classification} hotpatch level ${e.sequence} of baseline ${e.baselineId}, ${rule.reason}`;
  const common = { kbId: e.kb, packageId: e.id, classification: e.classification, releaseDate: e.releaseDate, window: windowOut(w) };
  const done: string[] = [];
  try {
    return await withDownload(s, ctx, e, async (file) => {
      for (const { svc, rec } of activeServices(s)) {
        if (!rec || !serviceAlive(rec)) {
          ctx.emit({ action: 'service', ...common, service: svc.name, reason: `${reason}; ${svc.name} does not run: it gets the level when it starts` });
          continue;
        }
        const r = await applyPackage(s, file, { pids: [rec.pid] });
        const health = await checkHealth(s.home, svc, serviceAlive(rec));
        const ok = r.status === 'Succeeded' && health.healthy;
        ctx.emit({ action: 'service', ...common, service: svc.name, pids: [rec.pid], result: ok ? 'Succeeded' : 'Failed', healthy: health.healthy, reason: `${reason}; one service at a time (availability first)`, detail: `${r.processes.map((p) => `${p.pid}: ${p.outcome}`).join('; ')}; health check: ${health.detail}` });
        if (!ok) {
          ctx.unhealthy.add(e.id);
          await rollBack(s, ctx, e, svc.name, rec.pid, common, `${svc.name} failed its health check after ${e.kb} (${health.detail}): rollout stopped, ${done.length ? `${done.join(', ')} keep${done.length === 1 ? 's' : ''}` : 'no other service has'} the level; rolled back`);
          await s.record({ action: 'auto-install', packageId: e.id, kb: e.kb, result: 'Failed', detail: { reason, window: windowOut(w), stoppedAt: svc.name, health: health.detail, servicesDone: done } });
          ctx.emit({ action: 'install', result: 'Failed', ...common, daysSinceRelease: rule.daysSinceRelease, withinDays: rule.withinDays, reason, detail: `stopped at ${svc.name}: ${health.detail}` });
          return false;
        }
        done.push(svc.name);
      }
      // Processes of the baseline that no service definition names.
      const rest = await applyPackage(s, file);
      const result = rest.status === 'Succeeded' ? 'Succeeded' : 'CompletedWithWarnings';
      await s.record({ action: 'auto-install', packageId: e.id, kb: e.kb, result, detail: { reason, window: windowOut(w), services: done, daysSinceRelease: rule.daysSinceRelease, withinDays: rule.withinDays } });
      ctx.emit({ action: 'install', result, ...common, daysSinceRelease: rule.daysSinceRelease, withinDays: rule.withinDays, rebootStatus: rest.rebootStatus, reason, detail: `services ${done.join(', ') || '(none running)'} at level ${e.sequence}; no reboot` });
      return true;
    });
  } catch (err) {
    return failed(s, ctx, e, w, reason, err);
  }
}

/** Puts one service's process back to the level it had before the failed rollout. */
async function rollBack(s: Session, ctx: StepContext, e: FeedEntry, service: string, pid: number, common: Partial<RunAction>, reason: string): Promise<void> {
  if (s.state.hotpatch?.packageId !== e.id) {
    ctx.emit({ action: 'rollback', ...common, service, pids: [pid], result: 'Succeeded', reason: `${reason} (the apply changed nothing)` });
    return;
  }
  try {
    const r = await revertPackage(s, e.id, { pids: [pid] });
    ctx.emit({ action: 'rollback', ...common, service, pids: [pid], result: r.status === 'Succeeded' ? 'Succeeded' : 'Failed', reason, detail: `to ${'packageId' in r.to ? `${r.to.packageId} (level ${r.to.sequence})` : `the plain baseline ${r.to.baselineId}`}; ${r.processes.map((p) => `${p.pid}: ${p.outcome}`).join('; ')}` });
  } catch (err) {
    ctx.emit({ action: 'rollback', ...common, service, pids: [pid], result: 'Failed', reason, detail: (err as Error).message });
  }
}

/**
 * patchMode AutomaticByOS (the operating system's own automatic updates, as on Azure): every
 * update the last assessment found is installed as soon as it is found — any classification, in no
 * window, without the one-service-at-a-time orchestration and health checks of
 * AutomaticByPlatform; a reboot as rebootSetting allows. Once per assessment (a manual
 * `hp-agent assess` counts too: the running agent installs what it found at its next look).
 */
export async function osInstallStep(s: Session, ctx: StepContext, at: Date): Promise<void> {
  const last = s.state.lastAssessment as { assessmentActivityId: string; startDateTime: string; availablePatches?: unknown[] } | undefined;
  if (!last || !last.availablePatches?.length || ctx.osInstalledFor === last.assessmentActivityId) return;
  ctx.osInstalledFor = last.assessmentActivityId;
  const reason = `patchMode AutomaticByOS: every available update is installed as soon as it is assessed (assessment of ${last.startDateTime}), in no window and without orchestration`;
  let r;
  try {
    r = await installIn(s, ctx.source, {}, at);
  } catch (err) {
    ctx.emit({ action: 'error', result: 'Failed', reason, detail: err instanceof HpError ? `${err.code}: ${err.message}` : String(err) });
    return;
  }
  for (const p of r.patches) {
    if (p.installationState !== 'Installed' && p.installationState !== 'Failed') continue;
    ctx.emit({
      action: 'install',
      result: p.installationState === 'Installed' ? 'Succeeded' : 'Failed',
      kbId: p.kbId,
      packageId: p.patchId,
      classification: p.classifications[0],
      releaseDate: p.publishedDate.slice(0, 10),
      rebootStatus: r.rebootStatus,
      reason,
      ...(p.reason ? { detail: p.reason } : {}),
    });
  }
}
