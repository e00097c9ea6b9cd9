/**
 * The agent's state file, <home>/state.json: what is installed, what runs, the reboot cycle, and a
 * half-done operation if the last run was killed in the middle of one.
 *
 * Every change is saved atomically (src/fs/atomic.ts). Helpers here never mutate the state they are
 * given: they return a new one, so a caller that fails half-way still holds the old value.
 */
import { z } from 'zod';
import { HpError } from '../errors.js';
import { nowIso } from '../clock.js';
import { readJson, writeJsonAtomic } from '../fs/atomic.js';
import { homeLayout } from './home.js';
import { enrollmentDetailSchema, updateSettingsSchema } from '../update/settings.js';

export const ENROLLMENT_STATES = ['Enabled', 'Disabled', 'Pending', 'Not enrolled', 'Canceled'] as const;
export const REBOOT_STATUSES = ['Unknown', 'NotNeeded', 'Required', 'Started', 'Completed', 'Failed'] as const;

export type Enrollment = (typeof ENROLLMENT_STATES)[number];
export type RebootStatus = (typeof REBOOT_STATUSES)[number];

const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'expected an ISO date-time');

export const baselineRefSchema = z.object({
  id: z.string().min(1),
  kb: z.string(),
  packageId: z.string(),
  installedAt: isoTime,
});

export const hotpatchRefSchema = z.object({
  baselineId: z.string().min(1),
  sequence: z.number().int().nonnegative(),
  packageId: z.string(),
  kb: z.string(),
  appliedAt: isoTime,
});

export const serviceEntrySchema = z.object({
  name: z.string().min(1),
  pid: z.number().int().positive(),
  /** Field 22 of /proc/PID/stat. */
  startTime: z.number().int().nonnegative(),
  file: z.string(),
  baselineId: z.string(),
  startedAt: isoTime,
  managedBy: z.literal('external').optional(),
});

export const operationSchema = z.object({
  kind: z.string().min(1),
  startedAt: isoTime,
  detail: z.unknown().optional(),
});

export const agentStateSchema = z.object({
  schemaVersion: z.literal(1),
  enrollment: z.enum(ENROLLMENT_STATES).default('Enabled'),
  rebootStatus: z.enum(REBOOT_STATUSES).default('NotNeeded'),
  activeBaseline: baselineRefSchema.optional(),
  pendingBaseline: baselineRefSchema.optional(),
  hotpatch: hotpatchRefSchema.optional(),
  services: z.array(serviceEntrySchema).default([]),
  operation: operationSchema.optional(),
  /** Azure's patchSettings, the time zone and the off-peak window (update/settings.ts); absent: the defaults. */
  updateSettings: updateSettingsSchema.optional(),
  /** Why the enrollment is what it is, since when (absent: as installed, enrolled). */
  enrollmentDetail: enrollmentDetailSchema.optional(),
  /** The last assessment's result (Azure's assess result), as `status` shows it. */
  lastAssessment: z.looseObject({ status: z.string(), assessmentActivityId: z.string(), startDateTime: isoTime, lastModifiedDateTime: isoTime }).optional(),
});

export type BaselineRef = z.infer<typeof baselineRefSchema>;
export type HotpatchRef = z.infer<typeof hotpatchRefSchema>;
export type ServiceEntry = z.infer<typeof serviceEntrySchema>;
export type Operation = z.infer<typeof operationSchema>;
export type AgentState = z.infer<typeof agentStateSchema>;

/** A fresh agent: enrolled, nothing installed, nothing running, no reboot needed. */
export function defaultState(): AgentState {
  return { schemaVersion: 1, enrollment: 'Enabled', rebootStatus: 'NotNeeded', services: [] };
}

/**
 * The saved state, or defaultState() when there is none yet. STATE_UNSUPPORTED for a state
 * written by another schema version; STATE_CORRUPT for one that is not JSON or does not have the
 * expected shape: the agent never silently starts over on top of a state it cannot read.
 */
