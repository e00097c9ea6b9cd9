/**
 * Every refusal hp-agent makes is an HpError with a stable `code`, so the CLI can map it to an
 * exit code and `--json` consumers can branch on it. The message says what was refused and why;
 * `unchanged` says whether the target was left exactly as it was (true for every refusal made
 * before a byte was written, and for every failure the rollback path undid).
 */
export class HpError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly unchanged = true,
  ) {
    super(message);
    this.name = 'HpError';
  }
}

/**
 * A function's own code branches, or returns from a call, strictly inside the bytes a jump over
 * its entry would overwrite (src/x64/branches.ts): patching it in place would make that thread
 * run the middle of the jump. Refused before anything is written (and by `hp-agent pack`).
 */
export const BRANCH_INTO_JUMP = 'BRANCH_INTO_JUMP';
