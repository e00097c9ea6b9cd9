/**
 * Turns the bundled greeter product (fixtures/baselines/packages.json and the binaries the
 * fixture build made) into signed packages with `hp-agent pack`'s own code, signed by a demo key
 * made where the packages go, the first time. Run by `npm run build:fixtures` for the tests:
 *
 *   fixtures/bin/packages/demo.key, demo.pub      the demo signing key (never a real one)
 *   fixtures/bin/packages/<package id>.hpkg       one signed package per baseline and hotpatch
 *
 * `hp-agent demo` makes its own set in its temporary home instead: the npm package ships neither
 * a private key nor packages signed by one (package.json "files").
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPair, packBaseline, packHotpatch } from '../package/index.js';
import type { Classification, PackService } from '../package/index.js';

export const fixturesRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures');
export const packagesDir = path.join(fixturesRoot, 'bin/packages');

export interface ProductSpec {
  baselines: {
    id: string;
    dir: string;
    kb: string;
    title: string;
    releaseDate: string;
    classification: Classification;
    planned: boolean;
    /** A cumulative update: the hotpatch whose fixes it carries as whole files. */
    equivalentHotpatch?: string;
    files: { path: string; mode: number }[];
    services: PackService[];
  }[];
  hotpatches: {
    id: string;
    dir: string;
    kb: string;
    baselineId: string;
    sequence: number;
    title: string;
    releaseDate: string;
    classification: Classification;
    targets: { path: string; patchObject: string; functions: { symbol: string; replacement: string }[] }[];
  }[];
  expected: Record<string, Record<string, string>>;
}

export function productSpec(): ProductSpec {
  return JSON.parse(fs.readFileSync(path.join(fixturesRoot, 'baselines/packages.json'), 'utf8')) as ProductSpec;
}

export function fixturePackage(id: string, dir = packagesDir): string {
  return path.join(dir, `${id}.hpkg`);
}

export const demoPublicKey = (dir = packagesDir) => path.join(dir, 'demo.pub');

function newer(out: string, inputs: string[]): boolean {
  if (!fs.existsSync(out)) return false;
  const t = fs.statSync(out).mtimeMs;
  return inputs.every((i) => fs.statSync(i).mtimeMs <= t);
}

/** The demo signing key in `dir`, made the first time: its private key file. */
export function demoKey(dir = packagesDir): string {
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, 'demo.key');
  if (!fs.existsSync(keyFile)) {
    const pair = generateKeyPair();
    fs.writeFileSync(demoPublicKey(dir), pair.publicKeyPem);
    fs.writeFileSync(keyFile, pair.privateKeyPem, { mode: 0o600 });
  }
  return keyFile;
}

/**
 * Packs a product's baselines and hotpatches (built under `bin`, one folder per level) into
 * `dir`, signed with `keyFile`; a package newer than its spec, key and inputs is kept.
 */
export async function packProduct(spec: Pick<ProductSpec, 'baselines' | 'hotpatches'>, o: { bin: string; dir: string; specFile: string; keyFile: string }): Promise<string[]> {
  fs.mkdirSync(o.dir, { recursive: true });
  const privateKeyPem = fs.readFileSync(o.keyFile, 'utf8');
  const built: string[] = [];
  for (const b of spec.baselines) {
    const out = fixturePackage(b.id, o.dir);
    const files = b.files.map((f) => ({ path: f.path, source: path.join(o.bin, b.dir, f.path), mode: f.mode }));
    if (newer(out, [o.specFile, o.keyFile, ...files.map((f) => f.source)])) continue;
    await packBaseline({ out, id: b.id, kb: b.kb, title: b.title, releaseDate: b.releaseDate, classification: b.classification, planned: b.planned, equivalentHotpatch: b.equivalentHotpatch, files, services: b.services, privateKeyPem });
    built.push(out);
  }
  for (const h of spec.hotpatches) {
    const out = fixturePackage(h.id, o.dir);
    const base = spec.baselines.find((b) => b.id === h.baselineId)!;
    const targets = h.targets.map((t) => ({
      path: t.path,
      baselineFile: path.join(o.bin, base.dir, t.path),
      patchObject: path.join(o.bin, h.dir, t.patchObject),
      functions: t.functions,
    }));
    if (newer(out, [o.specFile, o.keyFile, ...targets.flatMap((t) => [t.baselineFile, t.patchObject])])) continue;
    await packHotpatch({ out, id: h.id, kb: h.kb, title: h.title, releaseDate: h.releaseDate, classification: h.classification, baselineId: h.baselineId, sequence: h.sequence, targets, privateKeyPem });
    built.push(out);
  }
  return built;
}

/** Packs what is missing or out of date into `dir` (default fixtures/bin/packages). */
export async function buildFixturePackages(dir = packagesDir): Promise<string[]> {
  return packProduct(productSpec(), { bin: path.join(fixturesRoot, 'bin/baselines'), dir, specFile: path.join(fixturesRoot, 'baselines/packages.json'), keyFile: demoKey(dir) });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildFixturePackages();
}
