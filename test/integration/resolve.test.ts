// Where a patch's imports point in the target: readGot reads what the dynamic linker bound, and
// bindSymbols (pure) picks, in order, the GOT, the patched object's own definitions, the first
// other object exporting the name.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ElfSymbol } from '../../src/elf/index.js';
import { bindSymbols, needsOtherObjects, readGot } from '../../src/engine/resolve.js';
import { buildFixtures, fixturePath, spawnTarget, useTargets } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { findObject, loadedObjects, type LoadedObject } from '../../src/proc/index.js';

useTargets(afterEach);

beforeAll(async () => {
  await buildFixtures();
}, 120_000);

const SYMBOL_KINDS_BOUND = new Set(['FUNC', 'OBJECT', 'NOTYPE', 'GNU_IFUNC', 'COMMON']);
const defines = (name: string, value: number, tables: ElfSymbol[][]) => tables.some((t) => t.some((s) => s.defined && s.name === name && s.value === value));
const exportsName = (o: LoadedObject, name: string) => o.elf.dynamicSymbols.some((s) => s.defined && s.bind !== 'LOCAL' && s.name === name);

describe('bindSymbols on a live process', () => {
  for (const [fixture, object] of [
    ['uselib', 'libgreet.so'],
    ['uselib', undefined],
    ['helper_global', undefined],
  ] as const) {
    it(`binds each name from the GOT, else the patched object, else the first exporter (${fixture}, ${object ?? 'main executable'})`, async () => {
      const target = await spawnTarget(fixturePath(fixture));
      const patched = findObject(target.pid, object);
      const loaded = loadedObjects(target.pid);
      const libc = loaded.find((o) => o.path.split('/').pop()!.startsWith('libc.so'))!;
      expect(libc).toBeDefined();
      const ifunc = (n: string) => loaded.some((o) => o !== patched && o.elf.dynamicSymbols.some((s) => s.defined && s.name === n && s.type === 'GNU_IFUNC'));
      const names = [
        ...new Set([
          ...loaded.flatMap((o) => [...o.elf.symbols, ...o.elf.dynamicSymbols].map((s) => s.name)),
          ...patched.elf.dynamicRelocations.flatMap((r) => (r.symbol ? [r.symbol.name] : [])),
          'no_such_symbol_anywhere',
        ]),
      ].filter((n) => n && !ifunc(n));
      expect(names.length).toBeGreaterThan(100);
      const got = await readGot(target.pid, patched, names);
      const bound = bindSymbols(patched, got, needsOtherObjects(patched, got, names) ? loaded : [], names);
      expect(bound.has('no_such_symbol_anywhere')).toBe(false);
      let fromGot = 0;
      let own = 0;
      let other = 0;
      for (const [name, b] of bound) {
        expect(b.name).toBe(name);
        if (b.from.endsWith(' (GOT)')) {
          // The very value the dynamic linker left in the first slot for the name, read on its own.
          const slot = patched.elf.dynamicRelocations.find((r) => r.symbol?.name === name && (r.type === 6 || r.type === 7))!;
          expect(Number((await native.readMemory(target.pid, patched.bias + slot.offset, 8)).readBigUInt64LE(0)), name).toBe(b.address);
          fromGot++;
        } else if (b.from === patched.path) {
          expect(got.has(name), name).toBe(false);
          expect(defines(name, b.address - patched.bias, [patched.elf.symbols, patched.elf.dynamicSymbols]), name).toBe(true);
          own++;
        } else {
          const i = loaded.findIndex((o) => o.path === b.from);
          expect(i, name).toBeGreaterThanOrEqual(0);
          // The first object in load order (the patched one aside) that exports the name.
          expect(loaded.findIndex((o) => o !== patched && exportsName(o, name)), name).toBe(i);
          expect(defines(name, b.address - loaded[i].bias, [loaded[i].elf.dynamicSymbols]), name).toBe(true);
          other++;
        }
      }
      // And every name left out is defined nowhere it could be bound from.
      for (const name of names.filter((n) => !bound.has(n))) {
        expect(got.has(name), name).toBe(false);
        expect(loaded.some((o) => o !== patched && exportsName(o, name)), name).toBe(false);
        const ownSymbols = [...patched.elf.symbols, ...patched.elf.dynamicSymbols].filter((s) => s.defined && s.name === name && SYMBOL_KINDS_BOUND.has(s.type));
        expect(ownSymbols, name).toEqual([]);
      }
      expect(fromGot + own + other).toBeGreaterThan(50);
      expect(other).toBeGreaterThan(0);
    });
  }

  it('refuses an IFUNC the patched object does not import (its implementation cannot be picked)', async () => {
    const target = await spawnTarget(fixturePath('uselib'));
    const patched = findObject(target.pid, 'libgreet.so');
    const loaded = loadedObjects(target.pid);
    const libc = loaded.find((o) => o.path.split('/').pop()!.startsWith('libc.so'))!;
    const name = libc.elf.dynamicSymbols.find((s) => s.defined && s.type === 'GNU_IFUNC' && !patched.elf.dynamicRelocations.some((r) => r.symbol?.name === s.name) && !patched.elf.symbols.some((o) => o.name === s.name))!.name;
    const got = await readGot(target.pid, patched, [name]);
    expect(needsOtherObjects(patched, got, [name])).toBe(true);
    expect(() => bindSymbols(patched, got, loaded, [name])).toThrow(expect.objectContaining({ code: 'PATCH_IFUNC_SYMBOL' }) as unknown as Error);
  });
});

