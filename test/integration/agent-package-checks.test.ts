// What a package may ask for is checked against the code it would change, and the store keeps
// what it stored. Each test boots baseline 2026.10 in its own HP_AGENT_HOME (greetd running as a
// real daemon) and gives the real command line a package the signature accepts but that says
// something untrue (re-signed with the trusted demo key), or reuses a stored id; then it reads
// the daemon's memory back to prove nothing was written.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixturesRoot } from '../../src/demo/fixture-packages.js';
import { native } from '../../src/native.js';
import { buildArchive, readArchive, sha256Hex } from '../../src/package/archive.js';
import { packBaseline } from '../../src/package/index.js';
import { findObject, symbolAddress } from '../../src/proc/index.js';
import { killTargetsAfterEach } from '../../src/harness/index.js';
import {
  agent,
  answers,
  BASELINE,
  bootMachine,
  cleanUp,
  entries,
  expected,
  expectRefused,
  expectUnchanged,
  history,
  objectPath,
  pkg,
  resignedPackage,
  servicePid,
  snapshot,
  spec,
} from './agent-helpers.js';
import { entryBytes, patchMappings } from './helpers.js';

killTargetsAfterEach(afterEach);
afterEach(cleanUp);

const HP1 = pkg('2026.10-hp1');
const HP2 = pkg('2026.10-hp2');

/** The manifest's function entry for `symbol` (in any target). */
const fn = (manifest: any, symbol: string) => manifest.targets.flatMap((t: any) => t.functions).find((f: any) => f.symbol === symbol);

/** Bytes, inode and mtime of every file under the store entry of `id` (and its .hpkg): what "kept" means. */
function storeCopy(home: string, id: string): Record<string, { bytes: string; ino: number; mtimeMs: number }> {
  const root = path.join(home, 'packages');
  const out: Record<string, { bytes: string; ino: number; mtimeMs: number }> = {};
  const add = (file: string) => {
    const st = fs.statSync(file);
    out[path.relative(root, file)] = { bytes: sha256Hex(fs.readFileSync(file)), ino: st.ino, mtimeMs: st.mtimeMs };
  };
  add(path.join(root, `${id}.hpkg`));
  const walk = (dir: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) walk(p);
      else add(p);
    }
  };
  walk(path.join(root, id));
  return out;
}

