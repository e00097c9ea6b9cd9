/**
 * Checks that a patch object can be mapped and relocated by hp-agent itself, which is not a
 * dynamic loader: it copies the PT_LOAD segments, applies a fixed set of relocations and never
 * runs any code from the patch. Everything that would need more than that is refused here,
 * before an image is produced, with a message saying what was found and why it cannot work.
 */
import { HpError } from '../errors.js';
import {
  DT_INIT,
  DT_INIT_ARRAY,
  DT_INIT_ARRAYSZ,
  DT_JMPREL,
  DT_PLTREL,
  DT_PLTRELSZ,
  DT_PREINIT_ARRAY,
  DT_PREINIT_ARRAYSZ,
  DT_REL,
  DT_RELA,
  DT_RELASZ,
  DT_RELR,
  DT_RELRSZ,
  ET_DYN,
  EM_X86_64,
  PT_LOAD,
  PT_TLS,
  R_X86_64_32,
  R_X86_64_32S,
  R_X86_64_64,
  R_X86_64_GLOB_DAT,
  R_X86_64_JUMP_SLOT,
  R_X86_64_NONE,
  R_X86_64_PC32,
  R_X86_64_PC64,
  R_X86_64_RELATIVE,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHT_REL,
  SHT_RELA,
  SHT_RELR,
  TLS_RELOCATION_TYPES,
  relocationTypeName,
  type ElfFile,
  type ElfSymbol,
  type Relocation,
} from '../elf/index.js';
import { hexAddr } from '../hex.js';

export const PAGE_SIZE = 4096;
/** Largest image hp-agent agrees to build (a patch is a handful of functions, not a program). */
export const MAX_PATCH_SPAN = 256 * 1024 * 1024;

/** Relocation types linkPatch applies, with the width in bytes of the place each one writes. */
export const SUPPORTED_RELOCATIONS: ReadonlyMap<number, number> = new Map([
  [R_X86_64_NONE, 0],
  [R_X86_64_64, 8],
  [R_X86_64_PC32, 4],
  [R_X86_64_GLOB_DAT, 8],
  [R_X86_64_JUMP_SLOT, 8],
  [R_X86_64_RELATIVE, 8],
  [R_X86_64_32, 4],
  [R_X86_64_32S, 4],
  [R_X86_64_PC64, 8],
]);

/** crtstuff functions gcc puts into .init_array of every default `-shared` link; harmless, never run. */
const HARMLESS_INIT_ARRAY = new Set(['frame_dummy', 'register_tm_clones']);


function listNames(names: string[], max = 8): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

export function loadSegments(patch: ElfFile) {
  return patch.programHeaders.filter((p) => p.type === PT_LOAD && p.memsz > 0);
}

/** Every refusal of layoutPatch / linkPatch that does not depend on the base or the resolver. */
export function validatePatch(patch: ElfFile): void {
  const name = patch.name;

  if (patch.header.type !== ET_DYN || patch.header.machine !== EM_X86_64) {
    const kind = patch.header.type === 2 ? 'a fixed-address executable (ET_EXEC)' : `ELF type ${patch.header.type}`;
    throw new HpError(
      'PATCH_NOT_PIC',
      `${name} is ${patch.header.machine !== EM_X86_64 ? `for machine ${patch.header.machine}` : kind}, not an x86-64 position-independent shared object (ET_DYN); hp-agent can only place a patch built with -fPIC -shared at an address of its choosing`,
      { patch: name, type: patch.header.type, machine: patch.header.machine },
    );
  }

  if (patch.programHeaders.some((p) => p.type === PT_TLS)) {
    const tlsSyms = patch.symbols.concat(patch.dynamicSymbols).filter((s) => s.type === 'TLS' && s.defined);
    const names = [...new Set(tlsSyms.map((s) => s.name).filter(Boolean))];
    throw new HpError(
      'PATCH_TLS',
      `${name} defines thread-local storage (a PT_TLS segment${names.length ? `: ${listNames(names)}` : ''}); hp-agent maps patches without a dynamic loader and cannot give a patch its own TLS block in every thread. Use ordinary globals or the target's own TLS through a function`,
      { patch: name, symbols: names },
    );
  }

  validateLayout(patch);
  validateRelocations(patch);
  validateConstructors(patch);
}

