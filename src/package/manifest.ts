/**
 * The package manifest: one zod schema is both the validator and the source of the TypeScript
 * types. Field names follow Azure's spellings where Azure has one (kb, classification,
 * rebootBehavior). Every refusal names the field path (`targets[0].functions[1].sha256: ...`) so
 * an author can find the line to fix.
 */
import { z } from 'zod';
import { CONSISTENCY_LEVELS, PATCH_MODES } from '../engine/modes.js';
import { HpError } from '../errors.js';

// The engine's words, which a manifest uses as they are.
export { CONSISTENCY_LEVELS, PATCH_MODES, type Consistency, type PatchMode } from '../engine/modes.js';

export const MANIFEST_SCHEMA_VERSION = 1;

export const CLASSIFICATIONS = [
  'Critical',
  'Security',
  'UpdateRollUp',
  'FeaturePack',
  'ServicePack',
  'Definition',
  'Tools',
  'Updates',
] as const;

export const REBOOT_BEHAVIORS = ['NeverReboots', 'AlwaysRequiresReboot', 'CanRequestReboot'] as const;
/** The placeholder a service argument may carry; the agent substitutes its runtime directory. */
export const HP_RUN_PLACEHOLDER = '${HP_RUN}';

// ------------------------------------------------------------------------------------------------
// Field formats

const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const KB_RE = /^KB\d{6,8}$/;
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
/** GNU build-ids are 8 to 64 bytes (commonly 20: SHA-1), written as lowercase hex. */
const BUILD_ID_RE = /^(?:[0-9a-f]{2}){8,64}$/;
/** One path component: printable, shell- and tar-friendly ASCII only. */
const COMPONENT_RE = /^[A-Za-z0-9._+@-]+$/;
const SYMBOL_RE = /^[\x21-\x7e]{1,1024}$/;
const MAX_PATH = 255;

/**
 * Why `p` is not a safe relative path (the form every path in a package takes), or undefined.
 * Such a path can be joined under any root and never leave it.
 */
export function relativePathProblem(p: string): string | undefined {
  if (p.length === 0) return 'must not be empty';
  if (p.length > MAX_PATH) return `must be at most ${MAX_PATH} characters`;
  if (p.startsWith('/')) return 'must be relative, not absolute';
  const parts = p.split('/');
  if (parts.includes('..')) return 'must not contain ".." components';
  if (parts.some((c) => c === '' || c === '.')) return 'must not contain empty or "." components';
  const bad = parts.find((c) => !COMPONENT_RE.test(c));
  if (bad !== undefined) return `component "${bad}" may only use letters, digits and . _ + @ -`;
  return undefined;
}

const relativePath = z.string().superRefine((p, ctx) => {
  const problem = relativePathProblem(p);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const payloadPath = relativePath.refine((p) => p.startsWith('payload/'), { error: 'must start with "payload/"' });

/** An identifier usable as a file name: id and baselineId name folders in the agent's store. */
const identifier = z
  .string()
  .regex(ID_RE, { error: 'expected 1 to 64 characters from A-Z a-z 0-9 . _ -' })
  .refine((s) => s !== '.' && s !== '..', { error: 'must not be "." or ".."' });

const sha256 = z.string().regex(SHA256_RE, { error: 'expected 64 hex characters (lowercase)' });
const buildId = z.string().regex(BUILD_ID_RE, { error: 'expected a GNU build-id: 16 to 128 lowercase hex characters' });
const symbol = z.string().regex(SYMBOL_RE, { error: 'expected a symbol name: 1 to 1024 printable characters, no spaces' });

const releaseDate = z.string().superRefine((s, ctx) => {
  const m = DATE_RE.exec(s);
  const d = m ? new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])) : undefined;
  if (!m || !d || d.getUTCFullYear() !== +m[1] || d.getUTCMonth() !== +m[2] - 1 || d.getUTCDate() !== +m[3]) {
    ctx.addIssue({ code: 'custom', message: 'expected a calendar date YYYY-MM-DD' });
  }
});

const kbId = z.string().regex(KB_RE, { error: 'expected "KB" and 6 to 8 digits, e.g. KB5046612' });

