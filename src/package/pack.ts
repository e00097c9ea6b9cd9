/**
 * Building packages from an author's inputs. The author names files, symbols and replacements;
 * everything a verifier will compare against — sizes, SHA-256s, build-ids, the original bytes of
 * each patched function — is read from the files themselves, never typed in by hand.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { ElfFile, inlinedCopyWarnings, notAFunction, type InlineWarning } from '../elf/index.js';
import { HpError } from '../errors.js';
import { layoutPatch } from '../link/index.js';
import {
  controlTransfers,
  detectPatchableEntry,
  ENDBR64_SIZE,
  hasEndbr64,
  HOTPATCH_ENTRY_TABLE,
  HOTPATCH_PADDING_SIZE,
  HOTPATCH_PROBE_SIZE,
  REL32_JUMP_SIZE,
  refuseLandingsInside,
  type PatchableEntry,
} from '../x64/index.js';
import { PAYLOAD_DIR, sha256Hex, writePackageFile } from './archive.js';
import { signManifest } from './keys.js';
import {
  MANIFEST_SCHEMA_VERSION,
  MAX_FUNCTION_SIZE,
  serializeManifest,
  validateManifest,
  type BaselineManifest,
  type Classification,
  type Consistency,
  type PatchMode,
  type HotpatchFunction,
  type HotpatchManifest,
  type HotpatchTarget,
  type Manifest,
  type PayloadEntry,
  type ServiceManager,
  type Readiness,
  type HealthCheck,
} from './manifest.js';

interface CommonPackOptions {
  /** The package file to write (atomically). */
  out: string;
  id: string;
  kb: string;
  title: string;
  releaseDate: string;
  classification: Classification;
  privateKeyPem: string;
  /** gzip the tar (default: plain tar). Either way the output is byte-for-byte reproducible. */
  gzip?: boolean;
}

export interface PackBaselineOptions extends CommonPackOptions {
  planned: boolean;
  /** A cumulative update beside this hotpatch (its fixes as whole files), not a baseline hotpatches build on. */
  equivalentHotpatch?: string;
  /** Default: id. */
  baselineId?: string;
  /**
   * Shipped files (`source`: the file to pack) and files already installed on the machine
   * (`installedAt`: an absolute path, read for its SHA-256 and build-id, not shipped).
   */
  files: ({ path: string; source: string; mode?: number } | { path: string; installedAt: string })[];
  services: PackService[];
}

export interface PackHotpatchOptions extends CommonPackOptions {
  baselineId: string;
  sequence: number;
  /** Default: 'entry'. */
  consistency?: Consistency;
  /** Absent: the agent decides ('auto'). */
  patchMode?: PatchMode;
  targets: {
    /** Install path in the baseline, e.g. 'bin/service'. */
    path: string;
    /** The baseline's file on disk: its build-id and original function bytes go in the manifest. */
    baselineFile: string;
    /** The patch: a position-independent shared object. */
    patchObject: string;
    functions: { symbol: string; replacement?: string }[];
  }[];
}

/** A service as `pack baseline` takes it (from options or a manifest-in file). */
export interface PackService {
  name: string;
  file: string;
  args?: string[];
  managedBy?: ServiceManager;
  restart?: string[];
  readiness?: Readiness;
  healthCheck?: HealthCheck;
}

/** The service as the manifest holds it: arguments always present, optional fields only when set. */
export function serviceEntry(s: PackService): PackService & { args: string[] } {
  return {
    name: s.name,
    file: s.file,
    args: s.args ?? [],
    ...(s.managedBy ? { managedBy: s.managedBy } : {}),
    ...(s.restart ? { restart: s.restart } : {}),
    ...(s.readiness ? { readiness: s.readiness } : {}),
    ...(s.healthCheck ? { healthCheck: s.healthCheck } : {}),
  };
}

