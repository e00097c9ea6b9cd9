/**
 * Crash-safe file writes. A file is never half-written: the new content goes to a temporary file
 * in the same directory (same file system, so rename is atomic), is fsync'ed, renamed over the
 * target, and then the directory is fsync'ed so the rename itself survives a power cut. A reader
 * sees either the old content or the new one. A writer killed mid-way leaves only its temporary
 * file (".NAME.PID.RANDOM.tmp"), which removeStaleTempFiles() sweeps once that PID is gone.
 */
import { randomBytes } from 'node:crypto';
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { HpError } from '../errors.js';

const DEFAULT_MODE = 0o644;
const TEMP_PATTERN = /^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/** A writer's temporary file next to `target`: the name removeStaleTempFiles() knows to sweep. */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

function toBuffer(data: string | Uint8Array): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

/** fsync a directory, so that a rename or a new entry in it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replace `target` with `data` atomically and durably. `mode` (default 0644, less the umask) is
 * applied exactly when given.
 */
export async function writeFileAtomic(target: string, data: string | Uint8Array, mode?: number): Promise<void> {
  const temp = tempPathFor(target);
  const bytes = toBuffer(data);
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode ?? DEFAULT_MODE);
    if (mode !== undefined) await handle.chmod(mode);
    let offset = 0;
    while (offset < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
      offset += bytesWritten;
    }
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fsp.rename(temp, target);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await fsp.rm(temp, { force: true }).catch(() => undefined);
    throw writeError(target, error);
  }
  await fsyncDir(path.dirname(target));
}

/** Synchronous writeFileAtomic, for exit paths where nothing asynchronous runs any more. */
export function writeFileAtomicSync(target: string, data: string | Uint8Array, mode?: number): void {
  const temp = tempPathFor(target);
  const bytes = toBuffer(data);
  let fd: number | undefined;
  try {
    fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode ?? DEFAULT_MODE);
    if (mode !== undefined) fs.fchmodSync(fd, mode);
    let offset = 0;
    while (offset < bytes.length) offset += fs.writeSync(fd, bytes, offset, bytes.length - offset);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temp, target);
  } catch (error) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing; the original error is the one to report
      }
    }
    fs.rmSync(temp, { force: true });
    throw writeError(target, error);
  }
  fsyncDirSync(path.dirname(target));
}

function writeError(target: string, error: unknown): HpError {
  if (error instanceof HpError) return error;
  const err = error as NodeJS.ErrnoException;
  return new HpError('WRITE_FAILED', `cannot write ${target}: ${err.message} (the previous content, if any, is unchanged)`, {
    path: target,
    code: err.code,
  });
}

/** Serialise `value` as pretty JSON (one trailing newline) and write it atomically. */
export async function writeJsonAtomic(target: string, value: unknown, mode?: number): Promise<void> {
  await writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`, mode);
}

export function writeJsonAtomicSync(target: string, value: unknown, mode?: number): void {
  writeFileAtomicSync(target, `${JSON.stringify(value, null, 2)}\n`, mode);
}

/** The file's text, or undefined when it does not exist. */
export async function readTextIfExists(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new HpError('READ_FAILED', `cannot read ${file}: ${(error as Error).message}`, {
      path: file,
      code: (error as NodeJS.ErrnoException).code,
    });
  }
}

/**
 * Parse a JSON file, validated by `schema` when given. Undefined when the file does not exist;
 * FILE_CORRUPT when it is not JSON; FILE_INVALID when it does not match the schema.
 */
export async function readJson<S extends z.ZodType>(file: string, schema: S): Promise<z.output<S> | undefined>;
export async function readJson(file: string): Promise<unknown>;
export async function readJson(file: string, schema?: z.ZodType): Promise<unknown> {
  const text = await readTextIfExists(file);
  if (text === undefined) return undefined;
  return parseJsonText(file, text, schema);
}

export function readJsonSync<S extends z.ZodType>(file: string, schema: S): z.output<S> | undefined;
export function readJsonSync(file: string): unknown;
export function readJsonSync(file: string, schema?: z.ZodType): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new HpError('READ_FAILED', `cannot read ${file}: ${(error as Error).message}`, {
      path: file,
      code: (error as NodeJS.ErrnoException).code,
    });
  }
  return parseJsonText(file, text, schema);
}

function parseJsonText(file: string, text: string, schema?: z.ZodType): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new HpError('FILE_CORRUPT', `cannot read ${file}: it is not valid JSON (${(error as Error).message})`, { path: file });
  }
  if (!schema) return value;
  const result = schema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new HpError('FILE_INVALID', `cannot use ${file}: its content does not have the expected shape (${issues.slice(0, 5).join('; ')})`, {
      path: file,
      issues,
    });
  }
  return result.data;
}

/**
 * Remove the temporary files of writers that died mid-write (their PID no longer exists) from
 * `dir`. Returns the names removed. A live writer's temporary file is left alone.
 */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP_PATTERN.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || pidExists(pid)) continue;
    await fsp.rm(path.join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
