// The year of releases the fixtures carry (fixtures/year/) keeps the calendar where it means to,
// and each of its baselines is a build of its own.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readArchive } from '../../src/package/archive.js';
import { parseManifest, type BaselineManifest } from '../../src/package/manifest.js';
import { yearPackagesDir, yearSpec } from '../../src/demo/year-packages.js';
import { checkCalendar, packageRole } from '../../src/update/calendar.js';

const spec = yearSpec();

describe('the year of releases', () => {
  it('fits the calendar except for the out-of-band hotpatch; the non-security update keeps none', () => {
    const packages = [...spec.baselines.map((b) => ({ ...b, kind: 'baseline' as const })), ...spec.hotpatches.map((h) => ({ ...h, kind: 'hotpatch' as const }))];
    const c = checkCalendar(spec.year, packages);
    expect(c.problems.map((p) => p.packageId)).toEqual(['2027.07-hp2']);
    expect(c.months.map((m) => m.kind)).toEqual(['baseline', 'hotpatch', 'hotpatch', 'baseline', 'hotpatch', 'unplanned-baseline', 'baseline', 'hotpatch', 'hotpatch', 'baseline', 'hotpatch', 'hotpatch']);
    // A cumulative update beside every security hotpatch of a calendar month, naming it.
    for (const m of c.months.filter((x) => x.kind === 'hotpatch')) {
      const hot = m.packages.filter((p) => p.role === 'hotpatch' && p.releaseDate === m.releaseDate);
      const cu = m.packages.filter((p) => p.role === 'cumulative-update');
      expect(hot, m.name).toHaveLength(1);
      expect(cu.map((p) => spec.baselines.find((b) => b.id === p.packageId)!.equivalentHotpatch), m.name).toEqual([hot[0].packageId]);
    }
    expect(packages.filter((p) => packageRole(p) === 'non-security').map((p) => p.id)).toEqual(['2027.01-hp3']);
  });

  it('gives every baseline and cumulative update build-ids of its own, in signed packages', async () => {
    const seen = new Map<string, string>();
    for (const b of spec.baselines) {
      const archive = await readArchive(fs.readFileSync(path.join(yearPackagesDir, `${b.id}.hpkg`)));
      const m = parseManifest(archive.files.get('manifest.json')!) as BaselineManifest;
      expect(archive.files.has('manifest.sig')).toBe(true);
      expect(m.services.map((s) => s.healthCheck?.type)).toEqual(['request', 'request']);
      for (const f of m.files) {
        expect(f.buildId, `${b.id} ${f.path}`).toMatch(/^[0-9a-f]{40}$/);
        expect(seen.get(f.buildId!), `${b.id} ${f.path}`).toBeUndefined();
        seen.set(f.buildId!, `${b.id} ${f.path}`);
      }
    }
    expect(seen.size).toBe(2 * spec.baselines.length);
  });
});
