/**
 * Where a patch's undefined symbols point inside the target, in this order:
 *  1. what the dynamic linker bound for the patched object: its GOT slot for that symbol, read
 *     from the target's memory — exactly what the original code uses (IFUNCs such as memcpy,
 *     symbol versions, interposition, and a library variable copied into the executable by a
 *     COPY relocation, whose own definition in the library is then dead);
 *  2. the patched object's own definitions, .symtab included — a fix may call a static helper
 *     of the original and update its globals;
 *  3. exported definitions of the other loaded objects, in load order.
 */
import { HpError } from '../errors.js';
import type { ElfFile, ElfSymbol, Relocation } from '../elf/index.js';
import { native } from '../native.js';
import type { LoadedObject } from '../proc/index.js';

export interface Binding {
  name: string;
  address: number;
  from: string;
}

const R_X86_64_GLOB_DAT = 6;
const R_X86_64_JUMP_SLOT = 7;

const rank = (s: ElfSymbol): number => (s.bind === 'LOCAL' ? 1 : 0) + (s.type === 'FUNC' || s.type === 'OBJECT' ? 0 : 2);

/** By-name indexes of one parsed file, built on first use: each process then pays a Map.get per name. */
interface Index {
  /** Best own definition: .symtab then .dynsym, lowest rank, the first among equals. */
  own?: Map<string, ElfSymbol>;
  /** First GLOB_DAT or JUMP_SLOT relocation of each symbol, in relocation order. */
  got?: Map<string, Relocation>;
  /** First exported (defined, not LOCAL) .dynsym entry of each name. */
  exported?: Map<string, ElfSymbol>;
}
const indexes = new WeakMap<ElfFile, Index>();

function indexOf(elf: ElfFile): Index {
  let index = indexes.get(elf);
  if (!index) {
    index = {};
    indexes.set(elf, index);
  }
  return index;
}

function ownDefinition(obj: LoadedObject, name: string): ElfSymbol | undefined {
  const index = indexOf(obj.elf);
  if (!index.own) {
    const own = new Map<string, ElfSymbol>();
    for (const table of [obj.elf.symbols, obj.elf.dynamicSymbols]) {
      for (const s of table) {
        if (!s.defined || s.type === 'SECTION' || s.type === 'FILE' || s.type === 'TLS') continue;
        const best = own.get(s.name);
        if (!best || rank(s) < rank(best)) own.set(s.name, s);
      }
    }
    index.own = own;
  }
  return index.own.get(name);
}

function gotRelocation(obj: LoadedObject, name: string): Relocation | undefined {
  const index = indexOf(obj.elf);
  if (!index.got) {
    const got = new Map<string, Relocation>();
    for (const r of obj.elf.dynamicRelocations) {
      if (r.symbol === undefined || (r.type !== R_X86_64_GLOB_DAT && r.type !== R_X86_64_JUMP_SLOT)) continue;
      if (!got.has(r.symbol.name)) got.set(r.symbol.name, r);
    }
    index.got = got;
  }
  return index.got.get(name);
}

/** What the dynamic linker stored in the patched object's GOT for each name it imports (one read for all): the read step's part of binding. */
export async function readGot(pid: number, obj: LoadedObject, names: string[]): Promise<Map<string, number>> {
  const slots = names.flatMap((name) => {
    const reloc = gotRelocation(obj, name);
    return reloc ? [{ name, addr: obj.bias + reloc.offset }] : [];
  });
  const values = await native.readRanges(pid, slots.map((s) => ({ addr: s.addr, length: 8 })));
  const out = new Map<string, number>();
  slots.forEach((s, i) => {
    const value = Number(values[i].readBigUInt64LE(0));
    if (value !== 0) out.set(s.name, value);
  });
  return out;
}

/** Whether some name is neither in the GOT nor defined by the patched object: only then are the other loaded objects needed. */
export function needsOtherObjects(patched: LoadedObject, got: ReadonlyMap<string, number>, names: string[]): boolean {
  return names.some((name) => !got.has(name) && !ownDefinition(patched, name));
}

function exported(elf: ElfFile, name: string): ElfSymbol | undefined {
  const index = indexOf(elf);
  if (!index.exported) {
    const exp = new Map<string, ElfSymbol>();
    for (const s of elf.dynamicSymbols) {
      if (s.defined && s.bind !== 'LOCAL' && !exp.has(s.name)) exp.set(s.name, s);
    }
    index.exported = exp;
  }
  return index.exported.get(name);
}

/**
 * Binds every name in `names` (pure: `got` is what readGot read, `loaded` every object of the
 * process, needed only when needsOtherObjects says so); names nobody defines are simply absent
 * from the result.
 */
export function bindSymbols(patched: LoadedObject, got: ReadonlyMap<string, number>, loaded: readonly LoadedObject[], names: string[]): Map<string, Binding> {
  const out = new Map<string, Binding>();
  for (const name of names) {
    const inGot = got.get(name);
    if (inGot !== undefined) {
      out.set(name, { name, address: inGot, from: `${patched.path} (GOT)` });
      continue;
    }
    const own = ownDefinition(patched, name);
    if (own) {
      out.set(name, { name, address: patched.bias + own.value, from: patched.path });
      continue;
    }
    for (const obj of loaded) {
      if (obj === patched) continue;
      const sym = exported(obj.elf, name);
      if (!sym) continue;
      if (sym.type === 'GNU_IFUNC') {
        throw new HpError(
          'PATCH_IFUNC_SYMBOL',
          `the patch uses ${name}, which ${obj.path} defines as an IFUNC and the patched object does not import; hp-agent cannot pick its implementation, so nothing was changed`,
        );
      }
      out.set(name, { name, address: obj.bias + sym.value, from: obj.path });
      break;
    }
  }
  return out;
}
