/** Shapes returned by the ELF64 reader. Addresses, offsets and sizes are plain numbers (all below 2^53). */

export interface ElfHeader {
  /** e_type: ET_EXEC (2), ET_DYN (3), ... */
  type: number;
  /** e_machine: always EM_X86_64 (62) — anything else is refused when the file is opened. */
  machine: number;
  entry: number;
  phoff: number;
  shoff: number;
  /** Number of program headers (PN_XNUM extended numbering already resolved). */
  phnum: number;
  /** Number of section headers (extended numbering already resolved). */
  shnum: number;
  /** Index of the section-name string table (SHN_XINDEX already resolved). */
  shstrndx: number;
}

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
  align: number;
}

export interface Section {
  index: number;
  name: string;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
  addralign: number;
}

export type ElfSymbolType =
  | 'NOTYPE'
  | 'OBJECT'
  | 'FUNC'
  | 'SECTION'
  | 'FILE'
  | 'COMMON'
  | 'TLS'
  | 'GNU_IFUNC'
  | 'OTHER';

export type ElfSymbolBind = 'LOCAL' | 'GLOBAL' | 'WEAK' | 'OTHER';

export interface ElfSymbol {
  name: string;
  value: number;
  size: number;
  type: ElfSymbolType;
  bind: ElfSymbolBind;
  /** st_other & 3: STV_DEFAULT (0), STV_INTERNAL (1), STV_HIDDEN (2), STV_PROTECTED (3). */
  visibility: number;
  /** Section index, or SHN_ABS / SHN_COMMON; SHN_XINDEX is resolved through SHT_SYMTAB_SHNDX. */
  shndx: number;
  /** shndx !== SHN_UNDEF. */
  defined: boolean;
  /** Index within its own symbol table. */
  index: number;
}

export interface DynamicEntry {
  tag: number;
  value: number;
}

export interface Relocation {
  /** r_offset: the link-time virtual address of the place being relocated. */
  offset: number;
  /** r_info & 0xffffffff. */
  type: number;
  /** r_info >> 32: index into the linked symbol table (.dynsym); 0 = no symbol. */
  symbolIndex: number;
  /** The symbol at symbolIndex, absent when symbolIndex is 0. */
  symbol?: ElfSymbol;
  /** r_addend (signed). For entries expanded from a packed SHT_RELR table: the implicit addend stored in the slot. */
  addend: number;
  /** Name of the section the entry came from, e.g. ".rela.dyn", ".rela.plt", ".relr.dyn". */
  section: string;
}
