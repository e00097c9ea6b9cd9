/**
 * The package store: every package the agent installed, kept as the signed file it came as and
 * unpacked next to it (the engine maps patch objects from files, and revert needs the previous
 * level's manifest long after its file is gone from the user's hands).
 *
 *   packages/<id>.hpkg            the package as received (verified)
 *   packages/<id>/manifest.json   its manifest
 *   packages/<id>/payload/...     its payload files
 */
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../errors.js';
import type { Manifest } from '../package/index.js';
import { writeFileAtomic } from './atomic.js';
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

/** Keeps a verified package in the store; returns the folder its payload was unpacked into. */
export async function storePackage(home: string, pkg: OpenedPackageLike): Promise<string> {
  const dir = storedPackageDir(home, pkg.manifest.id);
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
