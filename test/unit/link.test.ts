import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { ElfFile } from '../../src/elf/index.js';
import { layoutPatch, linkPatch, type LinkedPatch } from '../../src/link/index.js';

// ------------------------------------------------------------------------------------------------
// Build helpers and independent readelf parsers (deliberately not using src/elf)

let dir: string;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

function build(out: string, source: string, flags: string[], ext = 'c'): string {
  const src = join(dir, `${out}.${ext}`);
  writeFileSync(src, source);
  const outPath = join(dir, out);
  sh('gcc', [...flags, src, '-o', outPath]);
  return outPath;
}

interface RefReloc {
  offset: number;
  type: string;
  symbol?: string;
  addend: number;
}

function refRelocs(path: string): { rela: RefReloc[]; relr: number[] } {
  const rela: RefReloc[] = [];
  const relr: number[] = [];
  let inRelr = false;
  for (const line of sh('readelf', ['-rW', path]).split('\n')) {
    const s = /^Relocation section '([^']+)'/.exec(line);
    if (s) {
      inRelr = s[1].startsWith('.relr');
      continue;
    }
    if (inRelr) {
      const r = /^([0-9a-f]{16})\b/.exec(line);
      if (r) relr.push(parseInt(r[1], 16));
      continue;
    }
    const m = /^([0-9a-f]{16})\s+[0-9a-f]{16}\s+(R_X86_64_\w+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const rest = m[3].trim();
    const withSym = /^[0-9a-f]+\s+(.+?)\s+([+-])\s+([0-9a-f]+)$/.exec(rest);
    if (withSym) {
      rela.push({
        offset: parseInt(m[1], 16),
        type: m[2],
        symbol: withSym[1].replace(/@.*$/, ''),
        addend: parseInt(withSym[3], 16) * (withSym[2] === '-' ? -1 : 1),
      });
    } else {
      rela.push({ offset: parseInt(m[1], 16), type: m[2], addend: rest ? parseInt(rest, 16) : 0 });
    }
  }
  return { rela, relr };
}

interface RefLoad {
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
  flags: string;
}

function refLoads(path: string): RefLoad[] {
  const out: RefLoad[] = [];
  for (const line of sh('readelf', ['-lW', path]).split('\n')) {
    const m = /^\s+LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+([RWE ]+?)\s+0x[0-9a-f]+$/.exec(line);
    if (m) {
      out.push({
        offset: parseInt(m[1], 16),
        vaddr: parseInt(m[2], 16),
        filesz: parseInt(m[3], 16),
        memsz: parseInt(m[4], 16),
        flags: m[5].replace(/\s+/g, ''),
      });
    }
  }
  return out;
}

/** The PT_GNU_RELRO range from `readelf -lW`, if the file has one. */
function refRelro(path: string): { vaddr: number; memsz: number } | undefined {
  for (const line of sh('readelf', ['-lW', path]).split('\n')) {
    const m = /^\s+GNU_RELRO\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)/.exec(line);
    if (m) return { vaddr: parseInt(m[1], 16), memsz: parseInt(m[2], 16) };
  }
  return undefined;
}

/** Defined symbols from `readelf -Ws` (both tables), name → value; undefined ones in `undefinedNames`. */
function refSymbols(path: string): { defined: Map<string, number>; undefinedDyn: Set<string>; weakUndefinedDyn: Set<string> } {
  const defined = new Map<string, number>();
  const undefinedDyn = new Set<string>();
  const weakUndefinedDyn = new Set<string>();
  let table = '';
  for (const line of sh('readelf', ['-Ws', path]).split('\n')) {
    const t = /^Symbol table '([^']+)'/.exec(line);
    if (t) {
      table = t[1];
      continue;
    }
    const m = /^\s*\d+:\s+([0-9a-f]+)\s+\S+\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)/.exec(line);
    if (!m) continue;
    const name = m[5].replace(/@.*$/, '');
    if (m[4] === 'UND') {
      if (table === '.dynsym') {
        undefinedDyn.add(name);
        if (m[3] === 'WEAK') weakUndefinedDyn.add(name);
      }
    } else if (m[2] !== 'SECTION' && m[2] !== 'FILE' && !defined.has(name)) {
      defined.set(name, parseInt(m[1], 16));
    }
  }
  return { defined, undefinedDyn, weakUndefinedDyn };
}

