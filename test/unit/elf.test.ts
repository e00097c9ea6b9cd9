import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import {
  DT_INIT,
  DT_NEEDED,
  ElfFile,
  ET_DYN,
  ET_EXEC,
  PF_R,
  PF_W,
  PF_X,
  PT_DYNAMIC,
  PT_LOAD,
  PT_TLS,
  R_X86_64_RELATIVE,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_WRITE,
  relocationTypeName,
  type ElfSymbol,
} from '../../src/elf/index.js';

// ------------------------------------------------------------------------------------------------
// Build helpers and independent readelf parsers

let dir: string;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

function build(out: string, sources: Record<string, string>, flags: string[]): string {
  const files = Object.entries(sources).map(([name, text]) => {
    const p = join(dir, `${out}-${name}`);
    writeFileSync(p, text);
    return p;
  });
  const outPath = join(dir, out);
  sh('gcc', [...flags, ...files, '-o', outPath]);
  return outPath;
}

interface RefSymbol {
  num: number;
  value: number;
  size: number;
  type: string;
  bind: string;
  vis: string;
  ndx: string;
  name: string;
}

/** `readelf -Ws`, split per table; .dynsym version decorations (`@GLIBC_2.2.5 (3)`) are removed. */
function refSymbols(path: string): Record<string, RefSymbol[]> {
  const tables: Record<string, RefSymbol[]> = {};
  let current: RefSymbol[] | undefined;
  let currentName = '';
  for (const line of sh('readelf', ['-Ws', path]).split('\n')) {
    const t = /^Symbol table '([^']+)'/.exec(line);
    if (t) {
      currentName = t[1];
      current = tables[currentName] = [];
      continue;
    }
    const m = /^\s*(\d+):\s+([0-9a-f]+)\s+(\d+|0x[0-9a-f]+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s?(.*)$/.exec(line);
    if (!m || !current) continue;
    let name = m[8];
    if (currentName === '.dynsym') name = name.replace(/ \(\d+\)$/, '').replace(/@.*$/, '');
    current.push({
      num: Number(m[1]),
      value: parseInt(m[2], 16),
      size: m[3].startsWith('0x') ? parseInt(m[3], 16) : Number(m[3]),
      type: m[4],
      bind: m[5],
      vis: m[6],
      ndx: m[7],
      name,
    });
  }
  return tables;
}

interface RefSection {
  index: number;
  name: string;
  type: string;
  addr: number;
  offset: number;
  size: number;
  entsize: number;
  flags: string;
  link: number;
  info: number;
  align: number;
}

function refSections(path: string): RefSection[] {
  const out: RefSection[] = [];
  for (const line of sh('readelf', ['-SW', path]).split('\n')) {
    const m = /^\s*\[\s*(\d+)\]\s(.*)$/.exec(line);
    if (!m || Number(m[1]) === 0) continue;
    const tok = m[2].trim().split(/\s+/);
    const [al, inf, lk] = [tok.pop()!, tok.pop()!, tok.pop()!];
    const flags = tok.length === 7 ? tok.pop()! : '';
    const [name, type, addr, off, size, es] = tok;
    out.push({
      index: Number(m[1]),
      name,
      type,
      addr: parseInt(addr, 16),
      offset: parseInt(off, 16),
      size: parseInt(size, 16),
      entsize: parseInt(es, 16),
      flags,
      link: Number(lk),
      info: Number(inf),
      align: Number(al),
    });
  }
  return out;
}

interface RefSegment {
  type: string;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
  flags: string;
  align: number;
}

