/**
 * The package store: every package the agent installed, kept as the signed file it came as and
 * unpacked next to it (the engine maps patch objects from files, and revert needs the previous
 * level's manifest long after its file is gone from the user's hands).
 *
 *   packages/<id>.hpkg            the package as received (verified)
 *   packages/<id>/manifest.json   its manifest
 *   packages/<id>/payload/...     its payload files
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../errors.js';
import type { Manifest } from '../package/index.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { checkSafeName, homeLayout } from './home.js';

export interface OpenedPackageLike {
  path: string;
  manifest: Manifest;
  manifestBytes: Buffer;
  payload: Map<string, Buffer>;
}

export function storedPackageDir(home: string, id: string): string {
  checkSafeName('package id', id);
  return path.join(homeLayout(home).packages, id);
}

/**
 * The store is write-once: a package id, once stored, always means the same content. The content
 * is the manifest's bytes, which pin every payload file by SHA-256 (the same manifest in another
 * container — gzipped, or signed again — is the same package). Says whether `pkg` is stored
 * already; refuses a package that reuses a stored id for other content, before anything is
 * written: replacing it would change what an applied level, a revert or the next reboot runs.
 */
export function checkStorable(home: string, pkg: OpenedPackageLike): { stored: boolean } {
  const id = pkg.manifest.id;
  const file = path.join(storedPackageDir(home, id), 'manifest.json');
  let stored: Buffer;
  try {
    stored = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { stored: false };
    throw e;
  }
  if (stored.equals(pkg.manifestBytes)) return { stored: true };
  const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  throw new HpError(
    'PACKAGE_ID_CONFLICT',
    `package ${id} is already in the store with other content (its manifest's SHA-256 is ${digest(stored)}, this one's ${digest(pkg.manifestBytes)}); a package id always means the same bytes, so the stored copy was kept. Give the new build a new id. Nothing was changed`,
    { packageId: id, storedManifestSha256: digest(stored), manifestSha256: digest(pkg.manifestBytes) },
  );
}

/**
 * Keeps a verified package in the store (see checkStorable: a package stored already is left as
 * it is); returns the folder its payload was unpacked into.
 */
export async function storePackage(home: string, pkg: OpenedPackageLike): Promise<string> {
  const dir = storedPackageDir(home, pkg.manifest.id);
  if (checkStorable(home, pkg).stored) {
    // The manifest is written after every payload file: only the received file may be missing
    // (an agent killed in between), and the same package completes it.
    if (!fs.existsSync(`${dir}.hpkg`)) await writeFileAtomic(`${dir}.hpkg`, await fs.promises.readFile(pkg.path));
    return dir;
  }
  await fs.promises.mkdir(path.join(dir, 'payload'), { recursive: true, mode: 0o700 });
  for (const [name, data] of pkg.payload) {
    const target = path.join(dir, name);
    if (!target.startsWith(dir + path.sep)) throw new HpError('PACKAGE_UNSAFE_ENTRY', `payload entry ${name} escapes the store`);
    await fs.promises.mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
    await writeFileAtomic(target, data);
  }
  await writeFileAtomic(path.join(dir, 'manifest.json'), pkg.manifestBytes);
  await writeFileAtomic(`${dir}.hpkg`, await fs.promises.readFile(pkg.path));
  return dir;
}

/** The manifest of a stored package, or undefined if the store does not have it. */
export function storedManifest(home: string, id: string): Manifest | undefined {
  const file = path.join(storedPackageDir(home, id), 'manifest.json');
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
}

/** Every stored manifest (for finding the previous hotpatch level of a baseline). */
export function storedManifests(home: string): Manifest[] {
  const root = homeLayout(home).packages;
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => storedManifest(home, d.name))
    .filter((m): m is Manifest => m !== undefined);
}

/** Absolute path of a stored payload file. */
export function storedPayloadPath(home: string, id: string, payloadPath: string): string {
  return path.join(storedPackageDir(home, id), payloadPath);
}