function expectHpError(fn: () => unknown, code: string, messagePattern?: RegExp): HpError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected HpError ${code}`).toBeInstanceOf(HpError);
  const e = caught as HpError;
  expect(e.code, e.message).toBe(code);
  if (messagePattern) expect(e.message).toMatch(messagePattern);
  return e;
}

const u64 = (buf: Buffer, off: number): bigint => buf.readBigUInt64LE(off);
const big = (n: number): bigint => BigInt(n);

/** A resolver over a fixed table that records every name it is asked for. */
function tableResolver(table: Record<string, number>): { resolve: (n: string) => number | undefined; asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    resolve: (n: string) => {
      asked.push(n);
      return Object.hasOwn(table, n) ? table[n] : undefined;
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Patch sources

const counterSrc = `
extern int counter;
extern int helper(int);
int patched_fn(int x) { counter++; return helper(x) + 1; }
`;

const selfCallSrc = `
int inner(int x) { return x * 3; }
int outer(int x) { return inner(x) + 1; }
static int helper_static(int x) { return x - 1; }
int (*fp)(int) = inner;
int (*sfp)(int) = helper_static;
extern int ext_arr[];
int *ext_p = &ext_arr[4];
static char buf[64];
char *buf_p = &buf[10];
`;

const tlsDefSrc = `
__thread int per_thread = 3;
int get(void) { return per_thread++; }
`;
const tlsExtSrc = `
extern __thread int ext_t;
int get(void) { return ext_t; }
`;

const ctorSrc = `
volatile int flag;
__attribute__((constructor)) static void boot(void) { flag = 1; }
int patched(void) { return flag; }
`;
const fakeFrameDummySrc = `
volatile int flag;
__attribute__((constructor)) static void frame_dummy(void) { flag = 1; }
int patched(void) { return flag; }
`;
const customInitSrc = `
volatile int flag;
int myinit(void) { flag = 2; return 0; }
int patched(void) { return flag; }
`;
const preinitSrc = `
static void early(void) {}
__attribute__((section(".preinit_array"), used)) static void (*p)(void) = early;
int main(void) { return 0; }
`;

const unresolvedSrc = `
extern int missing_a(void);
extern int missing_b;
extern int helper(int);
extern int opt_sym __attribute__((weak));
int f(void) { return missing_a() + missing_b + helper(1) + (&opt_sym ? opt_sym : -1); }
`;

const ifuncStaticSrc = `
static int impl(void) { return 4; }
static int (*resolve_f(void))(void) { return impl; }
static int f(void) __attribute__((ifunc("resolve_f")));
int call_f(void) { return f(); }
`;
const ifuncGlobalSrc = `
static int impl(void) { return 4; }
static int (*resolve_f(void))(void) { return impl; }
int f(void) __attribute__((ifunc("resolve_f")));
int call_f(void) { return f(); }
`;

/** Data that needs PC32 and 64+addend dynamic relocations against an external symbol. */
const pcRelAsm = `
  .data
  .globl rel_words
rel_words:
  .long counter - .
  .long 0
  .quad counter + 16
  .quad counter - 8
