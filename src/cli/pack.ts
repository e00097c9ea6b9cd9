/** `hp-agent pack baseline|hotpatch`: build and sign a package from an author's files. */
import { dirname, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { z } from 'zod';
import {
  CLASSIFICATIONS,
  CONSISTENCY_LEVELS,
  PATCH_MODES,
  formatFieldPath,
  isExternalFile,
  MANIFEST_FIELDS,
  ReadinessSchema,
  HealthCheckSchema,
  type Readiness,
  keyIdOfPrivateKey,
  packBaseline,
  packHotpatch,
  serviceEntry,
  type PackService,
  type BaselineManifest,
  type Classification,
  type Consistency,
  type PatchMode,
  type HotpatchManifest,
  type PackBaselineOptions,
  type PackHotpatchOptions,
  type PackResult,
} from '../package/index.js';
import { readTextInput } from './keys.js';
import { existingFile, nonEmpty, schemaValue, usage, wholeNumber } from './usage.js';
import { EXIT, printer, table } from './output.js';
import type { Output } from '../contract/index.js';

interface CommonArgs {
  out?: string;
  id?: string;
  kb?: string;
  title?: string;
  releaseDate?: string;
  classification?: string;
  key: string;
  manifestIn?: string;
  gzip?: boolean;
  json: boolean;
}

interface BaselineArgs extends CommonArgs {
  planned?: boolean;
  equivalentHotpatch?: string;
  baselineId?: string;
  file?: string[];
  installed?: string[];
  service?: string[];
  externalService?: string[];
  readiness?: string[];
}

interface HotpatchArgs extends CommonArgs {
  baselineId?: string;
  sequence?: number;
  consistency?: string;
  patchMode?: string;
  target?: string[];
  patchObject?: string[];
  function?: string[];
}


// ------------------------------------------------------------------------------------------------
// --manifest-in: the same inputs as the flags, as JSON; relative paths are relative to that file.

const mode = z.union([z.number().int(), z.string().regex(/^(0o)?[0-7]{1,4}$/).transform((s) => parseInt(s.replace(/^0o/, ''), 8))]);
const commonIn = {
  out: z.string().optional(),
  id: MANIFEST_FIELDS.id.optional(),
  kb: MANIFEST_FIELDS.kb.optional(),
  title: z.string().optional(),
  releaseDate: MANIFEST_FIELDS.releaseDate.optional(),
  classification: z.string().optional(),
  gzip: z.boolean().optional(),
};
const BaselineIn = z.strictObject({
  ...commonIn,
  kind: z.literal('baseline').optional(),
  planned: z.boolean().optional(),
  equivalentHotpatch: MANIFEST_FIELDS.id.optional(),
  baselineId: MANIFEST_FIELDS.id.optional(),
  files: z
    .array(z.union([z.strictObject({ path: z.string(), source: z.string(), mode: mode.optional() }), z.strictObject({ path: z.string(), installedAt: z.string() })]))
    .optional(),
  services: z
    .array(
      z.strictObject({
        name: z.string(),
        file: z.string(),
        args: z.array(z.string()).optional(),
        managedBy: z.enum(['agent', 'external']).optional(),
        restart: z.array(z.string()).optional(),
        readiness: ReadinessSchema.optional(),
        healthCheck: HealthCheckSchema.optional(),
      }),
    )
    .optional(),
});
const HotpatchIn = z.strictObject({
  ...commonIn,
  kind: z.literal('hotpatch').optional(),
  baselineId: MANIFEST_FIELDS.id.optional(),
  sequence: z.number().optional(),
  consistency: z.string().optional(),
  patchMode: z.string().optional(),
  targets: z
    .array(
      z.strictObject({
        path: z.string(),
        baselineFile: z.string(),
        patchObject: z.string(),
        functions: z.array(z.strictObject({ symbol: z.string(), replacement: z.string().optional() })),
      }),
    )
    .optional(),
});

async function readInput<T extends z.ZodType>(file: string | undefined, schema: T): Promise<{ value: z.infer<T> | undefined; base: string }> {
  if (!file) return { value: undefined, base: process.cwd() };
  const text = await readTextInput(file, '--manifest-in file');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw usage(`--manifest-in ${file} is not valid JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    throw usage(`--manifest-in ${file}: ${r.error.issues.map((i) => `${formatFieldPath(i.path)}: ${i.message.replace(/^Invalid input: /, '')}`).join('; ')}`);
  }
  return { value: r.data, base: dirname(resolve(file)) };
}

// ------------------------------------------------------------------------------------------------
// Flag parsers

function splitAssignment(flag: string, spec: string, form: string): [string, string] {
  const i = spec.indexOf('=');
  if (i <= 0 || i === spec.length - 1) throw usage(`${flag} expects ${form}, got "${spec}"`);
  return [spec.slice(0, i), spec.slice(i + 1)];
}

/** install/path=source/file[:mode] (mode in octal: 755, 0755, 0o755) */
export function parseFileSpec(spec: string): { path: string; source: string; mode?: number } {
  const [path, rest] = splitAssignment('--file', spec, 'INSTALL/PATH=SOURCE[:MODE]');
  const m = /^(.*):(?:0o)?([0-7]{3,4})$/.exec(rest);
  return m ? { path, source: m[1], mode: parseInt(m[2], 8) } : { path, source: rest };
}

/** install/path=/absolute/installed/path: a file already on the machine, described but not shipped */
export function parseInstalledSpec(spec: string): { path: string; installedAt: string } {
  const [path, installedAt] = splitAssignment('--installed', spec, 'INSTALL/PATH=/ABSOLUTE/PATH');
  if (!installedAt.startsWith('/')) throw usage(`--installed expects INSTALL/PATH=/ABSOLUTE/PATH (where the file is installed), got "${spec}"`);
  return { path, installedAt };
}

/** name=file:command,arg...: a service something else runs, and the command that restarts it */
export function parseExternalServiceSpec(spec: string): { name: string; file: string; args: string[]; managedBy: 'external'; restart: string[] } {
  const s = parseServiceSpec(spec);
  if (s.args.length === 0) throw usage(`--external-service expects NAME=FILE:RESTART-COMMAND[,ARG...], got "${spec}"`);
  return { name: s.name, file: s.file, args: [], managedBy: 'external', restart: s.args };
}

/** name=file[:arg,arg...] */
export function parseServiceSpec(spec: string): { name: string; file: string; args: string[] } {
  const [name, rest] = splitAssignment('--service', spec, 'NAME=FILE[:ARG,ARG...]');
  const i = rest.indexOf(':');
  if (i === 0) throw usage(`--service expects NAME=FILE[:ARG,ARG...], got "${spec}"`);
  return i < 0 ? { name, file: rest, args: [] } : { name, file: rest.slice(0, i), args: rest.slice(i + 1) === '' ? [] : rest.slice(i + 1).split(',') };
}

/**
 * --readiness NAME=KIND: line | notify | socket:PATH | tcp:[HOST:]PORT, each optionally
 * followed by @TIMEOUT_MS. Checked against the manifest's schema here, while parsing.
 */
export function parseReadinessSpec(spec: string): { name: string; readiness: Readiness } {
  const [name, rest] = splitAssignment('--readiness', spec, 'NAME=line|notify|socket:PATH|tcp:[HOST:]PORT[@TIMEOUT_MS]');
  const at = rest.lastIndexOf('@');
  const kind = at < 0 ? rest : rest.slice(0, at);
  const timeoutMs = at < 0 ? undefined : /^\d+$/.test(rest.slice(at + 1)) ? Number(rest.slice(at + 1)) : NaN;
  let value: unknown;
  if (kind === 'line' || kind === 'notify') value = { type: kind };
  else if (kind.startsWith('socket:')) value = { type: 'socket', path: kind.slice(7) };
  else if (kind.startsWith('tcp:')) {
    const hp = kind.slice(4);
    const c = hp.lastIndexOf(':');
    const port = /^\d+$/.test(hp.slice(c + 1)) ? Number(hp.slice(c + 1)) : NaN;
    value = c < 0 ? { type: 'socket', port } : { type: 'socket', host: hp.slice(0, c), port };
  }
  const r = value === undefined ? undefined : ReadinessSchema.safeParse(timeoutMs === undefined ? value : { ...(value as object), timeoutMs });
  if (!r?.success) throw usage(`--readiness expects NAME=line|notify|socket:PATH|tcp:[HOST:]PORT[@TIMEOUT_MS], got "${spec}"${r ? `: ${r.error.issues[0]?.message}` : ''}`);
  return { name, readiness: r.data };
}

/** [install/path:]symbol[=replacement] */
export function parseTargetFunctionSpec(spec: string): { target?: string; symbol: string; replacement?: string } {
  const eq = spec.indexOf('=');
  const left = eq < 0 ? spec : spec.slice(0, eq);
  const replacement = eq < 0 ? undefined : spec.slice(eq + 1);
  const colon = left.lastIndexOf(':');
  const target = colon < 0 ? undefined : left.slice(0, colon);
  const symbol = colon < 0 ? left : left.slice(colon + 1);
  if (!symbol || replacement === '' || target === '' || replacement?.includes('=')) {
    throw usage(`--function expects [TARGET:]SYMBOL[=REPLACEMENT], got "${spec}"`);
  }
  return { ...(target ? { target } : {}), symbol, ...(replacement ? { replacement } : {}) };
}

function required<T>(value: T | undefined, flag: string): T {
  if (value === undefined || value === '') throw usage(`${flag} is required (or give it in --manifest-in)`);
  return value;
}

function classification(v: string | undefined): Classification {
  const c = required(v, '--classification');
  if (!(CLASSIFICATIONS as readonly string[]).includes(c)) throw usage(`--classification expects one of ${CLASSIFICATIONS.join(', ')}, got "${c}"`);
  return c as Classification;
}

/** Conflicting options: checked on the flags while parsing, and again with --manifest-in's values. */
function checkModeFits(consistency: string | undefined, patchMode: string | undefined): void {
  if (consistency === 'function' && patchMode === 'zero-stop') {
    throw usage('--patch-mode zero-stop cannot give --consistency function: proving no thread is inside an old function needs every thread stopped');
  }
}

// ------------------------------------------------------------------------------------------------
// Building the options

export async function baselineOptions(a: BaselineArgs, privateKeyPem: string): Promise<PackBaselineOptions> {
  const { value: j, base } = await readInput(a.manifestIn, BaselineIn);
  const fromJson = (p: string) => resolve(base, p);
  const files: PackBaselineOptions['files'] = [
    ...(j?.files ?? []).map((f) => ('installedAt' in f ? { path: f.path, installedAt: f.installedAt } : { path: f.path, source: fromJson(f.source), ...(f.mode !== undefined ? { mode: f.mode } : {}) })),
    ...(a.file ?? []).map(parseFileSpec),
    ...(a.installed ?? []).map(parseInstalledSpec),
  ];
  const services: PackService[] = [
    ...(j?.services ?? []).map(serviceEntry),
    ...(a.service ?? []).map(parseServiceSpec),
    ...(a.externalService ?? []).map(parseExternalServiceSpec),
  ];
  for (const { name, readiness } of (a.readiness ?? []).map(parseReadinessSpec)) {
    const svc = services.find((x) => x.name === name);
    if (!svc) throw usage(`--readiness names service "${name}", which no --service defines`);
    svc.readiness = readiness;
  }
  if (files.length === 0) throw usage('a baseline needs at least one --file INSTALL/PATH=SOURCE[:MODE] or --installed INSTALL/PATH=/ABSOLUTE/PATH');
  const baselineId = a.baselineId ?? j?.baselineId;
  const equivalentHotpatch = a.equivalentHotpatch ?? j?.equivalentHotpatch;
  return {
    out: required(a.out ?? (j?.out !== undefined ? fromJson(j.out) : undefined), '--out'),
    id: required(a.id ?? j?.id, '--id'),
    kb: required(a.kb ?? j?.kb, '--kb'),
    title: required(a.title ?? j?.title, '--title'),
    releaseDate: required(a.releaseDate ?? j?.releaseDate, '--release-date'),
    classification: classification(a.classification ?? j?.classification),
    planned: a.planned ?? j?.planned ?? false,
    ...(baselineId ? { baselineId } : {}),
    ...(equivalentHotpatch ? { equivalentHotpatch } : {}),
    files,
    services,
    privateKeyPem,
    gzip: a.gzip ?? j?.gzip ?? false,
  };
}

export async function hotpatchOptions(a: HotpatchArgs, privateKeyPem: string): Promise<PackHotpatchOptions> {
  const { value: j, base } = await readInput(a.manifestIn, HotpatchIn);
  const fromJson = (p: string) => resolve(base, p);
  const targets: PackHotpatchOptions['targets'] = (j?.targets ?? []).map((t) => ({
    path: t.path,
    baselineFile: fromJson(t.baselineFile),
    patchObject: fromJson(t.patchObject),
    functions: t.functions.map((f) => ({ symbol: f.symbol, ...(f.replacement ? { replacement: f.replacement } : {}) })),
  }));
  const flagTargets = (a.target ?? []).map((spec) => splitAssignment('--target', spec, 'INSTALL/PATH=BASELINE/FILE'));
  const objects = a.patchObject ?? [];
  if (flagTargets.length > 0 && objects.length !== flagTargets.length && objects.length !== 1) {
    throw usage(`give one --patch-object for all targets, or one per --target in the same order (got ${objects.length} for ${flagTargets.length} targets)`);
  }
  if (flagTargets.length === 0 && objects.length > 0) throw usage('--patch-object needs a --target INSTALL/PATH=BASELINE/FILE');
  const first = targets.length;
  flagTargets.forEach(([path, baselineFile], i) => targets.push({ path, baselineFile, patchObject: objects[objects.length === 1 ? 0 : i], functions: [] }));
  for (const spec of a.function ?? []) {
    const f = parseTargetFunctionSpec(spec);
    const candidates = f.target ? targets.filter((t) => t.path === f.target) : targets.slice(first);
    if (f.target && candidates.length === 0) throw usage(`--function ${spec}: no --target has install path ${f.target}`);
    if (!f.target && candidates.length !== 1) {
      throw usage(`--function ${spec}: with ${candidates.length} --target options, say which one it belongs to: TARGET:SYMBOL[=REPLACEMENT]`);
    }
    candidates[0].functions.push({ symbol: f.symbol, ...(f.replacement ? { replacement: f.replacement } : {}) });
  }
  if (targets.length === 0) throw usage('a hotpatch needs a --target INSTALL/PATH=BASELINE/FILE with a --patch-object and --function options');
  for (const t of targets) if (t.functions.length === 0) throw usage(`target ${t.path} has no --function`);
  const consistency = a.consistency ?? j?.consistency ?? 'entry';
  if (!(CONSISTENCY_LEVELS as readonly string[]).includes(consistency)) throw usage(`--consistency expects entry or function, got "${consistency}"`);
  const patchMode = a.patchMode ?? j?.patchMode;
  if (patchMode !== undefined && !(PATCH_MODES as readonly string[]).includes(patchMode)) throw usage(`--patch-mode expects ${PATCH_MODES.join(', ')}, got "${patchMode}"`);
  checkModeFits(consistency, patchMode);
  const sequence = required(a.sequence ?? j?.sequence, '--sequence');
  if (!Number.isInteger(sequence) || sequence < 1) throw usage(`--sequence expects a whole number of 1 or more, got "${String(sequence)}"`);
  return {
    out: required(a.out ?? (j?.out !== undefined ? fromJson(j.out) : undefined), '--out'),
    id: required(a.id ?? j?.id, '--id'),
    kb: required(a.kb ?? j?.kb, '--kb'),
    title: required(a.title ?? j?.title, '--title'),
    releaseDate: required(a.releaseDate ?? j?.releaseDate, '--release-date'),
    classification: classification(a.classification ?? j?.classification),
    baselineId: required(a.baselineId ?? j?.baselineId, '--baseline-id'),
    sequence,
    consistency: consistency as Consistency,
    ...(patchMode ? { patchMode: patchMode as PatchMode } : {}),
    targets,
    privateKeyPem,
    gzip: a.gzip ?? j?.gzip ?? false,
  };
}

// ------------------------------------------------------------------------------------------------
// Output

const short = (hex: string | undefined, n = 16) => (hex ? (hex.length > n ? hex.slice(0, n) + '…' : hex) : '-');

function header(r: PackResult, keyId: string): string {
  const m = r.manifest;
  return `packed ${m.kind} ${m.id} (${m.kb}, ${m.classification}${m.kind === 'hotpatch' ? `, #${m.sequence} for baseline ${m.baselineId}` : m.planned ? ', planned' : ', unplanned'}) → ${r.path}\n` +
    `  ${r.size} bytes, sha256 ${r.sha256}, signed by key ${keyId}`;
}

function baselineSummary(r: PackResult<BaselineManifest>, keyId: string): string {
  const m = r.manifest;
  const size = new Map(m.payload.map((p) => [p.path, p.size]));
  let s = header(r, keyId) + '\n\n' +
    table(['FILE', 'MODE', 'SIZE', 'BUILD-ID', 'SHA-256'], m.files.map((f) =>
      isExternalFile(f)
        ? [`${f.path} (installed: ${f.installedAt})`, '-', '-', short(f.buildId, 40), short(f.sha256)]
        : [f.path, f.mode.toString(8).padStart(4, '0'), String(size.get(f.payload) ?? 0), short(f.buildId, 40), short(f.sha256)]));
  if (m.services.length) {
    s += '\n\n' + table(['SERVICE', 'FILE', 'ARGS', 'MANAGED BY'], m.services.map((v) => [v.name, v.file, v.args.join(' '), v.managedBy === 'external' ? `external (restart: ${v.restart!.join(' ')})` : 'agent']));
  }
  return s;
}

function hotpatchSummary(r: PackResult<HotpatchManifest>, keyId: string): string {
  const m = r.manifest;
  const rows = m.targets.flatMap((t) =>
    t.functions.map((f) => [t.path, short(t.buildId, 40), t.patchObject, f.replacement === f.symbol ? f.symbol : `${f.symbol} → ${f.replacement}`, String(f.size), short(f.sha256)]),
  );
  return header(r, keyId) + `, consistency ${m.consistency}, patch mode ${m.patchMode ?? 'auto'}\n\n` + table(['TARGET', 'BUILD-ID', 'PATCH OBJECT', 'FUNCTION', 'SIZE', 'ORIGINAL SHA-256'], rows);
}

// ------------------------------------------------------------------------------------------------
// Commands

function commonOptions(c: Argv): Argv {
  return c
    .option('out', { type: 'string', requiresArg: true, coerce: nonEmpty('--out'), describe: 'the package file to write (.hpkg)' })
    .option('id', { type: 'string', requiresArg: true, coerce: schemaValue('--id', MANIFEST_FIELDS.id), describe: 'package id: 1-64 of A-Z a-z 0-9 . _ -' })
    .option('kb', { type: 'string', requiresArg: true, coerce: schemaValue('--kb', MANIFEST_FIELDS.kb), describe: 'KB article id, e.g. KB5046612' })
    .option('title', { type: 'string', requiresArg: true, coerce: nonEmpty('--title'), describe: 'one-line title' })
    .option('release-date', { type: 'string', requiresArg: true, coerce: schemaValue('--release-date', MANIFEST_FIELDS.releaseDate), describe: 'YYYY-MM-DD' })
    .option('classification', { type: 'string', choices: CLASSIFICATIONS as unknown as string[], describe: 'update classification' })
    .option('key', { type: 'string', demandOption: true, requiresArg: true, coerce: existingFile('signing key'), describe: 'ed25519 private key (PEM) to sign with (hp-agent keygen)' })
    .option('manifest-in', { type: 'string', requiresArg: true, coerce: existingFile('--manifest-in file'), describe: 'JSON file with the same inputs (for many files or targets); flags override it' })
    .option('gzip', { type: 'boolean', describe: 'gzip the archive (default: plain tar)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' });
}

async function runPack<A extends CommonArgs>(a: A, build: (a: A, key: string) => Promise<PackResult>, summary: (r: PackResult, keyId: string) => string): Promise<void> {
  const out = printer(a.json);
  try {
    const privateKeyPem = await readTextInput(a.key, 'signing key');
    const keyId = keyIdOfPrivateKey(privateKeyPem);
    const r = await build(a, privateKeyPem);
    const body: Output<'pack'> = { path: r.path, sha256: r.sha256, size: r.size, keyId, manifest: r.manifest, ...(r.warnings ? { warnings: r.warnings } : {}) };
    out.result(body, () => summary(r, keyId));
    out.warn(r.warnings);
    process.exitCode = EXIT.ok;
  } catch (e) {
    process.exitCode = out.error(e);
  }
}

export function packCommand(y: Argv): Argv {
  return y.command('pack', 'Build and sign a baseline or hotpatch package', (c) =>
    c
      .command(
        'baseline',
        'Pack whole files (and the services that run them) as a reboot-requiring baseline',
        (d) =>
          commonOptions(d)
            .option('planned', { type: 'boolean', describe: 'a planned (quarterly) baseline; default: unplanned' })
            .option('baseline-id', { type: 'string', requiresArg: true, coerce: schemaValue('--baseline-id', MANIFEST_FIELDS.id), describe: 'baseline id (default: --id)' })
            .option('equivalent-hotpatch', { type: 'string', requiresArg: true, coerce: schemaValue('--equivalent-hotpatch', MANIFEST_FIELDS.id), describe: 'a cumulative update (for machines not enrolled in hotpatching) carrying the fixes of this hotpatch id' })
            .option('file', { type: 'string', array: true, describe: 'INSTALL/PATH=SOURCE[:MODE] (mode octal, default: the source\'s); repeatable' })
            .option('installed', { type: 'string', array: true, describe: 'INSTALL/PATH=/ABSOLUTE/PATH: a file already installed on the machine, described (SHA-256, build-id) but not shipped; repeatable' })
            .option('service', { type: 'string', array: true, describe: 'NAME=FILE[:ARG,ARG...] (FILE: an install path; ${HP_RUN}: the agent\'s runtime dir); repeatable' })
            .option('external-service', { type: 'string', array: true, describe: 'NAME=FILE:COMMAND[,ARG...]: a service something else starts (systemd...); the agent runs COMMAND to restart it at a reboot; repeatable' })
            .option('readiness', { type: 'string', array: true, describe: 'NAME=line|notify|socket:PATH|tcp:[HOST:]PORT[@TIMEOUT_MS]: how service NAME says it is ready (default line: it prints READY); repeatable' })
            .epilogue(
              [
                'Example:',
                '  hp-agent pack baseline --out base.hpkg --id base-2025.01 \\',
                '    --kb KB5046612 --title "January baseline" --planned \\',
                '    --release-date 2025-01-14 --classification Security \\',
                '    --file bin/service=build/service:755 \\',
                "    --service 'svc=bin/service:${HP_RUN}/svc.sock' --key release.key",
              ].join('\n'),
            ),
        (argv) => runPack(argv as unknown as BaselineArgs, async (a, k) => packBaseline(await baselineOptions(a, k)), (r, k) => baselineSummary(r as PackResult<BaselineManifest>, k)),
      )
      .command(
        'hotpatch',
        'Pack replacement functions for one baseline, applied live',
        (d) =>
          commonOptions(d)
            .option('baseline-id', { type: 'string', requiresArg: true, coerce: schemaValue('--baseline-id', MANIFEST_FIELDS.id), describe: 'the baseline this hotpatch builds on' })
            .option('sequence', { requiresArg: true, coerce: wholeNumber('--sequence', 'the hotpatch number within the baseline', 1, 1_000_000), describe: 'hotpatch number within the baseline (1, 2, ...)' })
            .option('consistency', { type: 'string', choices: CONSISTENCY_LEVELS as unknown as string[], describe: 'entry (default) or function' })
            .option('patch-mode', { type: 'string', choices: PATCH_MODES as unknown as string[], describe: 'auto (default: zero-stop where the objects allow it), stop or zero-stop' })
            .option('target', { type: 'string', array: true, describe: 'INSTALL/PATH=BASELINE/FILE: an object of the baseline, and its file on disk; repeatable' })
            .option('patch-object', { type: 'string', array: true, describe: 'the patch (.so, -fPIC -shared): one for all targets, or one per --target' })
            .option('function', { type: 'string', array: true, describe: '[TARGET:]SYMBOL[=REPLACEMENT] (default replacement: SYMBOL); repeatable' })
            .check((a) => {
              checkModeFits(a.consistency as string | undefined, a.patchMode as string | undefined);
              return true;
            })
            .epilogue(
              [
                'Example:',
                '  hp-agent pack hotpatch --out hp1.hpkg --id hp-2025.02 \\',
                '    --kb KB5046700 --title "February hotpatch" \\',
                '    --release-date 2025-02-11 --classification Security \\',
                '    --baseline-id base-2025.01 --sequence 1 \\',
                '    --target bin/service=build/service --patch-object fix.so \\',
                '    --function handle_request=handle_request_v2 --key release.key',
                'Several targets: one --patch-object per --target (same order),',
                'and --function TARGET:SYMBOL[=REPLACEMENT].',
              ].join('\n'),
            ),
        (argv) => runPack(argv as unknown as HotpatchArgs, async (a, k) => packHotpatch(await hotpatchOptions(a, k)), (r, k) => hotpatchSummary(r as PackResult<HotpatchManifest>, k)),
      )
      .demandCommand(1, 'name what to pack: baseline or hotpatch'),
  );
}
