export * from './constants.js';
export * from './types.js';
export { ElfFile } from './elf-file.js';
export { notAFunction } from './function-symbol.js';
export { buildIdInNotes, peekBuildId } from './build-id.js';