function refSegments(path: string): RefSegment[] {
  const out: RefSegment[] = [];
  for (const line of sh('readelf', ['-lW', path]).split('\n')) {
    const m =
      /^\s+([A-Z_]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+([RWE ]+?)\s+0x([0-9a-f]+)$/.exec(
        line,
      );
    if (!m) continue;
    out.push({
      type: m[1],
      offset: parseInt(m[2], 16),
      vaddr: parseInt(m[3], 16),
      filesz: parseInt(m[4], 16),
      memsz: parseInt(m[5], 16),
      flags: m[6].replace(/\s+/g, ''),
      align: parseInt(m[7], 16),
    });
  }
  return out;
}

interface RefReloc {
  section: string;
  offset: number;
  symbolIndex: number;
  type: number;
  typeName: string;
  symbolName?: string;
  addend: number;
}

/** `readelf -rW`: RELA sections entry by entry; RELR sections as their list of relocated offsets. */
function refRelocs(path: string): { rela: RefReloc[]; relr: Record<string, number[]> } {
  const rela: RefReloc[] = [];
  const relr: Record<string, number[]> = {};
  let section = '';
  let isRelr = false;
  for (const line of sh('readelf', ['-rW', path]).split('\n')) {
    const s = /^Relocation section '([^']+)'/.exec(line);
    if (s) {
      section = s[1];
      isRelr = section.startsWith('.relr');
      if (isRelr) relr[section] = [];
      continue;
    }
    if (isRelr) {
      const r = /^([0-9a-f]{16})\b/.exec(line);
      if (r) relr[section].push(parseInt(r[1], 16));
      continue;
    }
    const m = /^([0-9a-f]{16})\s+([0-9a-f]{16})\s+(R_X86_64_\w+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const info = BigInt(`0x${m[2]}`);
    const rest = m[4].trim();
    let addend = 0;
    let symbolName: string | undefined;
    const withSym = /^[0-9a-f]+\s+(.+?)\s+([+-])\s+([0-9a-f]+)$/.exec(rest);
    if (withSym) {
      symbolName = withSym[1].replace(/@.*$/, '');
      addend = parseInt(withSym[3], 16) * (withSym[2] === '-' ? -1 : 1);
    } else if (rest !== '') {
      addend = rest.startsWith('-') ? -parseInt(rest.slice(1), 16) : parseInt(rest, 16);
    }
    rela.push({
      section,
      offset: parseInt(m[1], 16),
      symbolIndex: Number(info >> 32n),
      type: Number(info & 0xffffffffn),
      typeName: m[3],
      symbolName,
      addend,
    });
  }
  return { rela, relr };
}

function refBuildId(path: string): string | undefined {
  return /Build ID: ([0-9a-f]+)/.exec(sh('readelf', ['-n', path]))?.[1];
}

function refDynamic(path: string): { tag: number; text: string }[] {
  const out: { tag: number; text: string }[] = [];
  for (const line of sh('readelf', ['-dW', path]).split('\n')) {
    const m = /^\s*0x([0-9a-f]+)\s+\((\w+)\)\s+(.*)$/.exec(line);
    if (m) out.push({ tag: parseInt(m[1], 16), text: m[3].trim() });
  }
  return out.filter((d) => d.tag !== 0);
}

function refHeader(path: string): { type: string; entry: number } {
  const text = sh('readelf', ['-hW', path]);
  return {
    type: /Type:\s+(\w+)/.exec(text)![1],
    entry: parseInt(/Entry point address:\s+0x([0-9a-f]+)/.exec(text)![1], 16),
  };
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
  expect(e.code).toBe(code);
  if (messagePattern) expect(e.message).toMatch(messagePattern);
  return e;
}

/** Touch every lazily parsed part of the file. */
function touchEverything(elf: ElfFile): void {
  void elf.symbols;
  void elf.dynamicSymbols;
  void elf.buildId;
  void elf.dynamic;
  void elf.neededLibraries;
  void elf.dynamicRelocations;
  elf.findSymbol('main');
  for (const s of elf.sections) elf.sectionData(s);
}

// ------------------------------------------------------------------------------------------------
// Test programs

const progA = `
#include <stdio.h>
int global_counter = 5;
char big_bss[8192];
__thread int tls_var = 7;
const char greeting[] = "hello from hp-agent";
/* LOCAL FUNC twin here, GLOBAL FUNC twin in b.c */
static int __attribute__((noinline, used)) twin(int x) { return x * 2; }
/* LOCAL NOTYPE label here, LOCAL FUNC labelled in b.c */
__asm__(".text\\n.p2align 4\\nlabelled:\\n\\tret\\n");
__attribute__((weak)) int weak_fn(void) { return 3; }
int other(int);
int main(int argc, char **argv) {
  (void)argv;
  big_bss[argc] = 1;
  printf("%s %d %d %d\\n", greeting, twin(argc) + other(argc), weak_fn(), tls_var);
  return 0;
}
`;
const progB = `
extern int global_counter;
int twin(int x) { return x + global_counter; }
static int __attribute__((noinline, used)) labelled(void) { return 9; }
int other(int x) { return twin(x) + labelled(); }
`;
const libSrc = `
#include <stdio.h>
int lib_value = 42;
int *lib_ptr = &lib_value;
static int hidden_arr[16];
int *hidden_ptr = &hidden_arr[3];
extern int extern_counter;
int lib_fn(const char *s) { extern_counter++; return puts(s) + *lib_ptr + hidden_ptr[0]; }
`;

