export {
  ABS64_JUMP_SIZE,
  ENDBR64,
  ENDBR64_SIZE,
  ENTRY_PROBE_SIZE,
  PAGE_SIZE,
  REL32_JUMP_SIZE,
  REL32_MAX,
  REL32_MIN,
  USER_SPACE_END,
  decodeJump,
  describeSiteAt,
  encodeJump,
  hasEndbr64,
  jumpSize,
  planJumpSite,
  rel32Reaches,
} from './jump.js';
export type { JumpKind, JumpSite } from './jump.js';
export * from './zero-stop.js';
export { controlTransfers, instructionText, landingsInside, refuseLandingsInside } from './branches.js';
export type { ControlTransfer, LandingInside, OverwriteSite } from './branches.js';
