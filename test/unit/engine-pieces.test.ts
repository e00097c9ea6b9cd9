// The checks that keep a wrong argument from reaching the native core (where it would abort Node).
import { describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { native } from '../../src/native.js';

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
    expect(await refused(() => native.transaction(1, [{ addr: 0x1000, expect: Buffer.from([1]), write: Buffer.from([1, 2]) }]))).toContain('length differs');
    expect(await refused(() => native.transaction(1, [{ addr: 0x1000, write: Buffer.from([1]) } as never]))).toContain('sites[0].expect');
    expect(await refused(() => native.transaction(1, 'sites' as never))).toContain('sites');
    expect(await refused(() => native.transaction(1, [], { activeRanges: [0x1000] }))).toContain('activeRanges');
    expect(await refused(() => native.transaction(1, [], { stackAreas: [0x1000, -1] }))).toContain('stackAreas[1]');
    expect(await refused(() => native.floor(1, [{ addr: undefined as never, write: Buffer.alloc(1) }]))).toContain('sites[0].addr');
    expect(await refused(() => native.remoteSyscalls(1, [{ nr: 9, args: [{}] as never }], { gadget: 0x1000 }))).toContain('calls[0].args[0]');
    expect(await refused(() => native.remoteSyscalls(1, [{ nr: 9, args: [1, 2, 3, 4, 5, 6, 7] }], { gadget: 0x1000 }))).toContain('calls[0].args');
    expect(await refused(() => native.remoteSyscalls(1, [], { gadget: 'x' as never }))).toContain('gadget');
    const fill = (f: object) => native.remoteSyscalls(1, [{ nr: 319, args: [] }, { nr: 77, args: [] }], { gadget: 0x1000, fill: { fdCall: 0, afterCall: 1, chunks: [], ...f } });
    expect(await refused(() => fill({ afterCall: 2 }))).toContain('fill.afterCall');
    expect(await refused(() => fill({ fdCall: 1, afterCall: 0 }))).toContain('fill.afterCall');
    expect(await refused(() => fill({ chunks: [{ offset: 0, data: 'x' }] }))).toContain('fill.chunks[0].data');
  });

  it('reads nothing for an empty list of ranges', async () => {
    expect(await native.readRanges(1, [])).toEqual([]);
  });
});
