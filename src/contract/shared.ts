/**
 * The pieces every command's `--json` output is built from, defined once: the same thing has the
 * same name in every command (a KB is `kbId`, a baseline `baselineId`, a package `packageId`, an
 * operation `activityId`), addresses are `0x…` strings (JSON numbers lose precision past 2^53),
 * and Azure's spellings are kept where Azure has them (DESIGN.md §8).
 *
 * Objects are strict: a field that is renamed, or added without being described here, fails the
 * contract test — so the schemas we ship always say exactly what the commands print. To add a
 * field, add it to the one schema (or shared piece) that prints it.
 */
import { z } from 'zod';
import { ENROLLMENT_STATES, REBOOT_STATUSES } from '../agent/state.js';
import { CLASSIFICATIONS, REBOOT_BEHAVIORS } from '../package/manifest.js';
import { INSTALLATION_STATES, OPERATION_STATUSES } from '../update/azure.js';

// ---- scalars -------------------------------------------------------------------------------------

/** A memory address: lower-case hex with a 0x prefix. */
export const address = z.string().regex(/^0x[0-9a-f]+$/).describe('a memory address, "0x" and lower-case hex');
/** An ISO 8601 date-time: the agent writes UTC (Date.toISOString()); a history line may carry an offset. */
export const dateTime = z.iso.datetime({ offset: true }).describe('ISO 8601 date-time (the agent writes UTC)');
export const kbId = z.string().describe('KB article id, e.g. KB5046101');
export const packageId = z.string().describe("a package's id (its manifest id)");
export const baselineId = z.string().describe("a baseline's id, e.g. 2026.10");
export const activityId = z.uuid().describe('the id of the operation; its history entry carries the same');
export const pid = z.number().int().positive();
/** Hex bytes without separators. */
export const hexBytes = z.string().regex(/^([0-9a-f]{2})*$/).describe('bytes as lower-case hex');

// ---- Azure's enumerations -------------------------------------------------------------------------

export const operationStatus = z.enum(OPERATION_STATUSES);
export const rebootStatus = z.enum(REBOOT_STATUSES);
export const enrollment = z.enum(ENROLLMENT_STATES);
export const installationState = z.enum(INSTALLATION_STATES);
export const classification = z.enum(CLASSIFICATIONS);
export const rebootBehavior = z.enum(['Unknown', ...REBOOT_BEHAVIORS]);

// ---- references -----------------------------------------------------------------------------------

/** An installed baseline. */
export const baselineRef = z.strictObject({ baselineId, kbId });

/** A hotpatch level: hotpatch `sequence` of `baselineId`. */
export const levelRef = z.strictObject({ baselineId, sequence: z.number().int().positive(), packageId, kbId });

/** The plain baseline (no hotpatch level): where a revert of level 1 goes. */
export const plainBaselineRef = z.strictObject({ baselineId, sequence: z.literal(0) });

/** An operation a killed agent left half-done, or another live agent is doing. */
export const operationRef = z.strictObject({ kind: z.string(), startedAt: dateTime });

// ---- per-process results of a level change (apply, revert, reboot/boot) --------------------------

export const jumpKind = z.enum(['rel32', 'abs64']);
export const siteForm = z.enum(['entry', 'padding']);
export const siteAction = z.enum(['patch', 'repoint', 'restore']);
export const switchMode = z.enum(['stop', 'zero-stop']);

/** One function changed in one process by a level change (no addresses: they differ per process). */
export const levelSite = z.strictObject({ object: z.string(), function: z.string(), action: siteAction, kind: jumpKind, form: siteForm });

export const processOutcome = z.enum(['Patched', 'Reverted', 'AlreadyAtLevel', 'Failed', 'Skipped']);

export const processResult = z.strictObject({
  pid,
  comm: z.string(),
  outcome: processOutcome,
  reason: z.string().optional(),
  errorCode: z.string().optional(),
  /** Failed or Skipped: whether the process was left exactly as it was. */
  unchanged: z.boolean().optional(),
  mode: switchMode.optional(),
  pauseUs: z.number().nonnegative().optional(),
  threads: z.number().int().nonnegative().optional(),
  sites: z.array(levelSite).optional(),
});

// ---- dry runs (`--dry-run`): what a change would map and write ------------------------------------

/** One site a change writes (try's reports), or would write (a dry run's plan): addresses as 0x… strings. */
export const changeSite = z.strictObject({
  action: siteAction,
  object: z.string(),
  function: z.string(),
  replacement: z.string().optional(),
  functionAddress: address,
  form: siteForm,
  siteAddress: address,
  kind: jumpKind,
  keptEndbr64: z.boolean(),
  target: address.optional(),
  before: hexBytes,
  after: hexBytes,
  /** Hot-patchable entries: what the 2-byte NOP at the entry became (or would become). */
  entry: z.strictObject({ siteAddress: address, entryNop: z.string(), before: hexBytes, after: hexBytes }).optional(),
});

/** What a change would do in one process (engine/plan.ts ChangePlan): nothing was mapped or written. */
export const changePlan = z.strictObject({
  pid,
  dryRun: z.literal(true),
  /** False when every function is already as asked: the change would write nothing. */
  wouldChange: z.boolean(),
  mode: switchMode.optional(),
  objects: z.array(z.strictObject({ path: z.string(), buildId: z.string().optional() })),
  /** Patch mappings the change would add, or re-use (`reused`). */
  patches: z.array(
    z.strictObject({ object: z.string(), path: z.string(), buildId: z.string().optional(), base: address, size: z.number().int().positive(), mapping: z.string(), reused: z.literal(true).optional() }),
  ),
  sites: z.array(changeSite),
});

/** A process in a dry run of a level change: `Planned` (with its `plan`) where the change would write. */
export const plannedProcessResult = processResult.extend({
  outcome: z.enum([...processOutcome.options, 'Planned']),
  plan: changePlan.optional(),
});

/** An operation a killed agent left half-done (the real run would finish it first), or a live agent's. */
export const runningOperationRef = operationRef.extend({ pid, command: z.string() });

// ---- patch entries (Azure's install result patches[]) ---------------------------------------------

export const patchEntry = z.strictObject({
  patchId: packageId,
  name: z.string(),
  kbId,
  classifications: z.array(classification),
  rebootBehavior,
  installationState,
});

// ---- the services of a baseline ------------------------------------------------------------------

export const serviceRef = z.strictObject({ name: z.string(), pid });

// ---- trust store ----------------------------------------------------------------------------------

export const keyId = z.string().regex(/^[0-9a-f]{16}$/).describe('a signing key id: 16 hex digits');
export const trustedKey = z.strictObject({ keyId, name: z.string().nullable(), added: dateTime.nullable() });

// ---- errors ---------------------------------------------------------------------------------------

/**
 * `{"error": {"code", "message", "unchanged", …}}`: every failure of every command. `unchanged`
 * says nothing was changed (exit 3) or a usage error (exit 2, code USAGE); the error's own
 * details (what it names: a file, a baseline, the services stopped…) follow as further fields.
 */
export const errorBody = z.looseObject({
  code: z.string().regex(/^[A-Z][A-Z0-9_]*$/),
  message: z.string(),
  unchanged: z.boolean(),
});

/** A warning that does not stop the command: a patched function the compiler also inlined into callers. */
export const inlineWarning = z.strictObject({
  code: z.literal('INLINED_COPIES'),
  object: z.string(),
  function: z.string(),
  callers: z.array(z.strictObject({ name: z.string(), address: address.optional(), copies: z.number().int().positive() })),
  message: z.string(),
});