export interface PackResult<M extends Manifest = Manifest> {
  path: string;
  manifest: M;
  /** SHA-256 and size of the package file written. */
  sha256: string;
  size: number;
  /** Hotpatches: functions whose inlined copies in their callers the patch would not reach. */
  warnings?: InlineWarning[];
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

async function readSource(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new HpError('PACK_INPUT_UNREADABLE', `cannot read ${what} ${file}: ${err.message}`, { file, errno: err.code });
  }
}

async function finish<M extends Manifest>(opts: CommonPackOptions, draft: M, payload: Map<string, Buffer>): Promise<PackResult<M>> {
  const manifest = validateManifest(draft, `the manifest for ${opts.out}`) as M;
  const manifestBytes = serializeManifest(manifest);
  const signature = signManifest(manifestBytes, opts.privateKeyPem);
  const written = await writePackageFile(opts.out, { manifestBytes, signature, payload }, { gzip: opts.gzip });
  return { path: opts.out, manifest, ...written };
}

function payloadEntry(path: string, data: Buffer): PayloadEntry {
  return { path, sha256: sha256Hex(data), size: data.length };
}

export async function packBaseline(opts: PackBaselineOptions): Promise<PackResult<BaselineManifest>> {
  const payload = new Map<string, Buffer>();
  const entries: PayloadEntry[] = [];
  const files: BaselineManifest['files'] = [];
  for (const f of opts.files) {
    if ('installedAt' in f) {
      // Described, not shipped: the agent checks the installed file against these at install.
      const data = await readSource(f.installedAt, `the installed file of ${f.path}`);
      const buildId = data.subarray(0, 4).equals(ELF_MAGIC) ? ElfFile.fromBuffer(data, f.installedAt).buildId : undefined;
      if (!buildId) {
        throw new HpError('BUILD_ID_MISSING', `cannot pack ${f.path}: the installed file ${f.installedAt} has no GNU build-id, so the agent could not tell which processes run it`, { file: f.installedAt });
      }
      files.push({ path: f.path, external: true, installedAt: f.installedAt, sha256: sha256Hex(data), buildId });
      continue;
    }
    const data = await readSource(f.source, `the source of ${f.path}`);
    const mode = f.mode ?? (await stat(f.source)).mode & 0o777;
    // Only ELF objects carry a build-id; a baseline may also ship plain files (configuration).
    const buildId = data.subarray(0, 4).equals(ELF_MAGIC) ? ElfFile.fromBuffer(data, f.source).buildId : undefined;
    const payloadPath = `${PAYLOAD_DIR}/${f.path}`;
    const entry = payloadEntry(payloadPath, data);
    payload.set(payloadPath, data);
    entries.push(entry);
    files.push({ path: f.path, payload: payloadPath, sha256: entry.sha256, ...(buildId ? { buildId } : {}), mode });
  }
  const draft: BaselineManifest = {
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    id: opts.id,
    kb: opts.kb,
    kind: 'baseline',
    title: opts.title,
    releaseDate: opts.releaseDate,
    classification: opts.classification,
    rebootBehavior: 'AlwaysRequiresReboot',
    baselineId: opts.baselineId ?? opts.id,
    planned: opts.planned,
    ...(opts.equivalentHotpatch ? { equivalentHotpatch: opts.equivalentHotpatch } : {}),
    payload: entries,
    files,
    services: opts.services.map(serviceEntry),
  };
  return finish(opts, draft, payload);
}

/** The bytes a function's entry must offer: a rel32 jump, after an endbr64 the engine keeps. */
function minimumSize(entry: Buffer): number {
  return REL32_JUMP_SIZE + (hasEndbr64(entry) ? ENDBR64_SIZE : 0);
}

/** R_X86_64_RELATIVE: the slot holds load bias + addend. */
const R_X86_64_RELATIVE = 8;

/**
 * The link-time addresses (of the padding) the object lists as hot-patchable entries, read from
 * its file: the engine reads the relocated table from the process, pack has only the file.
 */
