// The checks that keep a wrong argument from reaching the native core (where it would abort Node).
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { native } from '../../src/native.js';
import { remember } from '../../src/engine/remote.js';

describe('native core arguments', () => {
  const refused = async (p: () => Promise<unknown>) => {
    const e = await p().then(() => expect.unreachable('expected a refusal'), (err: unknown) => err as HpError);
    expect(e).toBeInstanceOf(HpError);
    expect(e.code).toBe('INVALID_ARGUMENT');
    return e.message;
  };

  it('refuses a bad pid, address, length or buffer with an error instead of aborting the process', async () => {
    expect(await refused(() => native.readMemory(0, 0x1000, 4))).toContain('pid');
    expect(await refused(() => native.readMemory(-5, 0x1000, 4))).toContain('pid');
    expect(await refused(() => native.readMemory('12' as unknown as number, 0x1000, 4))).toContain('pid');
    expect(await refused(() => native.readMemory(1, -1, 4))).toContain('address');
    expect(await refused(() => native.readMemory(1, 2 ** 60, 4))).toContain('address');
    expect(await refused(() => native.readMemory(1, 0x1000, 1.5))).toContain('length');
    expect(await refused(() => native.writeMemory(1, 0x1000, 'abc' as unknown as Buffer))).toContain('data');
    expect(await refused(() => native.readRanges(1, [{ addr: 0x1000, length: -1 }]))).toContain('ranges[0].length');
  });

  it('checks every site of a transaction and every argument of a remote call', async () => {
    const G = { syscallRet: 0x1000, sigreturn: 0x2000 };
    expect(await refused(() => native.transaction(1, [{ addr: 0x1000, expect: Buffer.from([1]), write: Buffer.from([1, 2]) }]))).toContain('length differs');
    expect(await refused(() => native.transaction(1, [{ addr: 0x1000, write: Buffer.from([1]) } as never]))).toContain('sites[0].expect');
    expect(await refused(() => native.transaction(1, 'sites' as never))).toContain('sites');
    expect(await refused(() => native.transaction(1, [], { activeRanges: [0x1000] }))).toContain('activeRanges');
    expect(await refused(() => native.transaction(1, [], { stackAreas: [0x1000, -1] }))).toContain('stackAreas[1]');
    expect(await refused(() => native.floor(1, [{ addr: undefined as never, write: Buffer.alloc(1) }]))).toContain('sites[0].addr');
    expect(await refused(() => native.remoteSyscalls(1, [{ nr: 9, args: [{}] as never }], { gadgets: G }))).toContain('calls[0].args[0]');
    expect(await refused(() => native.remoteSyscalls(1, [{ nr: 9, args: [1, 2, 3, 4, 5, 6, 7] }], { gadgets: G }))).toContain('calls[0].args');
    expect(await refused(() => native.remoteSyscalls(1, [], { gadgets: { syscallRet: 'x' as never, sigreturn: 0x1000 } }))).toContain('gadget');
    const fill = (f: object) => native.remoteSyscalls(1, [{ nr: 319, args: [] }, { nr: 77, args: [] }], { gadgets: G, fill: { fdCall: 0, afterCall: 1, chunks: [], ...f } });
    expect(await refused(() => fill({ afterCall: 2 }))).toContain('fill.afterCall');
    expect(await refused(() => fill({ fdCall: 1, afterCall: 0 }))).toContain('fill.afterCall');
    expect(await refused(() => fill({ chunks: [{ offset: 0, data: 'x' }] }))).toContain('fill.chunks[0].data');
    // The batch a transaction runs first is checked the same way, named as its part.
    const prelude = (p: object) => native.transaction(1, [], { prelude: { gadgets: G, calls: [{ nr: 39, args: [] }], ...p } });
    expect(await refused(() => prelude({ gadgets: { syscallRet: -1, sigreturn: 0x1000 } }))).toContain('prelude.gadgets.syscallRet');
    expect(await refused(() => prelude({ calls: [{ nr: 9, args: [{}] }] }))).toContain('prelude.calls[0].args[0]');
    expect(await refused(() => prelude({ fill: { fdCall: 0, afterCall: 3, chunks: [] } }))).toContain('prelude.fill.afterCall');
    expect(await refused(() => prelude({ expect: [0] }))).toContain('prelude.expect');
    expect(await refused(() => prelude({ expect: [0.5, 7] }))).toContain('prelude.expect[0]');
  });

  it('reads nothing for an empty list of ranges', async () => {
    expect(await native.readRanges(1, [])).toEqual([]);
  });
});

describe('the gadget caches', () => {
  it('keep the most recently used entries only', () => {
    const cache = new Map<number, string>();
    for (let pid = 1; pid <= 5; pid++) remember(cache, pid, `g${pid}`, 3);
    expect([...cache.keys()]).toEqual([3, 4, 5]);
    remember(cache, 3, 'again', 3); // used again: now the most recent
    remember(cache, 6, 'g6', 3);
    expect([...cache.entries()]).toEqual([
      [5, 'g5'],
      [3, 'again'],
      [6, 'g6'],
    ]);
  });
});
