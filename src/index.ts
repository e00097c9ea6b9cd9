/**
 * hp-agent as a library: the agent's operations (apply, revert, status, history, reboot, boot,
 * pack), the engine, the process views and the pure building blocks.
 */
export { ERROR_CODES, HpError, isErrorCode, type ErrorCode, type ErrorCodeInfo } from './errors.js';
export { native } from './native.js';
export type { TransactionResult, TransactionOptions, TransactionSite, ThreadSnapshot } from './native.js';
export { applyPatch, revertFunctions, inspectFunctions } from './engine/patch.js';
export type { ApplyOptions, ApplyReport, RevertOptions, RevertReport, FunctionSpec, FunctionState, SiteReport } from './engine/patch.js';
export { apply, revert, status, history, reboot, boot, pack, planApply, planRevert, planReboot, planBoot } from './agent/library.js';
export type { AgentPackOptions, AgentOptions, AgentApplyOptions, AgentRevertOptions, AgentStatusOptions, AgentHistoryOptions } from './agent/library.js';
export type { InstallResult, RevertResult, PatchEntry, ApplyPlan, RevertPlan } from './agent/operations.js';
export type { RebootResult } from './agent/reboot.js';
export type { RebootPlan } from './agent/reboot.js';
export type { ProcessResult, PlannedProcessResult } from './agent/hotpatch.js';
export type { ChangePlan, PlannedSite } from './engine/dry-run.js';
export type { StatusReport, ProcessStatus, FunctionStatus } from './agent/status.js';
export type { HistoryRead, HistoryEntry } from './agent/history.js';
export { packBaseline, packHotpatch, generateKeyPair } from './package/index.js';
export type { PackBaselineOptions, PackHotpatchOptions, PackResult, Manifest, BaselineManifest, HotpatchManifest } from './package/index.js';
export type { InspectOptions } from './engine/patch.js';
export * as elf from './elf/index.js';
export * as proc from './proc/index.js';
export * as x64 from './x64/index.js';
export * as link from './link/index.js';
/** Update management as on Azure: patch settings, the feed, assess, install (README "Update management"). */
export * as update from './update/index.js';
/** The output contract: the zod schema of every command's --json (the package's schemas/ holds their JSON Schemas). */
export { OUTPUT_SCHEMAS, outputJsonSchema } from './contract/index.js';
export type { Output, OutputCommand } from './contract/index.js';
