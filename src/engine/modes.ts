/**
 * The engine's two choices a caller (a hotpatch manifest, `hp-agent try`, the library) makes, in
 * one place: the package schema, the command line and the engine all take these words.
 */

/**
 * How the functions are switched: 'zero-stop' never stops a thread but needs objects built with
 * hot-patchable entries (-fpatchable-function-entry=7,5) and switches each function on its own;
 * 'stop' switches all of a process's functions at once with every thread stopped; 'auto' (the
 * default) is zero-stop where every function allows it.
 */
export const PATCH_MODES = ['auto', 'stop', 'zero-stop'] as const;
export type PatchMode = (typeof PATCH_MODES)[number];

/**
 * 'entry' (default): a thread already inside an old function finishes it in the old code.
 * 'function': the switch waits until no thread runs the code being replaced or has a return
 * address into it on its stack; needs a stop.
 */
export const CONSISTENCY_LEVELS = ['entry', 'function'] as const;
export type Consistency = (typeof CONSISTENCY_LEVELS)[number];
