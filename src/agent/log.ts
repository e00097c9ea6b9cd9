/**
 * The agent's log: winston, JSON lines in <home>/logs/agent.log ({ level, message, timestamp,
 * ...meta }), mirrored to stderr in a short human format with `verbose`.
 *
 * The file is written with synchronous appends (one write(2) per line on an O_APPEND descriptor)
 * through a tiny Writable under winston's Stream transport. Why: the CLI ends with process.exit(),
 * which would drop whatever a buffered fs.WriteStream (winston's File transport) still holds —
 * exactly the last lines, the ones that explain a failure — and a pending stream write keeps the
 * event loop alive. A synchronous append leaves nothing buffered and no handle behind except the
 * descriptor, which closeLogger() closes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { HpError } from '../errors.js';
import { homeLayout } from './home.js';

export interface LoggerOptions {
  /** Mirror every entry to stderr in a short human format. */
  verbose?: boolean;
  /** Lowest level written to the file; default 'debug'. */
  level?: string;
}

export type AgentLogger = winston.Logger;

/** Appends every chunk synchronously; closes its descriptor on destroy/final. */
class SyncAppendStream extends Writable {
  private fd: number | undefined;

  constructor(file: string) {
    super({ objectMode: false });
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      this.fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
    } catch (error) {
      throw new HpError('LOG_UNWRITABLE', `cannot open the agent log ${file}: ${(error as Error).message}`, {
        path: file,
        code: (error as NodeJS.ErrnoException).code,
      });
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      if (this.fd !== undefined) {
        let offset = 0;
        while (offset < chunk.length) offset += fs.writeSync(this.fd, chunk, offset, chunk.length - offset);
      }
      callback();
    } catch {
      // A full disk must not crash the agent in the middle of its work: drop the line.
      callback();
    }
  }

  closeFd(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.closeFd();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.closeFd();
    callback(error);
  }
}

const RESERVED = new Set(['level', 'message', 'timestamp', 'label']);

function shortTime(iso: unknown): string {
  return typeof iso === 'string' && iso.length >= 19 ? iso.slice(11, 19) : '';
}

function formatMeta(info: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(info)) {
    if (RESERVED.has(key) || value === undefined) continue;
    const text = typeof value === 'string' && !/[\s"]/.test(value) ? value : JSON.stringify(value);
    parts.push(`${key}=${text}`);
  }
  return parts.length > 0 ? ` ${parts.join(' ')}` : '';
}

/** Error objects in the metadata become { name, message, code?, details?, stack } (JSON drops them otherwise). */
const serializeErrors = winston.format((info) => {
  for (const [key, value] of Object.entries(info)) {
    if (value instanceof Error) {
      const e = value as Error & { code?: unknown; details?: unknown };
      info[key] = { name: e.name, message: e.message, code: e.code, details: e.details, stack: e.stack };
    }
  }
  return info;
});

/** "12:00:01 info  applying KB5046612 pid=1234" */
const humanFormat = winston.format.printf((info) => {
  const level = String(info.level).padEnd(5);
  return `${shortTime(info.timestamp)} ${level} ${String(info.message)}${formatMeta(info)}`;
});

interface Open {
  logger: winston.Logger;
  file: SyncAppendStream;
}

const open = new Set<Open>();

/**
 * A logger for the agent of `home`. Several may exist (each has its own descriptor); closeLogger()
 * closes them all.
 */
export function createLogger(home: string, options: LoggerOptions = {}): AgentLogger {
  const file = new SyncAppendStream(homeLayout(home).agentLog);
  const transports: winston.transport[] = [
    new winston.transports.Stream({
      stream: file,
      level: options.level ?? 'debug',
      format: winston.format.json(),
    }),
  ];
  if (options.verbose) {
    transports.push(
      // Straight to process.stderr (synchronous for files, pipes and terminals on Linux), not
      // through console, which test runners and REPLs replace.
      new winston.transports.Stream({ stream: process.stderr, level: 'debug', format: humanFormat }),
    );
  }
  const logger = winston.createLogger({
    level: 'debug',
    levels: winston.config.npm.levels,
    format: winston.format.combine(winston.format.errors({ stack: true }), serializeErrors(), winston.format.timestamp()),
    transports,
    exitOnError: false,
  });
  const entry = { logger, file };
  open.add(entry);
  logger.once('close', () => file.closeFd());
  return logger;
}

/**
 * Flush and close every logger created so far; resolves when done. Lines are already on disk
 * (written synchronously); this closes the descriptors and ends winston's streams so nothing
 * keeps the process alive.
 */
export async function closeLogger(): Promise<void> {
  const all = [...open];
  open.clear();
  await Promise.all(
    all.map(
      ({ logger, file }) =>
        new Promise<void>((resolve) => {
          const done = () => {
            file.closeFd();
            resolve();
          };
          if (logger.writableFinished) return done();
          const timer = setTimeout(done, 1_000);
          timer.unref();
          logger.once('finish', () => {
            clearTimeout(timer);
            // The logger's 'finish' can precede its transports' last write by a tick.
            setImmediate(done);
          });
          logger.end();
        }),
    ),
  );
}