const bin: Record<string, string> = {};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hp-elf-test-'));
  const prog = { 'a.c': progA, 'b.c': progB };
  bin.pie = build('pie', prog, ['-O0', '-fPIE', '-pie', '-Wl,--build-id']);
  bin.nopie = build('nopie', prog, ['-O0', '-fno-pie', '-no-pie', '-Wl,--build-id=md5']);
  bin.lib = build('lib.so', { 'lib.c': libSrc }, ['-O2', '-fPIC', '-shared', '-Wl,--build-id']);
  bin.libRelr = build('librelr.so', { 'lib.c': libSrc }, ['-O2', '-fPIC', '-shared', '-Wl,-z,pack-relative-relocs']);
  bin.libNoId = build('libnoid.so', { 'lib.c': libSrc }, ['-O2', '-fPIC', '-shared', '-Wl,--build-id=none']);
  bin.libHexId = build('libhexid.so', { 'lib.c': libSrc }, ['-O2', '-fPIC', '-shared', '-Wl,--build-id=0x0123456789ABCDEF']);
  bin.libStripped = join(dir, 'libstripped.so');
  sh('strip', ['--strip-all', bin.lib, '-o', bin.libStripped]);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ALL = ['pie', 'nopie', 'lib', 'libRelr', 'libNoId', 'libHexId', 'libStripped'];

// ------------------------------------------------------------------------------------------------

describe('ElfFile header, segments and sections', () => {
  it.each(ALL)('%s: header matches readelf -h', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refHeader(bin[which]);
    expect(elf.name).toBe(bin[which]);
    expect(elf.header.machine).toBe(62);
    expect(elf.header.type).toBe(ref.type === 'DYN' ? ET_DYN : ref.type === 'EXEC' ? ET_EXEC : -1);
    expect(elf.header.entry).toBe(ref.entry);
    expect(elf.isPie).toBe(which !== 'nopie');
    expect(elf.header.phnum).toBe(elf.programHeaders.length);
    expect(elf.header.shnum).toBe(elf.sections.length);
  });

  it.each(ALL)('%s: program headers match readelf -l', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refSegments(bin[which]);
    expect(elf.programHeaders.length).toBe(ref.length);
    const typeNames: Record<number, string> = { [PT_LOAD]: 'LOAD', [PT_DYNAMIC]: 'DYNAMIC', [PT_TLS]: 'TLS' };
    elf.programHeaders.forEach((p, i) => {
      const r = ref[i];
      if (typeNames[p.type]) expect(r.type).toBe(typeNames[p.type]);
      expect({ offset: p.offset, vaddr: p.vaddr, filesz: p.filesz, memsz: p.memsz, align: p.align }).toEqual({
        offset: r.offset,
        vaddr: r.vaddr,
        filesz: r.filesz,
        memsz: r.memsz,
        align: r.align,
      });
      const flags = `${p.flags & PF_R ? 'R' : ''}${p.flags & PF_W ? 'W' : ''}${p.flags & PF_X ? 'E' : ''}`;
      expect(flags).toBe(r.flags);
    });
    // The test programs do have TLS, the library does not.
    expect(elf.programHeaders.some((p) => p.type === PT_TLS)).toBe(which === 'pie' || which === 'nopie');
  });

  it.each(ALL)('%s: sections match readelf -S', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refSections(bin[which]);
    expect(elf.sections.length).toBe(ref.length + 1);
    expect(elf.sections[0].type).toBe(0);
    for (const r of ref) {
      const s = elf.sections[r.index];
      expect(s.index).toBe(r.index);
      expect({
        name: s.name,
        addr: s.addr,
        offset: s.offset,
        size: s.size,
        entsize: s.entsize,
        link: s.link,
        info: s.info,
        align: s.addralign,
      }).toEqual({
        name: r.name,
        addr: r.addr,
        offset: r.offset,
        size: r.size,
        entsize: r.entsize,
        link: r.link,
        info: r.info,
        align: r.align,
      });
      expect(Boolean(s.flags & SHF_WRITE)).toBe(r.flags.includes('W'));
      expect(Boolean(s.flags & SHF_ALLOC)).toBe(r.flags.includes('A'));
      expect(Boolean(s.flags & SHF_EXECINSTR)).toBe(r.flags.includes('X'));
      expect(elf.section(r.name)).toBeDefined();
      const data = elf.sectionData(s);
      expect(data.length).toBe(r.type === 'NOBITS' ? 0 : r.size);
    }
  });

  it('sectionData returns the file bytes of a section', () => {
    const elf = ElfFile.fromFile(bin.pie);
    const file = readFileSync(bin.pie);
    const rodata = elf.section('.rodata')!;
    expect(elf.sectionData(rodata).equals(file.subarray(rodata.offset, rodata.offset + rodata.size))).toBe(true);
    expect(elf.sectionData(rodata).includes(Buffer.from('hello from hp-agent\0'))).toBe(true);
    expect(elf.sectionData(elf.section('.bss')!).length).toBe(0);
    expect(elf.section('.no-such-section')).toBeUndefined();
  });

  it('fromBuffer gives the same result and the given name', () => {
    const buf = readFileSync(bin.lib);
    const a = ElfFile.fromBuffer(buf, 'mylib');
    const b = ElfFile.fromFile(bin.lib);
    expect(a.name).toBe('mylib');
    expect(a.buffer).toBe(buf);
    expect(a.sections).toEqual(b.sections);
    expect(a.programHeaders).toEqual(b.programHeaders);
    expect(a.dynamicRelocations).toEqual(b.dynamicRelocations);
  });
});

