/** hp-agent as a library: the engine, the process views and the pure building blocks. */
export { HpError } from './errors.js';
export { native } from './native.js';
export type { TransactionResult, TransactionOptions, TransactionSite, ThreadSnapshot } from './native.js';
export { applyPatch, revertFunctions, inspectFunctions } from './engine/patch.js';
export type { ApplyOptions, ApplyReport, RevertOptions, RevertReport, FunctionSpec, FunctionState, SiteReport } from './engine/patch.js';
export * as elf from './elf/index.js';
export * as proc from './proc/index.js';
export * as x64 from './x64/index.js';
export * as link from './link/index.js';
/** The output contract: the zod schema of every command's --json (the package's schemas/ holds their JSON Schemas). */
export { OUTPUT_SCHEMAS, outputJsonSchema } from './contract/index.js';
export type { Output, OutputCommand } from './contract/index.js';
