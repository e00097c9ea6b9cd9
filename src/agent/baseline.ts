/**
 * Baselines: installing one stages its files in a new system folder and makes a reboot
 * required — nothing running changes. The (simulated) reboot (reboot.ts) stops the services of
 * the running baseline, switches to the installed one, starts its services, and re-applies the
 * hotpatch level of the baseline it boots (as a real machine loads its installed hotpatches).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../errors.js';
import { ElfFile } from '../elf/index.js';
import { isExternalFile, type BaselineManifest, type ExternalFile } from '../package/index.js';
import type { MappedFile, SearchScope } from './discover.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { baselineDir, homeLayout, writeBaselinePointer } from './home.js';
import type { ServiceSpec } from './services.js';

const BASELINE_MANIFEST = '.baseline.json';

export interface OpenedBaseline {
  manifest: BaselineManifest;
  payload: Map<string, Buffer>;
}

/** Writes the baseline's files into system/<id>/ (via a staging folder renamed into place). */
export async function stageBaseline(home: string, pkg: OpenedBaseline): Promise<{ dir: string; alreadyThere: boolean }> {
  const m = pkg.manifest;
  const dir = baselineDir(home, m.baselineId);
  if (baselineStaged(home, m)) return { dir, alreadyThere: true };
  // Files the machine already has are not written, only checked: before anything is staged.
  checkInstalledFiles(m);
  const staging = `${dir}.staging-${process.pid}`;
  await fs.promises.rm(staging, { recursive: true, force: true });
  try {
    // Made here: a baseline of installed files only writes nothing but its manifest.
    await fs.promises.mkdir(staging, { recursive: true, mode: 0o755 });
    for (const f of m.files) {
      if (isExternalFile(f)) continue;
      const data = pkg.payload.get(f.payload);
      if (!data) throw new HpError('PACKAGE_TAMPERED', `payload ${f.payload} for ${f.path} is missing`);
      if (createHash('sha256').update(data).digest('hex') !== f.sha256) {
        throw new HpError('PACKAGE_TAMPERED', `payload ${f.payload} does not match the sha256 the manifest gives for ${f.path}`);
      }
      const target = path.join(staging, f.path);
      await fs.promises.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
      await writeFileAtomic(target, data, f.mode);
      await fs.promises.chmod(target, f.mode);
    }
    await writeFileAtomic(path.join(staging, BASELINE_MANIFEST), JSON.stringify(m, null, 2));
    await fs.promises.rename(staging, dir);
  } catch (e) {
    await fs.promises.rm(staging, { recursive: true, force: true });
    throw e;
  }
  return { dir, alreadyThere: false };
}

/**
 * Whether system/<baselineId>/ holds this package's baseline already (staging it again is a
 * no-op); refuses one staged from another package (it is never overwritten). Reads only.
 */
export function baselineStaged(home: string, m: BaselineManifest): boolean {
  const existing = installedBaselineManifest(home, m.baselineId);
  if (!existing) return false;
  if (existing.id === m.id) return true;
  throw new HpError('BASELINE_CONFLICT', `baseline ${m.baselineId} is already installed from package ${existing.id}; refusing to overwrite it with ${m.id}. Nothing was changed`);
}

/** Refuses a baseline whose installed files are not on this machine as described (reads only). */
export function checkInstalledFiles(m: BaselineManifest): void {
  for (const f of m.files) if (isExternalFile(f)) checkInstalledFile(m, f);
}

/**
 * An installed file the baseline describes must be there, with the SHA-256 and build-id the
 * baseline was packed with: otherwise the baseline does not describe this machine (refused).
 */