describe('ElfFile symbols', () => {
  function compareTable(ours: { name: string; value: number; size: number; type: string; bind: string; visibility: number; shndx: number; defined: boolean; index: number }[], ref: RefSymbol[] | undefined): void {
    expect(ref).toBeDefined();
    expect(ours.length).toBe(ref!.length);
    const typeName: Record<string, string> = { GNU_IFUNC: 'IFUNC' };
    const vis = ['DEFAULT', 'INTERNAL', 'HIDDEN', 'PROTECTED'];
    ours.forEach((s, i) => {
      const r = ref![i];
      expect(s.index).toBe(r.num);
      expect(s.name).toBe(r.name);
      expect(s.value).toBe(r.value);
      expect(s.size).toBe(r.size);
      expect(typeName[s.type] ?? s.type).toBe(r.type);
      expect(s.bind).toBe(r.bind);
      expect(vis[s.visibility]).toBe(r.vis);
      const ndx = s.shndx === 0 ? 'UND' : s.shndx === 0xfff1 ? 'ABS' : s.shndx === 0xfff2 ? 'COM' : String(s.shndx);
      expect(ndx).toBe(r.ndx);
      expect(s.defined).toBe(r.ndx !== 'UND');
    });
  }

  it.each(ALL)('%s: .symtab and .dynsym match readelf -Ws', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refSymbols(bin[which]);
    compareTable(elf.dynamicSymbols, ref['.dynsym']);
    if (which === 'libStripped') {
      expect(ref['.symtab']).toBeUndefined();
      expect(elf.symbols).toEqual([]);
    } else {
      compareTable(elf.symbols, ref['.symtab']);
    }
    expect(elf.dynamicSymbols[0]).toMatchObject({ index: 0, name: '', defined: false });
  });

  it('findSymbol prefers GLOBAL over LOCAL and FUNC over NOTYPE', () => {
    const elf = ElfFile.fromFile(bin.pie);
    const ref = refSymbols(bin.pie)['.symtab'];
    // Make sure the test program really has the ambiguous names it is meant to have.
    const twins = ref.filter((s) => s.name === 'twin');
    expect(twins.map((s) => `${s.bind}/${s.type}`).sort()).toEqual(['GLOBAL/FUNC', 'LOCAL/FUNC']);
    const labels = ref.filter((s) => s.name === 'labelled');
    expect(labels.map((s) => `${s.bind}/${s.type}`)).toEqual(['LOCAL/NOTYPE', 'LOCAL/FUNC']);
    expect(labels[0].value).not.toBe(labels[1].value);

    const twin = elf.findSymbol('twin')!;
    expect(twin.bind).toBe('GLOBAL');
    expect(twin.value).toBe(twins.find((s) => s.bind === 'GLOBAL')!.value);
    const labelled = elf.findSymbol('labelled')!;
    expect(labelled.type).toBe('FUNC');
    expect(labelled.value).toBe(labels[1].value);

    expect(elf.findSymbol('main')!.value).toBe(ref.find((s) => s.name === 'main')!.value);
    expect(elf.findSymbol('global_counter')).toMatchObject({ type: 'OBJECT', size: 4 });
    expect(elf.findSymbol('tls_var')).toMatchObject({ type: 'TLS' });
    expect(elf.findSymbol('weak_fn')).toMatchObject({ bind: 'WEAK', type: 'FUNC' });
    // printf is only an undefined reference: not found.
    expect(elf.symbols.some((s) => s.name.startsWith('printf') && !s.defined)).toBe(true);
    expect(elf.findSymbol('printf')).toBeUndefined();
    expect(elf.findSymbol('printf@GLIBC_2.2.5')).toBeUndefined();
    expect(elf.findSymbol('does_not_exist')).toBeUndefined();
  });

  it('findSymbol keeps the first of equally good symbols, in table order, for every name', () => {
    // The look-up as it was, one scan per call: the reference for the per-file index.
    const reference = (elf: ElfFile, name: string) => {
      const rank = (s: ElfSymbol) => (s.bind === 'GLOBAL' || s.bind === 'WEAK' ? 2 : 0) + (s.type === 'FUNC' || s.type === 'OBJECT' ? 1 : 0);
      for (const table of [elf.symbols, elf.dynamicSymbols]) {
        const list = table.filter((s) => s.defined && s.name !== '' && s.name === name);
        if (list.length === 0) continue;
        let best = list[0];
        for (const s of list) if (rank(s) > rank(best)) best = s;
        return best;
      }
      return undefined;
    };
    let ties = 0;
    const libc = readFileSync('/proc/self/maps', 'utf8').match(/\/\S*\/libc\.so[.\d]*$/m)?.[0];
    for (const file of [bin.pie, bin.lib, bin.libStripped, ...(libc ? [libc] : [])]) {
      const elf = ElfFile.fromFile(file);
      const names = new Set([...elf.symbols, ...elf.dynamicSymbols].map((s) => s.name));
      const byName = new Map<string, number>();
      for (const s of elf.symbols) if (s.defined && s.name) byName.set(s.name, (byName.get(s.name) ?? 0) + 1);
      ties += [...byName.values()].filter((n) => n > 1).length;
      for (const name of [...names, 'does_not_exist']) expect(elf.findSymbol(name), `${file}: ${name}`).toBe(reference(elf, name));
    }
    expect(ties).toBeGreaterThan(0); // names defined more than once, where the order matters
  });

  it('findSymbol falls back to .dynsym when the file is stripped', () => {
    const elf = ElfFile.fromFile(bin.libStripped);
    const full = ElfFile.fromFile(bin.lib);
    expect(elf.symbols).toEqual([]);
    const s = elf.findSymbol('lib_fn')!;
    expect(s).toBeDefined();
    expect(s.value).toBe(full.findSymbol('lib_fn')!.value);
    expect(s).toEqual(full.dynamicSymbols.find((d) => d.name === 'lib_fn'));
    // .symtab is consulted first on the unstripped file: the index is the .symtab index.
    const fromSymtab = full.findSymbol('lib_fn')!;
    expect(full.symbols[fromSymtab.index]).toBe(fromSymtab);
    expect(elf.findSymbol('extern_counter')).toBeUndefined();
  });
});