describe('what a hotpatch asks for is checked against the code', () => {
  it('a global variable named as a function: SYMBOL_NOT_FUNCTION, the variable and every function unchanged in memory', async () => {
    const m = await bootMachine();
    const greetd = objectPath(m.home, 'bin/greetd');
    // greetd's call counter of `sum` (unsigned long, 8 bytes: room for a rel32 jump), named next
    // to a real function of the same target.
    const bad = await resignedPackage(HP1, path.join(m.home, 'global.hpkg'), (manifest) => {
      const t = manifest.targets.find((x: any) => x.path === 'bin/greetd');
      t.functions.push({ symbol: 'sum_count', size: 8, sha256: sha256Hex(Buffer.alloc(8)), replacement: 'banner_v2' });
    });
    const before = await snapshot(m);
    // (Read after the snapshot: its `sum` requests count.)
    const counter = await entryBytes(before.pid, 'sum_count', 8, greetd);
    expect(counter.readBigUInt64LE(0)).toBeGreaterThan(0n);

    const r = await agent(m.home, ['apply', bad]);
    expectRefused(r, 'SYMBOL_NOT_FUNCTION');
    expect(r.json.error.message).toMatch(/sum_count in bin\/greetd is an OBJECT symbol \(a variable\), not a function/);
    expect((await entryBytes(before.pid, 'sum_count', 8, greetd)).equals(counter)).toBe(true);
    await expectUnchanged(m, before);
    expect((await history(m.home)).slice(-1)).toEqual([['refuse', 'Refused', '2026.10-hp1', 'SYMBOL_NOT_FUNCTION']]);
  });

  it('a wrong SHA-256 of the original bytes: ORIGINAL_BYTES_MISMATCH, nothing written', async () => {
    const m = await bootMachine();
    let claimed = '';
    const bad = await resignedPackage(HP1, path.join(m.home, 'hash.hpkg'), (manifest) => {
      const f = fn(manifest, 'format_greeting');
      claimed = f.sha256 = (f.sha256[0] === '0' ? '1' : '0') + f.sha256.slice(1);
    });
    const before = await snapshot(m);
    const r = await agent(m.home, ['apply', bad]);
    expectRefused(r, 'ORIGINAL_BYTES_MISMATCH');
    expect(r.json.error.message).toContain('format_greeting');
    expect(r.json.error.expected).toBe(claimed);
    await expectUnchanged(m, before);
    expect(before.answers).toEqual(expected.b1);
  });

  it('an absurd size is refused by validation, a size other than the size of the symbol by the check', async () => {
    const m = await bootMachine();
    const before = await snapshot(m);
    const huge = await resignedPackage(HP1, path.join(m.home, 'huge.hpkg'), (manifest) => (fn(manifest, 'format_greeting').size = 2 ** 30));
    const r1 = await agent(m.home, ['apply', huge]);
    expectRefused(r1, 'PACKAGE_MANIFEST_INVALID');
    expect(r1.json.error.message).toMatch(/targets\[\d\]\.functions\[0\]\.size: expected a function size of at most/);
    await expectUnchanged(m, before);

    let real = 0;
    const offByOne = await resignedPackage(HP1, path.join(m.home, 'size.hpkg'), (manifest) => {
      const f = fn(manifest, 'format_greeting');
      real = f.size;
      f.size += 1;
    });
    const r2 = await agent(m.home, ['apply', offByOne]);
    expectRefused(r2, 'FUNCTION_SIZE_MISMATCH');
    expect(r2.json.error).toMatchObject({ function: 'format_greeting', expected: real + 1, actual: real });
    await expectUnchanged(m, before);
  });

  it('a process whose function differs from the installed file is refused before its jump is written (ORIGINAL_BYTES_MISMATCH)', async () => {
    const m = await bootMachine();
    const pid = servicePid(m);
    const greetd = objectPath(m.home, 'bin/greetd');
    // One byte well past add_numbers's entry (the entry still looks original) changed in the
    // daemon's memory; nothing calls add_numbers (`sum`) until it is put back.
    const sym = symbolAddress(findObject(pid, greetd), 'add_numbers');
    expect(sym.size).toBeGreaterThan(40);
    const at = sym.address + 40;
    const [orig] = await native.readMemory(pid, at, 1);
    const entriesBefore = await entries(m.home, pid);
    await native.writeMemory(pid, at, Buffer.from([orig ^ 0xff]));
    let r;
    try {
      r = await agent(m.home, ['apply', HP2]);
    } finally {
      await native.writeMemory(pid, at, Buffer.from([orig]));
    }
    expect(r.code, r.stdout).not.toBe(0);
    expect(r.json.processes.map((p: any) => [p.pid, p.outcome, p.errorCode])).toEqual([[pid, 'Failed', 'ORIGINAL_BYTES_MISMATCH']]);
    expect(r.json.processes[0].reason).toMatch(/add_numbers in process \d+ .* hash to [0-9a-f]{64}, not to the [0-9a-f]{64} the patch was built for/);
    // Not one function of the process changed, and no patch was mapped.
    expect(await entries(m.home, pid)).toEqual(entriesBefore);
    expect(patchMappings(pid)).toEqual([]);
    expect(await answers(m.sock)).toEqual(expected.b1);
  });
});

