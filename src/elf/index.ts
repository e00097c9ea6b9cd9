export * from './constants.js';
export * from './types.js';
export { ElfFile } from './elf-file.js';
export { readElfFile } from './read-file.js';
export { notAFunction } from './function-symbol.js';
export { buildIdInNotes, peekBuildId } from './build-id.js';
export { DwarfError, readDwarf, type Die, type DwarfInfo } from './dwarf.js';
export { inlinedCallers, inlinedCopyWarnings, type InlineCheck, type InlinedCaller, type InlineWarning } from './inlined-copies.js';