describe('ElfFile notes and dynamic section', () => {
  it.each(ALL)('%s: build-id matches readelf -n', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    expect(elf.buildId).toBe(refBuildId(bin[which]));
  });

  it('build-id kinds: sha1 (20 bytes), md5 (16 bytes), explicit hex, none', () => {
    expect(ElfFile.fromFile(bin.pie).buildId).toMatch(/^[0-9a-f]{40}$/);
    expect(ElfFile.fromFile(bin.nopie).buildId).toMatch(/^[0-9a-f]{32}$/);
    expect(ElfFile.fromFile(bin.libHexId).buildId).toBe('0123456789abcdef');
    expect(ElfFile.fromFile(bin.libNoId).buildId).toBeUndefined();
  });

  it.each(ALL)('%s: dynamic entries and DT_NEEDED match readelf -d', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refDynamic(bin[which]);
    expect(elf.dynamic.map((d) => d.tag)).toEqual(ref.map((d) => d.tag));
    elf.dynamic.forEach((d, i) => {
      const text = ref[i].text;
      if (/^0x[0-9a-f]+$/.test(text)) expect(d.value).toBe(parseInt(text, 16));
      const bytes = /^(\d+) \(bytes\)$/.exec(text);
      if (bytes) expect(d.value).toBe(Number(bytes[1]));
    });
    const needed = ref.filter((d) => d.tag === DT_NEEDED).map((d) => /\[(.*)\]/.exec(d.text)![1]);
    expect(elf.neededLibraries).toEqual(needed);
    expect(elf.neededLibraries).toContain('libc.so.6');
    expect(elf.dynamic.some((d) => d.tag === DT_INIT)).toBe(true);
  });
});

