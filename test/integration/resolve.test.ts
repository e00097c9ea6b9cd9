// bindSymbols looks names up through indexes built once per parsed file; it must bind exactly as
// the linear searches it replaced (kept below as the reference) did.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ElfFile, ElfSymbol } from '../../src/elf/index.js';
import { bindSymbols, type Binding } from '../../src/engine/resolve.js';
import { HpError } from '../../src/errors.js';
import { buildFixtures, fixturePath, spawnTarget, useTargets } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { findObject, loadedObjects, type LoadedObject } from '../../src/proc/index.js';

useTargets(afterEach);

beforeAll(async () => {
  await buildFixtures();
}, 120_000);

// ---- the reference: bindSymbols as it was, one linear search per name and process ----------

function preferGlobal(a: ElfSymbol, b: ElfSymbol): number {
  const rank = (s: ElfSymbol) => (s.bind === 'LOCAL' ? 1 : 0) + (s.type === 'FUNC' || s.type === 'OBJECT' ? 0 : 2);
  return rank(a) - rank(b);
}
function ownDefinition(obj: LoadedObject, name: string): ElfSymbol | undefined {
  const all = [...obj.elf.symbols, ...obj.elf.dynamicSymbols].filter(
    (s) => s.defined && s.name === name && s.type !== 'SECTION' && s.type !== 'FILE' && s.type !== 'TLS',
  );
  return all.sort(preferGlobal)[0];
}
function gotRelocation(obj: LoadedObject, name: string) {
  return obj.elf.dynamicRelocations.find((r) => r.symbol?.name === name && (r.type === 6 || r.type === 7));
}
function exported(elf: ElfFile, name: string): ElfSymbol | undefined {
  return elf.dynamicSymbols.find((s) => s.defined && s.name === name && s.bind !== 'LOCAL');
}
async function referenceBind(pid: number, patched: LoadedObject, loaded: () => LoadedObject[], names: string[]): Promise<Map<string, Binding>> {
  const out = new Map<string, Binding>();
  const slots = names.flatMap((name) => {
    const reloc = gotRelocation(patched, name);
    return reloc ? [{ name, addr: patched.bias + reloc.offset }] : [];
  });
  const values = await native.readRanges(pid, slots.map((s) => ({ addr: s.addr, length: 8 })));
  const inGot = new Map<string, number>();
  slots.forEach((s, i) => {
    const value = Number(values[i].readBigUInt64LE(0));
    if (value !== 0) inGot.set(s.name, value);
  });
  for (const name of names) {
    const got = inGot.get(name);
    if (got !== undefined) {
      out.set(name, { name, address: got, from: `${patched.path} (GOT)` });
      continue;
    }
    const own = ownDefinition(patched, name);
    if (own) {
      out.set(name, { name, address: patched.bias + own.value, from: patched.path });
      continue;
    }
    for (const obj of loaded()) {
      if (obj === patched) continue;
      const sym = exported(obj.elf, name);
      if (!sym) continue;
      if (sym.type === 'GNU_IFUNC') throw new HpError('PATCH_IFUNC_SYMBOL', `${name} is an IFUNC`);
      out.set(name, { name, address: obj.bias + sym.value, from: obj.path });
      break;
    }
  }
  return out;
}

const settle = async (work: () => Promise<Map<string, Binding>>) => {
  try {
    return { bound: [...(await work()).values()] };
  } catch (e) {
    return { error: (e as HpError).code };
  }
};

describe('bindSymbols', () => {
  for (const [fixture, object] of [
    ['uselib', 'libgreet.so'],
    ['uselib', undefined],
    ['helper_global', undefined],
  ] as const) {
    it(`binds every name as the linear searches did (${fixture}, ${object ?? 'main executable'})`, async () => {
      const target = await spawnTarget(fixturePath(fixture));
      const patched = findObject(target.pid, object);
      const loaded = loadedObjects(target.pid);
      const libc = loaded.find((o) => o.path.split('/').pop()!.startsWith('libc.so'))!;
      const names = [
        ...new Set([
          ...loaded.flatMap((o) => [...o.elf.symbols, ...o.elf.dynamicSymbols].map((s) => s.name)),
          ...patched.elf.dynamicRelocations.flatMap((r) => (r.symbol ? [r.symbol.name] : [])),
          'no_such_symbol_anywhere',
          '',
        ]),
      ];
      expect(names.length).toBeGreaterThan(100);
      expect(libc).toBeDefined();
      let bound = 0;
      for (const name of names) {
        const got = await settle(() => bindSymbols(target.pid, patched, () => loaded, [name]));
        expect(got, name).toEqual(await settle(() => referenceBind(target.pid, patched, () => loaded, [name])));
        if (got.bound?.length) bound++;
      }
      expect(bound).toBeGreaterThan(50);
      // And all names at once (those that do not throw).
      const bindable = names.filter((n) => !exported(libc.elf, n) || exported(libc.elf, n)!.type !== 'GNU_IFUNC');
      expect(await settle(() => bindSymbols(target.pid, patched, () => loaded, bindable))).toEqual(
        await settle(() => referenceBind(target.pid, patched, () => loaded, bindable)),
      );
    });
  }
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

  it('keeps the first of equals, as the linear searches did', async () => {
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
    const loaded = loadedObjects(child.pid!);
    const got = await bindSymbols(child.pid!, main, () => loaded, ['dup', 'realpath']);
    expect(got).toEqual(await referenceBind(child.pid!, main, () => loaded, ['dup', 'realpath']));
    expect(got.get('dup')?.address).toBe(main.bias + dups[0].value);
    expect(got.get('realpath')).toEqual({ name: 'realpath', address: values[0], from: `${main.path} (GOT)` });
  });
});
