/** Shared output helpers of the command line: tables for people, one JSON object for programs. */
import { signalExitCode } from '../agent/interrupt.js';
import { HpError, type ErrorCode } from '../errors.js';
import type { Output } from '../contract/index.js';

/** Exit codes: documented in the README and in `hp-agent --help` (and 128 + N after signal N: see interrupt.ts). */
export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  /** Refused before anything changed. */
  refused: 3,
  /** Failed after something was written and the rollback could not undo it all. */
  failed: 4,
  /** Done for some processes, failed for others (install status CompletedWithWarnings). */
  partial: 5,
} as const;

/** Refusals that are the caller's mistake, not the input's: bad usage (exit 2). */
const USAGE_CODES = new Set<ErrorCode>(['USAGE', 'PACKAGE_NOT_FOUND', 'PACKAGE_NOT_A_FILE']);

/** The exit code for an error: usage, interrupted by a signal, refused (nothing changed), failed, internal. */
export function exitCodeOf(e: unknown): number {
  if (!(e instanceof HpError)) return EXIT.internal;
  if (USAGE_CODES.has(e.code)) return EXIT.usage;
  if (e.code === 'INTERRUPTED' && typeof e.details.signal === 'string') return signalExitCode(e.details.signal);
  return e.unchanged ? EXIT.refused : EXIT.failed;
}

export const spacedHex = (hex: string) => hex.replace(/(..)(?!$)/g, '$1 ');

/** How wide a table may be: COLUMNS, else the terminal's width; none when writing to a pipe (whole lines). */
export function terminalWidth(stream: NodeJS.WriteStream = process.stdout): number | undefined {
  const env = Number(process.env.COLUMNS);
  if (Number.isInteger(env) && env > 0) return env;
  return stream.isTTY ? stream.columns : undefined;
}

/** Tables longer than this end with a line saying how many rows they have (the header is far up by then). */
export const SUMMARY_AFTER_ROWS = 20;

/**
 * Columns padded to their widest cell. When the terminal is narrower than the table, the widest
 * columns give up characters first, down to their header's length; only if the headers alone do
 * not fit are the longest headers cut too, so no line ever wraps. A cut cell ends in "…"
 * (`--json` has every value whole).
 */
export function table(header: string[], rows: string[][], width = terminalWidth()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  if (width !== undefined) {
    let total = widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
    const shrink = (floor: (i: number) => number) => {
      while (total > width) {
        let widest = -1;
        for (let i = 0; i < widths.length; i++) if (widths[i] > floor(i) && (widest < 0 || widths[i] > widths[widest])) widest = i;
        if (widest < 0) return;
        widths[widest]--;
        total--;
      }
    };
    // Cells first (a column keeps its header and up to 8 characters: a PID is never cut), headers whole…
    const natural = [...widths];
    shrink((i) => Math.min(natural[i], Math.max(header[i].length, 8)));
    shrink(() => 4); // …then the longest columns, headers too, as a last resort
  }
  const fit = (c: string, w: number) => (c.length > w ? c.slice(0, Math.max(0, w - 1)) + '…' : c.padEnd(w));
  const line = (cells: string[]) => cells.map((c, i) => fit(c ?? '', widths[i])).join('  ').trimEnd();
  const lines = [line(header), ...rows.map(line)];
  if (rows.length > SUMMARY_AFTER_ROWS) lines.push(`(${rows.length} rows)`);
  return lines.join('\n');
}

export interface Printer {
  json: boolean;
  result(value: unknown, human: () => string): void;
  /** Warnings for people (on stderr); --json carries them in the result's `warnings` instead. */
  warn(warnings: readonly { message: string }[] | undefined): void;
  error(e: unknown): number;
}

export function printer(json: boolean): Printer {
  return {
    json,
    result(value, human) {
      process.stdout.write((json ? JSON.stringify(value, null, 2) : human()) + '\n');
    },
    warn(warnings) {
      if (json) return;
      for (const w of warnings ?? []) process.stderr.write(`hp-agent: warning: ${w.message}\n`);
    },
    error(e) {
      const err = e instanceof HpError ? e : undefined;
      const usage = err?.code === 'USAGE';
      const code = exitCodeOf(e);
      const message = e instanceof Error ? e.message : String(e);
      if (json) {
        // The error's own details first: a detail that happens to be called `code` (an errno, say)
        // must not hide the error's code.
        const body: Output<'error'> = { error: { ...(err?.details ?? {}), code: err?.code ?? 'INTERNAL', message, unchanged: err?.unchanged ?? false } };
        process.stdout.write(JSON.stringify(body, null, 2) + '\n');
      } else {
        if (usage) {
          process.stderr.write(`hp-agent: ${message}\nRun "hp-agent --help" for usage.\n`);
        } else {
          process.stderr.write(`hp-agent: ${err ? `${err.code === 'INTERRUPTED' ? 'interrupted' : err.unchanged ? 'refused' : 'failed'} (${err.code})` : 'error'}: ${message}\n`);
          if (err && err.unchanged && !/nothing was changed/i.test(message)) process.stderr.write('hp-agent: nothing was changed.\n');
        }
      }
      return code;
    },
  };
}