describe('ElfFile relocations', () => {
  it.each(ALL)('%s: dynamicRelocations match readelf -r', (which) => {
    const elf = ElfFile.fromFile(bin[which]);
    const ref = refRelocs(bin[which]);
    const rela = elf.dynamicRelocations.filter((r) => !r.section.startsWith('.relr'));
    expect(rela.length).toBe(ref.rela.length);
    rela.forEach((r, i) => {
      const e = ref.rela[i];
      expect({ section: r.section, offset: r.offset, type: r.type, symbolIndex: r.symbolIndex, addend: r.addend }).toEqual({
        section: e.section,
        offset: e.offset,
        type: e.type,
        symbolIndex: e.symbolIndex,
        addend: e.addend,
      });
      expect(relocationTypeName(r.type)).toBe(e.typeName);
      if (e.symbolIndex !== 0) {
        expect(r.symbol).toBe(elf.dynamicSymbols[e.symbolIndex]);
        expect(r.symbol!.name).toBe(e.symbolName);
      } else {
        expect(r.symbol).toBeUndefined();
      }
    });
    expect(rela.some((r) => r.section === '.rela.plt')).toBe(true);
  });

  it('the shared library has the relocation kinds the source implies', () => {
    const elf = ElfFile.fromFile(bin.lib);
    const kinds = elf.dynamicRelocations.map((r) => `${relocationTypeName(r.type)} ${r.symbol?.name ?? ''}`.trim());
    expect(kinds).toContain('R_X86_64_GLOB_DAT extern_counter');
    expect(kinds).toContain('R_X86_64_JUMP_SLOT puts');
    expect(kinds).toContain('R_X86_64_64 lib_value');
    // hidden_ptr = &hidden_arr[3]: RELATIVE with addend = hidden_arr + 12
    const hiddenArr = elf.findSymbol('hidden_arr')!;
    const hiddenPtr = elf.findSymbol('hidden_ptr')!;
    const rel = elf.dynamicRelocations.find((r) => r.offset === hiddenPtr.value)!;
    expect(rel.type).toBe(R_X86_64_RELATIVE);
    expect(rel.addend).toBe(hiddenArr.value + 12);
  });

  it('packed SHT_RELR relocations are expanded into RELATIVE entries', () => {
    const elf = ElfFile.fromFile(bin.libRelr);
    const ref = refRelocs(bin.libRelr);
    expect(Object.keys(ref.relr)).toEqual(['.relr.dyn']);
    const relr = elf.dynamicRelocations.filter((r) => r.section === '.relr.dyn');
    expect(relr.map((r) => r.offset)).toEqual(ref.relr['.relr.dyn']);
    expect(ref.rela.some((r) => r.typeName === 'R_X86_64_RELATIVE')).toBe(false);
    for (const r of relr) {
      expect(r.type).toBe(R_X86_64_RELATIVE);
      expect(r.symbolIndex).toBe(0);
      expect(r.addend).toBe(Number(elf.readVirtual(r.offset, 8).readBigUInt64LE()));
    }
    // Same set of RELATIVE targets as the unpacked build of the same source.
    const plain = ElfFile.fromFile(bin.lib);
    const hiddenPtr = elf.findSymbol('hidden_ptr')!;
    expect(relr.find((r) => r.offset === hiddenPtr.value)!.addend).toBe(elf.findSymbol('hidden_arr')!.value + 12);
    expect(relr.length).toBe(plain.dynamicRelocations.filter((r) => r.type === R_X86_64_RELATIVE).length);
  });

  it('relocationTypeName covers 0..42 and marks unknown numbers', () => {
    expect(relocationTypeName(0)).toBe('R_X86_64_NONE');
    expect(relocationTypeName(8)).toBe('R_X86_64_RELATIVE');
    expect(relocationTypeName(18)).toBe('R_X86_64_TPOFF64');
    expect(relocationTypeName(37)).toBe('R_X86_64_IRELATIVE');
    expect(relocationTypeName(42)).toBe('R_X86_64_REX_GOTPCRELX');
    for (let i = 0; i <= 42; i++) expect(relocationTypeName(i)).toMatch(/^R_X86_64_[A-Z0-9_]+$/);
    expect(relocationTypeName(43)).toContain('43');
  });
});

