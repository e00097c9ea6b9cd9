/**
 * `hp-agent assess`: compare a feed with what the machine has installed and what its processes
 * run (read from their memory), and answer with Azure's assess result. The result is kept as
 * the last assessment (status shows it) and recorded in the history.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { HpError } from '../errors.js';
import { installedBaselineManifest } from '../agent/baseline.js';
import { status as readStatus } from '../agent/operations.js';
import { withSession, type Session } from '../agent/session.js';
import type { StatusReport } from '../agent/status.js';
import { applicablePatches, type MachineView } from './applicable.js';
import { isCriticalOrSecurity, type AssessResult, type AvailablePatch, type PatchIdentity } from './azure.js';
import type { FeedEntry, FeedIndex } from './feed/index-format.js';
import { describeSource, readFeedIndex, type FeedSource } from './feed/source.js';

/** A feed entry as both results name a patch (its release date as Azure's publishedDate, a date-time). */
export function patchIdentity(e: FeedEntry): PatchIdentity {
  return { patchId: e.id, name: e.title, kbId: e.kb, classifications: [e.classification], rebootBehavior: e.rebootBehavior, publishedDate: `${e.releaseDate}T00:00:00.000Z` };
}

/** What the machine has and runs, for applicablePatches. */
export function machineView(s: Session, st: StatusReport): MachineView {
  const dated = (id: string | undefined) => (id ? { id, releaseDate: installedBaselineManifest(s.home, id)?.releaseDate } : undefined);
  const active = s.state.activeBaseline?.id;
  return {
    enrollment: s.state.enrollment,
    activeBaseline: dated(active),
    pendingBaseline: dated(s.state.pendingBaseline?.id),
    hotpatchSequence: s.state.hotpatch && s.state.hotpatch.baselineId === active ? s.state.hotpatch.sequence : 0,
    runningLevels: st.processes.filter((p) => p.baselineId === active).map((p) => p.hotpatchSequence),
  };
}

export interface Assessment {
  result: AssessResult;
  /** The feed entries behind availablePatches (what install downloads). */
  entries: FeedEntry[];
  index?: FeedIndex;
}

const availablePatch = (e: FeedEntry, at: string): AvailablePatch => ({ ...patchIdentity(e), lastModifiedDateTime: at, assessmentState: 'Available' });

/** Assess within a session (the caller holds the lock); records it and keeps it as the last assessment. */
export async function assessIn(s: Session, source: FeedSource, now: Date): Promise<Assessment> {
  const t0 = performance.now();
  const start = now.toISOString();
  const activity = randomUUID();
  const end = () => new Date(now.getTime() + Math.round(performance.now() - t0)).toISOString();
  let out: Assessment;
  try {
    const index = await readFeedIndex(source, s.layout.trustedKeys, now, s.signal);
    const st = await readStatus(s);
    const entries = applicablePatches(index.packages, machineView(s, st), now);
    const at = end();
    const availablePatches = entries.map((e) => availablePatch(e, at));
    const critical = availablePatches.filter((p) => isCriticalOrSecurity(p.classifications)).length;
    out = {
      index,
      entries,
      result: {
        status: 'Succeeded',
        assessmentActivityId: activity,
        rebootPending: st.rebootPending,
        criticalAndSecurityPatchCount: critical,
        otherPatchCount: availablePatches.length - critical,
        startDateTime: start,
        lastModifiedDateTime: at,
        availablePatches,
      },
    };
  } catch (e) {
    if (!(e instanceof HpError)) throw e;
    out = {
      entries: [],
      result: {
        status: 'Failed',
        assessmentActivityId: activity,
        rebootPending: s.state.rebootStatus === 'Required',
        criticalAndSecurityPatchCount: 0,
        otherPatchCount: 0,
        startDateTime: start,
        lastModifiedDateTime: end(),
        availablePatches: [],
        error: { code: e.code, message: e.message },
      },
    };
  }
  const r = out.result;
  s.state.lastAssessment = { ...r };
  await s.save();
  await s.record({
    action: 'assess',
    result: r.status === 'Succeeded' ? 'Succeeded' : 'Failed',
    time: r.lastModifiedDateTime,
    activityId: activity,
    detail: {
      kbIds: r.availablePatches.map((p) => p.kbId),
      rebootPending: r.rebootPending,
      criticalAndSecurityPatchCount: r.criticalAndSecurityPatchCount,
      otherPatchCount: r.otherPatchCount,
      ...(r.error ? { code: r.error.code, message: r.error.message } : {}),
      feed: describeSource(source),
    },
  });
  s.log.info('assessed', { feed: describeSource(source), status: r.status, available: r.availablePatches.map((p) => p.patchId) });
  return out;
}

export interface UpdateRunOptions {
  /** Wait for another agent's lock (ms, or true for ever); default 30 s. */
  wait?: number | boolean;
  verbose?: boolean;
}

/** `hp-agent assess`: one agent run. */
export async function assess(home: string | undefined, source: FeedSource, now: Date, o: UpdateRunOptions = {}): Promise<AssessResult> {
  return withSession({ command: 'assess', home, wait: o.wait, verbose: o.verbose }, async (s) => (await assessIn(s, source, now)).result);
}
