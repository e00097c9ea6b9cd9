/**
 * The patch-image linker: computes, without touching any process, the exact bytes a patch
 * shared object must have in a target's memory when placed at a chosen base address.
 */
import { HpError } from '../errors.js';
import {
  PF_R,
  PF_W,
  PF_X,
  PT_GNU_RELRO,
  R_X86_64_32,
  R_X86_64_32S,
  R_X86_64_64,
  R_X86_64_GLOB_DAT,
  R_X86_64_JUMP_SLOT,
  R_X86_64_NONE,
  R_X86_64_PC32,
  R_X86_64_PC64,
  R_X86_64_RELATIVE,
  SHN_ABS,
  relocationTypeName,
  type ElfFile,
  type ElfSymbol,
  type Relocation,
} from '../elf/index.js';
import { PAGE_SIZE, loadSegments, validatePatch } from './validate.js';
import { hexAddr } from '../hex.js';

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
/** Highest address (exclusive) of the x86-64 user address space with 4-level paging. */
export const USER_ADDRESS_LIMIT = 0x7fff_ffff_f000;

/** One PT_LOAD segment rounded out to whole pages, relative to the image base. */
export interface PatchSegment {
  offset: number;
  size: number;
  prot: number;
}

export interface PatchLayout {
  /** Page-aligned size of the whole image, from vaddr 0 to the end of the highest PT_LOAD. */
  span: number;
  segments: PatchSegment[];
  /**
   * The protections the mapped image ends up with, page range by page range: the segments',
   * except that the PT_GNU_RELRO pages are read-only. ld.so makes them so once it has relocated
   * them; hp-agent relocates before mapping, so they never need to be writable in the target.
   */
  protections: PatchSegment[];
}

/** Runtime address of `name` in the target, or undefined if the target does not define it. */
export type SymbolResolver = (name: string) => number | undefined;

export interface ResolvedSymbol {
  name: string;
  address: number;
  /**
   * 'patch': defined in the patch itself (bound to base + value, the resolver is not asked);
   * 'resolver': undefined in the patch and supplied by the resolver;
   * 'weak-undefined': an undefined WEAK reference the resolver did not know, bound to 0.
   */
  from: 'patch' | 'resolver' | 'weak-undefined';
}

export interface LinkedPatch {
  layout: PatchLayout;
  /** `layout.span` bytes: PT_LOAD file bytes at their vaddr, zero elsewhere, relocated for `base`. */
  image: Buffer;
  base: number;
  /** Runtime address of a symbol defined in the patch (.symtab or .dynsym), or undefined. */
  symbolAddress(name: string): number | undefined;
  /** What every symbol referenced by a relocation was bound to, in order of first reference. */
  resolved: ResolvedSymbol[];
}


function protOf(flags: number): number {
  return (flags & PF_R ? PROT_READ : 0) | (flags & PF_W ? PROT_WRITE : 0) | (flags & PF_X ? PROT_EXEC : 0);
}

/**
 * Validates the patch (every refusal that does not depend on the base address or on symbol
 * resolution) and computes its page layout.
 */
export function layoutPatch(patch: ElfFile): PatchLayout {
  // A parsed file never changes, so neither does its validation and layout: patching a thousand
  // processes with one patch validates it once.
  let known = layouts.get(patch);
  if (!known) {
    try {
      known = computeLayout(patch);
    } catch (e) {
      known = { refused: e };
    }
    layouts.set(patch, known);
  }
  if ('refused' in known) throw known.refused;
  return { span: known.span, segments: known.segments.map((s) => ({ ...s })), protections: known.protections.map((s) => ({ ...s })) };
}

const layouts = new WeakMap<ElfFile, PatchLayout | { refused: unknown }>();

