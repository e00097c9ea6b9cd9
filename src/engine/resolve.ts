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
import type { ElfFile, ElfSymbol } from '../elf/index.js';
import { native } from '../native.js';
import type { LoadedObject } from '../proc/index.js';

export interface Binding {
  name: string;
  address: number;
  from: string;
}

const R_X86_64_GLOB_DAT = 6;
const R_X86_64_JUMP_SLOT = 7;

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
  return obj.elf.dynamicRelocations.find((r) => r.symbol?.name === name && (r.type === R_X86_64_GLOB_DAT || r.type === R_X86_64_JUMP_SLOT));
}

/** What the dynamic linker stored in the patched object's GOT for each name it imports (one read for all). */
async function boundInGot(pid: number, obj: LoadedObject, names: string[]): Promise<Map<string, number>> {
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

function exported(elf: ElfFile, name: string): ElfSymbol | undefined {
  return elf.dynamicSymbols.find((s) => s.defined && s.name === name && s.bind !== 'LOCAL');
}

/**
 * Binds every name in `names`; names nobody defines are simply absent from the result. `loaded`
 * is only called when some name is neither in the GOT nor defined by the patched object.
 */
export async function bindSymbols(
  pid: number,
  patched: LoadedObject,
  loaded: () => LoadedObject[],
  names: string[],
): Promise<Map<string, Binding>> {
  const out = new Map<string, Binding>();
  const inGot = await boundInGot(pid, patched, names);
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