function validateLayout(patch: ElfFile): void {
  const name = patch.name;
  const loads = loadSegments(patch);
  if (loads.length === 0) {
    throw new HpError('PATCH_LAYOUT', `${name} has no PT_LOAD segment with contents; there is nothing to map`, { patch: name });
  }
  const sorted = [...loads].sort((a, b) => a.vaddr - b.vaddr);
  if (sorted[0].vaddr !== 0) {
    throw new HpError(
      'PATCH_LAYOUT',
      `${name}'s lowest PT_LOAD segment starts at ${hexAddr(sorted[0].vaddr)}, not 0; hp-agent expects a shared object laid out from address 0 (as ld -shared produces) and relocates it as base + vaddr`,
      { patch: name, lowestVaddr: sorted[0].vaddr },
    );
  }
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (b.vaddr < a.vaddr + a.memsz) {
      throw new HpError(
        'PATCH_LAYOUT',
        `${name} has overlapping PT_LOAD segments: [${hexAddr(a.vaddr)}, ${hexAddr(a.vaddr + a.memsz)}) and [${hexAddr(b.vaddr)}, ${hexAddr(b.vaddr + b.memsz)}); the image would be ambiguous`,
        { patch: name },
      );
    }
    const aLastPage = Math.floor((a.vaddr + a.memsz - 1) / PAGE_SIZE);
    const bFirstPage = Math.floor(b.vaddr / PAGE_SIZE);
    if (aLastPage === bFirstPage && a.flags !== b.flags) {
      throw new HpError(
        'PATCH_LAYOUT',
        `${name} has PT_LOAD segments with different permissions sharing the page at ${hexAddr(bFirstPage * PAGE_SIZE)}; pages are protected as a whole, so the patch cannot be mapped as linked (link it with the default -z separate-code layout)`,
        { patch: name, page: bFirstPage * PAGE_SIZE },
      );
    }
  }
  const end = Math.max(...sorted.map((p) => p.vaddr + p.memsz));
  const span = Math.ceil(end / PAGE_SIZE) * PAGE_SIZE;
  if (span > MAX_PATCH_SPAN) {
    throw new HpError(
      'PATCH_LAYOUT',
      `${name} would occupy ${span} bytes once loaded, more than the ${MAX_PATCH_SPAN} bytes hp-agent maps for a patch`,
      { patch: name, span },
    );
  }
}

function relocationSymbolName(r: Relocation): string {
  return r.symbol?.name || (r.symbolIndex ? `symbol #${r.symbolIndex}` : '');
}

function describeRelocation(r: Relocation): string {
  const sym = relocationSymbolName(r);
  return `${relocationTypeName(r.type)} at ${hexAddr(r.offset)}${sym ? ` against ${sym}` : ''} (${r.section})`;
}