describe('ElfFile virtual addresses', () => {
  it('vaddrToFileOffset agrees with the section table', () => {
    const elf = ElfFile.fromFile(bin.pie);
    for (const r of refSections(bin.pie)) {
      if (r.addr === 0 || r.type === 'NOBITS' || r.size === 0) continue;
      expect(elf.vaddrToFileOffset(r.addr)).toBe(r.offset);
      expect(elf.vaddrToFileOffset(r.addr + r.size - 1)).toBe(r.offset + r.size - 1);
    }
    const bss = elf.section('.bss')!;
    expect(elf.vaddrToFileOffset(bss.addr + 16)).toBeUndefined();
    expect(elf.vaddrToFileOffset(0x7fff_0000_0000)).toBeUndefined();
  });

  it('readVirtual returns loaded bytes: data, rodata, and zero-filled bss', () => {
    for (const which of ['pie', 'nopie']) {
      const elf = ElfFile.fromFile(bin[which]);
      const greeting = elf.findSymbol('greeting')!;
      expect(elf.readVirtual(greeting.value, greeting.size).toString('latin1')).toBe('hello from hp-agent\0');
      expect(elf.readVirtual(elf.findSymbol('global_counter')!.value, 4).readInt32LE()).toBe(5);
      const big = elf.findSymbol('big_bss')!;
      expect(big.size).toBe(8192);
      expect(elf.vaddrToFileOffset(big.value)).toBeUndefined();
      const bss = elf.readVirtual(big.value, 8192);
      expect(bss.length).toBe(8192);
      expect(bss.every((b) => b === 0)).toBe(true);
      // A read spanning the end of .data into .bss: file bytes then zeros.
      const data = elf.section('.data')!;
      const span = elf.readVirtual(data.addr, data.size + 8);
      expect(span.subarray(0, data.size).equals(elf.sectionData(data))).toBe(true);
      expect(elf.readVirtual(0, 0).length).toBe(0);
    }
  });

  it('readVirtual refuses addresses outside every PT_LOAD', () => {
    const elf = ElfFile.fromFile(bin.lib);
    const loads = elf.programHeaders.filter((p) => p.type === PT_LOAD);
    const last = loads[loads.length - 1];
    const end = last.vaddr + last.memsz;
    const e = expectHpError(() => elf.readVirtual(end + 0x100000, 4), 'ELF_ADDRESS_UNMAPPED', /not inside any PT_LOAD/);
    expect(e.details.vaddr).toBe(end + 0x100000);
    expectHpError(() => elf.readVirtual(end - 4, 8), 'ELF_ADDRESS_UNMAPPED');
    expect(elf.readVirtual(end - 4, 4).length).toBe(4);
  });
});