/** Single fields an author types (pack's flags and --manifest-in check them with these too). */
export const MANIFEST_FIELDS = { id: identifier, kb: kbId, releaseDate } as const;

const byteCount = z.number().int({ error: 'expected a whole number of bytes' }).min(0).max(Number.MAX_SAFE_INTEGER);

// ------------------------------------------------------------------------------------------------
// Shapes

export const PayloadEntrySchema = z.strictObject({
  path: payloadPath,
  sha256,
  size: byteCount,
});

/** An absolute, normalised path of a file installed on the machine (no "..", ".", empty components or NUL). */
const absolutePath = z.string().superRefine((p, ctx) => {
  if (!p.startsWith('/')) return ctx.addIssue({ code: 'custom', message: 'must be an absolute path' });
  if (p.length > 4096) return ctx.addIssue({ code: 'custom', message: 'must be at most 4096 characters' });
  const parts = p.slice(1).split('/');
  if (p.includes('\0') || parts.some((c) => c === '' || c === '.' || c === '..')) {
    ctx.addIssue({ code: 'custom', message: 'must be a normalised absolute path (no empty, "." or ".." components, no NUL)' });
  }
});

/** A file the baseline ships: staged under system/<baselineId>/<path>. */
export const ShippedFileSchema = z.strictObject({
  path: relativePath,
  external: z.literal(false).optional(),
  payload: payloadPath,
  sha256,
  buildId: buildId.optional(),
  // Permission bits only: a package never installs setuid/setgid/sticky files.
  mode: z.number().int().min(0).max(0o777, { error: 'expected permission bits 0 to 0o777 (no setuid, setgid or sticky bit)' }),
});

/**
 * A file already installed on the machine by something else (a distribution package, an image),
 * which the baseline describes without shipping it: `path` is its name in the baseline (what
 * services and hotpatch targets say), `installedAt` where it lies. Installing the baseline checks
 * that the file there has this SHA-256 and build-id; processes are then recognised by the
 * build-id of the file they mapped, wherever they mapped it from.
 */
export const ExternalFileSchema = z.strictObject({
  path: relativePath,
  external: z.literal(true),
  installedAt: absolutePath,
  sha256,
  buildId,
});

export const BaselineFileSchema = z.discriminatedUnion('external', [ShippedFileSchema, ExternalFileSchema], {
  error: 'expected a shipped file {path, payload, sha256, mode} or an installed one {path, external: true, installedAt, sha256, buildId}',
});

/** Who starts and stops a service: the agent (default), or something else (systemd, a shell). */
export const SERVICE_MANAGERS = ['agent', 'external'] as const;

const commandWord = z.string().min(1).max(4096).refine((a) => !a.includes('\0'), { error: 'must not contain NUL' });
/** How long a service may take to become ready (ms); the agent's default is 10 s. */
const readinessTimeout = z.number().int().min(1).max(600_000).optional();

/**
 * How the agent knows a service it started is ready (README "Readiness"). Absent: `line`.
 * - line: the service writes a line `READY` on stdout or stderr;
 * - notify: systemd's sd_notify — the service sends `READY=1` to the datagram socket $NOTIFY_SOCKET;
 * - socket: a probe — a Unix socket (`path`, `${HP_RUN}` allowed) or TCP port (`port`, `host`
 *   default 127.0.0.1) that accepts a connection.
 */
export const ReadinessSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('line'), timeoutMs: readinessTimeout }),
  z.strictObject({ type: z.literal('notify'), timeoutMs: readinessTimeout }),
  z
    .strictObject({
      type: z.literal('socket'),
      path: z.string().min(1).max(4096).refine((a) => !a.includes('\0'), { error: 'must not contain NUL' }).optional(),
      port: z.number().int().min(1).max(65_535).optional(),
      host: z.string().min(1).max(255).optional(),
      timeoutMs: readinessTimeout,
    })
    .refine((r) => (r.path === undefined) !== (r.port === undefined), { error: 'a socket probe needs either "path" (Unix) or "port" (TCP), not both' })
    .refine((r) => r.host === undefined || r.port !== undefined, { error: '"host" goes with "port" (TCP)' }),
]);

/** How long a health check may take (ms); the agent's default is 5 s. */
const healthTimeout = z.number().int().min(1).max(600_000).optional();

