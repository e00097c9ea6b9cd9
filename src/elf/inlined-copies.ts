/**
 * Which functions of an object carry inlined copies of a given function, from its DWARF: every
 * DW_TAG_inlined_subroutine whose abstract origin is that function lies inside some function
 * with code of its own, and that caller keeps running the copy whatever is done to the
 * function's out-of-line entry. A patch that only redirects the entry does not reach them.
 */
import { DW_TAG_inlined_subroutine, readDwarf, type Die, type DwarfInfo } from './dwarf.js';
import type { ElfFile } from './elf-file.js';
import { hexAddr } from '../hex.js';

export interface InlinedCaller {
  /** The caller's symbol name (linkage name when DWARF gives one), as `--function` takes it. */
  name: string;
  /** Its link-time address, when DWARF gives one (add the load bias for the process's). */
  address?: number;
  /** How many inlined copies it holds. */
  copies: number;
}

export type InlineCheck =
  | { dwarf: false; reason: string }
  | { dwarf: true; callers: InlinedCaller[] };

const parsed = new WeakMap<ElfFile, DwarfInfo | Error | null>();

function dwarfOf(elf: ElfFile): DwarfInfo | Error | null {
  let d = parsed.get(elf);
  if (d === undefined) {
    try {
      d = readDwarf(elf) ?? null;
    } catch (e) {
      d = e instanceof Error ? e : new Error(String(e));
    }
    parsed.set(elf, d);
  }
  return d;
}

/** Follows abstract_origin (then specification) to the entry that declares the function. */
function declaration(info: DwarfInfo, die: Die): Die {
  let d = die;
  for (let i = 0; i < 16; i++) {
    const next = d.abstractOrigin ?? d.specification;
    const found = next === undefined ? undefined : info.byOffset.get(next);
    if (!found || found === d) return d;
    d = found;
  }
  return d;
}

function nameOf(info: DwarfInfo, die: Die): string | undefined {
  let d: Die | undefined = die;
  for (let i = 0; d && i < 16; i++) {
    if (d.linkageName ?? d.name) return d.linkageName ?? d.name;
    const next: number | undefined = d.abstractOrigin ?? d.specification;
    d = next === undefined ? undefined : info.byOffset.get(next);
  }
  return undefined;
}

/** The outermost function around `die`: the one whose code holds it. */
function outermost(die: Die): Die {
  let d = die;
  while (d.parent) d = d.parent;
  return d;
}

/**
 * The callers in `elf` that hold inlined copies of the function `name` (its .symtab/.dynsym
 * symbol: the DWARF entry is the one at the symbol's address, else the abstract entries of that
 * name). `dwarf: false` when the object has no DWARF this reader can use.
 */
export function inlinedCallers(elf: ElfFile, name: string): InlineCheck {
  const info = dwarfOf(elf);
  if (info === null) return { dwarf: false, reason: 'the object has no DWARF (.debug_info)' };
  if (info instanceof Error) return { dwarf: false, reason: `its DWARF could not be read: ${info.message}` };
  const sym = elf.findSymbol(name);
  // The function's own entry: the out-of-line copy at the symbol's address, and what it declares.
  const atAddress = sym ? info.dies.filter((d) => d.tag !== DW_TAG_inlined_subroutine && d.lowPc === sym.value && d.hasCode) : [];
  const declared = new Set<Die>(atAddress.map((d) => declaration(info, d)));
  if (declared.size === 0) {
    for (const d of info.dies) if (d.tag !== DW_TAG_inlined_subroutine && !d.hasCode && nameOf(info, d) === name) declared.add(declaration(info, d));
  }
  const callers = new Map<Die, InlinedCaller>();
  for (const d of info.dies) {
    if (d.tag !== DW_TAG_inlined_subroutine || !declared.has(declaration(info, d))) continue;
    const caller = outermost(d);
    // A copy inside an abstract instance has no code of its own: each concrete instance of that
    // caller has its own inlined entry, found on its own.
    if (!caller.hasCode || declared.has(declaration(info, caller))) continue;
    const known = callers.get(caller);
    if (known) known.copies++;
    else callers.set(caller, { name: nameOf(info, caller) ?? `<function at ${hexAddr(caller.lowPc ?? 0)}>`, address: caller.lowPc, copies: 1 });
  }
  return { dwarf: true, callers: [...callers.values()].sort((a, b) => (a.address ?? 0) - (b.address ?? 0)) };
}

/** A patch that will not reach every copy of a function: said, never refused. */
export interface InlineWarning {
  code: 'INLINED_COPIES';
  /** The patched object, as the command names it. */
  object: string;
  function: string;
  /** The callers holding inlined copies; addresses as `0x…` link-time addresses. */
  callers: { name: string; address?: string; copies: number }[];
  message: string;
}

/**
 * One warning per function of `functions` that the compiler inlined into callers that are not
 * patched too (a caller in `functions` gets the new code through its own patch).
 */
export function inlinedCopyWarnings(elf: ElfFile, object: string, functions: string[]): InlineWarning[] {
  const patched = new Set(functions);
  const out: InlineWarning[] = [];
  for (const fn of new Set(functions)) {
    const check = inlinedCallers(elf, fn);
    if (!check.dwarf) continue;
    const callers = check.callers.filter((c) => !patched.has(c.name));
    if (callers.length === 0) continue;
    const names = callers.map((c) => c.name).join(', ');
    out.push({
      code: 'INLINED_COPIES',
      object,
      function: fn,
      callers: callers.map((c) => ({ name: c.name, ...(c.address !== undefined ? { address: hexAddr(c.address) } : {}), copies: c.copies })),
      message:
        `${fn} is inlined into ${names} (${object}, from its DWARF): ${callers.length === 1 ? 'that caller runs its own copy' : 'those callers run their own copies'} of the old code, which redirecting ${fn} does not reach. ` +
        `Patch ${callers.length === 1 ? 'it' : 'them'} too, or rebuild with ${fn} marked __attribute__((noinline)) so every call goes through its entry`,
    });
  }
  return out;
}