describe('ElfFile refusals', () => {
  it('refuses 32-bit, big-endian and non-x86-64 files as ELF_UNSUPPORTED', () => {
    const good = readFileSync(bin.lib);
    const cls = Buffer.from(good);
    cls[4] = 1;
    expectHpError(() => ElfFile.fromBuffer(cls, 'x'), 'ELF_UNSUPPORTED', /ELFCLASS32/);
    expectHpError(() => ElfFile.fromBuffer(cls.subarray(0, 52), 'x'), 'ELF_UNSUPPORTED', /ELFCLASS32/);
    const be = Buffer.from(good);
    be[5] = 2;
    expectHpError(() => ElfFile.fromBuffer(be, 'x'), 'ELF_UNSUPPORTED', /little-endian/);
    const arm = Buffer.from(good);
    arm.writeUInt16LE(183, 18);
    expectHpError(() => ElfFile.fromBuffer(arm, 'x'), 'ELF_UNSUPPORTED', /machine 183/);
  });

  it('refuses a file that is not ELF at all', () => {
    expectHpError(() => ElfFile.fromBuffer(Buffer.from('#!/bin/sh\necho hi\n'), 'script'), 'ELF_NOT_ELF', /script is not an ELF file/);
  });

  it('fromFile on a missing file is an HpError', () => {
    expectHpError(() => ElfFile.fromFile(join(dir, 'nope')), 'ELF_READ_FAILED', /cannot read/);
  });

  it.each(['pie', 'lib', 'libStripped'])('%s: every truncation is ELF_CORRUPT, never a RangeError', (which) => {
    const full = readFileSync(bin[which]);
    const elf = ElfFile.fromBuffer(full);
    const cuts = new Set<number>([0, 1, 3, 4, 5, 16, 40, 63, 64, 65, full.length - 1, full.length - 64, full.length - 65]);
    cuts.add(elf.header.phoff + 56 * 2 + 3);
    for (const s of elf.sections) {
      cuts.add(s.offset + 1);
      cuts.add(s.offset + Math.floor(s.size / 2));
    }
    for (let i = 1; i < 40; i++) cuts.add(Math.floor((full.length * i) / 40));
    for (const cut of cuts) {
      if (cut < 0 || cut >= full.length) continue;
      const e = expectHpError(() => touchEverything(ElfFile.fromBuffer(full.subarray(0, cut), `cut${cut}`)), 'ELF_CORRUPT');
      expect(e.message).toContain(`cut${cut}`);
      expect(e.message).toMatch(/truncated|outside the file/);
    }
  });

  it('corrupt tables produce ELF_CORRUPT naming the bad structure', () => {
    const good = readFileSync(bin.lib);
    const elf = ElfFile.fromBuffer(good);

    const badPhoff = Buffer.from(good);
    badPhoff.writeBigUInt64LE(BigInt(good.length - 10), 32);
    expectHpError(() => ElfFile.fromBuffer(badPhoff, 'x'), 'ELF_CORRUPT', /program header table/);

    const hugeShoff = Buffer.from(good);
    hugeShoff.writeBigUInt64LE(0xffff_ffff_ffff_fff0n, 40);
    expectHpError(() => ElfFile.fromBuffer(hugeShoff, 'x'), 'ELF_CORRUPT', /e_shoff/);

    // Point .dynsym's contents past the end of the file.
    const dynsym = elf.section('.dynsym')!;
    const badSym = Buffer.from(good);
    badSym.writeBigUInt64LE(BigInt(good.length), elf.header.shoff + dynsym.index * 64 + 24);
    expectHpError(() => ElfFile.fromBuffer(badSym, 'x'), 'ELF_CORRUPT', /section 4|section \d+/);

    // A relocation whose symbol index is past the end of .dynsym.
    const relaDyn = elf.section('.rela.dyn')!;
    const badRel = Buffer.from(good);
    badRel.writeUInt32LE(0xffff, relaDyn.offset + 12);
    expectHpError(() => ElfFile.fromBuffer(badRel, 'x').dynamicRelocations, 'ELF_CORRUPT', /refers to symbol 65535/);

    // A symbol name index past the end of .dynstr.
    const badName = Buffer.from(good);
    badName.writeUInt32LE(0xfffffff, dynsym.offset + 24);
    expectHpError(() => ElfFile.fromBuffer(badName, 'x').dynamicSymbols, 'ELF_CORRUPT', /string index/);
  });

  it('random corruption never escapes as anything but HpError', () => {
    const good = readFileSync(bin.lib);
    const elf = ElfFile.fromBuffer(good);
    // Deterministic xorshift PRNG so failures are reproducible.
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const hot = [
      [0, 64],
      [elf.header.phoff, elf.header.phnum * 56],
      [elf.header.shoff, elf.header.shnum * 64],
      [elf.section('.dynsym')!.offset, elf.section('.dynsym')!.size],
      [elf.section('.rela.dyn')!.offset, elf.section('.rela.dyn')!.size],
      [elf.section('.note.gnu.build-id')!.offset, 36],
      [elf.section('.dynamic')!.offset, elf.section('.dynamic')!.size],
    ];
    let refusals = 0;
    for (let iter = 0; iter < 600; iter++) {
      const buf = Buffer.from(good);
      const [start, len] = hot[iter % hot.length];
      for (let k = 0; k < 1 + rand(4); k++) buf[start + rand(len)] = rand(256);
      try {
        touchEverything(ElfFile.fromBuffer(buf, 'fuzz'));
        const f = ElfFile.fromBuffer(buf, 'fuzz');
        for (const p of f.programHeaders) {
          if (p.type === PT_LOAD) {
            try {
              f.readVirtual(p.vaddr, Math.min(p.memsz, 64));
            } catch (err) {
              expect(err).toBeInstanceOf(HpError);
            }
          }
        }
      } catch (err) {
        if (!(err instanceof HpError)) throw new Error(`iteration ${iter}: ${String(err)}`);
        refusals++;
      }
    }
    expect(refusals).toBeGreaterThan(0);
  });
});