describe('the package store is write-once', () => {
  it('a baseline re-packed with another binary under the same id: PACKAGE_ID_CONFLICT, the stored copy kept', async () => {
    const m = await bootMachine();
    const b = spec.baselines.find((x) => x.id === BASELINE)!;
    const other = spec.baselines.find((x) => x.id !== BASELINE)!;
    const repacked = path.join(m.home, 'repacked.hpkg');
    await packBaseline({
      out: repacked,
      id: b.id,
      kb: b.kb,
      title: b.title,
      releaseDate: b.releaseDate,
      classification: b.classification,
      planned: b.planned,
      files: b.files.map((f) => ({ path: f.path, source: path.join(fixturesRoot, 'bin/baselines', other.dir, f.path), mode: f.mode })),
      services: b.services,
      privateKeyPem: fs.readFileSync(path.join(fixturesRoot, 'bin/packages/demo.key'), 'utf8'),
    });
    const stored = storeCopy(m.home, BASELINE);
    const installed = fs.readFileSync(objectPath(m.home, 'bin/greetd'));
    const before = await snapshot(m);

    const r = await agent(m.home, ['apply', repacked]);
    expectRefused(r, 'PACKAGE_ID_CONFLICT');
    expect(r.json.error.message).toMatch(/package 2026\.10 is already in the store with other content/);
    expect(r.json.error.message).toMatch(/the stored copy was kept/);
    expect(storeCopy(m.home, BASELINE)).toEqual(stored);
    expect(fs.readFileSync(path.join(m.home, 'packages', `${BASELINE}.hpkg`)).equals(fs.readFileSync(pkg(BASELINE)))).toBe(true);
    expect(fs.readFileSync(objectPath(m.home, 'bin/greetd')).equals(installed)).toBe(true);
    await expectUnchanged(m, before);
    expect((await history(m.home)).slice(-1)).toEqual([['refuse', 'Refused', BASELINE, 'PACKAGE_ID_CONFLICT']]);
  });

  it('a hotpatch with a stored id and another payload: PACKAGE_ID_CONFLICT, the level and its stored copy kept', async () => {
    const m = await bootMachine();
    expect((await agent(m.home, ['apply', HP1])).code).toBe(0);
    const stored = storeCopy(m.home, '2026.10-hp1');
    // The same id, signed, with a payload that is not even an ELF object.
    const bad = await resignedPackage(HP1, path.join(m.home, 'not-elf.hpkg'), (_manifest, files) => files.set('payload/greetd_fix.so', Buffer.from('not an ELF object\n')));
    const before = await snapshot(m);
    expect(before.answers).toEqual(expected['b1+hp1']);

    const r = await agent(m.home, ['apply', bad]);
    expectRefused(r, 'PACKAGE_ID_CONFLICT');
    expect(r.json.error.packageId).toBe('2026.10-hp1');
    expect(storeCopy(m.home, '2026.10-hp1')).toEqual(stored);
    await expectUnchanged(m, before);
  });

  it('the same id with the same bytes is a no-op: exit 0, nothing rewritten', async () => {
    const m = await bootMachine();
    const baseline = storeCopy(m.home, BASELINE);
    expect((await agent(m.home, ['apply', HP1])).code).toBe(0);
    const stored = storeCopy(m.home, '2026.10-hp1');
    const pid = servicePid(m);
    const patched = await entries(m.home, pid);

    // The same file, then the same package in another container (gzipped): the same content.
    const { files } = await readArchive(fs.readFileSync(HP1));
    const gz = path.join(m.home, 'hp1.hpkg.gz');
    fs.writeFileSync(gz, buildArchive(files, { gzip: true }));
    for (const file of [HP1, gz]) {
      const r = await agent(m.home, ['apply', file]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.json.processes.map((p: any) => p.outcome)).toEqual(['AlreadyAtLevel']);
      expect(storeCopy(m.home, '2026.10-hp1')).toEqual(stored);
    }
    const again = await agent(m.home, ['apply', pkg(BASELINE)]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(storeCopy(m.home, BASELINE)).toEqual(baseline);
    expect(await entries(m.home, pid)).toEqual(patched);
    expect(await answers(m.sock, 'b1+hp1')).toEqual(expected['b1+hp1']);
  });
});