/**
 * How automatic patching knows a service is still healthy after a change (availability first:
 * one service at a time, stop at the first that fails). Absent: the service must still run.
 * - request: connect to a Unix socket (`path`, `${HP_RUN}` allowed) or TCP port (`port`, `host`
 *   default 127.0.0.1), send the line `send`, and expect the first line answered to be `expect`;
 * - command: run `command` (program and arguments, no shell; `${HP_RUN}` allowed): healthy when
 *   it exits 0.
 */
export const HealthCheckSchema = z.discriminatedUnion('type', [
  z
    .strictObject({
      type: z.literal('request'),
      path: z.string().min(1).max(4096).refine((a) => !a.includes('\0'), { error: 'must not contain NUL' }).optional(),
      port: z.number().int().min(1).max(65_535).optional(),
      host: z.string().min(1).max(255).optional(),
      send: z.string().max(4096).refine((a) => !/[\n\r\0]/.test(a), { error: 'must be one line (no newline, no NUL)' }),
      expect: z.string().max(4096).refine((a) => !/[\n\r\0]/.test(a), { error: 'must be one line (no newline, no NUL)' }),
      timeoutMs: healthTimeout,
    })
    .refine((r) => (r.path === undefined) !== (r.port === undefined), { error: 'a request needs either "path" (Unix socket) or "port" (TCP), not both' })
    .refine((r) => r.host === undefined || r.port !== undefined, { error: '"host" goes with "port" (TCP)' }),
  z.strictObject({
    type: z.literal('command'),
    command: z.array(commandWord).min(1, { error: 'expected a program and its arguments' }).max(256),
    timeoutMs: healthTimeout,
  }),
]);

export const ServiceSchema = z.strictObject({
  name: identifier,
  file: relativePath,
  args: z.array(z.string().max(4096).refine((a) => !a.includes('\0'), { error: 'must not contain NUL' })).max(256),
  /** "external": the agent never starts or stops it; at a reboot it runs `restart` and finds the new process. */
  managedBy: z.enum(SERVICE_MANAGERS, { error: 'expected "agent" or "external"' }).optional(),
  /** For an external service: the command (program and arguments, no shell) that restarts it, e.g. ["systemctl", "restart", "greetd"]. */
  restart: z.array(commandWord).min(1, { error: 'expected a program and its arguments' }).max(256).optional(),
  readiness: ReadinessSchema.optional(),
  healthCheck: HealthCheckSchema.optional(),
});

/**
 * The largest function a hotpatch may describe (16 MiB): the agent reads every replaced
 * function's bytes from each process to check their SHA-256, so the size is bounded here — and
 * must equal the symbol's size in the object besides.
 */
export const MAX_FUNCTION_SIZE = 16 << 20;

export const HotpatchFunctionSchema = z.strictObject({
  symbol,
  size: z
    .number()
    .int({ error: 'expected a whole number of bytes' })
    .min(1, { error: 'expected a function size of at least 1 byte' })
    .max(MAX_FUNCTION_SIZE, { error: `expected a function size of at most ${MAX_FUNCTION_SIZE} bytes (16 MiB)` }),
  sha256,
  replacement: symbol,
});

export const HotpatchTargetSchema = z.strictObject({
  path: relativePath,
  buildId,
  patchObject: payloadPath,
  patchBuildId: buildId.optional(),
  functions: z.array(HotpatchFunctionSchema).min(1, { error: 'a target needs at least one function' }).max(4096),
});

const common = {
  schemaVersion: z.literal(MANIFEST_SCHEMA_VERSION, { error: `expected ${MANIFEST_SCHEMA_VERSION}: this agent reads manifest schema version ${MANIFEST_SCHEMA_VERSION}` }),
  id: identifier,
  kb: kbId,
  title: z.string().min(1, { error: 'must not be empty' }).max(256),
  releaseDate,
  classification: z.enum(CLASSIFICATIONS, { error: `expected one of ${CLASSIFICATIONS.join(', ')}` }),
  baselineId: identifier,
  payload: z.array(PayloadEntrySchema).max(4096),
};