function listedPatchableEntries(elf: ElfFile): Set<number> {
  const out = new Set<number>();
  const sec = elf.section(HOTPATCH_ENTRY_TABLE);
  if (!sec || sec.addr === 0 || sec.size < 8) return out;
  const relative = new Map(elf.dynamicRelocations.filter((r) => r.type === R_X86_64_RELATIVE).map((r) => [r.offset, r.addend]));
  const words = elf.readVirtual(sec.addr, sec.size - (sec.size % 8));
  for (let i = 0; i < words.length; i += 8) out.add(relative.get(sec.addr + i) ?? Number(words.readBigUInt64LE(i)));
  return out;
}

const hotEntries = new WeakMap<ElfFile, Set<number>>();

/**
 * Refuses now what the engine would refuse at apply (BRANCH_INTO_JUMP): the function's own code
 * landing inside the bytes it will overwrite — the 2-byte NOP of a hot-patchable entry, else the
 * 5-byte rel32 jump after an optional endbr64 (the engine's usual jump; a patch mapped out of
 * reach needs 14 bytes, and the engine checks that case when it happens).
 */
function refuseBranchesIntoJump(elf: ElfFile, name: string, address: number, code: Buffer): void {
  let listed = hotEntries.get(elf);
  if (!listed) hotEntries.set(elf, (listed = listedPatchableEntries(elf)));
  let hot: PatchableEntry | undefined;
  if (listed.has(address - HOTPATCH_PADDING_SIZE)) {
    try {
      hot = detectPatchableEntry(address, elf.readVirtual(address - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE));
    } catch {
      hot = undefined; // the padding is not in the file: an ordinary entry, as for the engine
    }
  }
  const site = hot
    ? { start: hot.siteAddress - address, length: hot.nop.length, form: 'padding' as const }
    : { start: hasEndbr64(code) ? ENDBR64_SIZE : 0, length: REL32_JUMP_SIZE, form: 'entry' as const };
  refuseLandingsInside({ name, address, verb: 'pack', ...site }, code, controlTransfers(code));
}

/** Where a function of a hotpatch comes from, for messages: the target's install path and the two files' names. */
export interface FunctionSource {
  /** What refuses: "cannot pack format_greeting", "KB5046101 (2026.10-hp1) cannot patch format_greeting". */
  refusal: string;
  target: string;
  baselineFile: string;
  patchObject: string;
}

/**
 * A hotpatch function as the files show it: the symbol must be a function (not a variable, not
 * an indirect function's resolver) long enough for the jump, its size and the SHA-256 of its
 * bytes read from the baseline file, and the replacement a function of the patch object. Packing
 * writes this into the manifest; the agent computes it again from the installed file and refuses
 * a manifest that says otherwise.
 */
export function describeHotpatchFunction(elf: ElfFile, patch: ElfFile, f: { symbol: string; replacement?: string }, from: FunctionSource): HotpatchFunction {
  const { refusal, target } = from;
  const sym = elf.findSymbol(f.symbol);
  if (!sym) {
    throw new HpError('SYMBOL_NOT_FOUND', `${refusal}: the baseline file ${basename(from.baselineFile)} (${target}) has no symbol ${f.symbol}`, { target, symbol: f.symbol });
  }
  const notFunction = notAFunction(f.symbol, sym.type, target);
  if (notFunction) throw new HpError(notFunction.code, `${refusal}: ${notFunction.message}`, { target, ...notFunction.details });
  const original = elf.readVirtual(sym.value, sym.size);
  const min = minimumSize(original);
  if (sym.size < min) {
    throw new HpError(
      'FUNCTION_TOO_SHORT',
      sym.size === 0
        ? `${refusal}: ${target} gives it no size (an assembly symbol without .size?), so its bytes cannot be checked`
        : `${refusal}: it is ${sym.size} bytes long in ${target}, shorter than the ${min}-byte jump that would redirect it`,
      { target, symbol: f.symbol, size: sym.size, minimum: min },
    );
  }
  if (sym.size > MAX_FUNCTION_SIZE) {
    throw new HpError('FUNCTION_TOO_LONG', `${refusal}: it is ${sym.size} bytes long in ${target}, more than the ${MAX_FUNCTION_SIZE} bytes a manifest may describe`, { target, symbol: f.symbol, size: sym.size });
  }
  refuseBranchesIntoJump(elf, f.symbol, sym.value, original);
  const replacement = f.replacement ?? f.symbol;
  const rep = patch.findSymbol(replacement);
  if (!rep) {
    throw new HpError('SYMBOL_NOT_FOUND', `${refusal}: the patch object ${basename(from.patchObject)} does not define the replacement ${replacement}`, {
      target,
      symbol: f.symbol,
      replacement,
    });
  }
  const repNotFunction = notAFunction(replacement, rep.type, basename(from.patchObject), 'replacement');
  if (repNotFunction) throw new HpError(repNotFunction.code, `${refusal}: ${repNotFunction.message}`, { target, replacement, ...repNotFunction.details });
  return { symbol: f.symbol, size: sym.size, sha256: sha256Hex(original), replacement };
}