function computeLayout(patch: ElfFile): PatchLayout {
  validatePatch(patch);
  const loads = loadSegments(patch).sort((a, b) => a.vaddr - b.vaddr);
  const segments: PatchSegment[] = [];
  for (const p of loads) {
    const start = Math.floor(p.vaddr / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((p.vaddr + p.memsz) / PAGE_SIZE) * PAGE_SIZE;
    const prot = protOf(p.flags);
    const prev = segments[segments.length - 1];
    // Segments with identical permissions may share a page (validation refused differing ones).
    if (prev && prev.offset + prev.size > start) {
      prev.size = Math.max(prev.offset + prev.size, end) - prev.offset;
      continue;
    }
    segments.push({ offset: start, size: end - start, prot });
  }
  const last = segments[segments.length - 1];
  return { span: last.offset + last.size, segments, protections: withRelro(segments, patch.programHeaders.find((p) => p.type === PT_GNU_RELRO)) };
}

/**
 * `segments` with the pages of the RELRO range made read-only. Like ld.so (_dl_protect_relro),
 * the range's start is rounded down to a page and its end down too: a page the range covers
 * only in part keeps its write permission (what follows the range on it may be written).
 */
function withRelro(segments: PatchSegment[], relro: { vaddr: number; memsz: number } | undefined): PatchSegment[] {
  if (!relro) return segments.map((s) => ({ ...s }));
  const from = Math.floor(relro.vaddr / PAGE_SIZE) * PAGE_SIZE;
  const to = Math.floor((relro.vaddr + relro.memsz) / PAGE_SIZE) * PAGE_SIZE;
  const out: PatchSegment[] = [];
  const push = (offset: number, end: number, prot: number) => {
    if (end <= offset) return;
    const prev = out[out.length - 1];
    if (prev && prev.offset + prev.size === offset && prev.prot === prot) prev.size = end - prev.offset;
    else out.push({ offset, size: end - offset, prot });
  };
  for (const s of segments) {
    const end = s.offset + s.size;
    const a = Math.min(Math.max(from, s.offset), end);
    const b = Math.min(Math.max(to, s.offset), end);
    push(s.offset, a, s.prot);
    push(a, b, s.prot & ~PROT_WRITE);
    push(b, end, s.prot);
  }
  return out;
}

/** Symbol value S as the psABI defines it for a symbol defined in the patch. */
function ownAddress(sym: ElfSymbol, base: number): number {
  return sym.shndx === SHN_ABS ? sym.value : base + sym.value;
}

const NEEDS_SYMBOL = new Set([R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_PC32, R_X86_64_PC64, R_X86_64_32, R_X86_64_32S]);

/**
 * Produces the image of `patch` relocated for `base`. Symbols the patch defines are bound to the
 * patch itself; only undefined symbols are looked up with `resolve`. All unresolvable non-weak
 * symbols are reported together in one PATCH_UNRESOLVED_SYMBOL refusal.
 */
export function linkPatch(patch: ElfFile, base: number, resolve: SymbolResolver): LinkedPatch {
  const layout = layoutPatch(patch);
  const name = patch.name;

  if (!Number.isSafeInteger(base) || base < 0 || base % PAGE_SIZE !== 0 || base + layout.span > USER_ADDRESS_LIMIT) {
    throw new HpError(
      'PATCH_BAD_BASE',
      `cannot place ${name} at ${Number.isSafeInteger(base) ? hexAddr(base) : String(base)}: the base must be page-aligned (${PAGE_SIZE}) and the ${layout.span}-byte image must fit below ${hexAddr(USER_ADDRESS_LIMIT)}`,
      { patch: name, base, span: layout.span },
    );
  }

  // ---- Bind every symbol a relocation refers to (each name once).
  const relocs = patch.dynamicRelocations;
  const bound = new Map<string, ResolvedSymbol>();
  const missing: string[] = [];
  const symbolValue = new Map<Relocation, number>();
  for (const r of relocs) {
    if (!NEEDS_SYMBOL.has(r.type)) continue;
    const sym = r.symbol;
    if (!sym) {
      symbolValue.set(r, 0);
      continue;
    }
    const key = sym.name;
    let b = bound.get(key);
    if (!b) {
      if (sym.defined) {
        b = { name: key, address: ownAddress(sym, base), from: 'patch' };
      } else {
        const addr = key === '' ? undefined : resolve(key);
        if (addr !== undefined && (!Number.isSafeInteger(addr) || addr < 0)) {
          throw new HpError('PATCH_BAD_RESOLUTION', `the address given for ${key} (${String(addr)}) is not a valid non-negative integer address`, {
            patch: name,
            symbol: key,
          });
        }
        if (addr !== undefined) b = { name: key, address: addr, from: 'resolver' };
        else if (sym.bind === 'WEAK') b = { name: key, address: 0, from: 'weak-undefined' };
        else {
          if (!missing.includes(key)) missing.push(key);
          continue;
        }
      }
      bound.set(key, b);
    }
    symbolValue.set(r, b.address);
  }
  if (missing.length > 0) {
    const names = missing.map((m) => m || '(unnamed symbol)');
    throw new HpError(
      'PATCH_UNRESOLVED_SYMBOL',
      `${name} refers to ${names.length} symbol${names.length > 1 ? 's' : ''} that neither the patch nor the target defines: ${names.join(', ')}; the patch cannot be linked without ${names.length > 1 ? 'them' : 'it'}`,
      { patch: name, symbols: names },
    );
  }

  // ---- Copy the segments.
  const image = Buffer.alloc(layout.span);
  for (const p of loadSegments(patch)) image.set(patch.readVirtual(p.vaddr, p.memsz), p.vaddr);

  // ---- Apply the relocations.
  const B = BigInt(base);
  const overflow = (r: Relocation, value: bigint, range: string): never => {
    throw new HpError(
      'PATCH_RELOCATION_OVERFLOW',
      `${name}: ${relocationTypeName(r.type)} at ${hexAddr(r.offset)}${r.symbol ? ` against ${r.symbol.name}` : ''} computes ${hexAddr(value)}, which does not fit ${range}; place the patch closer to ${r.symbol?.name ?? 'its target'} or build the patch with -fPIC`,
      { patch: name, offset: r.offset, type: relocationTypeName(r.type), symbol: r.symbol?.name, value: value.toString() },
    );
  };
  for (const r of relocs) {
    const A = BigInt(r.addend);
    const P = B + BigInt(r.offset);
    const S = BigInt(symbolValue.get(r) ?? 0);
    switch (r.type) {
      case R_X86_64_NONE:
        break;
      case R_X86_64_RELATIVE:
        image.writeBigUInt64LE(BigInt.asUintN(64, B + A), r.offset);
        break;
      case R_X86_64_64:
        image.writeBigUInt64LE(BigInt.asUintN(64, S + A), r.offset);
        break;
      case R_X86_64_GLOB_DAT:
      case R_X86_64_JUMP_SLOT:
        image.writeBigUInt64LE(BigInt.asUintN(64, S), r.offset);
        break;
      case R_X86_64_PC64:
        image.writeBigUInt64LE(BigInt.asUintN(64, S + A - P), r.offset);
        break;
      case R_X86_64_PC32: {
        const v = S + A - P;
        if (v < -(2n ** 31n) || v >= 2n ** 31n) overflow(r, v, 'a signed 32-bit displacement');
        image.writeInt32LE(Number(v), r.offset);
        break;
      }
      case R_X86_64_32: {
        const v = S + A;
        if (v < 0n || v >= 2n ** 32n) overflow(r, v, 'an unsigned 32-bit field');
        image.writeUInt32LE(Number(v), r.offset);
        break;
      }
      case R_X86_64_32S: {
        const v = S + A;
        if (v < -(2n ** 31n) || v >= 2n ** 31n) overflow(r, v, 'a signed 32-bit field');
        image.writeInt32LE(Number(v), r.offset);
        break;
      }
      default:
        // validatePatch refused every other type already.
        throw new HpError('PATCH_UNSUPPORTED_RELOCATION', `${name}: unexpected relocation ${relocationTypeName(r.type)} at ${hexAddr(r.offset)}`, {
          patch: name,
        });
    }
  }

  return {
    layout,
    image,
    base,
    symbolAddress(symName: string): number | undefined {
      const sym = patch.findSymbol(symName);
      return sym ? ownAddress(sym, base) : undefined;
    },
    resolved: [...bound.values()],
  };
}