function validateRelocations(patch: ElfFile): void {
  const name = patch.name;
  const dyn = (tag: number) => patch.dynamic.find((d) => d.tag === tag)?.value;

  const relSections = patch.sections.filter((s) => s.type === SHT_REL && (s.flags & SHF_ALLOC) !== 0);
  if (relSections.length > 0 || dyn(DT_REL) !== undefined) {
    throw new HpError(
      'PATCH_UNSUPPORTED_RELOCATION',
      `${name} has REL-format relocations (${relSections.map((s) => s.name).join(', ') || 'DT_REL'}); x86-64 patches must use RELA, which is what hp-agent applies`,
      { patch: name },
    );
  }
  const pltrel = dyn(DT_PLTREL);
  if (pltrel !== undefined && pltrel !== DT_RELA) {
    throw new HpError('PATCH_UNSUPPORTED_RELOCATION', `${name} declares DT_PLTREL ${pltrel}, not DT_RELA; hp-agent only applies RELA relocations`, { patch: name });
  }

  // Every relocation table the dynamic section names must be one hp-agent reads through the
  // section headers — otherwise relocations a loader would apply could silently be skipped.
  const tables = patch.sections
    .filter((s) => (s.type === SHT_RELA || s.type === SHT_RELR) && (s.flags & SHF_ALLOC) !== 0)
    .map((s) => ({ start: s.addr, end: s.addr + s.size }));
  const covered = (start: number, size: number): boolean => {
    let pos = start;
    const end = start + size;
    while (pos < end) {
      const t = tables.find((x) => pos >= x.start && pos < x.end);
      if (!t) return false;
      pos = t.end;
    }
    return true;
  };
  for (const [addrTag, sizeTag, label] of [
    [DT_RELA, DT_RELASZ, 'DT_RELA'],
    [DT_JMPREL, DT_PLTRELSZ, 'DT_JMPREL'],
    [DT_RELR, DT_RELRSZ, 'DT_RELR'],
  ] as const) {
    const addr = dyn(addrTag);
    const size = dyn(sizeTag) ?? 0;
    if (addr !== undefined && size > 0 && !covered(addr, size)) {
      throw new HpError(
        'PATCH_LAYOUT',
        `${name}'s dynamic section lists relocations (${label} at ${hexAddr(addr)}, ${size} bytes) that no relocation section header describes; hp-agent reads relocations through the section headers and would miss them (was the patch stripped of its section headers?)`,
        { patch: name, table: label },
      );
    }
  }

  const relocs = patch.dynamicRelocations;
  const tls = relocs.filter((r) => TLS_RELOCATION_TYPES.has(r.type));
  if (tls.length > 0) {
    const syms = [...new Set(tls.map(relocationSymbolName).filter(Boolean))];
    throw new HpError(
      'PATCH_TLS',
      `${name} uses thread-local storage (${listNames(tls.map(describeRelocation), 3)}); hp-agent maps patches without a dynamic loader and cannot set up TLS for them`,
      { patch: name, symbols: syms, relocations: tls.map((r) => ({ type: relocationTypeName(r.type), offset: r.offset })) },
    );
  }

  const unsupported = relocs.filter((r) => !SUPPORTED_RELOCATIONS.has(r.type));
  if (unsupported.length > 0) {
    const first = unsupported[0];
    const why: Record<string, string> = {
      R_X86_64_IRELATIVE: 'it calls an IFUNC resolver inside the patch at load time, and hp-agent runs no patch code while loading',
      R_X86_64_COPY: 'copy relocations only exist in executables',
    };
    const reason = why[relocationTypeName(first.type)] ?? 'hp-agent applies only NONE, RELATIVE, 64, GLOB_DAT, JUMP_SLOT, PC32, PC64, 32 and 32S';
    throw new HpError(
      'PATCH_UNSUPPORTED_RELOCATION',
      `${name} needs relocation ${describeRelocation(first)}${unsupported.length > 1 ? ` (and ${unsupported.length - 1} more unsupported)` : ''}, which hp-agent cannot apply: ${reason}`,
      {
        patch: name,
        relocations: unsupported.map((r) => ({ type: relocationTypeName(r.type), offset: r.offset, symbol: r.symbol?.name })),
      },
    );
  }

  const ifunc = relocs.find((r) => r.symbol?.defined && r.symbol.type === 'GNU_IFUNC');
  if (ifunc) {
    throw new HpError(
      'PATCH_UNSUPPORTED_RELOCATION',
      `${name} needs ${describeRelocation(ifunc)}, and ${ifunc.symbol!.name} is an IFUNC defined in the patch; its address is only known by running its resolver, which hp-agent does not do`,
      { patch: name, relocations: [{ type: relocationTypeName(ifunc.type), offset: ifunc.offset, symbol: ifunc.symbol!.name }] },
    );
  }

  const loads = loadSegments(patch);
  for (const r of relocs) {
    const width = SUPPORTED_RELOCATIONS.get(r.type)!;
    if (width === 0) continue;
    const inside = loads.some((p) => r.offset >= p.vaddr && r.offset + width <= p.vaddr + p.memsz);
    if (!inside) {
      throw new HpError(
        'PATCH_LAYOUT',
        `${name} has relocation ${describeRelocation(r)} whose ${width}-byte place is not inside a PT_LOAD segment`,
        { patch: name, offset: r.offset },
      );
    }
  }
}

/** Symbols of .symtab that sit exactly at `addr`, with the name of the source file each came from. */
function symbolsAt(patch: ElfFile, addr: number): { sym: ElfSymbol; file: string | undefined }[] {
  const out: { sym: ElfSymbol; file: string | undefined }[] = [];
  let file: string | undefined;
  for (const s of patch.symbols) {
    if (s.type === 'FILE') {
      file = s.name;
      continue;
    }
    // FILE symbols only scope the LOCAL symbols that follow them.
    if (s.bind !== 'LOCAL') file = undefined;
    if (s.defined && s.value === addr && s.type !== 'SECTION' && s.name !== '') out.push({ sym: s, file });
  }
  return out;
}

