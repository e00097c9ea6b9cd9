import { describe, expect, it } from 'vitest';
import { hexAddr, hexBytes } from '../../src/hex.js';

describe('hex', () => {
  it('hexAddr: a number or bigint as 0x…, negative values with a leading minus', () => {
    expect(hexAddr(0)).toBe('0x0');
    expect(hexAddr(0x7ffff7dd1000)).toBe('0x7ffff7dd1000');
    expect(hexAddr(-0x1f)).toBe('-0x1f');
    expect(hexAddr(0xffffffffffffffffn)).toBe('0xffffffffffffffff');
    expect(hexAddr(-5n)).toBe('-0x5');
  });

  it('hexBytes: two digits a byte, of exactly the bytes of a view', () => {
    expect(hexBytes(Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]))).toBe('f30f1efa');
    const whole = Uint8Array.from([1, 2, 0xe9, 0, 0xff, 9]);
    expect(hexBytes(whole.subarray(2, 5))).toBe('e900ff');
    expect(hexBytes(new Uint8Array(0))).toBe('');
  });
});
