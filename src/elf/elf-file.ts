import { readFileSync } from 'node:fs';
import { HpError } from '../errors.js';
import { buildIdInNotes } from './build-id.js';
import {
  DT_NEEDED,
  DT_NULL,
  DT_STRSZ,
  DT_STRTAB,
  EI_CLASS,
  EI_DATA,
  ELF64_DYN_SIZE,
  ELF64_EHDR_SIZE,
  ELF64_PHDR_SIZE,
  ELF64_RELA_SIZE,
  ELF64_SHDR_SIZE,
  ELF64_SYM_SIZE,
  ELFCLASS64,
  ELFDATA2LSB,
  ELFMAG,
  EM_X86_64,
  ET_DYN,
  PT_DYNAMIC,
  PT_LOAD,
  PT_NOTE,
  R_X86_64_RELATIVE,
  SHF_ALLOC,
  SHN_UNDEF,
  SHN_XINDEX,
  SHT_DYNAMIC,
  SHT_DYNSYM,
  SHT_NOBITS,
  SHT_NOTE,
  SHT_RELA,
  SHT_RELR,
  SHT_SYMTAB,
  SHT_SYMTAB_SHNDX,
} from './constants.js';
import type {
  DynamicEntry,
  ElfHeader,
  ElfSymbol,
  ElfSymbolBind,
  ElfSymbolType,
  ProgramHeader,
  Relocation,
  Section,
} from './types.js';
import { hexAddr } from '../hex.js';

const PN_XNUM = 0xffff;

const SYMBOL_TYPES: Record<number, ElfSymbolType> = {
  0: 'NOTYPE',
  1: 'OBJECT',
  2: 'FUNC',
  3: 'SECTION',
  4: 'FILE',
  5: 'COMMON',
  6: 'TLS',
  10: 'GNU_IFUNC',
};
const SYMBOL_BINDS: Record<number, ElfSymbolBind> = { 0: 'LOCAL', 1: 'GLOBAL', 2: 'WEAK' };


/**
 * A little-endian ELF64 x86-64 file held in memory. The header, program headers and section headers
 * are parsed and bounds-checked when the file is opened; symbol tables, notes, the dynamic section
 * and relocations are parsed (and bounds-checked) on first access and cached. Every malformed
 * structure is reported as HpError('ELF_CORRUPT') naming the structure, never as a RangeError.
 */
export class ElfFile {
  readonly name: string;
  readonly buffer: Buffer;
  readonly header: ElfHeader;
  readonly isPie: boolean;
  readonly programHeaders: ProgramHeader[];
  readonly sections: Section[];

  #symbols?: ElfSymbol[];
  #dynamicSymbols?: ElfSymbol[];
  #symbolTables = new Map<number, ElfSymbol[]>();
  #byName?: Map<string, ElfSymbol>[];
  #buildId?: { value: string | undefined };
  #dynamic?: DynamicEntry[];
  #needed?: string[];
  #relocations?: Relocation[];

