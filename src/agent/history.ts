/**
 * Update history, <home>/history.jsonl: one JSON object per line, only ever appended.
 *
 * Each entry is one write(2) on a descriptor opened O_APPEND, then fsync: concurrent writers
 * (an agent that was refused the lock still records the refusal) never interleave inside a line.
 * A writer killed in the middle of a write can leave a line without its newline; the next append
 * sees that the file does not end in "\n" and starts on a fresh line, so only the torn entry is
 * lost, and readHistory() skips (and counts) it.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { z } from 'zod';
import { HpError } from '../errors.js';
import { homeLayout } from './home.js';
import { now as clockNow, nowIso } from '../clock.js';

export const HISTORY_RESULTS = ['Succeeded', 'Failed', 'CompletedWithWarnings', 'Refused'] as const;
export type HistoryResult = (typeof HISTORY_RESULTS)[number];

/** Actions the agent records; others (lower-case words, '-' allowed) are accepted as well. */
export type KnownHistoryAction =
  | 'install'
  | 'apply'
  | 'revert'
  | 'reboot'
  | 'boot'
  | 'refuse'
  | 'assess'
  | 'installation'
  | 'config'
  | 'enroll'
  | 'unenroll'
  | 'repair'
  | 'uninstall'
  | 'try'
  | 'try-revert';
export type HistoryAction = KnownHistoryAction | (string & {});

export const historyEntrySchema = z.object({
  time: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'expected an ISO date-time'),
  action: z.string().regex(/^[a-z][a-z-]*$/, 'expected a lower-case action name'),
  packageId: z.string().optional(),
  kb: z.string().optional(),
  result: z.enum(HISTORY_RESULTS),
  detail: z.record(z.string(), z.unknown()).optional(),
  activityId: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'expected a UUID'),
});

export type HistoryEntry = Omit<z.infer<typeof historyEntrySchema>, 'action'> & { action: HistoryAction };

/** What appendHistory takes: `time` defaults to now, `activityId` to a fresh UUID. */
export type HistoryInput = Omit<HistoryEntry, 'time' | 'activityId'> & { time?: string; activityId?: string };

export function newActivityId(): string {
  return randomUUID();
}

/** Append one entry (validated; HISTORY_INVALID otherwise, nothing written). Returns it. */
export async function appendHistory(home: string, input: HistoryInput): Promise<HistoryEntry> {
  const candidate = { ...input, time: input.time ?? nowIso(), activityId: input.activityId ?? newActivityId() };
  const parsed = historyEntrySchema.safeParse(candidate);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new HpError('HISTORY_INVALID', `refusing to record a malformed history entry (${issues.join('; ')}); the history is unchanged`, {
      issues,
    });
  }
  const entry = parsed.data as HistoryEntry;
  const file = homeLayout(home).history;
  try {
    await appendLine(file, JSON.stringify(entry));
  } catch (error) {
    throw new HpError('WRITE_FAILED', `cannot append to the history ${file}: ${(error as Error).message}`, {
      path: file,
      code: (error as NodeJS.ErrnoException).code,
    });
  }
  return entry;
}

async function appendLine(file: string, line: string): Promise<void> {
  const handle = await fs.promises.open(file, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
  try {
    const { size } = await handle.stat();
    let text = `${line}\n`;
    if (size > 0) {
      const last = Buffer.alloc(1);
      await handle.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) text = `\n${text}`; // the previous writer was killed mid-line
    }
    const bytes = Buffer.from(text, 'utf8');
    let offset = 0;
    while (offset < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
      offset += bytesWritten;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export interface ReadHistoryOptions {
  /** Only entries of the last sinceDays days (default 30, Azure's window); Infinity for all. */
  sinceDays?: number;
  /** "Now" for the window; default the current time. */
  now?: Date;
}

export interface HistoryRead {
  /** Newest first (entries with the same time: the later-written first). */
  entries: HistoryEntry[];
  /** Lines that were not a valid entry (torn by a crash, edited by hand) and were skipped. */
  corruptLines: number;
}

export async function readHistory(home: string, options: ReadHistoryOptions = {}): Promise<HistoryRead> {
  const file = homeLayout(home).history;
  const sinceDays = options.sinceDays ?? 30;
  const now = options.now ?? clockNow();
  const cutoff = now.getTime() - sinceDays * 86_400_000;
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], corruptLines: 0 };
    throw new HpError('READ_FAILED', `cannot read the history ${file}: ${(error as Error).message}`, { path: file });
  }
  const kept: { entry: HistoryEntry; time: number }[] = [];
  let corruptLines = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      corruptLines++;
      continue;
    }
    const parsed = historyEntrySchema.safeParse(value);
    if (!parsed.success) {
      corruptLines++;
      continue;
    }
    const time = Date.parse(parsed.data.time);
    if (time >= cutoff) kept.push({ entry: parsed.data as HistoryEntry, time });
  }
  kept.reverse(); // file order is oldest first; sort is stable, so ties stay later-written first
  kept.sort((a, b) => b.time - a.time);
  return { entries: kept.map((k) => k.entry), corruptLines };
}