function nameAt(patch: ElfFile, addr: number): string {
  const cands = symbolsAt(patch, addr).map((c) => c.sym);
  const dyn = patch.dynamicSymbols.filter((s) => s.defined && s.value === addr && s.name !== '');
  const all = [...cands, ...dyn];
  const best = all.find((s) => s.type === 'FUNC' && s.bind !== 'LOCAL') ?? all.find((s) => s.type === 'FUNC') ?? all[0];
  return best ? best.name : `code at ${hexAddr(addr)}`;
}

function validateConstructors(patch: ElfFile): void {
  const name = patch.name;
  const dyn = (tag: number) => patch.dynamic.find((d) => d.tag === tag)?.value;
  const noSymtab = patch.symbols.length === 0;
  const stripped = noSymtab ? ' (the patch has no .symtab to identify it — do not strip patches)' : '';

  const preinit = dyn(DT_PREINIT_ARRAY);
  if (preinit !== undefined) {
    throw new HpError(
      'PATCH_CONSTRUCTOR',
      `${name} has a .preinit_array (DT_PREINIT_ARRAY, ${dyn(DT_PREINIT_ARRAYSZ) ?? 0} bytes); hp-agent never runs code from a patch while loading it, so these initializers would silently not run`,
      { patch: name, kind: 'preinit_array' },
    );
  }

  const init = dyn(DT_INIT);
  if (init !== undefined) {
    const initSec = patch.section('.init');
    const isCrtInit =
      initSec !== undefined &&
      (initSec.flags & SHF_EXECINSTR) !== 0 &&
      symbolsAt(patch, init).some(({ sym }) => sym.name === '_init' && sym.type === 'FUNC' && sym.shndx === initSec.index);
    if (!isCrtInit) {
      const fn = nameAt(patch, init);
      throw new HpError(
        'PATCH_CONSTRUCTOR',
        `${name} has an initialization function (DT_INIT → ${fn} at ${hexAddr(init)}) that is not the C runtime's empty _init${stripped}; hp-agent never runs code from a patch while loading it, so it would silently not run`,
        { patch: name, kind: 'init', function: fn, address: init },
      );
    }
  }

  const arr = dyn(DT_INIT_ARRAY);
  const arrSize = dyn(DT_INIT_ARRAYSZ) ?? 0;
  if (arr !== undefined && arrSize > 0) {
    const relocs = patch.dynamicRelocations;
    const offenders: { slot: number; fn: string; target?: number }[] = [];
    for (let slot = arr; slot < arr + arrSize; slot += 8) {
      const rel = relocs.filter((r) => r.offset === slot).pop();
      let target: number | undefined;
      if (rel && rel.type === R_X86_64_RELATIVE) {
        target = rel.addend;
      } else if (rel && rel.symbol) {
        if (!rel.symbol.defined) {
          offenders.push({ slot, fn: rel.symbol.name });
          continue;
        }
        target = rel.symbol.value + rel.addend;
      } else {
        const raw = patch.readVirtual(slot, 8).readBigUInt64LE();
        if (raw > BigInt(Number.MAX_SAFE_INTEGER)) {
          offenders.push({ slot, fn: `a pointer to ${hexAddr(raw)}` });
          continue;
        }
        target = Number(raw);
      }
      const harmless = symbolsAt(patch, target).some(
        ({ sym, file }) => HARMLESS_INIT_ARRAY.has(sym.name) && sym.type === 'FUNC' && sym.bind === 'LOCAL' && file === 'crtstuff.c',
      );
      if (!harmless) offenders.push({ slot, fn: nameAt(patch, target), target });
    }
    if (offenders.length > 0) {
      const fns = offenders.map((o) => o.fn);
      throw new HpError(
        'PATCH_CONSTRUCTOR',
        `${name} has constructor${fns.length > 1 ? 's' : ''} in .init_array: ${listNames(fns)}${stripped}; hp-agent never runs code from a patch while loading it, so ${fns.length > 1 ? 'they' : 'it'} would silently not run. Initialize lazily from the patched functions instead of using __attribute__((constructor))`,
        { patch: name, kind: 'init_array', functions: fns },
      );
    }
  }
}
