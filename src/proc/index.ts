export {
  DEFAULT_MAX_DISTANCE,
  HEAP_GROWTH_RESERVE,
  MAX_MAP_END,
  MIN_MAP_ADDRESS,
  STACK_GROWTH_RESERVE,
  findFreeRegionNear,
  devNumber,
  parseMaps,
  readMaps,
} from './maps.js';
export type { MapEntry } from './maps.js';
export { computeLoadBias } from './loads.js';
export { FileSearch } from './mapped-files.js';
export { findObject, loadedObjects, objectsIn, symbolAddress } from './objects.js';
// Reads a file that belongs to no process: src/elf's (named here too for the engine, which imports it from proc).
export { readElfFile } from '../elf/read-file.js';
export type { LoadedObject } from './objects.js';
export { isNamespaceInit, readProcText, readAuxv, readStatus } from './procfs.js';
export { isGone, processExists, processIsSame, processStartTime, processState, readProcStat } from './stat.js';
export type { ProcStat } from './stat.js';
export type { ProcStatus } from './procfs.js';