export async function loadState(home: string): Promise<AgentState> {
  const file = homeLayout(home).state;
  let raw: unknown;
  try {
    raw = await readJson(file);
  } catch (error) {
    if (error instanceof HpError && error.code === 'FILE_CORRUPT') {
      throw new HpError('STATE_CORRUPT', `${error.message}; move it aside to start from an empty state`, error.details);
    }
    throw error;
  }
  if (raw === undefined) return defaultState();
  const version = (raw as { schemaVersion?: unknown } | null)?.schemaVersion;
  if (version !== 1) {
    throw new HpError(
      'STATE_UNSUPPORTED',
      `cannot use ${file}: it has schemaVersion ${JSON.stringify(version)}, this agent understands only 1`,
      { path: file, schemaVersion: version },
    );
  }
  const result = agentStateSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new HpError('STATE_CORRUPT', `cannot use ${file}: its content does not have the expected shape (${issues.slice(0, 5).join('; ')})`, {
      path: file,
      issues,
    });
  }
  return result.data;
}

/** Validate and save atomically. An invalid state is refused (STATE_INVALID) and not written. */
export async function saveState(home: string, state: AgentState): Promise<void> {
  const result = agentStateSchema.safeParse(state);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new HpError('STATE_INVALID', `refusing to save an invalid agent state (${issues.slice(0, 5).join('; ')}); the state file is unchanged`, {
      issues,
    });
  }
  await writeJsonAtomic(homeLayout(home).state, result.data, 0o600);
}

// ---------------------------------------------------------------------------------------------
// Reboot cycle: NotNeeded -> Required -> Started -> Completed | Failed, and from Completed or
// Failed the next cycle starts again at NotNeeded or Required. Unknown (a state that could not be
// determined) may resolve to NotNeeded or Required. Staying in the same status is not a move.

const REBOOT_MOVES: Record<RebootStatus, readonly RebootStatus[]> = {
  Unknown: ['NotNeeded', 'Required'],
  NotNeeded: ['Required'],
  Required: ['Started'],
  Started: ['Completed', 'Failed'],
  Completed: ['NotNeeded', 'Required'],
  Failed: ['NotNeeded', 'Required'],
};

export function canTransitionReboot(from: RebootStatus, to: RebootStatus): boolean {
  return from === to || REBOOT_MOVES[from].includes(to);
}

/** The state with rebootStatus `to`; BAD_REBOOT_TRANSITION if the cycle does not allow the move. */
export function transitionReboot(state: AgentState, to: RebootStatus): AgentState {
  const from = state.rebootStatus;
  if (!canTransitionReboot(from, to)) {
    const allowed = REBOOT_MOVES[from];
    throw new HpError(
      'BAD_REBOOT_TRANSITION',
      `refusing to move the reboot status from ${from} to ${to}: from ${from} it may only move to ${allowed.join(' or ')} (the cycle is NotNeeded -> Required -> Started -> Completed | Failed)`,
      { from, to, allowed: [...allowed] },
    );
  }
  return { ...state, rebootStatus: to };
}

// ---------------------------------------------------------------------------------------------
// Half-done operations. beginOperation saves the intent *before* the work starts and
// endOperation clears it once the work is complete (in the same save as the work's result, when
// the caller passes the new state). A run that finds pendingOperation() set knows the previous
// run was killed in the middle and must repair before doing anything else.

/** The operation a previous run left half-done, if any. */
export function pendingOperation(state: AgentState): Operation | undefined {
  return state.operation;
}

/**
 * Record that `kind` starts now and save. Refuses OPERATION_PENDING while another operation is
 * recorded: repair it (then endOperation) first. Returns the saved state.
 */
export async function beginOperation(home: string, state: AgentState, kind: string, detail?: unknown): Promise<AgentState> {
  if (state.operation) {
    throw new HpError(
      'OPERATION_PENDING',
      `refusing to start "${kind}": the operation "${state.operation.kind}" started at ${state.operation.startedAt} was never completed (the agent was interrupted); it must be repaired first`,
      { kind, pending: state.operation },
    );
  }
  const operation: Operation = { kind, startedAt: nowIso() };
  if (detail !== undefined) operation.detail = detail;
  const next: AgentState = { ...state, operation };
  await saveState(home, next);
  return next;
}

/** Clear the recorded operation and save (together with whatever else `state` changed). */
export async function endOperation(home: string, state: AgentState): Promise<AgentState> {
  const next: AgentState = { ...state };
  delete next.operation;
  await saveState(home, next);
  return next;
}
