/**
 * Just enough of DWARF (versions 2 to 5, as gcc emits them) to find the functions of an object
 * and where the compiler inlined them: the DW_TAG_subprogram and DW_TAG_inlined_subroutine
 * entries of .debug_info, with their names, origins and code addresses. Every other entry is
 * stepped over (its attributes are decoded only far enough to skip them). No DWARF reader on npm
 * is kept up for ELF (the ones there are for WebAssembly), so this is ours.
 *
 * Sections compressed with SHF_COMPRESSED (zlib) are inflated; anything this reader does not
 * understand (zstd, a split-DWARF skeleton, a form it does not know) ends the read of that unit
 * or file with a DwarfError: callers treat the object as one without usable DWARF.
 */
import zlib from 'node:zlib';
import type { ElfFile } from './elf-file.js';
import { hexAddr } from '../hex.js';

export const DW_TAG_compile_unit = 0x11;
export const DW_TAG_inlined_subroutine = 0x1d;
export const DW_TAG_subprogram = 0x2e;

const DW_AT_name = 0x03;
const DW_AT_low_pc = 0x11;
const DW_AT_abstract_origin = 0x31;
const DW_AT_specification = 0x47;
const DW_AT_ranges = 0x55;
const DW_AT_linkage_name = 0x6e;
const DW_AT_MIPS_linkage_name = 0x2007;
const DW_AT_str_offsets_base = 0x72;
const DW_AT_addr_base = 0x73;

const SHF_COMPRESSED = 0x800;
const ELFCOMPRESS_ZLIB = 1;

export class DwarfError extends Error {}

/** One subprogram or inlined subroutine. Offsets are from the start of .debug_info. */
export interface Die {
  offset: number;
  tag: number;
  /** DW_AT_name (strings resolved). */
  name?: string;
  /** DW_AT_linkage_name (or DW_AT_MIPS_linkage_name): the symbol's name for C++. */
  linkageName?: string;
  /** DW_AT_abstract_origin, as a .debug_info offset. */
  abstractOrigin?: number;
  /** DW_AT_specification, as a .debug_info offset. */
  specification?: number;
  /** DW_AT_low_pc (link-time address). */
  lowPc?: number;
  /** True when the entry describes code (it has DW_AT_low_pc or DW_AT_ranges); false for an abstract instance. */
  hasCode: boolean;
  /** The nearest enclosing subprogram or inlined subroutine, if any. */
  parent?: Die;
}

export interface DwarfInfo {
  /** Every subprogram and inlined subroutine, in .debug_info order. */
  dies: Die[];
  byOffset: Map<number, Die>;
}

/** The bytes of a debug section, inflated when compressed; undefined when the file has none. */
export function debugSection(elf: ElfFile, name: string): Buffer | undefined {
  const sec = elf.section(name);
  if (!sec || sec.size === 0) return undefined;
  const data = elf.sectionData(sec);
  if (!(sec.flags & SHF_COMPRESSED)) return data;
  if (data.length < 24) throw new DwarfError(`${name}: truncated compression header`);
  const type = data.readUInt32LE(0);
  if (type !== ELFCOMPRESS_ZLIB) throw new DwarfError(`${name}: compression type ${type} is not supported (only zlib)`);
  return zlib.inflateSync(data.subarray(24));
}

class Reader {
  pos: number;
  constructor(readonly buf: Buffer, pos = 0) {
    this.pos = pos;
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new DwarfError(`truncated at offset ${hexAddr(this.pos)}`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u24(): number {
    return this.u16() | (this.u8() << 16);
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return Number(v);
  }
  uN(n: number): number {
    return n === 1 ? this.u8() : n === 2 ? this.u16() : n === 4 ? this.u32() : this.u64();
  }
  uleb(): number {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      if (!(b & 0x80)) return result;
      mul *= 128;
    }
  }
  sleb(): number {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) return b & 0x40 ? result - mul : result;
    }
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new DwarfError(`unterminated string at offset ${hexAddr(this.pos)}`);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
}

interface AbbrevAttr {
  at: number;
  form: number;
  implicit?: number;
}
interface Abbrev {
  tag: number;
  children: boolean;
  attrs: AbbrevAttr[];
}

function readAbbrevs(data: Buffer, offset: number): Map<number, Abbrev> {
  const r = new Reader(data, offset);
  const out = new Map<number, Abbrev>();
  for (;;) {
    const code = r.uleb();
    if (code === 0) return out;
    const tag = r.uleb();
    const children = r.u8() !== 0;
    const attrs: AbbrevAttr[] = [];
    for (;;) {
      const at = r.uleb();
      const form = r.uleb();
      if (at === 0 && form === 0) break;
      attrs.push(form === 0x21 ? { at, form, implicit: r.sleb() } : { at, form });
    }
    out.set(code, { tag, children, attrs });
  }
}

