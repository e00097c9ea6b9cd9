// A signed hotpatch refused before a byte is written (its patch object is not an ELF, names a
// function the process does not have, or uses thread-local storage) exits 3, "refused, nothing
// changed" — not 4, which says something was written: whether the package is refused as a whole
// or by the engine in every process. Each package is the
// genuine hp1 changed and signed again with the demo key, so only the engine can refuse it.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturePath, killTargetsAfterEach } from '../../src/harness/index.js';
import { MANIFEST_FILE, readArchive, sha256Hex, writePackageFile } from '../../src/package/archive.js';
import { packagesDir } from '../../src/demo/fixture-packages.js';
import { serializeManifest, signManifest, type HotpatchManifest } from '../../src/package/index.js';
import { agent, bootMachine, cleanUp, pkg, snapshot } from './agent-helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

const CORE_FIX = 'payload/greet-core_fix.so';

/** hp1 with its manifest and payload edited, the payload hashes recomputed, signed by the demo key. */
async function resigned(out: string, edit: (m: HotpatchManifest, files: Map<string, Buffer>) => void): Promise<string> {
  const { files } = await readArchive(fs.readFileSync(pkg('2026.10-hp1')));
  const manifest = JSON.parse(files.get(MANIFEST_FILE)!.toString('utf8')) as HotpatchManifest;
  edit(manifest, files);
  manifest.payload = manifest.payload.map((p) => ({ ...p, sha256: sha256Hex(files.get(p.path)!), size: files.get(p.path)!.length }));
  const manifestBytes = Buffer.from(serializeManifest(manifest));
  const signature = signManifest(manifestBytes, fs.readFileSync(path.join(packagesDir, 'demo.key'), 'utf8'));
  const payload = new Map([...files].filter(([p]) => p.startsWith('payload/')));
  await writePackageFile(out, { manifestBytes, signature, payload });
  return out;
}

describe('a hotpatch refused in every process before anything is written: exit 3', () => {
  const cases: [string, (m: HotpatchManifest, files: Map<string, Buffer>) => void, string][] = [
    ['a patch object that is not an ELF', (_m, files) => files.set(CORE_FIX, Buffer.from('#!/bin/sh\necho not an ELF\n'.repeat(20))), 'ELF'],
    ['a function the process does not have', (m) => (m.targets.forEach((t) => t.functions.forEach((f) => (f.symbol = `${f.symbol}_missing`)))), 'SYMBOL_NOT_FOUND'],
    [
      'a patch object with thread-local storage',
      (m, files) => {
        files.set(CORE_FIX, fs.readFileSync(fixturePath('patch_tls.so')));
        m.targets = m.targets.filter((t) => t.patchObject === CORE_FIX);
        m.targets[0].functions[0].replacement = 'compute_v2';
        m.payload = m.payload.filter((p) => p.path === CORE_FIX);
        for (const p of [...files.keys()]) if (p.startsWith('payload/') && p !== CORE_FIX) files.delete(p);
      },
      'PATCH_TLS',
    ],
  ];
  for (const [what, edit, code] of cases) {
    it(what, async () => {
      const m = await bootMachine();
      const file = await resigned(path.join(m.home, 'bad.hpkg'), edit);
      const before = await snapshot(m);
      const r = await agent(m.home, ['apply', file]);
      expect(r.code, r.stdout + r.stderr).toBe(3);
      if (r.json.error) {
        // Refused for the package as a whole, before any process was looked at.
        expect(r.json.error.unchanged).toBe(true);
        expect(code === 'ELF' ? r.json.error.message : r.json.error.code).toMatch(code);
      } else {
        // Refused by the engine in each process, before a byte was written.
        expect(r.json.status).toBe('Failed');
        expect(r.json.processes).toHaveLength(1);
        const [p] = r.json.processes;
        expect(p.outcome).toBe('Failed');
        expect(code === 'ELF' ? p.reason : p.errorCode).toMatch(code);
        expect(p.unchanged).toBe(true);
      }
      const after = await snapshot(m);
      expect(after.entries).toEqual(before.entries);
      expect(after.mappings).toEqual(before.mappings);
      expect(after.answers).toEqual(before.answers);
    });
  }
});
