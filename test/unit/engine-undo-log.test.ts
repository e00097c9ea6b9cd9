// The one undo log of a change: undos run newest first, and `unchanged` on the error a failed
// change throws is derived from what the log could undo — not assumed.
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { UndoLog, withUndoLog } from '../../src/engine/undo-log.js';

const failure = (log: UndoLog, e: unknown = new HpError('ENTRY_MISMATCH', 'the bytes moved')) =>
  log.settle(e).then(
    () => expect.unreachable('settle always throws'),
    (err: unknown) => err as HpError,
  );

describe('the undo log', () => {
  it('undoes every step newest first and says the target is unchanged', async () => {
    const order: string[] = [];
    const log = new UndoLog();
    const step = (name: string, what = 'write(s)') => log.add({ what, undo: async () => (order.push(name), true) });
    step('map', 'patch mapping(s)');
    step('write 1');
    step('write 2');
    expect(log.length).toBe(3);
    const err = await failure(log);
    expect(order).toEqual(['write 2', 'write 1', 'map']);
    expect(err).toBeInstanceOf(HpError);
    expect(err.code).toBe('ENTRY_MISMATCH');
    expect(err.unchanged).toBe(true);
    expect(err.message).toBe('the bytes moved; the 1 patch mapping(s) and 2 write(s) already done were undone');
    expect(log.length).toBe(0);
    // The stack still says where it failed.
    const thrown = new HpError('WRITE_FAILED', 'short write');
    const settled = await failure(new UndoLog(), thrown);
    expect(settled.stack).toBe(`HpError: short write; nothing had been written${thrown.stack!.slice(thrown.stack!.indexOf('\n'))}`);
  });

  it('says nothing was written when no step was', async () => {
    const err = await failure(new UndoLog());
    expect(err.unchanged).toBe(true);
    expect(err.message).toBe('the bytes moved; nothing had been written');
  });

  it('is not unchanged when an undo fails or throws, and keeps what a later step may still lead into', async () => {
    for (const bad of [async () => false, async () => Promise.reject(new Error('gone'))]) {
      const order: string[] = [];
      const log = new UndoLog();
      log.add({ what: 'patch mapping(s)', keepIfLaterKept: true, undo: async () => (order.push('unmap'), true) });
      log.add({ what: 'write(s)', undo: async () => (order.push('write 1'), true) });
      log.add({ what: 'write(s)', undo: async () => (order.push('write 2'), bad()) });
      const err = await failure(log);
      // The other write is still put back; the mapping is not removed (a jump may point into it).
      expect(order).toEqual(['write 2', 'write 1']);
      expect(err.unchanged).toBe(false);
      expect(err.message).toMatch(/could NOT all be undone$/);
    }
  });

  it('takes a failed step at its word: one that restored itself leaves the rest to undo, one that could not keeps the mapping', async () => {
    for (const restored of [true, false]) {
      const order: string[] = [];
      const log = new UndoLog();
      log.add({ what: 'patch mapping(s)', keepIfLaterKept: true, undo: async () => (order.push('unmap'), true) });
      log.failedStep(restored);
      const err = await failure(log, new HpError('FUNCTION_ACTIVE', 'a thread stays inside'));
      expect(order).toEqual(restored ? ['unmap'] : []);
      expect(err.unchanged).toBe(restored);
    }
    // A transaction that failed and restored its writes, with nothing else in the log: its own
    // message says it all.
    const log = new UndoLog();
    log.failedStep(true);
    const err = await failure(log, new HpError('FUNCTION_ACTIVE', 'a thread stays inside'));
    expect(err.message).toBe('a thread stays inside');
    expect(err.unchanged).toBe(true);
  });

  it('derives `unchanged` even when the error claimed otherwise, and rethrows anything but an HpError as it is', async () => {
    const log = new UndoLog();
    log.add({ what: 'write(s)', undo: async () => false });
    const err = await failure(log, new HpError('WRITE_FAILED', 'short write', { cause: 'EIO' }, true));
    expect(err.unchanged).toBe(false);
    expect(err.details).toEqual({ cause: 'EIO' });
    const plain = new TypeError('a bug');
    const undone: string[] = [];
    const other = new UndoLog();
    other.add({ what: 'write(s)', undo: async () => (undone.push('w'), true) });
    expect(await failure(other, plain)).toBe(plain);
    expect(undone).toEqual(['w']);
  });

  it('withUndoLog joins the caller\'s log, or rolls back a log of its own', async () => {
    const outer = new UndoLog();
    const undone: string[] = [];
    const work = async (log: UndoLog) => {
      log.add({ what: 'write(s)', undo: async () => (undone.push('w'), true) });
      throw new HpError('VERIFY_FAILED', 'read back wrong');
    };
    const joined = await withUndoLog(outer, work).catch((e: unknown) => e as HpError);
    expect(joined.message).toBe('read back wrong'); // the caller's log decides
    expect(undone).toEqual([]);
    expect(outer.length).toBe(1);
    const own = await withUndoLog(undefined, work).catch((e: unknown) => e as HpError);
    expect(own.message).toBe('read back wrong; the 1 write(s) already done were undone');
    expect(own.unchanged).toBe(true);
    expect(undone).toEqual(['w']);
    expect(await withUndoLog(undefined, async () => 7)).toBe(7);
  });
});