export const BaselineManifestSchema = z.strictObject({
  ...common,
  kind: z.literal('baseline'),
  rebootBehavior: z.literal('AlwaysRequiresReboot', { error: 'a baseline replaces whole files and takes effect at reboot: expected "AlwaysRequiresReboot"' }),
  planned: z.boolean(),
  /**
   * A cumulative update for machines not enrolled in hotpatching: the id of the hotpatch whose
   * fixes it carries as whole files (it needs a reboot). No hotpatch is built on it.
   */
  equivalentHotpatch: identifier.optional(),
  files: z.array(BaselineFileSchema).min(1, { error: 'a baseline needs at least one file' }).max(4096),
  services: z.array(ServiceSchema).max(256),
});

export const HotpatchManifestSchema = z.strictObject({
  ...common,
  kind: z.literal('hotpatch'),
  rebootBehavior: z.literal('NeverReboots', { error: 'a hotpatch is applied to running processes: expected "NeverReboots"' }),
  sequence: z.number().int({ error: 'expected a whole number' }).min(1, { error: 'expected a sequence number of 1 or more' }).max(1_000_000),
  consistency: z.enum(CONSISTENCY_LEVELS, { error: 'expected "entry" or "function"' }),
  patchMode: z.enum(PATCH_MODES, { error: 'expected "auto", "stop" or "zero-stop"' }).optional(),
  targets: z.array(HotpatchTargetSchema).min(1, { error: 'a hotpatch needs at least one target' }).max(256),
});

export type Classification = (typeof CLASSIFICATIONS)[number];
export type RebootBehavior = (typeof REBOOT_BEHAVIORS)[number];
export type PayloadEntry = z.infer<typeof PayloadEntrySchema>;
export type BaselineFile = z.infer<typeof BaselineFileSchema>;
export type ShippedFile = z.infer<typeof ShippedFileSchema>;
export type ExternalFile = z.infer<typeof ExternalFileSchema>;
export type ServiceManager = (typeof SERVICE_MANAGERS)[number];

export function isExternalFile(f: BaselineFile): f is ExternalFile {
  return f.external === true;
}
export type BaselineService = z.infer<typeof ServiceSchema>;
export type Readiness = z.infer<typeof ReadinessSchema>;
export type HealthCheck = z.infer<typeof HealthCheckSchema>;
export type HotpatchFunction = z.infer<typeof HotpatchFunctionSchema>;
export type HotpatchTarget = z.infer<typeof HotpatchTargetSchema>;
export type BaselineManifest = z.infer<typeof BaselineManifestSchema>;
export type HotpatchManifest = z.infer<typeof HotpatchManifestSchema>;
export type Manifest = BaselineManifest | HotpatchManifest;

// ------------------------------------------------------------------------------------------------
// Cross-field checks: what one field says about another

type Issue = { path: (string | number)[]; message: string };

function duplicates<T>(items: T[], key: (t: T) => string, at: (i: number) => (string | number)[], what: string, out: Issue[]): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first === undefined) seen.set(k, i);
    else out.push({ path: at(i), message: `duplicate ${what} "${k}" (also at index ${first})` });
  });
}