function checkInstalledFile(m: BaselineManifest, f: ExternalFile): void {
  let data: Buffer;
  try {
    data = fs.readFileSync(f.installedAt);
  } catch (e) {
    throw new HpError('BASELINE_FILE_MISSING', `baseline ${m.baselineId} describes ${f.path} as installed at ${f.installedAt}, which cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Nothing was changed`, { path: f.path, installedAt: f.installedAt });
  }
  const sha256 = createHash('sha256').update(data).digest('hex');
  let buildId: string | undefined;
  try {
    buildId = ElfFile.fromBuffer(data, f.installedAt).buildId;
  } catch {
    buildId = undefined;
  }
  if (sha256 !== f.sha256 || buildId !== f.buildId) {
    throw new HpError(
      'BASELINE_FILE_MISMATCH',
      `baseline ${m.baselineId} describes ${f.path} as ${f.installedAt} with build-id ${f.buildId} (SHA-256 ${f.sha256}), but the file installed there has build-id ${buildId ?? 'none'} (SHA-256 ${sha256}). Nothing was changed`,
      { path: f.path, installedAt: f.installedAt, expected: { buildId: f.buildId, sha256: f.sha256 }, actual: { buildId, sha256 } },
    );
  }
}

/**
 * Where a baseline's files are, for finding and patching the processes that run them: the ones
 * it ships under its system folder, the ones it describes where they are installed — matched in
 * a process by their build-id, whatever path the process mapped them from. Plain data (it goes
 * to worker threads).
 */
export interface BaselineFiles {
  baselineId: string;
  /** system/<baselineId>: the shipped files. */
  root: string;
  installed: { path: string; installedAt: string; buildId: string }[];
}

export function baselineFiles(home: string, baselineId: string, m = installedBaselineManifest(home, baselineId)): BaselineFiles {
  const installed = (m?.files ?? []).filter(isExternalFile).map((f) => ({ path: f.path, installedAt: f.installedAt, buildId: f.buildId }));
  return { baselineId, root: baselineDir(home, baselineId), installed };
}

/** Where the baseline file `rel` is on this machine (to read it, to start it). */
export function filePath(b: BaselineFiles, rel: string): string {
  return b.installed.find((f) => f.path === rel)?.installedAt ?? path.join(b.root, rel);
}

/**
 * Which file of the baseline (its path in the baseline) a process's mapped file is: one under its
 * system folder by path; an installed one by its installed path or by its build-id.
 */
export function baselinePathOf(b: BaselineFiles, f: Pick<MappedFile, 'path' | 'buildId'>): string | undefined {
  const prefix = b.root + path.sep;
  if (f.path.startsWith(prefix)) return f.path.slice(prefix.length);
  return b.installed.find((i) => i.installedAt === f.path || (f.buildId !== undefined && i.buildId === f.buildId))?.path;
}

/** What a search of the processes looks for, for some baselines (discover.ts). */
export function searchScope(root: string, bs: BaselineFiles[]): SearchScope {
  return { root, paths: new Set(bs.flatMap((b) => b.installed.map((i) => i.installedAt))), buildIds: new Set(bs.flatMap((b) => b.installed.map((i) => i.buildId))) };
}

/** The ids of the baselines installed (staged) in the home. */
export function installedBaselines(home: string): string[] {
  const system = homeLayout(home).system;
  let names: string[];
  try {
    names = fs.readdirSync(system);
  } catch {
    return [];
  }
  return names.filter((n) => !n.includes('.staging-') && fs.existsSync(path.join(system, n, BASELINE_MANIFEST))).sort();
}

export function installedBaselineManifest(home: string, baselineId: string): BaselineManifest | undefined {
  const marker = path.join(baselineDir(home, baselineId), BASELINE_MANIFEST);
  return fs.existsSync(marker) ? (JSON.parse(fs.readFileSync(marker, 'utf8')) as BaselineManifest) : undefined;
}

/** The services of an installed baseline, as they are started (absolute file, arguments). */
export function serviceSpecs(home: string, baselineId: string): ServiceSpec[] {
  const m = installedBaselineManifest(home, baselineId);
  if (!m) throw new HpError('BASELINE_NOT_INSTALLED', `baseline ${baselineId} is not installed`);
  const b = baselineFiles(home, baselineId, m);
  return m.services.map((svc) => ({
    name: svc.name,
    file: filePath(b, svc.file),
    args: svc.args,
    baselineId,
    readiness: svc.readiness,
    ...(svc.managedBy === 'external' ? { managedBy: 'external' as const, restart: svc.restart, buildId: m.files.find((f) => f.path === svc.file)?.buildId } : {}),
  }));
}

export { writeBaselinePointer };