interface Unit {
  offset: number;
  version: number;
  offsetSize: 4 | 8;
  addressSize: number;
  strOffsetsBase?: number;
  addrBase?: number;
}

/** A decoded attribute value: a number, a string, or a deferred string/address index. */
type Value = { n: number } | { s: string } | { strx: number } | { addrx: number } | { ref: number } | undefined;

interface Sections {
  info: Buffer;
  abbrev: Buffer;
  str?: Buffer;
  lineStr?: Buffer;
  strOffsets?: Buffer;
  addr?: Buffer;
}

function stringAt(sec: Buffer | undefined, offset: number, what: string): string {
  if (!sec) throw new DwarfError(`${what} refers to a string section the file does not have`);
  return new Reader(sec, offset).cstring();
}

function readValue(r: Reader, form: number, unit: Unit, s: Sections, implicit: number | undefined): Value {
  const off = () => r.uN(unit.offsetSize);
  switch (form) {
    case 0x01: return { n: r.uN(unit.addressSize) }; // addr
    case 0x03: r.skip(r.u16()); return undefined; // block2
    case 0x04: r.skip(r.u32()); return undefined; // block4
    case 0x05: return { n: r.u16() }; // data2
    case 0x06: return { n: r.u32() }; // data4
    case 0x07: return { n: r.u64() }; // data8
    case 0x08: return { s: r.cstring() }; // string
    case 0x09: case 0x18: r.skip(r.uleb()); return undefined; // block, exprloc
    case 0x0a: r.skip(r.u8()); return undefined; // block1
    case 0x0b: case 0x0c: return { n: r.u8() }; // data1, flag
    case 0x0d: return { n: r.sleb() }; // sdata
    case 0x0e: return { s: stringAt(s.str, off(), 'DW_FORM_strp') }; // strp
    case 0x0f: return { n: r.uleb() }; // udata
    case 0x10: return { ref: unit.version <= 2 ? r.uN(unit.addressSize) : off() }; // ref_addr: from the section's start
    case 0x11: return { ref: unit.offset + r.u8() }; // ref1
    case 0x12: return { ref: unit.offset + r.u16() }; // ref2
    case 0x13: return { ref: unit.offset + r.u32() }; // ref4
    case 0x14: return { ref: unit.offset + r.u64() }; // ref8
    case 0x15: return { ref: unit.offset + r.uleb() }; // ref_udata
    case 0x16: return readValue(r, r.uleb(), unit, s, implicit); // indirect
    case 0x17: return { n: off() }; // sec_offset
    case 0x19: return { n: 1 }; // flag_present
    case 0x1a: return { strx: r.uleb() }; // strx
    case 0x1b: return { addrx: r.uleb() }; // addrx
    case 0x1c: r.skip(4); return undefined; // ref_sup4
    case 0x1d: case 0x1f20: case 0x1f21: off(); return undefined; // strp_sup, GNU_ref_alt, GNU_strp_alt (another file)
    case 0x1e: r.skip(16); return undefined; // data16
    case 0x1f: return { s: stringAt(s.lineStr, off(), 'DW_FORM_line_strp') }; // line_strp
    case 0x20: r.skip(8); return undefined; // ref_sig8 (a type unit)
    case 0x21: return { n: implicit ?? 0 }; // implicit_const
    case 0x22: case 0x23: return { n: r.uleb() }; // loclistx, rnglistx
    case 0x24: r.skip(8); return undefined; // ref_sup8
    case 0x25: return { strx: r.u8() };
    case 0x26: return { strx: r.u16() };
    case 0x27: return { strx: r.u24() };
    case 0x28: return { strx: r.u32() };
    case 0x29: return { addrx: r.u8() };
    case 0x2a: return { addrx: r.u16() };
    case 0x2b: return { addrx: r.u24() };
    case 0x2c: return { addrx: r.u32() };
    case 0x1f01: return { addrx: r.uleb() }; // GNU_addr_index
    case 0x1f02: return { strx: r.uleb() }; // GNU_str_index
    default:
      throw new DwarfError(`unknown attribute form ${hexAddr(form)} at offset ${hexAddr(r.pos)}`);
  }
}

/** A string or address given by index (DWARF 5): resolved once the unit's bases are known. */
function resolveString(v: Value, unit: Unit, s: Sections): string | undefined {
  if (!v) return undefined;
  if ('s' in v) return v.s;
  if ('strx' in v) {
    if (!s.strOffsets || !s.str) throw new DwarfError('DW_FORM_strx without .debug_str_offsets');
    const base = unit.strOffsetsBase ?? 8; // DWARF 5: after the 8-byte header of the (only) contribution
    return stringAt(s.str, new Reader(s.strOffsets, base + v.strx * unit.offsetSize).uN(unit.offsetSize), 'DW_FORM_strx');
  }
  return undefined;
}