export async function packHotpatch(opts: PackHotpatchOptions): Promise<PackResult<HotpatchManifest>> {
  const payload = new Map<string, Buffer>();
  const entries: PayloadEntry[] = [];
  const targets: HotpatchTarget[] = [];
  // One payload entry per distinct patch object; a name clash between different files gets a folder.
  const byHash = new Map<string, string>();
  const warnings: InlineWarning[] = [];
  for (const [i, t] of opts.targets.entries()) {
    const elf = ElfFile.fromBuffer(await readSource(t.baselineFile, `the baseline file of ${t.path}`), t.baselineFile);
    if (!elf.buildId) {
      throw new HpError('BUILD_ID_MISSING', `cannot pack target ${t.path}: ${basename(t.baselineFile)} has no GNU build-id, so the agent could not tell which build a process runs (link it with -Wl,--build-id)`, {
        target: t.path,
      });
    }
    const patchData = await readSource(t.patchObject, `the patch object of ${t.path}`);
    const patch = ElfFile.fromBuffer(patchData, t.patchObject);
    // Refuse now what the engine would refuse later (not PIC, TLS, constructors, ...).
    layoutPatch(patch);
    const hash = sha256Hex(patchData);
    let payloadPath = byHash.get(hash);
    if (!payloadPath) {
      const name = basename(t.patchObject).replace(/[^A-Za-z0-9._+@-]/g, '_').replace(/^\.+/, '_');
      payloadPath = `${PAYLOAD_DIR}/${name}`;
      if (payload.has(payloadPath)) payloadPath = `${PAYLOAD_DIR}/${i}/${name}`;
      byHash.set(hash, payloadPath);
      payload.set(payloadPath, patchData);
      entries.push(payloadEntry(payloadPath, patchData));
    }
    targets.push({
      path: t.path,
      buildId: elf.buildId,
      patchObject: payloadPath,
      ...(patch.buildId ? { patchBuildId: patch.buildId } : {}),
      functions: t.functions.map((f) => describeHotpatchFunction(elf, patch, f, { refusal: `cannot pack ${f.symbol}`, target: t.path, baselineFile: t.baselineFile, patchObject: t.patchObject })),
    });
    warnings.push(...inlinedCopyWarnings(elf, t.path, t.functions.map((f) => f.symbol)));
  }
  const draft: HotpatchManifest = {
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    id: opts.id,
    kb: opts.kb,
    kind: 'hotpatch',
    title: opts.title,
    releaseDate: opts.releaseDate,
    classification: opts.classification,
    rebootBehavior: 'NeverReboots',
    baselineId: opts.baselineId,
    sequence: opts.sequence,
    consistency: opts.consistency ?? 'entry',
    ...(opts.patchMode ? { patchMode: opts.patchMode } : {}),
    payload: entries,
    targets,
  };
  return { ...(await finish(opts, draft, payload)), warnings };
}
