/**
 * The year of releases (fixtures/year/README.md): the greeter product released for a whole year
 * as the calendar has it — planned baselines, monthly hotpatches, an unplanned baseline, a
 * cumulative update beside each hotpatch, a non-security update and an out-of-band hotpatch —
 * real builds (each baseline with its own build-ids) packed and signed with `hp-agent pack`'s own
 * code by the demo key (fixture-packages.ts). Run by `npm run build:fixtures`:
 *
 *   fixtures/bin/year/<id>/…                      the builds (fixtures/Makefile's year rules)
 *   fixtures/bin/packages/year/<package id>.hpkg  the year's packages: a feed's folder
 *   fixtures/bin/packages/year-extra/…            the broken hotpatch (health checks fail), kept out of the feed
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoKey, fixturesRoot, packagesDir, packProduct, type ProductSpec } from './fixture-packages.js';

export const yearSpecFile = path.join(fixturesRoot, 'year/releases.json');
export const yearPackagesDir = path.join(packagesDir, 'year');
/** Packages of the year that no feed of the year carries (the broken hotpatch). */
export const yearExtraDir = path.join(packagesDir, 'year-extra');
const yearBin = path.join(fixturesRoot, 'bin/year');

export interface YearSpec extends Pick<ProductSpec, 'baselines' | 'hotpatches'> {
  year: number;
  /** A hotpatch of the first baseline whose greeting is wrong: health checks fail after it. */
  broken: ProductSpec['hotpatches'][number];
}

export function yearSpec(): YearSpec {
  return JSON.parse(fs.readFileSync(yearSpecFile, 'utf8')) as YearSpec;
}

/** The Makefile targets (under fixtures/) the year's packages are made from. */
function buildTargets(spec: YearSpec): string[] {
  const rel = (dir: string, file: string) => path.posix.join('bin/year', dir, file);
  return [
    ...spec.baselines.flatMap((b) => b.files.map((f) => rel(b.dir, f.path))),
    ...[...spec.hotpatches, spec.broken].flatMap((h) => h.targets.map((t) => rel(h.dir, t.patchObject))),
  ];
}

/** Builds what is missing (make), then packs what is missing or out of date. */
export async function buildYearPackages(): Promise<string[]> {
  const spec = yearSpec();
  execFileSync('make', ['-s', '-j2', '-C', fixturesRoot, ...buildTargets(spec)], { stdio: 'inherit' });
  const keyFile = demoKey();
  const common = { bin: yearBin, specFile: yearSpecFile, keyFile };
  const built = await packProduct(spec, { ...common, dir: yearPackagesDir });
  built.push(...(await packProduct({ baselines: spec.baselines.filter((b) => b.id === spec.broken.baselineId), hotpatches: [spec.broken] }, { ...common, dir: yearExtraDir })));
  return built;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildYearPackages();
}
