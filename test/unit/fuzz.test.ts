// Fuzzing kept in the suite (fast-check): the manifest validator, the archive reader and the ELF
// reader get arbitrary and mutated input, and a valid signed package gets its bytes flipped,
// inserted and deleted. Every input must end in one of two ways: refused with an HpError, or
// accepted — and then, for the package, with exactly the signed content. Never another
// exception, a crash or a hang. Seeds are fixed so a failure reproduces; a few seconds each.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoPublicKey, fixturePackage } from '../../src/demo/fixture-packages.js';
import { ElfFile } from '../../src/elf/index.js';
import { HpError } from '../../src/errors.js';
import { fixturePath } from '../../src/harness/index.js';
import { readArchive } from '../../src/package/archive.js';
import { openPackage, parseManifest, trustAdd, validateManifest } from '../../src/package/index.js';

const SEED = 20261202;
const params = (numRuns: number) => ({ seed: SEED, numRuns, endOnFailure: true });

/** Runs `f`; passes if it returns or throws an HpError, and returns which (the value or the error). */
async function refusedOrAccepted<T>(f: () => T | Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: HpError }> {
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    if (e instanceof HpError) return { ok: false, error: e };
    throw new Error(`not an HpError: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
  }
}

/** One random edit of `bytes`: flip bits of a byte, insert bytes, delete a run, or overwrite a run. */
const mutation = (length: number) =>
  fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(length - 1), mask: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(length), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(length - 1), count: fc.integer({ min: 1, max: 64 }) }),
    fc.record({ kind: fc.constant('overwrite' as const), at: fc.nat(length - 1), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  );
type Mutation = { kind: 'flip'; at: number; mask: number } | { kind: 'insert'; at: number; bytes: Uint8Array } | { kind: 'delete'; at: number; count: number } | { kind: 'overwrite'; at: number; bytes: Uint8Array };

function mutate(bytes: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(bytes);
  for (const m of ms) {
    const at = Math.min(m.at, Math.max(0, b.length - 1));
    if (m.kind === 'flip') b[at] ^= m.mask;
    else if (m.kind === 'insert') b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
    else if (m.kind === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.count)]);
    else Buffer.from(m.bytes).copy(b, at);
  }
  return b;
}
const mutations = (length: number) => fc.array(mutation(length), { minLength: 1, maxLength: 4 }) as fc.Arbitrary<Mutation[]>;

let dir: string;
let trustDir: string;
const hp1 = fs.readFileSync(fixturePackage('2026.10-hp1'));
let genuine: Awaited<ReturnType<typeof openPackage>>;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-fuzz-'));
  trustDir = path.join(dir, 'trusted-keys');
  await trustAdd(trustDir, fs.readFileSync(demoPublicKey(), 'utf8'));
  genuine = await openPackage(fixturePackage('2026.10-hp1'), { trustDir });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('fuzz: the manifest validator', () => {

  it('arbitrary JSON values and bytes are refused with an HpError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (v) => {
        const r = await refusedOrAccepted(() => validateManifest(v));
        expect(r.ok).toBe(false);
      }),
      params(300),
    );
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (b) => {
        await refusedOrAccepted(() => parseManifest(b));
      }),
      params(300),
    );
  });

  it('a valid manifest with one field replaced by anything: accepted only if it still validates as itself', async () => {
    const manifest = JSON.parse(genuine.manifestBytes.toString('utf8'));
    // Every path to a value inside the manifest.
    const paths: (string | number)[][] = [];
    const walk = (v: unknown, at: (string | number)[]) => {
      paths.push(at);
      if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...at, i]));
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, [...at, k]);
    };
    walk(manifest, []);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths.filter((p) => p.length > 0)), fc.oneof(fc.jsonValue(), fc.constant(undefined)), async (p, value) => {
        const m = structuredClone(manifest);
        let parent = m;
        for (const k of p.slice(0, -1)) parent = parent[k];
        parent[p.at(-1)!] = value;
        const r = await refusedOrAccepted(() => validateManifest(m));
        // Accepted: what the validator returns is what it was given (it never invents or drops fields).
        if (r.ok) expect(JSON.parse(JSON.stringify(r.value))).toEqual(JSON.parse(JSON.stringify(m)));
      }),
      params(500),
    );
  });
});

describe('fuzz: the archive reader', () => {
  it('arbitrary bytes, plain or gzip-compressed, are refused with an HpError or read', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), fc.boolean(), async (b, gz) => {
        await refusedOrAccepted(() => readArchive(gz ? gzipSync(b) : Buffer.from(b)));
      }),
      params(200),
    );
  });

  it('a mutated package tar, plain or gzip-compressed: refused with an HpError or read', async () => {
    const gz = gzipSync(hp1);
    await fc.assert(
      fc.asyncProperty(fc.boolean(), mutations(hp1.length), async (compressed, ms) => {
        const data = compressed ? mutate(gz, ms.map((m) => ({ ...m, at: m.at % gz.length }))) : mutate(hp1, ms);
        await refusedOrAccepted(() => readArchive(data));
      }),
      params(200),
    );
  });
});

describe('fuzz: the ELF reader', () => {
  const elf = fs.readFileSync(fixturePath('loop_fix.so'));
  /** Everything a caller of ElfFile reads. */
  function readAll(e: ElfFile) {
    void e.sections.length;
    void e.symbols.length;
    void e.dynamicSymbols.length;
    void e.buildId;
    void e.dynamic.length;
    void e.neededLibraries;
    void e.dynamicRelocations.length;
    e.findSymbol('compute_v2');
    for (const s of e.sections) e.sectionData(s);
  }

  it('arbitrary bytes are refused with an HpError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), async (b) => {
        await refusedOrAccepted(() => readAll(ElfFile.fromBuffer(Buffer.from(b))));
      }),
      params(300),
    );
  });

  it('a mutated shared object (headers and tables hit most): refused with an HpError or read', async () => {
    // Half the edits land in the first 4 KiB (ELF and program headers, dynamic section), where a
    // bad offset or count does the most damage; the rest anywhere.
    const anywhere = mutations(elf.length);
    const headers = mutations(4096);
    await fc.assert(
      fc.asyncProperty(fc.oneof(anywhere, headers), async (ms) => {
        await refusedOrAccepted(() => readAll(ElfFile.fromBuffer(mutate(elf, ms))));
      }),
      params(400),
    );
  });
});

describe('fuzz: a valid signed package, mutated', () => {
  it('each mutant is refused with an HpError, or accepted with exactly the signed content', async () => {
    const file = path.join(dir, 'mutant.hpkg');
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(mutations(hp1.length), async (ms) => {
        fs.writeFileSync(file, mutate(hp1, ms));
        const r = await refusedOrAccepted(() => openPackage(file, { trustDir }));
        if (!r.ok) return;
        accepted++;
        expect(r.value.manifestBytes.equals(genuine.manifestBytes)).toBe(true);
        expect(r.value.signer?.keyId).toBe(genuine.signer?.keyId);
        expect([...r.value.payload.keys()]).toEqual([...genuine.payload.keys()]);
        for (const [p, data] of r.value.payload) expect(data.equals(genuine.payload.get(p)!)).toBe(true);
      }),
      params(400),
    );
    // Some mutants only touch padding (and are rightly accepted): the property saw both ways.
    expect(accepted).toBeGreaterThan(0);
  });
});