  static fromFile(path: string): ElfFile {
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new HpError('ELF_READ_FAILED', `cannot read ELF file ${path}: ${e.message}`, {
        path,
        errno: e.code,
      });
    }
    return new ElfFile(buf, path);
  }

  static fromBuffer(buf: Buffer, name = '<buffer>'): ElfFile {
    return new ElfFile(buf, name);
  }

  private constructor(buf: Buffer, name: string) {
    this.name = name;
    this.buffer = buf;
    this.header = this.#parseHeader();
    this.isPie = this.header.type === ET_DYN;
    this.programHeaders = this.#parseProgramHeaders();
    this.sections = this.#parseSections();
    this.#checkSegments();
  }

  // ---------------------------------------------------------------------------------------------
  // Bounds-checked primitive reads

  #corrupt(message: string, details: Record<string, unknown> = {}): never {
    throw new HpError('ELF_CORRUPT', `${this.name}: ${message}`, { file: this.name, ...details });
  }

  /** Throw ELF_CORRUPT unless [offset, offset+length) lies inside the file. */
  #check(offset: number, length: number, what: string): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.buffer.length
    ) {
      this.#corrupt(
        `${what} (file offset ${hexAddr(offset)}, ${length} bytes) lies outside the file (${this.buffer.length} bytes); the file is truncated or corrupt`,
        { offset, length, fileSize: this.buffer.length },
      );
    }
  }

  #u8(off: number, what: string): number {
    this.#check(off, 1, what);
    return this.buffer.readUInt8(off);
  }

  #u16(off: number, what: string): number {
    this.#check(off, 2, what);
    return this.buffer.readUInt16LE(off);
  }

  #u32(off: number, what: string): number {
    this.#check(off, 4, what);
    return this.buffer.readUInt32LE(off);
  }

  #u64(off: number, what: string): number {
    this.#check(off, 8, what);
    const v = this.buffer.readBigUInt64LE(off);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      this.#corrupt(`${what} at file offset ${hexAddr(off)} is ${hexAddr(v)}, beyond 2^53`, {
        offset: off,
      });
    }
    return Number(v);
  }

  #i64(off: number, what: string): number {
    this.#check(off, 8, what);
    const v = this.buffer.readBigInt64LE(off);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      this.#corrupt(`${what} at file offset ${hexAddr(off)} is ${v}, beyond ±2^53`, { offset: off });
    }
    return Number(v);
  }

  /** NUL-terminated string at `index` inside the string table occupying [tabOff, tabOff+tabSize). */
  #string(tabOff: number, tabSize: number, index: number, what: string): string {
    if (index >= tabSize) {
      this.#corrupt(`${what}: string index ${index} is past the end of its ${tabSize}-byte string table`);
    }
    this.#check(tabOff, tabSize, `string table for ${what}`);
    const start = tabOff + index;
    const end = this.buffer.indexOf(0, start);
    if (end < 0 || end >= tabOff + tabSize) {
      this.#corrupt(`${what}: string at index ${index} is not NUL-terminated within its string table`);
    }
    return this.buffer.toString('utf8', start, end);
  }

  // ---------------------------------------------------------------------------------------------
  // Eager parsing

  #parseHeader(): ElfHeader {
    const b = this.buffer;
    const magicLen = Math.min(b.length, ELFMAG.length);
    if (!b.subarray(0, magicLen).equals(ELFMAG.subarray(0, magicLen))) {
      throw new HpError('ELF_NOT_ELF', `${this.name} is not an ELF file (no \\x7fELF magic at offset 0)`, {
        file: this.name,
      });
    }
    if (b.length < ELF64_EHDR_SIZE) {
      // Distinguish a 32-bit file (whose header is smaller) from a truncated 64-bit one where possible.
      if (b.length > EI_CLASS && b[EI_CLASS] !== ELFCLASS64) this.#unsupportedClass();
      this.#corrupt(
        `ELF header is truncated: the file has ${b.length} bytes, an ELF64 header needs ${ELF64_EHDR_SIZE}`,
        { fileSize: b.length },
      );
    }
    if (b[EI_CLASS] !== ELFCLASS64) this.#unsupportedClass();
    if (b[EI_DATA] !== ELFDATA2LSB) {
      throw new HpError(
        'ELF_UNSUPPORTED',
        `${this.name} is not little-endian (EI_DATA=${b[EI_DATA]}); only little-endian ELF64 x86-64 is supported`,
        { file: this.name, data: b[EI_DATA] },
      );
    }
    const machine = this.#u16(18, 'e_machine');
    if (machine !== EM_X86_64) {
      throw new HpError(
        'ELF_UNSUPPORTED',
        `${this.name} is for machine ${machine}, not x86-64 (${EM_X86_64}); only ELF64 x86-64 is supported`,
        { file: this.name, machine },
      );
    }
    const type = this.#u16(16, 'e_type');
    const entry = this.#u64(24, 'e_entry');
    const phoff = this.#u64(32, 'e_phoff');
    const shoff = this.#u64(40, 'e_shoff');
    const phentsize = this.#u16(54, 'e_phentsize');
    let phnum = this.#u16(56, 'e_phnum');
    const shentsize = this.#u16(58, 'e_shentsize');
    let shnum = this.#u16(60, 'e_shnum');
    let shstrndx = this.#u16(62, 'e_shstrndx');

    if (shoff !== 0) {
      if (shentsize !== ELF64_SHDR_SIZE) {
        this.#corrupt(`e_shentsize is ${shentsize}, expected ${ELF64_SHDR_SIZE}`);
      }
      // Extended numbering: the real counts live in section header 0.
      if (shnum === 0) shnum = this.#u64(shoff + 32, 'section header 0 sh_size (extended e_shnum)');
      if (shstrndx === SHN_XINDEX) shstrndx = this.#u32(shoff + 40, 'section header 0 sh_link (extended e_shstrndx)');
      if (phnum === PN_XNUM) phnum = this.#u32(shoff + 44, 'section header 0 sh_info (extended e_phnum)');
    } else {
      shnum = 0;
    }
    if (phnum > 0 && phentsize !== ELF64_PHDR_SIZE) {
      this.#corrupt(`e_phentsize is ${phentsize}, expected ${ELF64_PHDR_SIZE}`);
    }
    return { type, machine, entry, phoff, shoff, phnum, shnum, shstrndx };
  }

  #unsupportedClass(): never {
    const cls = this.buffer[EI_CLASS];
    throw new HpError(
      'ELF_UNSUPPORTED',
      `${this.name} is ELF class ${cls === 1 ? 'ELFCLASS32' : cls}, not ELFCLASS64; only 64-bit x86-64 ELF is supported`,
      { file: this.name, class: cls },
    );
  }

  #parseProgramHeaders(): ProgramHeader[] {
    const { phoff, phnum } = this.header;
    if (phnum === 0) return [];
    this.#check(phoff, phnum * ELF64_PHDR_SIZE, `program header table (${phnum} entries)`);
    const out: ProgramHeader[] = [];
    for (let i = 0; i < phnum; i++) {
      const o = phoff + i * ELF64_PHDR_SIZE;
      const what = `program header ${i}`;
      out.push({
        type: this.#u32(o, `${what} p_type`),
        flags: this.#u32(o + 4, `${what} p_flags`),
        offset: this.#u64(o + 8, `${what} p_offset`),
        vaddr: this.#u64(o + 16, `${what} p_vaddr`),
        filesz: this.#u64(o + 32, `${what} p_filesz`),
        memsz: this.#u64(o + 40, `${what} p_memsz`),
        align: this.#u64(o + 48, `${what} p_align`),
      });
    }
    return out;
  }

  #parseSections(): Section[] {
    const { shoff, shnum, shstrndx } = this.header;
    if (shnum === 0) return [];
    this.#check(shoff, shnum * ELF64_SHDR_SIZE, `section header table (${shnum} entries)`);
    const raw: (Omit<Section, 'name'> & { nameIndex: number })[] = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * ELF64_SHDR_SIZE;
      const what = `section header ${i}`;
      raw.push({
        index: i,
        nameIndex: this.#u32(o, `${what} sh_name`),
        type: this.#u32(o + 4, `${what} sh_type`),
        flags: this.#u64(o + 8, `${what} sh_flags`),
        addr: this.#u64(o + 16, `${what} sh_addr`),
        offset: this.#u64(o + 24, `${what} sh_offset`),
        size: this.#u64(o + 32, `${what} sh_size`),
        link: this.#u32(o + 40, `${what} sh_link`),
        info: this.#u32(o + 44, `${what} sh_info`),
        addralign: this.#u64(o + 48, `${what} sh_addralign`),
        entsize: this.#u64(o + 56, `${what} sh_entsize`),
      });
    }
    for (const s of raw) {
      if (s.type !== SHT_NOBITS && s.type !== 0 && s.size > 0) {
        this.#check(s.offset, s.size, `contents of section ${s.index}`);
      }
    }
    let strtab: { offset: number; size: number } | undefined;
    if (shstrndx !== SHN_UNDEF) {
      const st = raw[shstrndx];
      if (!st) this.#corrupt(`e_shstrndx ${shstrndx} is not a valid section index (${shnum} sections)`);
      strtab = { offset: st.offset, size: st.size };
    }
    return raw.map(({ nameIndex, ...s }) => ({
      ...s,
      name: strtab ? this.#string(strtab.offset, strtab.size, nameIndex, `name of section ${s.index}`) : '',
    }));
  }

  #checkSegments(): void {
    this.programHeaders.forEach((p, i) => {
      if (p.type === PT_LOAD || p.type === PT_DYNAMIC || p.type === PT_NOTE) {
        if (p.filesz > 0) this.#check(p.offset, p.filesz, `file contents of program header ${i}`);
        if (p.type === PT_LOAD && p.filesz > p.memsz) {
          this.#corrupt(`PT_LOAD program header ${i} has p_filesz ${hexAddr(p.filesz)} > p_memsz ${hexAddr(p.memsz)}`);
        }
        if (!Number.isSafeInteger(p.vaddr + p.memsz)) {
          this.#corrupt(`program header ${i} ends beyond 2^53`);
        }
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Sections

  section(name: string): Section | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** The section's bytes in the file (a view, not a copy); empty for SHT_NOBITS. */
  sectionData(sec: Section): Buffer {
    if (sec.type === SHT_NOBITS || sec.size === 0) return Buffer.alloc(0);
    this.#check(sec.offset, sec.size, `contents of section ${sec.name || sec.index}`);
    return this.buffer.subarray(sec.offset, sec.offset + sec.size);
  }

  // ---------------------------------------------------------------------------------------------
  // Symbols

  get symbols(): ElfSymbol[] {
    if (!this.#symbols) {
      const sec = this.sections.find((s) => s.type === SHT_SYMTAB);
      this.#symbols = sec ? this.#symbolTable(sec.index) : [];
    }
    return this.#symbols;
  }

  get dynamicSymbols(): ElfSymbol[] {
    if (!this.#dynamicSymbols) {
      const sec = this.sections.find((s) => s.type === SHT_DYNSYM);
      this.#dynamicSymbols = sec ? this.#symbolTable(sec.index) : [];
    }
    return this.#dynamicSymbols;
  }

  #symbolTable(index: number): ElfSymbol[] {
    const cached = this.#symbolTables.get(index);
    if (cached) return cached;
    const sec = this.sections[index];
    if (!sec) this.#corrupt(`symbol table section index ${index} does not exist`);
    if (sec.type !== SHT_SYMTAB && sec.type !== SHT_DYNSYM) {
      this.#corrupt(`section ${sec.name || index} is used as a symbol table but has type ${sec.type}`);
    }
    if (sec.entsize !== ELF64_SYM_SIZE && sec.entsize !== 0) {
      this.#corrupt(`symbol table ${sec.name} has sh_entsize ${sec.entsize}, expected ${ELF64_SYM_SIZE}`);
    }
    const strsec = this.sections[sec.link];
    if (!strsec) this.#corrupt(`symbol table ${sec.name} links to missing string table section ${sec.link}`);
    const shndxSec = this.sections.find((s) => s.type === SHT_SYMTAB_SHNDX && s.link === index);
    const count = Math.floor(sec.size / ELF64_SYM_SIZE);
    this.#check(sec.offset, count * ELF64_SYM_SIZE, `symbol table ${sec.name}`);
    const out: ElfSymbol[] = [];
    for (let i = 0; i < count; i++) {
      const o = sec.offset + i * ELF64_SYM_SIZE;
      const what = `${sec.name} symbol ${i}`;
      const nameIndex = this.#u32(o, `${what} st_name`);
      const info = this.#u8(o + 4, `${what} st_info`);
      const other = this.#u8(o + 5, `${what} st_other`);
      let shndx = this.#u16(o + 6, `${what} st_shndx`);
      if (shndx === SHN_XINDEX && shndxSec) {
        shndx = this.#u32(shndxSec.offset + i * 4, `${what} extended section index`);
      }
      out.push({
        name: this.#string(strsec.offset, strsec.size, nameIndex, `name of ${what}`),
        value: this.#u64(o + 8, `${what} st_value`),
        size: this.#u64(o + 16, `${what} st_size`),
        type: SYMBOL_TYPES[info & 0xf] ?? 'OTHER',
        bind: SYMBOL_BINDS[info >> 4] ?? 'OTHER',
        visibility: other & 3,
        shndx,
        defined: shndx !== SHN_UNDEF,
        index: i,
      });
    }
    this.#symbolTables.set(index, out);
    return out;
  }

  /**
   * A defined symbol by name: .symtab first, then .dynsym. Within a table, GLOBAL/WEAK beats LOCAL,
   * then FUNC/OBJECT beats other types; among equals the first in table order wins.
   */
  findSymbol(name: string): ElfSymbol | undefined {
    if (!this.#byName) {
      // The best of each name, chosen once per file rather than at every look-up.
      const rank = (s: ElfSymbol): number =>
        (s.bind === 'GLOBAL' || s.bind === 'WEAK' ? 2 : 0) + (s.type === 'FUNC' || s.type === 'OBJECT' ? 1 : 0);
      this.#byName = [this.symbols, this.dynamicSymbols].map((table) => {
        const m = new Map<string, ElfSymbol>();
        for (const s of table) {
          if (!s.defined || s.name === '') continue;
          const best = m.get(s.name);
          if (!best || rank(s) > rank(best)) m.set(s.name, s);
        }
        return m;
      });
    }
    return this.#byName[0].get(name) ?? this.#byName[1].get(name);
  }

  // ---------------------------------------------------------------------------------------------
  // Notes

  get buildId(): string | undefined {
    if (!this.#buildId) this.#buildId = { value: this.#findBuildId() };
    return this.#buildId.value;
  }

  #findBuildId(): string | undefined {
    const regions: { offset: number; size: number; align: number; what: string }[] = [];
    if (this.sections.length > 0) {
      for (const s of this.sections) {
        if (s.type === SHT_NOTE) regions.push({ offset: s.offset, size: s.size, align: s.addralign, what: `note section ${s.name}` });
      }
    } else {
      this.programHeaders.forEach((p, i) => {
        if (p.type === PT_NOTE) regions.push({ offset: p.offset, size: p.filesz, align: p.align, what: `PT_NOTE segment ${i}` });
      });
    }
    for (const r of regions) {
      this.#check(r.offset, r.size, r.what);
      const id = buildIdInNotes(this.buffer.subarray(r.offset, r.offset + r.size), r.align);
      if (typeof id === 'object') this.#corrupt(`${r.what}: note at file offset ${hexAddr(r.offset + id.overrunAt)} runs past the end of its region`);
      if (id !== undefined) return id;
    }
    return undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Dynamic section

  get dynamic(): DynamicEntry[] {
    if (!this.#dynamic) {
      let region: { offset: number; size: number; what: string } | undefined;
      const ph = this.programHeaders.find((p) => p.type === PT_DYNAMIC);
      if (ph) region = { offset: ph.offset, size: ph.filesz, what: 'PT_DYNAMIC segment' };
      else {
        const sec = this.sections.find((s) => s.type === SHT_DYNAMIC);
        if (sec) region = { offset: sec.offset, size: sec.size, what: `section ${sec.name}` };
      }
      const out: DynamicEntry[] = [];
      if (region) {
        const count = Math.floor(region.size / ELF64_DYN_SIZE);
        for (let i = 0; i < count; i++) {
          const o = region.offset + i * ELF64_DYN_SIZE;
          const tag = this.#i64(o, `${region.what} entry ${i} d_tag`);
          if (tag === DT_NULL) break;
          out.push({ tag, value: this.#u64(o + 8, `${region.what} entry ${i} d_val`) });
        }
      }
      this.#dynamic = out;
    }
    return this.#dynamic;
  }

  get neededLibraries(): string[] {
    if (!this.#needed) {
      const needed = this.dynamic.filter((d) => d.tag === DT_NEEDED);
      if (needed.length === 0) {
        this.#needed = [];
      } else {
        const strtab = this.#dynamicStringTable();
        this.#needed = needed.map((d) => this.#string(strtab.offset, strtab.size, d.value, 'DT_NEEDED entry'));
      }
    }
    return this.#needed;
  }

  #dynamicStringTable(): { offset: number; size: number } {
    const strtabAddr = this.dynamic.find((d) => d.tag === DT_STRTAB)?.value;
    const strsz = this.dynamic.find((d) => d.tag === DT_STRSZ)?.value;
    if (strtabAddr !== undefined) {
      const off = this.vaddrToFileOffset(strtabAddr);
      if (off === undefined) this.#corrupt(`DT_STRTAB ${hexAddr(strtabAddr)} is not inside any PT_LOAD file contents`);
      const size = strsz ?? this.buffer.length - off;
      this.#check(off, size, 'dynamic string table (DT_STRTAB/DT_STRSZ)');
      return { offset: off, size };
    }
    const dynsec = this.sections.find((s) => s.type === SHT_DYNAMIC);
    const strsec = dynsec ? this.sections[dynsec.link] : undefined;
    if (!strsec) this.#corrupt('the dynamic section has DT_NEEDED entries but no string table (no DT_STRTAB)');
    return { offset: strsec.offset, size: strsec.size };
  }

  // ---------------------------------------------------------------------------------------------
  // Relocations

  /**
   * Every entry of every SHT_RELA section with SHF_ALLOC (.rela.dyn, .rela.plt), in section order.
   * Packed SHT_RELR sections (.relr.dyn, from `-z pack-relative-relocs`) are expanded into
   * R_X86_64_RELATIVE entries whose addend is the value stored in the relocated slot, so that a
   * consumer applying these relocations sees every relative relocation.
   */
  get dynamicRelocations(): Relocation[] {
    if (!this.#relocations) {
      const out: Relocation[] = [];
      for (const sec of this.sections) {
        if ((sec.flags & SHF_ALLOC) === 0) continue;
        if (sec.type === SHT_RELA) this.#readRela(sec, out);
        else if (sec.type === SHT_RELR) this.#readRelr(sec, out);
      }
      this.#relocations = out;
    }
    return this.#relocations;
  }

  #readRela(sec: Section, out: Relocation[]): void {
    if (sec.entsize !== ELF64_RELA_SIZE && sec.entsize !== 0) {
      this.#corrupt(`relocation section ${sec.name} has sh_entsize ${sec.entsize}, expected ${ELF64_RELA_SIZE}`);
    }
    const count = Math.floor(sec.size / ELF64_RELA_SIZE);
    this.#check(sec.offset, count * ELF64_RELA_SIZE, `relocation section ${sec.name}`);
    let symtab: ElfSymbol[] = [];
    if (sec.link !== 0) symtab = this.#symbolTable(sec.link);
    for (let i = 0; i < count; i++) {
      const o = sec.offset + i * ELF64_RELA_SIZE;
      const what = `${sec.name} entry ${i}`;
      const offset = this.#u64(o, `${what} r_offset`);
      const type = this.#u32(o + 8, `${what} r_info type`);
      const symbolIndex = this.#u32(o + 12, `${what} r_info symbol`);
      const addend = this.#i64(o + 16, `${what} r_addend`);
      const rel: Relocation = { offset, type, symbolIndex, addend, section: sec.name };
      if (symbolIndex !== 0) {
        const sym = symtab[symbolIndex];
        if (!sym) {
          this.#corrupt(`${what} refers to symbol ${symbolIndex}, but its symbol table has ${symtab.length} entries`);
        }
        rel.symbol = sym;
      }
      out.push(rel);
    }
  }

  #readRelr(sec: Section, out: Relocation[]): void {
    const count = Math.floor(sec.size / 8);
    this.#check(sec.offset, count * 8, `relocation section ${sec.name}`);
    const push = (addr: number): void => {
      const slot = this.vaddrToFileOffset(addr);
      if (slot === undefined) this.#corrupt(`${sec.name} relocates ${hexAddr(addr)}, which has no file contents`);
      out.push({
        offset: addr,
        type: R_X86_64_RELATIVE,
        symbolIndex: 0,
        addend: this.#i64(slot, `${sec.name} implicit addend at ${hexAddr(addr)}`),
        section: sec.name,
      });
    };
    let where = 0;
    for (let i = 0; i < count; i++) {
      const o = sec.offset + i * 8;
      const lo = this.buffer.readUInt32LE(o);
      if ((lo & 1) === 0) {
        // An address entry: relocate it, then bitmaps that follow describe the words after it.
        const addr = this.#u64(o, `${sec.name} entry ${i}`);
        push(addr);
        where = addr + 8;
      } else {
        // A bitmap entry: bit k (1..63) set → relocate where + (k-1)*8.
        const bits = this.buffer.readBigUInt64LE(o) >> 1n;
        for (let k = 0; k < 63; k++) {
          if ((bits >> BigInt(k)) & 1n) push(where + k * 8);
        }
        where += 63 * 8;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Virtual addresses

  /** The file offset holding the byte at link-time address `vaddr`, or undefined (not in a PT_LOAD's file part). */
  vaddrToFileOffset(vaddr: number): number | undefined {
    for (const p of this.programHeaders) {
      if (p.type === PT_LOAD && vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz) return p.offset + (vaddr - p.vaddr);
    }
    return undefined;
  }

  /**
   * `length` bytes at link-time address `vaddr` as the loader would map them: file bytes, and zeros
   * for the part of a segment past p_filesz (.bss). May span adjacent PT_LOAD segments; every byte
   * must be covered by some PT_LOAD, else HpError('ELF_ADDRESS_UNMAPPED').
   */
  readVirtual(vaddr: number, length: number): Buffer {
    if (!Number.isSafeInteger(vaddr) || !Number.isSafeInteger(length) || vaddr < 0 || length < 0) {
      throw new HpError('ELF_ADDRESS_UNMAPPED', `${this.name}: cannot read ${length} bytes at ${vaddr}: invalid range`, {
        file: this.name,
        vaddr,
        length,
      });
    }
    const out = Buffer.alloc(length);
    const end = vaddr + length;
    let pos = vaddr;
    while (pos < end) {
      const p = this.programHeaders.find((h) => h.type === PT_LOAD && pos >= h.vaddr && pos < h.vaddr + h.memsz);
      if (!p) {
        throw new HpError(
          'ELF_ADDRESS_UNMAPPED',
          `${this.name}: address ${hexAddr(pos)} (reading ${length} bytes at ${hexAddr(vaddr)}) is not inside any PT_LOAD segment`,
          { file: this.name, vaddr, length, unmapped: pos },
        );
      }
      const chunkEnd = Math.min(end, p.vaddr + p.memsz);
      const fileEnd = Math.min(chunkEnd, p.vaddr + p.filesz);
      if (pos < fileEnd) {
        const src = p.offset + (pos - p.vaddr);
        this.#check(src, fileEnd - pos, `file contents of PT_LOAD at ${hexAddr(p.vaddr)}`);
        this.buffer.copy(out, pos - vaddr, src, src + (fileEnd - pos));
      }
      pos = chunkEnd;
    }
    return out;
  }
}