function crossCheck(m: Manifest): Issue[] {
  const out: Issue[] = [];
  duplicates(m.payload, (p) => p.path, (i) => ['payload', i, 'path'], 'payload path', out);
  const payload = new Map(m.payload.map((p) => [p.path, p]));
  const used = new Set<string>();

  if (m.kind === 'baseline') {
    duplicates(m.files, (f) => f.path, (i) => ['files', i, 'path'], 'file path', out);
    // A file cannot also be a directory holding another file of the same baseline.
    const dirs = new Set(m.files.flatMap((f) => f.path.split('/').slice(0, -1).map((_, j, a) => a.slice(0, j + 1).join('/'))));
    const installed = m.files.flatMap((f, i) => (isExternalFile(f) ? [{ f, i }] : []));
    duplicates(installed, (x) => x.f.installedAt, (j) => ['files', installed[j].i, 'installedAt'], 'installed file', out);
    m.files.forEach((f, i) => {
      if (dirs.has(f.path)) out.push({ path: ['files', i, 'path'], message: `"${f.path}" is also a directory of another file` });
      if (isExternalFile(f)) return; // shipped by nobody: nothing in payload[]
      const p = payload.get(f.payload);
      used.add(f.payload);
      if (!p) out.push({ path: ['files', i, 'payload'], message: `"${f.payload}" is not listed in payload[]` });
      else if (p.sha256 !== f.sha256) out.push({ path: ['files', i, 'sha256'], message: `differs from the sha256 of its payload "${f.payload}"` });
    });
    duplicates(m.services, (s) => s.name, (i) => ['services', i, 'name'], 'service name', out);
    const files = new Set(m.files.map((f) => f.path));
    m.services.forEach((s, i) => {
      if (!files.has(s.file)) out.push({ path: ['services', i, 'file'], message: `"${s.file}" is not one of the baseline's files` });
      if (s.managedBy === 'external' && !s.restart) out.push({ path: ['services', i, 'restart'], message: 'an externally managed service needs the command that restarts it at a reboot' });
      if (s.managedBy !== 'external' && s.restart) out.push({ path: ['services', i, 'restart'], message: 'only an externally managed service (managedBy "external") has a restart command: the agent starts and stops its own' });
    });
  } else {
    duplicates(m.targets, (t) => t.path, (i) => ['targets', i, 'path'], 'target path', out);
    if (m.consistency === 'function' && m.patchMode === 'zero-stop') {
      out.push({ path: ['patchMode'], message: '"zero-stop" cannot give "function" consistency: proving no thread is inside an old function needs every thread stopped' });
    }
    m.targets.forEach((t, i) => {
      used.add(t.patchObject);
      if (!payload.has(t.patchObject)) out.push({ path: ['targets', i, 'patchObject'], message: `"${t.patchObject}" is not listed in payload[]` });
      duplicates(t.functions, (f) => f.symbol, (j) => ['targets', i, 'functions', j, 'symbol'], 'function', out);
    });
  }
  m.payload.forEach((p, i) => {
    if (!used.has(p.path)) out.push({ path: ['payload', i, 'path'], message: `"${p.path}" is not used by any ${m.kind === 'baseline' ? 'file' : 'target'}` });
  });
  return out;
}

export const ManifestSchema = z
  .discriminatedUnion('kind', [BaselineManifestSchema, HotpatchManifestSchema], { error: 'expected "baseline" or "hotpatch"' })
  .superRefine((m, ctx) => {
    for (const issue of crossCheck(m)) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
  });

// ------------------------------------------------------------------------------------------------
// Parsing

/** `targets[0].functions[1].sha256` */
export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += (out ? '.' : '') + String(k);
  }
  return out || '(manifest)';
}

function issueLines(error: z.ZodError): string[] {
  return error.issues.map((i) => {
    let message = i.message.replace(/^Invalid input: /, '');
    if (i.code === 'invalid_type' && /received undefined$/.test(message)) message = 'missing (required)';
    if (i.code === 'unrecognized_keys') message = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')}`;
    return `${formatFieldPath(i.path)}: ${message}`;
  });
}

/** Validate a parsed object as a manifest; HpError PACKAGE_MANIFEST_INVALID lists every problem by field. */
export function validateManifest(value: unknown, source = 'manifest.json'): Manifest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HpError('PACKAGE_MANIFEST_INVALID', `${source} was refused: expected a JSON object`, { problems: ['(manifest): expected a JSON object'] });
  }
  const r = ManifestSchema.safeParse(value);
  if (r.success) return r.data;
  const problems = issueLines(r.error);
  throw new HpError(
    'PACKAGE_MANIFEST_INVALID',
    `${source} was refused: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`}`,
    { problems },
  );
}

/** Parse manifest.json's exact bytes (UTF-8 JSON) and validate them. */
export function parseManifest(bytes: Uint8Array | string, source = 'manifest.json'): Manifest {
  let text: string;
  try {
    text = typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new HpError('PACKAGE_MANIFEST_INVALID', `${source} was refused: it is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HpError('PACKAGE_MANIFEST_INVALID', `${source} was refused: it is not valid JSON (${(e as Error).message})`);
  }
  return validateManifest(value, source);
}

/** The canonical bytes a manifest is written (and signed) as. */
export function serializeManifest(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(m, null, 2) + '\n', 'utf8');
}
