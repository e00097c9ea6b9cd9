/**
 * A service's log (logs/services/<name>.log, its stdout and stderr): its size, the offset from
 * which a start reads it, and its last lines, which say why a service failed to start.
 */
import { promises as fsp } from 'node:fs';
import { readFrom } from './readiness.js';

const LOG_TAIL_BYTES = 2_000;

export async function logSize(file: string): Promise<number> {
  const st = await fsp.stat(file).catch(() => undefined);
  return st?.size ?? 0;
}

/** The end of what the log got after offset `since` (at most 2,000 bytes), trimmed. */
export async function logTail(file: string, since: number): Promise<string> {
  const size = await logSize(file);
  const from = Math.max(since, size - LOG_TAIL_BYTES);
  return (await readFrom(file, from, LOG_TAIL_BYTES)).toString('utf8').trim();
}