function resolveAddress(v: Value, unit: Unit, s: Sections): number | undefined {
  if (!v) return undefined;
  if ('n' in v) return v.n;
  if ('addrx' in v) {
    if (!s.addr) throw new DwarfError('DW_FORM_addrx without .debug_addr');
    return new Reader(s.addr, (unit.addrBase ?? 8) + v.addrx * unit.addressSize).uN(unit.addressSize);
  }
  return undefined;
}

/** The unit header at `r.pos`; returns where the unit ends. */
function readUnitHeader(r: Reader, s: Sections): { unit: Unit; end: number; abbrevs: Map<number, Abbrev> } {
  const offset = r.pos;
  let length = r.u32();
  let offsetSize: 4 | 8 = 4;
  if (length === 0xffffffff) {
    length = r.u64();
    offsetSize = 8;
  } else if (length >= 0xfffffff0) {
    throw new DwarfError(`reserved unit length ${hexAddr(length)} at ${hexAddr(offset)}`);
  }
  const end = r.pos + length;
  const version = r.u16();
  let addressSize: number;
  let abbrevOffset: number;
  if (version >= 5) {
    const unitType = r.u8();
    addressSize = r.u8();
    abbrevOffset = r.uN(offsetSize);
    if (unitType === 0x04 || unitType === 0x05) r.skip(8); // skeleton, split_compile: dwo_id
    else if (unitType === 0x02 || unitType === 0x06) r.skip(8 + offsetSize); // type, split_type
  } else if (version >= 2) {
    abbrevOffset = r.uN(offsetSize);
    addressSize = r.u8();
  } else {
    throw new DwarfError(`DWARF version ${version} at ${hexAddr(offset)} is not supported`);
  }
  if (addressSize !== 4 && addressSize !== 8) throw new DwarfError(`address size ${addressSize} at ${hexAddr(offset)}`);
  return { unit: { offset, version, offsetSize, addressSize }, end, abbrevs: readAbbrevs(s.abbrev, abbrevOffset) };
}

/** The subprograms and inlined subroutines of `elf`'s .debug_info; undefined when it has none. */
export function readDwarf(elf: ElfFile): DwarfInfo | undefined {
  const info = debugSection(elf, '.debug_info');
  const abbrev = debugSection(elf, '.debug_abbrev');
  if (!info || !abbrev) return undefined;
  const s: Sections = {
    info,
    abbrev,
    str: debugSection(elf, '.debug_str'),
    lineStr: debugSection(elf, '.debug_line_str'),
    strOffsets: debugSection(elf, '.debug_str_offsets'),
    addr: debugSection(elf, '.debug_addr'),
  };
  const dies: Die[] = [];
  const r = new Reader(info);
  while (r.pos < info.length) {
    const { unit, end, abbrevs } = readUnitHeader(r, s);
    if (end > info.length) throw new DwarfError(`unit at ${hexAddr(unit.offset)} runs past .debug_info`);
    // Entries nest: `stack` holds, for each open level, the nearest function entry above it.
    const stack: (Die | undefined)[] = [];
    let first = true;
    while (r.pos < end) {
      const offset = r.pos;
      const code = r.uleb();
      if (code === 0) {
        stack.pop();
        continue;
      }
      const ab = abbrevs.get(code);
      if (!ab) throw new DwarfError(`unknown abbreviation ${code} at ${hexAddr(offset)}`);
      const keep = ab.tag === DW_TAG_subprogram || ab.tag === DW_TAG_inlined_subroutine;
      const values = new Map<number, Value>();
      for (const a of ab.attrs) {
        const v = readValue(r, a.form, unit, s, a.implicit);
        if (keep || first) values.set(a.at, v);
      }
      if (first) {
        // The unit's own entry: where its string offsets and addresses start (DWARF 5).
        const so = values.get(DW_AT_str_offsets_base);
        const ab2 = values.get(DW_AT_addr_base);
        if (so && 'n' in so) unit.strOffsetsBase = so.n;
        if (ab2 && 'n' in ab2) unit.addrBase = ab2.n;
        first = false;
      }
      const parent = stack.length ? stack[stack.length - 1] : undefined;
      let die: Die | undefined;
      if (keep) {
        const ref = (at: number) => {
          const v = values.get(at);
          return v && 'ref' in v ? v.ref : undefined;
        };
        die = {
          offset,
          tag: ab.tag,
          name: resolveString(values.get(DW_AT_name), unit, s),
          linkageName: resolveString(values.get(DW_AT_linkage_name) ?? values.get(DW_AT_MIPS_linkage_name), unit, s),
          abstractOrigin: ref(DW_AT_abstract_origin),
          specification: ref(DW_AT_specification),
          lowPc: resolveAddress(values.get(DW_AT_low_pc), unit, s),
          hasCode: values.has(DW_AT_low_pc) || values.has(DW_AT_ranges),
          parent,
        };
        dies.push(die);
      }
      if (ab.children) stack.push(die ?? parent);
    }
    r.pos = end;
  }
  return { dies, byOffset: new Map(dies.map((d) => [d.offset, d])) };
}