describe('bindSymbols without a process', () => {
  const sym = (name: string, value: number, extra: Partial<ElfSymbol> = {}): ElfSymbol => ({ name, value, size: 8, type: 'FUNC', bind: 'GLOBAL', visibility: 0, shndx: 1, defined: true, index: 0, ...extra }) as ElfSymbol;
  const object = (p: string, bias: number, symbols: ElfSymbol[], dynamicSymbols: ElfSymbol[] = []): LoadedObject =>
    ({ path: p, bias, elf: { symbols, dynamicSymbols, dynamicRelocations: [] } }) as unknown as LoadedObject;
  const patched = object('/app', 0x1000, [sym('helper', 0x10, { bind: 'LOCAL' }), sym('both', 0x20)]);
  const libA = object('/liba.so', 0x100000, [], [sym('both', 0x30), sym('only_a', 0x40), sym('hidden', 0x50, { bind: 'LOCAL' })]);
  const libB = object('/libb.so', 0x200000, [], [sym('only_a', 0x60), sym('picky', 0x70, { type: 'GNU_IFUNC' }), sym('hidden', 0x80)]);

  it('takes the GOT first, then the patched object, then the first loaded exporter', () => {
    const got = new Map([['both', 0xabc]]);
    const names = ['both', 'helper', 'only_a', 'hidden', 'missing'];
    expect(needsOtherObjects(patched, got, ['both', 'helper'])).toBe(false);
    expect(needsOtherObjects(patched, got, names)).toBe(true);
    expect([...bindSymbols(patched, got, [patched, libA, libB], names).values()]).toEqual([
      { name: 'both', address: 0xabc, from: '/app (GOT)' },
      { name: 'helper', address: 0x1010, from: '/app' },
      { name: 'only_a', address: 0x100040, from: '/liba.so' },
      { name: 'hidden', address: 0x200080, from: '/libb.so' }, // a LOCAL symbol is not exported
    ]);
    expect(bindSymbols(patched, new Map(), [], ['both']).get('both')).toEqual({ name: 'both', address: 0x1020, from: '/app' });
  });

  it('refuses an IFUNC found only in another object', () => {
    expect(() => bindSymbols(patched, new Map(), [libA, libB], ['picky'])).toThrow(/IFUNC/);
    expect(bindSymbols(patched, new Map([['picky', 0x5]]), [libA, libB], ['picky']).get('picky')?.from).toBe('/app (GOT)');
  });
});

// Ties the fixtures above do not have: two static functions of one name (the first in .symtab
// wins), and two versions of one imported function, each with its own GOT slot (the first
// relocation wins; lazy binding leaves a different PLT stub address in each).
describe('bindSymbols on ties', () => {
  let dir: string;
  const children: ChildProcess[] = [];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hp-resolve-'));
    writeFileSync(join(dir, 'a.c'), 'static __attribute__((noinline)) int dup(int x) { return x + 1; }\nint call_a(int x) { return dup(x); }\n');
    writeFileSync(join(dir, 'b.c'), 'static __attribute__((noinline)) int dup(int x) { return x + 2; }\nint call_b(int x) { return dup(x); }\n');
    writeFileSync(
      join(dir, 'main.c'),
      `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__asm__(".symver realpath_old, realpath@GLIBC_2.2.5");
char *realpath_old(const char *, char *);
int call_a(int); int call_b(int);
int main(void) {
  puts("ready");
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {}
  return (realpath_old(".", 0) == realpath(".", 0)) + call_a(1) + call_b(2);
}
`,
    );
    execFileSync('gcc', ['-O1', '-fPIE', '-pie', '-Wl,-z,lazy', '-o', join(dir, 'ties'), join(dir, 'main.c'), join(dir, 'a.c'), join(dir, 'b.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
  }, 60_000);
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps the first of equals: the first static definition, the first GOT slot', async () => {
    const { LD_BIND_NOW: _, ...env } = process.env;
    const child = spawn(join(dir, 'ties'), [], { stdio: ['pipe', 'pipe', 'inherit'], env });
    children.push(child);
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    const main = findObject(child.pid!);
    const dups = main.elf.symbols.filter((s) => s.name === 'dup');
    expect(dups).toHaveLength(2);
    const slots = main.elf.dynamicRelocations.filter((r) => r.symbol?.name === 'realpath');
    expect(slots).toHaveLength(2);
    const values = (await native.readRanges(child.pid!, slots.map((r) => ({ addr: main.bias + r.offset, length: 8 })))).map((b) => Number(b.readBigUInt64LE(0)));
    expect(values[0]).not.toBe(values[1]);
    const names = ['dup', 'realpath'];
    const inGot = await readGot(child.pid!, main, names);
    expect(needsOtherObjects(main, inGot, names)).toBe(false);
    const got = bindSymbols(main, inGot, [], names);
    expect(got.get('dup')?.address).toBe(main.bias + dups[0].value);
    expect(got.get('realpath')).toEqual({ name: 'realpath', address: values[0], from: `${main.path} (GOT)` });
  });
});
