export {
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  USER_ADDRESS_LIMIT,
  layoutPatch,
  linkPatch,
  type LinkedPatch,
  type PatchLayout,
  type PatchSegment,
  type ResolvedSymbol,
  type SymbolResolver,
} from './link.js';
export { MAX_PATCH_SPAN, SUPPORTED_RELOCATIONS } from './validate.js';
