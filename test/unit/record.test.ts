import { describe, expect, it } from 'vitest';
import { decodeRecord, encodeRecord, recordLength, RECORD_TRAILER_SIZE, type PatchRecord } from '../../src/engine/record.js';
import { parseFunctionSpec } from '../../src/cli/try.js';

const sample: PatchRecord = {
  patch: 'fix.so',
  object: 'target',
  base: 0x7f0000000000,
  span: 8192,
  appliedAt: '2026-11-25T00:00:00.000Z',
  sites: [
    { function: 'compute', replacement: 'compute_v2', functionAddress: 0x1000, siteAddress: 0x1004, kind: 'rel32', target: 0x2000, original: '4889e55d', jump: 'e9f70f0000' },
  ],
};

describe('patch record', () => {
  it('is page-sized with the trailer in its last 16 bytes', () => {
    const buf = encodeRecord(sample);
    expect(buf.length % 4096).toBe(0);
    const trailer = buf.subarray(buf.length - RECORD_TRAILER_SIZE);
    expect(trailer.toString('latin1', 0, 8)).toBe('HPREC001');
    const length = recordLength(trailer)!;
    const json = buf.subarray(buf.length - RECORD_TRAILER_SIZE - length, buf.length - RECORD_TRAILER_SIZE);
    expect(decodeRecord(json)).toEqual(sample);
  });

  it('grows past one page when there are many sites', () => {
    const many = { ...sample, sites: Array.from({ length: 200 }, (_, i) => ({ ...sample.sites[0], siteAddress: i })) };
    const buf = encodeRecord(many);
    expect(buf.length).toBeGreaterThan(4096);
    const length = recordLength(buf.subarray(buf.length - 16))!;
    expect(decodeRecord(buf.subarray(buf.length - 16 - length, buf.length - 16)).sites).toHaveLength(200);
  });

  it('refuses a trailer without the magic and unreadable JSON', () => {
    expect(recordLength(Buffer.alloc(16))).toBeUndefined();
    expect(() => decodeRecord(Buffer.from('{not json'))).toThrow(/unreadable/);
    expect(() => decodeRecord(Buffer.from('{"patch":"x"}'))).toThrow(/missing fields/);
  });
});

describe('--function NAME[=REPLACEMENT]', () => {
  it('parses both forms and refuses malformed ones', () => {
    expect(parseFunctionSpec('compute')).toEqual({ name: 'compute' });
    expect(parseFunctionSpec('compute=compute_v2')).toEqual({ name: 'compute', replacement: 'compute_v2' });
    for (const bad of ['', '=x', 'a=', 'a=b=c']) expect(() => parseFunctionSpec(bad)).toThrow(/--function/);
  });
});