`;

const bin: Record<string, string> = {};
const PIC = ['-O2', '-fPIC', '-shared'];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-link-test-'));
  bin.counter = build('counter.so', counterSrc, PIC);
  bin.counterNostart = build('counter-nostart.so', counterSrc, [...PIC, '-nostartfiles']);
  bin.counterNow = build('counter-now.so', counterSrc, [...PIC, '-Wl,-z,now']);
  bin.counterNoPlt = build('counter-noplt.so', counterSrc, [...PIC, '-fno-plt', '-Wl,-z,now', '-nostartfiles']);
  bin.counterRelr = build('counter-relr.so', counterSrc, [...PIC, '-Wl,-z,pack-relative-relocs']);
  bin.selfCall = build('self.so', selfCallSrc, PIC);
  bin.selfCallNow = build('self-now.so', selfCallSrc, [...PIC, '-Wl,-z,now', '-nostartfiles']);
  bin.selfCallRelr = build('self-relr.so', selfCallSrc, [...PIC, '-Wl,-z,pack-relative-relocs']);
  bin.tlsDef = build('tlsdef.so', tlsDefSrc, PIC);
  bin.tlsExt = build('tlsext.so', tlsExtSrc, PIC);
  bin.tlsExtIE = build('tlsext-ie.so', tlsExtSrc, [...PIC, '-ftls-model=initial-exec', '-nostartfiles']);
  bin.ctor = build('ctor.so', ctorSrc, PIC);
  bin.ctorNostart = build('ctor-nostart.so', ctorSrc, [...PIC, '-nostartfiles']);
  bin.fakeFrameDummy = build('fake-fd.so', fakeFrameDummySrc, [...PIC, '-nostartfiles']);
  bin.customInit = build('custom-init.so', customInitSrc, [...PIC, '-Wl,-init,myinit']);
  bin.preinitPie = build('preinit-pie', preinitSrc, ['-O2', '-fPIE', '-pie']);
  bin.unresolved = build('unresolved.so', unresolvedSrc, PIC);
  bin.ifuncStatic = build('ifunc-static.so', ifuncStaticSrc, PIC);
  bin.ifuncGlobal = build('ifunc-global.so', ifuncGlobalSrc, PIC);
  bin.pcRel = build('pcrel.so', pcRelAsm, ['-shared', '-nostartfiles'], 's');
  bin.noPie = build('nopie', 'int main(void) { return 0; }', ['-O2', '-fno-pie', '-no-pie']);
  bin.object = join(dir, 'obj.o');
  writeFileSync(join(dir, 'obj.c'), counterSrc);
  sh('gcc', ['-O2', '-fPIC', '-c', join(dir, 'obj.c'), '-o', bin.object]);
  bin.counterStripped = join(dir, 'counter-stripped.so');
  sh('strip', ['--strip-all', bin.counter, '-o', bin.counterStripped]);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const BASE = 0x7f12_3456_0000;
const HELPER = 0x5555_5555_1234;
const COUNTER = 0x5555_5555_8000;

// ------------------------------------------------------------------------------------------------
// Independent checks of a linked image

/**
 * Checks every relocated place in `linked.image` against values computed from readelf's view
 * of the file, and every other byte of the image against the file contents.
 */
function checkImage(path: string, linked: LinkedPatch, table: Record<string, number>): void {
  const file = readFileSync(path);
  const loads = refLoads(path);
  const { rela, relr } = refRelocs(path);
  const syms = refSymbols(path);
  const base = big(linked.base);
  const S = (name: string): bigint => {
    if (syms.defined.has(name)) return base + big(syms.defined.get(name)!);
    if (Object.hasOwn(table, name)) return big(table[name]);
    expect(syms.weakUndefinedDyn.has(name), `${name} must be weak to be unresolved`).toBe(true);
    return 0n;
  };
  const fileOffsetOf = (vaddr: number): number => {
    const l = loads.find((x) => vaddr >= x.vaddr && vaddr < x.vaddr + x.filesz)!;
    return l.offset + (vaddr - l.vaddr);
  };

  const relocated = new Set<number>();
  for (const r of rela) {
    const got = r.type === 'R_X86_64_PC32' ? BigInt(linked.image.readInt32LE(r.offset)) : u64(linked.image, r.offset);
    let want: bigint;
    switch (r.type) {
      case 'R_X86_64_RELATIVE':
        want = base + big(r.addend);
        break;
      case 'R_X86_64_GLOB_DAT':
      case 'R_X86_64_JUMP_SLOT':
        want = S(r.symbol!);
        break;
      case 'R_X86_64_64':
        want = BigInt.asUintN(64, S(r.symbol!) + big(r.addend));
        break;
      case 'R_X86_64_PC32':
        want = S(r.symbol!) + big(r.addend) - (base + big(r.offset));
        break;
      default:
        throw new Error(`test does not expect ${r.type}`);
    }
    expect(got, `${r.type} ${r.symbol ?? ''} at 0x${r.offset.toString(16)}`).toBe(want);
    for (let i = 0; i < (r.type === 'R_X86_64_PC32' ? 4 : 8); i++) relocated.add(r.offset + i);
  }
  for (const off of relr) {
    const implicit = u64(file, fileOffsetOf(off));
    expect(u64(linked.image, off), `RELR at 0x${off.toString(16)}`).toBe(base + implicit);
    for (let i = 0; i < 8; i++) relocated.add(off + i);
  }

  // Every other byte: file bytes inside PT_LOAD file parts, zero everywhere else.
  expect(linked.image.length).toBe(linked.layout.span);
  const expected = Buffer.alloc(linked.image.length);
  for (const l of loads) file.copy(expected, l.vaddr, l.offset, l.offset + l.filesz);
  for (let i = 0; i < expected.length; i++) {
    if (relocated.has(i)) continue;
    if (linked.image[i] !== expected[i]) {
      throw new Error(`image byte 0x${i.toString(16)} is 0x${linked.image[i].toString(16)}, file says 0x${expected[i].toString(16)}`);
    }
  }
}

// ------------------------------------------------------------------------------------------------

describe('layoutPatch', () => {
  it.each(['counter', 'counterNostart', 'counterNow', 'counterRelr', 'selfCall', 'pcRel'])('%s: segments and prot follow readelf -l', (which) => {
    const layout = layoutPatch(ElfFile.fromFile(bin[which]));
    const loads = refLoads(bin[which]);
    expect(loads[0].vaddr).toBe(0);
    expect(layout.segments.length).toBe(loads.length);
    loads.forEach((l, i) => {
      const seg = layout.segments[i];
      const start = l.vaddr - (l.vaddr % 4096);
      const end = Math.ceil((l.vaddr + l.memsz) / 4096) * 4096;
      const prot = (l.flags.includes('R') ? 1 : 0) | (l.flags.includes('W') ? 2 : 0) | (l.flags.includes('E') ? 4 : 0);
      expect(seg).toEqual({ offset: start, size: end - start, prot });
    });
    const last = loads[loads.length - 1];
    expect(layout.span).toBe(Math.ceil((last.vaddr + last.memsz) / 4096) * 4096);
    expect(layout.span % 4096).toBe(0);
    // The usual gcc output: one executable segment, one writable one, never both.
    expect(layout.segments.filter((s) => s.prot & 4).length).toBe(which === 'pcRel' ? 0 : 1);
    expect(layout.segments.some((s) => (s.prot & 6) === 6)).toBe(false);
  });

  it.each(['counter', 'counterNostart', 'counterNow', 'counterRelr', 'selfCall', 'pcRel'])('%s: protections are the segments\' with the RELRO pages read-only', (which) => {
    const layout = layoutPatch(ElfFile.fromFile(bin[which]));
    const relro = refRelro(bin[which]);
    // ld.so's rounding: both ends of the range down to a page.
    const roFrom = relro ? relro.vaddr - (relro.vaddr % 4096) : 0;
    const roTo = relro ? relro.vaddr + relro.memsz - ((relro.vaddr + relro.memsz) % 4096) : 0;
    const protAt = (list: { offset: number; size: number; prot: number }[], page: number) => list.find((s) => s.offset <= page && page < s.offset + s.size)?.prot;
    let relroPages = 0;
    for (let page = 0; page < layout.span; page += 4096) {
      const fromSegment = protAt(layout.segments, page);
      const inRelro = page >= roFrom && page < roTo;
      relroPages += inRelro ? 1 : 0;
      expect(protAt(layout.protections, page), `page 0x${page.toString(16)}`).toBe(fromSegment === undefined ? undefined : inRelro ? fromSegment & ~2 : fromSegment);
    }
    // Sorted, disjoint, whole pages, and never writable and executable at once.
    layout.protections.forEach((p, i) => {
      expect(p.offset % 4096 + p.size % 4096).toBe(0);
      if (i > 0) expect(p.offset).toBeGreaterThanOrEqual(layout.protections[i - 1].offset + layout.protections[i - 1].size);
      expect(p.prot & 6).not.toBe(6);
    });
    // gcc's default output has a RELRO range covering at least a page (.dynamic, .got).
    if (which !== 'pcRel') expect(relroPages).toBeGreaterThan(0);
  });

  it('refuses a lowest PT_LOAD that is not at 0, overlapping segments, and page-sharing segments', () => {
    const good = readFileSync(bin.counter);
    const elf = ElfFile.fromBuffer(good);
    const loadIdx = elf.programHeaders.map((p, i) => (p.type === 1 ? i : -1)).filter((i) => i >= 0);
    const phAddr = (i: number) => elf.header.phoff + i * 56;
    const setVaddr = (buf: Buffer, i: number, v: number) => {
      buf.writeBigUInt64LE(BigInt(v), phAddr(i) + 16);
      buf.writeBigUInt64LE(BigInt(v), phAddr(i) + 24);
    };

    const shifted = Buffer.from(good);
    for (const i of loadIdx) setVaddr(shifted, i, elf.programHeaders[i].vaddr + 0x10000);
    expectHpError(() => layoutPatch(ElfFile.fromBuffer(shifted, 'shifted.so')), 'PATCH_LAYOUT', /lowest PT_LOAD segment starts at 0x10000, not 0/);

    const overlap = Buffer.from(good);
    setVaddr(overlap, loadIdx[1], 0x100);
    expectHpError(() => layoutPatch(ElfFile.fromBuffer(overlap, 'overlap.so')), 'PATCH_LAYOUT', /overlapping PT_LOAD/);

    const first = elf.programHeaders[loadIdx[0]];
    const sharing = Buffer.from(good);
    setVaddr(sharing, loadIdx[1], first.vaddr + first.memsz + 16);
    expectHpError(() => layoutPatch(ElfFile.fromBuffer(sharing, 'sharing.so')), 'PATCH_LAYOUT', /different permissions sharing the page/);
  });

  it('refuses executables and relocatable objects as PATCH_NOT_PIC', () => {
    expectHpError(() => layoutPatch(ElfFile.fromFile(bin.noPie)), 'PATCH_NOT_PIC', /ET_EXEC.*-fPIC -shared/);
    expectHpError(() => layoutPatch(ElfFile.fromFile(bin.object)), 'PATCH_NOT_PIC', /ELF type 1/);
    expectHpError(() => linkPatch(ElfFile.fromFile(bin.noPie), BASE, () => undefined), 'PATCH_NOT_PIC');
  });
});

describe('linkPatch: binding and relocation', () => {
  it.each(['counter', 'counterNostart', 'counterNow', 'counterNoPlt', 'counterRelr'])(
    '%s: GOT slots hold the resolver addresses, RELATIVE slots base + addend',
    (which) => {
      const patch = ElfFile.fromFile(bin[which]);
      const table = { helper: HELPER, counter: COUNTER };
      const r = tableResolver(table);
      const linked = linkPatch(patch, BASE, r.resolve);
      expect(linked.base).toBe(BASE);
      expect(linked.layout).toEqual(layoutPatch(patch));
      checkImage(bin[which], linked, table);

      // Only undefined symbols were asked for, each once.
      const syms = refSymbols(bin[which]);
      const referenced = new Set(refRelocs(bin[which]).rela.map((x) => x.symbol).filter((s): s is string => !!s));
      expect(new Set(r.asked)).toEqual(new Set([...referenced].filter((s) => syms.undefinedDyn.has(s))));
      expect(r.asked.length).toBe(new Set(r.asked).size);
      expect(r.asked).toContain('helper');
      expect(r.asked).toContain('counter');

      // The report says where every referenced symbol went.
      const byName = new Map(linked.resolved.map((x) => [x.name, x]));
      expect(byName.get('helper')).toEqual({ name: 'helper', address: HELPER, from: 'resolver' });
      expect(byName.get('counter')).toEqual({ name: 'counter', address: COUNTER, from: 'resolver' });
      for (const [n, v] of byName) {
        if (n !== 'helper' && n !== 'counter') expect(v, n).toEqual({ name: n, address: 0, from: 'weak-undefined' });
      }
      expect(new Set(byName.keys())).toEqual(referenced);

      // The helper slot: exactly one GOT entry holds HELPER, one holds COUNTER.
      const slots = refRelocs(bin[which]).rela.filter((x) => x.symbol === 'helper' || x.symbol === 'counter');
      expect(slots.length).toBe(2);
      for (const s of slots) expect(Number(u64(linked.image, s.offset))).toBe(s.symbol === 'helper' ? HELPER : COUNTER);

      expect(linked.symbolAddress('patched_fn')).toBe(BASE + syms.defined.get('patched_fn')!);
      expect(linked.symbolAddress('helper')).toBeUndefined();
      expect(linked.symbolAddress('no_such_symbol')).toBeUndefined();
    },
  );

  it('the default gcc -shared output (with crt boilerplate) links; -z now gives no .rela.plt laziness', () => {
    const patch = ElfFile.fromFile(bin.counter);
    const syms = refSymbols(bin.counter);
    expect(syms.defined.has('frame_dummy')).toBe(true);
    expect(syms.defined.has('_init')).toBe(true);
    const linked = linkPatch(patch, BASE, tableResolver({ helper: HELPER, counter: COUNTER }).resolve);
    // Without -z now the JUMP_SLOT slot in the file points back into the PLT (lazy binding);
    // the image must have the eager address instead.
    const js = refRelocs(bin.counter).rela.find((x) => x.type === 'R_X86_64_JUMP_SLOT' && x.symbol === 'helper')!;
    const file = readFileSync(bin.counter);
    const l = refLoads(bin.counter).find((x) => js.offset >= x.vaddr && js.offset < x.vaddr + x.filesz)!;
    const lazy = Number(u64(file, l.offset + (js.offset - l.vaddr)));
    expect(lazy).not.toBe(0);
    expect(lazy).toBeLessThan(0x2000); // a PLT address
    expect(Number(u64(linked.image, js.offset))).toBe(HELPER);
  });

  it.each(['selfCall', 'selfCallNow', 'selfCallRelr'])('%s: a patch calling its own functions is bound to itself, never to the resolver', (which) => {
    const patch = ElfFile.fromFile(bin[which]);
    // A hostile resolver that claims every name, including the patch's own ones.
    const asked: string[] = [];
    const linked = linkPatch(patch, BASE, (n) => {
      asked.push(n);
      return n === 'ext_arr' ? 0x6000_0000_0000 : 0xdead_0000;
    });
    const syms = refSymbols(bin[which]);
    expect(asked).not.toContain('inner');
    expect(asked).not.toContain('outer');
    expect(asked).toContain('ext_arr');

    const rela = refRelocs(bin[which]).rela;
    // inner is preemptible in a -fPIC link, so ld emitted symbolic relocations for it.
    const innerRelocs = rela.filter((x) => x.symbol === 'inner');
    expect(innerRelocs.map((x) => x.type).sort()).toEqual(['R_X86_64_64', 'R_X86_64_JUMP_SLOT']);
    for (const x of innerRelocs) expect(Number(u64(linked.image, x.offset))).toBe(BASE + syms.defined.get('inner')!);
    expect(linked.resolved.find((x) => x.name === 'inner')).toEqual({ name: 'inner', address: BASE + syms.defined.get('inner')!, from: 'patch' });

    // ext_p = &ext_arr[4]: R_X86_64_64 ext_arr + 16
    const extP = rela.find((x) => x.symbol === 'ext_arr')!;
    expect(extP.addend).toBe(16);
    expect(Number(u64(linked.image, extP.offset))).toBe(0x6000_0000_0000 + 16);

    // buf_p = &buf[10] and sfp = helper_static: relative to the base.
    const bufP = syms.defined.get('buf_p')!;
    expect(Number(u64(linked.image, bufP))).toBe(BASE + syms.defined.get('buf')! + 10);
    const sfp = syms.defined.get('sfp')!;
    expect(Number(u64(linked.image, sfp))).toBe(BASE + syms.defined.get('helper_static')!);

    // Symbols of the patch, global or file-local.
    expect(linked.symbolAddress('outer')).toBe(BASE + syms.defined.get('outer')!);
    expect(linked.symbolAddress('helper_static')).toBe(BASE + syms.defined.get('helper_static')!);

    const table = Object.fromEntries([...syms.undefinedDyn].map((n) => [n, n === 'ext_arr' ? 0x6000_0000_0000 : 0xdead_0000]));
    checkImage(bin[which], linked, table);
  });

  it('relinking at another base moves exactly the base-relative slots by the difference', () => {
    const patch = ElfFile.fromFile(bin.selfCall);
    const resolve = (n: string) => (n === 'ext_arr' ? 0x6000_0000_0000 : undefined);
    const a = linkPatch(patch, BASE, resolve);
    const delta = 0x10_0000_0000;
    const b = linkPatch(patch, BASE + delta, resolve);
    const { rela } = refRelocs(bin.selfCall);
    const syms = refSymbols(bin.selfCall);
    const moving = new Set(rela.filter((r) => r.type === 'R_X86_64_RELATIVE' || (r.symbol && syms.defined.has(r.symbol))).map((r) => r.offset));
    expect(moving.size).toBeGreaterThan(3);
    for (let off = 0; off < a.image.length; off += 8) {
      const d = u64(b.image, off) - u64(a.image, off);
      expect(d, `slot 0x${off.toString(16)}`).toBe(moving.has(off) ? big(delta) : 0n);
    }
  });

  it('PC32 and 64 relocations with addends against an external symbol', () => {
    const patch = ElfFile.fromFile(bin.pcRel);
    const rela = refRelocs(bin.pcRel).rela;
    expect(rela.map((r) => r.type).sort()).toEqual(['R_X86_64_64', 'R_X86_64_64', 'R_X86_64_PC32']);
    const near = BASE - 0x1000_0000;
    const linked = linkPatch(patch, BASE, (n) => (n === 'counter' ? near : undefined));
    checkImage(bin.pcRel, linked, { counter: near });
    const words = refSymbols(bin.pcRel).defined.get('rel_words')!;
    expect(linked.image.readInt32LE(words)).toBe(near - (BASE + words));
    expect(Number(u64(linked.image, words + 8))).toBe(near + 16);
    expect(Number(u64(linked.image, words + 16))).toBe(near - 8);

    // The same symbol 4 GiB away cannot be reached by a 32-bit displacement.
    const e = expectHpError(() => linkPatch(patch, BASE, (n) => (n === 'counter' ? 0x1000 : undefined)), 'PATCH_RELOCATION_OVERFLOW', /R_X86_64_PC32.*counter/);
    expect(e.details.symbol).toBe('counter');
  });

  it('R_X86_64_32 / 32S are range-checked', () => {
    const good = readFileSync(bin.pcRel);
    const elf = ElfFile.fromBuffer(good);
    const relaDyn = elf.section('.rela.dyn')!;
    const idx = elf.dynamicRelocations.findIndex((r) => r.type === 2);
    const withType = (t: number) => {
      const b = Buffer.from(good);
      b.writeUInt32LE(t, relaDyn.offset + idx * 24 + 8);
      return ElfFile.fromBuffer(b, `type${t}.so`);
    };
    const slot = elf.dynamicRelocations[idx].offset;
    const r32 = linkPatch(withType(10), BASE, () => 0xffff_fff0);
    expect(r32.image.readUInt32LE(slot)).toBe(0xffff_fff0);
    expectHpError(() => linkPatch(withType(10), BASE, () => 0x1_0000_0000), 'PATCH_RELOCATION_OVERFLOW', /R_X86_64_32 /);
    const r32s = linkPatch(withType(11), BASE, () => 0x7fff_fff0);
    expect(r32s.image.readInt32LE(slot)).toBe(0x7fff_fff0);
    expectHpError(() => linkPatch(withType(11), BASE, () => 0x8000_0000), 'PATCH_RELOCATION_OVERFLOW', /R_X86_64_32S/);
  });

  it('refuses a base that is not page-aligned or does not fit in user space', () => {
    const patch = ElfFile.fromFile(bin.counterNostart);
    const resolve = () => 0x1000;
    expectHpError(() => linkPatch(patch, BASE + 0x10, resolve), 'PATCH_BAD_BASE', /page-aligned/);
    expectHpError(() => linkPatch(patch, 0x7fff_ffff_f000, resolve), 'PATCH_BAD_BASE');
    expectHpError(() => linkPatch(patch, -4096, resolve), 'PATCH_BAD_BASE');
  });
});

describe('linkPatch: unresolved symbols', () => {
  it('names every unresolved non-weak symbol in one refusal; weak ones become 0', () => {
    const patch = ElfFile.fromFile(bin.unresolved);
    const e = expectHpError(
      () => linkPatch(patch, BASE, (n) => (n === 'helper' ? HELPER : undefined)),
      'PATCH_UNRESOLVED_SYMBOL',
      /missing_a.*missing_b|missing_b.*missing_a/,
    );
    expect([...(e.details.symbols as string[])].sort()).toEqual(['missing_a', 'missing_b']);
    expect(e.message).toMatch(/2 symbols/);
    expect(e.message).not.toMatch(/opt_sym|helper/);

    const table = { helper: HELPER, missing_a: 0x4010_00, missing_b: 0x4020_00 };
    const linked = linkPatch(patch, BASE, tableResolver(table).resolve);
    checkImage(bin.unresolved, linked, table);
    expect(linked.resolved.find((x) => x.name === 'opt_sym')).toEqual({ name: 'opt_sym', address: 0, from: 'weak-undefined' });
    const opt = refRelocs(bin.unresolved).rela.find((x) => x.symbol === 'opt_sym')!;
    expect(u64(linked.image, opt.offset)).toBe(0n);
    // ...and a weak symbol the resolver does know is bound like any other.
    const linked2 = linkPatch(patch, BASE, tableResolver({ ...table, opt_sym: 0x4030_00 }).resolve);
    expect(Number(u64(linked2.image, opt.offset))).toBe(0x4030_00);
    expect(linked2.resolved.find((x) => x.name === 'opt_sym')!.from).toBe('resolver');
  });

  it('a single missing symbol is named too', () => {
    const e = expectHpError(
      () => linkPatch(ElfFile.fromFile(bin.counter), BASE, (n) => (n === 'helper' ? HELPER : undefined)),
      'PATCH_UNRESOLVED_SYMBOL',
      /1 symbol .*counter/,
    );
    expect(e.details.symbols).toEqual(['counter']);
  });

  it('rejects nonsense from the resolver', () => {
    expectHpError(() => linkPatch(ElfFile.fromFile(bin.counter), BASE, () => -5), 'PATCH_BAD_RESOLUTION');
    expectHpError(() => linkPatch(ElfFile.fromFile(bin.counter), BASE, () => 1.5), 'PATCH_BAD_RESOLUTION');
  });
});

describe('patch refusals', () => {
  it('thread-local storage: a PT_TLS segment, or TLS relocations', () => {
    for (const which of ['tlsDef', 'tlsExt', 'tlsExtIE']) {
      const patch = ElfFile.fromFile(bin[which]);
      const e = expectHpError(() => layoutPatch(patch), 'PATCH_TLS', /thread-local storage/);
      expect(e.message).toMatch(which === 'tlsDef' ? /per_thread/ : /ext_t/);
      expectHpError(() => linkPatch(patch, BASE, () => 0x1000), 'PATCH_TLS');
    }
    expect(refLoads(bin.tlsExt).length).toBeGreaterThan(0);
    expect(sh('readelf', ['-lW', bin.tlsExt])).not.toMatch(/^\s+TLS\s/m);
    expect(sh('readelf', ['-rW', bin.tlsExt])).toMatch(/R_X86_64_DTPMOD64/);
    expect(sh('readelf', ['-rW', bin.tlsExtIE])).toMatch(/R_X86_64_TPOFF64/);
  });

  it('constructors are refused, naming the function, with and without crt files', () => {
    for (const which of ['ctor', 'ctorNostart']) {
      const e = expectHpError(() => layoutPatch(ElfFile.fromFile(bin[which])), 'PATCH_CONSTRUCTOR', /constructor in \.init_array: boot;/);
      expect(e.details.functions).toEqual(['boot']);
    }
    // A user function that happens to be called frame_dummy is not the crtstuff one.
    const e = expectHpError(() => layoutPatch(ElfFile.fromFile(bin.fakeFrameDummy)), 'PATCH_CONSTRUCTOR', /frame_dummy/);
    expect(e.details.functions).toEqual(['frame_dummy']);
  });

  it('DT_INIT pointing at anything but crti _init is refused', () => {
    const e = expectHpError(() => layoutPatch(ElfFile.fromFile(bin.customInit)), 'PATCH_CONSTRUCTOR', /DT_INIT → myinit/);
    expect(e.details.function).toBe('myinit');
  });

  it('.preinit_array is refused (ld only allows it in executables, which are ET_DYN when PIE)', () => {
    expectHpError(() => layoutPatch(ElfFile.fromFile(bin.preinitPie)), 'PATCH_CONSTRUCTOR', /preinit_array/);
  });

  it('a stripped default build cannot prove its init_array entry harmless', () => {
    const e = expectHpError(() => layoutPatch(ElfFile.fromFile(bin.counterStripped)), 'PATCH_CONSTRUCTOR', /do not strip/);
    expect(e.message).toMatch(/\.init_array|DT_INIT/);
  });

  it('IRELATIVE and relocations against IFUNCs defined in the patch are refused', () => {
    const e = expectHpError(() => layoutPatch(ElfFile.fromFile(bin.ifuncStatic)), 'PATCH_UNSUPPORTED_RELOCATION', /R_X86_64_IRELATIVE at 0x[0-9a-f]+/);
    const off = refRelocs(bin.ifuncStatic).rela.find((r) => r.type === 'R_X86_64_IRELATIVE')!.offset;
    expect(e.message).toContain(`0x${off.toString(16)}`);
    expectHpError(() => layoutPatch(ElfFile.fromFile(bin.ifuncGlobal)), 'PATCH_UNSUPPORTED_RELOCATION', /IFUNC defined in the patch/);
  });

  it('injected COPY / TLS relocation types are refused by name and offset', () => {
    const good = readFileSync(bin.counterNostart);
    const elf = ElfFile.fromBuffer(good);
    const relaDyn = elf.section('.rela.dyn')!;
    const first = elf.dynamicRelocations.find((r) => r.section === '.rela.dyn')!;
    const inject = (t: number) => {
      const b = Buffer.from(good);
      b.writeUInt32LE(t, relaDyn.offset + 8);
      return ElfFile.fromBuffer(b, `t${t}.so`);
    };
    expectHpError(() => layoutPatch(inject(5)), 'PATCH_UNSUPPORTED_RELOCATION', new RegExp(`R_X86_64_COPY at 0x${first.offset.toString(16)}`));
    expectHpError(() => layoutPatch(inject(18)), 'PATCH_TLS', /R_X86_64_TPOFF64/);
    expectHpError(() => layoutPatch(inject(36)), 'PATCH_TLS', /R_X86_64_TLSDESC/);
    expectHpError(() => layoutPatch(inject(33)), 'PATCH_UNSUPPORTED_RELOCATION', /R_X86_64_SIZE64/);
    expectHpError(() => layoutPatch(inject(99)), 'PATCH_UNSUPPORTED_RELOCATION', /99/);
  });

  it('a relocation whose place is outside every segment is refused', () => {
    const good = readFileSync(bin.counterNostart);
    const elf = ElfFile.fromBuffer(good);
    const b = Buffer.from(good);
    b.writeBigUInt64LE(0x100000n, elf.section('.rela.dyn')!.offset);
    expectHpError(() => layoutPatch(ElfFile.fromBuffer(b, 'x.so')), 'PATCH_LAYOUT', /not inside a PT_LOAD/);
  });

  it('relocations the dynamic section lists but no section header describes are refused', () => {
    const good = readFileSync(bin.counter);
    const elf = ElfFile.fromBuffer(good);
    const plt = elf.section('.rela.plt')!;
    const b = Buffer.from(good);
    b.writeUInt32LE(1, elf.header.shoff + plt.index * 64 + 4); // sh_type = PROGBITS
    expectHpError(() => layoutPatch(ElfFile.fromBuffer(b, 'x.so')), 'PATCH_LAYOUT', /DT_JMPREL/);
  });

  it('every refusal happens in layoutPatch already, before any image exists', () => {
    for (const which of ['tlsDef', 'ctor', 'customInit', 'ifuncStatic', 'noPie']) {
      let resolverCalled = false;
      expect(() => layoutPatch(ElfFile.fromFile(bin[which]))).toThrow(HpError);
      expect(() =>
        linkPatch(ElfFile.fromFile(bin[which]), BASE, () => {
          resolverCalled = true;
          return 0x1000;
        }),
      ).toThrow(HpError);
      expect(resolverCalled, which).toBe(false);
    }
  });
});
