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
export { FileSearch, computeLoadBias, findObject, loadedObjects, objectsIn, readElfFile, symbolAddress } from './objects.js';
export type { LoadedObject } from './objects.js';
export { exePath, isNamespaceInit, listThreads, readProcText, processExists, processName, processStat, processState, readAuxv, readStatus, tracerOf } from './procfs.js';
export type { ProcStatus } from './procfs.js';
