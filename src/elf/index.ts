export * from './constants.js';
export * from './types.js';
export { ElfFile } from './elf-file.js';
