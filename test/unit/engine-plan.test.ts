// The planner is pure: these tests plan changes on synthetic snapshots — the fixtures' real ELF
// files "loaded" at made-up addresses, a made-up memory that the plans' own writes change — and
// start no process. Cumulative levels, restore, re-use of a mapping, far placement, zero-stop
// rounds, and every refusal the planner makes.
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { functionSpecs } from '../../src/bench/benchd.js';
import type { Entry, FunctionState } from '../../src/engine/entries.js';
import { isPatchMapping } from '../../src/engine/mappings.js';
import { checkRequest, plan, type Plan, type PlanOptions } from '../../src/engine/plan.js';
import type { EarlierMapping, PatchFile, Snapshot } from '../../src/engine/read.js';
import { decodeRecord, recordLength, type PatchLabel, type PatchRecord, type SiteRecord } from '../../src/engine/record.js';
import type { ObjectChange } from '../../src/engine/types.js';
import { HpError } from '../../src/errors.js';
import { buildFixtures, fixturePath } from '../../src/harness/index.js';
import { readElfFile } from '../../src/elf/index.js';
import { symbolAddress, type LoadedObject, type MapEntry } from '../../src/proc/index.js';
import { detectPatchableEntry, ENTRY_PROBE_SIZE, HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE, planZeroStop, planZeroStopRepoint, USER_SPACE_END } from '../../src/x64/index.js';

beforeAll(async () => {
  await buildFixtures();
}, 120_000);

const PID = 4242;
const BIAS = 0x555555554000;
const READ_AT = '2026-12-01T00:00:00.000Z';
const pageUp = (n: number) => Math.ceil(n / 4096) * 4096;
const line = (start: number, end: number, p = '', extra: Partial<MapEntry> = {}): MapEntry => ({
  start,
  end,
  perms: 'rw-p',
  read: true,
  write: true,
  exec: false,
  shared: false,
  offset: 0,
  dev: '00:00',
  inode: 0,
  path: p,
  deleted: false,
  ...extra,
});

function loadedObject(file: string): LoadedObject {
  const elf = readElfFile(fixturePath(file));
  const end = BIAS + pageUp(Math.max(...elf.programHeaders.filter((p) => p.type === 1).map((p) => p.vaddr + p.memsz)));
  const mapping = line(BIAS, end, `/opt/app/${file}`, { perms: 'r-xp', write: false, exec: true, inode: 77, dev: '08:01' });
  return { path: mapping.path, deleted: false, dev: '08:01', inode: 77, bias: BIAS, start: BIAS, end, textStart: BIAS, textEnd: end, mappings: [mapping], elf, buildId: elf.buildId };
}

function patchFile(file: string): PatchFile {
  const elf = readElfFile(fixturePath(file));
  const imports = [...new Set(elf.dynamicSymbols.filter((s) => !s.defined && s.name).map((s) => s.name))];
  return { path: path.resolve(fixturePath(file)), elf, imports, got: new Map(), loaded: [] };
}

/** One made-up process running one object: its memory is the file's bytes plus what applied plans wrote. */
class Simulated {
  readonly written = new Map<number, number>();
  readonly maps: MapEntry[];
  readonly mappings: EarlierMapping[] = [];
  /** What each patched function's jump leads into, as the record of its mapping says. */
  readonly sites = new Map<number, { site: SiteRecord; record: PatchRecord; mapping: string }>();

  constructor(readonly obj: LoadedObject) {
    // The object, a heap right after it, libraries and a stack far above.
    this.maps = [...obj.mappings, line(obj.end + 0x100000, obj.end + 0x200000, '[heap]'), line(0x7ffff7d00000, 0x7ffff7f00000, '/usr/lib/libc.so.6', { perms: 'r-xp', write: false, exec: true }), line(0x7ffffffde000, 0x7ffffffff000, '[stack]')];
  }

  read(addr: number, length: number): Buffer {
    const file = this.obj.elf.readVirtual(addr - this.obj.bias, length);
    return Buffer.from(Array.from({ length }, (_, i) => this.written.get(addr + i) ?? file[i]));
  }

  write(addr: number, bytes: Buffer): void {
    bytes.forEach((b, i) => this.written.set(addr + i, b));
  }

  entry(name: string, whole = false): Entry {
    const { obj } = this;
    const sym = symbolAddress(obj, name);
    const length = Math.min(sym.size, ENTRY_PROBE_SIZE);
    const fileBytes = obj.elf.readVirtual(sym.address - obj.bias, length);
    const memoryBytes = this.read(sym.address, length);
    let hot;
    try {
      hot = detectPatchableEntry(sym.address, obj.elf.readVirtual(sym.address - obj.bias - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE));
    } catch {
      hot = undefined;
    }
    const hotMemory = hot ? this.read(sym.address - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE) : undefined;
    const base = { function: name, object: obj.path, functionAddress: sym.address };
    const ours = this.sites.get(sym.address);
    let state: FunctionState;
    if (ours) {
      const { site, record, mapping } = ours;
      state = { ...base, state: 'patched', form: site.zeroStop ? 'padding' : 'entry', jump: { kind: site.kind, target: site.target, siteAddress: site.siteAddress }, mapping, record: { ...site, patch: record.patch, label: record.label } };
    } else {
      const original = memoryBytes.equals(fileBytes) && (!hot || hotMemory!.equals(obj.elf.readVirtual(sym.address - obj.bias - HOTPATCH_PADDING_SIZE, HOTPATCH_PROBE_SIZE)));
      state = { ...base, state: original ? 'original' : 'modified', form: hot && original ? 'padding' : 'entry' };
    }
    return { state, size: sym.size, fileBytes, memoryBytes, ...(hot ? { hot, hotMemory } : {}), ...(whole ? { body: this.read(sym.address, sym.size) } : {}) };
  }

  snapshot(change: ObjectChange, patch?: PatchFile): Snapshot {
    const restore = (change.restore ?? []).filter((n) => !change.functions.some((f) => f.name === n));
    return {
      pid: PID,
      maps: [...this.maps],
      readAt: READ_AT,
      objects: [
        {
          change,
          obj: this.obj,
          functions: change.functions.map((f) => this.entry(f.name, f.original !== undefined)),
          restore: restore.map((n) => this.entry(n)),
          ...(patch ? { patch } : {}),
          earlier: patch ? this.mappings.filter((m) => m.record.patch === patch.path) : [],
        },
      ],
    };
  }

  /** What execute would leave: the new patches mapped (with their records), every site written. */
  apply(p: Plan): void {
    for (const m of p.patches.filter((x) => !x.reused)) {
      const end = m.base + m.size;
      this.maps.push(line(m.base, end, `/memfd:${m.mapping}`, { perms: 'r-xp', write: false, exec: true, shared: true, inode: 9000 + this.mappings.length }));
      this.maps.sort((a, b) => a.start - b.start);
      const json = m.trailer.subarray(m.trailer.length - 16 - recordLength(m.trailer.subarray(m.trailer.length - 16))!, m.trailer.length - 16);
      const record = decodeRecord(json);
      this.mappings.push({ start: m.base, end, name: m.mapping, record, image: Buffer.from(m.image) });
    }
    for (const f of p.functions) {
      for (const s of f.sites) this.write(s.addr, s.write);
      const at = f.report.functionAddress;
      if (f.report.action === 'restore') {
        this.sites.delete(at);
        continue;
      }
      const m = this.mappings.find((x) => x.start <= f.report.target! && f.report.target! < x.end)!;
      this.sites.set(at, { site: m.record.sites.find((s) => s.function === f.report.function)!, record: m.record, mapping: `/memfd:${m.name}` });
    }
  }
}

const refusal = (work: () => unknown): HpError => {
  try {
    work();
  } catch (e) {
    expect(e).toBeInstanceOf(HpError);
    expect((e as HpError).unchanged).toBe(true);
    return e as HpError;
  }
  return expect.unreachable('expected a refusal');
};

const patchCompute = (replacement = 'compute_v2'): ObjectChange => ({ object: '/opt/app/x', patchPath: 'fix.so', functions: [{ name: 'compute', replacement }] });
const planOn = (sim: Simulated, change: ObjectChange, patch: PatchFile | undefined, opts: PlanOptions = {}) => plan(sim.snapshot(patch && change.patchPath ? { ...change, patchPath: patch.path } : change, patch), opts);

describe('plan: the stop mode, on an object without hot-patchable entries', () => {
  it('patches an original function with a rel32 jump into a new mapping near the object', () => {
    const sim = new Simulated(loadedObject('loop-pie'));
    const fix = patchFile('loop_fix.so');
    const p = planOn(sim, patchCompute(), fix);
    expect(p.mode).toBe('stop');
    expect(p.rounds).toEqual([]);
    expect(p.patches).toHaveLength(1);
    const [patch] = p.patches;
    expect(patch).toMatchObject({ patchPath: fix.path, name: 'loop_fix.so', mapping: 'hp-agent:loop_fix.so', size: patch.image.length + patch.trailer.length });
    expect(patch.reused).toBeUndefined();
    expect(Math.abs(patch.base - sim.obj.start)).toBeLessThan(2 ** 31);
    expect(sim.maps.some((m) => m.start < patch.base + patch.size && patch.base < m.end)).toBe(false);
    const [site] = p.functions;
    const compute = symbolAddress(sim.obj, 'compute');
    expect(site.report).toMatchObject({ action: 'patch', function: 'compute', replacement: 'compute_v2', form: 'entry', kind: 'rel32', functionAddress: compute.address });
    expect(site.needsStop).toMatch(/hot-patchable/);
    // e9 rel32 to compute_v2 in the linked image, written where the site is.
    const after = Buffer.from(site.report.after, 'hex');
    expect(after[0]).toBe(0xe9);
    expect(site.report.siteAddress + 5 + after.readInt32LE(1)).toBe(site.report.target);
    expect(site.report.before).toBe(sim.read(site.report.siteAddress, after.length).toString('hex'));
    expect(site.sites).toEqual([{ addr: site.report.siteAddress, expect: sim.read(site.report.siteAddress, after.length), write: after }]);
    // The record the mapping carries says the same, dated by the read.
    const record = decodeRecord(patch.trailer.subarray(patch.trailer.length - 16 - recordLength(patch.trailer.subarray(-16))!, patch.trailer.length - 16));
    expect(record).toMatchObject({ patch: fix.path, object: sim.obj.path, base: patch.base, appliedAt: READ_AT, sites: [{ function: 'compute', target: site.report.target, jump: site.report.after }] });
    // Every stop checks the stacks; only function consistency adds the code being replaced.
    expect(p.transaction).toEqual({ timeoutMs: undefined, realtime: true, stackAreas: [sim.maps[1].start, sim.maps[1].end, sim.maps[3].start, sim.maps[3].end] });
    const fc = planOn(sim, patchCompute(), fix, { consistency: 'function', realtime: false, timeoutMs: 50 });
    expect(fc.transaction).toMatchObject({ realtime: false, timeoutMs: 50, activeRanges: [compute.address, compute.address + compute.size] });
  });

  it('places the patch deliberately out of rel32 reach on request, with the 14-byte absolute jump', () => {
    const sim = new Simulated(loadedObject('loop-pie'));
    const p = planOn(sim, patchCompute(), patchFile('loop_fix.so'), { placement: 'far' });
    const { base, size } = p.patches[0];
    expect(Math.abs(base - sim.obj.end) >= 2 ** 31 || Math.abs(base + size - sim.obj.start) >= 2 ** 31).toBe(true);
    expect(p.functions[0].report.kind).toBe('abs64');
    expect(p.functions[0].report.after.slice(0, 12)).toBe('ff2500000000');
    const target = Buffer.from(p.functions[0].report.after, 'hex').readBigUInt64LE(6);
    expect(Number(target)).toBe(p.functions[0].report.target);
  });

  it('applies level 1, re-points to level 2, restores at level 3, and changes nothing when a level is already there', () => {
    const sim = new Simulated(loadedObject('zerostop'));
    const fix = patchFile('zerostop_fix.so');
    const label = (n: number): PatchLabel => ({ packageId: `pkg-${n}`, kb: `KB${n}`, baselineId: 'base', sequence: n });
    const one = planOn(sim, patchCompute('compute_v2'), fix, { label: label(1), mode: 'stop' });
    expect(one.mode).toBe('stop');
    sim.apply(one);
    expect(sim.entry('compute').state).toMatchObject({ state: 'patched', form: 'padding' });
    // The same level again: nothing to do, nothing planned.
    const again = planOn(sim, patchCompute('compute_v2'), fix, { label: label(1), replace: true });
    expect(again.mode).toBeUndefined();
    expect(again.functions).toEqual([]);
    expect(again.objects).toEqual([sim.obj]);
    // Level 2: a new mapping (another package's code), the entry re-pointed.
    const two = planOn(sim, patchCompute('compute_v3'), fix, { label: label(2), replace: true });
    expect(two.mode).toBe('zero-stop');
    expect(two.patches[0]).toMatchObject({ mapping: 'hp-agent:pkg-2:zerostop_fix.so' });
    expect(two.patches[0].reused).toBeUndefined();
    expect(two.patches[0].base).not.toBe(one.patches[0].base);
    expect(two.functions[0].report.action).toBe('repoint');
    const hot = sim.entry('compute').hot!;
    expect(two.rounds).toEqual(planZeroStopRepoint(hot.entryAddress, hot, one.functions[0].report.target!, two.functions[0].report.target!).map((s) => [s]));
    sim.apply(two);
    // Level 3 patches nothing in compute: its original bytes come back.
    const three = planOn(sim, { object: sim.obj.path, functions: [], restore: ['compute'] }, undefined, { label: label(3), replace: true });
    expect(three.functions[0].report).toMatchObject({ action: 'restore', form: 'padding' });
    sim.apply(three);
    expect(sim.entry('compute').state.state).toBe('original');
    expect(sim.read(hot.paddingAddress, HOTPATCH_PROBE_SIZE).equals(sim.obj.elf.readVirtual(hot.paddingAddress - BIAS, HOTPATCH_PROBE_SIZE))).toBe(true);
  });

  it('restores a function patched over its entry to the file\'s bytes exactly', () => {
    const sim = new Simulated(loadedObject('loop-pie'));
    sim.apply(planOn(sim, patchCompute(), patchFile('loop_fix.so')));
    const compute = symbolAddress(sim.obj, 'compute');
    expect(sim.read(compute.address, 5).equals(sim.obj.elf.readVirtual(compute.address - BIAS, 5))).toBe(false);
    const back = planOn(sim, { object: sim.obj.path, functions: [], restore: ['compute'] }, undefined, { requirePatched: true });
    expect(back.mode).toBe('stop');
    expect(back.patches).toEqual([]);
    expect(back.functions[0].report).toMatchObject({ action: 'restore', form: 'entry' });
    sim.apply(back);
    expect(sim.read(compute.address, compute.size).equals(sim.obj.elf.readVirtual(compute.address - BIAS, compute.size))).toBe(true);
  });

  it('points a re-applied patch at its earlier mapping when the bytes there are exactly the same, else maps a new one', () => {
    const sim = new Simulated(loadedObject('loop-pie'));
    const fix = patchFile('loop_fix.so');
    const first = planOn(sim, patchCompute(), fix);
    sim.apply(first);
    sim.apply(planOn(sim, { object: sim.obj.path, functions: [], restore: ['compute'] }, undefined));
    const again = planOn(sim, patchCompute(), fix);
    expect(again.patches[0]).toMatchObject({ reused: true, base: first.patches[0].base, mapping: first.patches[0].mapping, size: first.patches[0].size });
    expect(again.functions[0].sites).toEqual(first.functions[0].sites);
    // Far placement never takes it (it wants a mapping out of reach).
    expect(planOn(sim, patchCompute(), fix, { placement: 'far' }).patches[0].reused).toBeUndefined();
    // The patch's data changed in the process since: not the same bytes, a fresh mapping.
    sim.mappings[0].image[sim.mappings[0].image.length - 1] ^= 0xff;
    const fresh = planOn(sim, patchCompute(), fix);
    expect(fresh.patches[0].reused).toBeUndefined();
    expect(fresh.patches[0].base).not.toBe(first.patches[0].base);
  });
});

describe('plan: zero-stop rounds', () => {
  it('switches every hot-patchable function in rounds, the k-th write of each in round k', () => {
    const sim = new Simulated(loadedObject('benchd-zs'));
    const functions = functionSpecs(3);
    const p = planOn(sim, { object: sim.obj.path, patchPath: 'x', functions }, patchFile('bench_fix.so'));
    expect(p.mode).toBe('zero-stop');
    expect(p.functions.map((f) => f.report.form)).toEqual(['padding', 'padding', 'padding']);
    const steps = p.functions.map((f) => {
      const hot = sim.entry(f.report.function).hot!;
      return planZeroStop(hot.entryAddress, hot, f.report.target!);
    });
    expect(p.rounds).toHaveLength(steps[0].length);
    p.rounds.forEach((round, k) => expect(round).toEqual(steps.map((s) => s[k])));
    // The same change in a stop writes each entry's net change at once.
    const stop = planOn(sim, { object: sim.obj.path, patchPath: 'x', functions }, patchFile('bench_fix.so'), { mode: 'stop' });
    expect(stop.mode).toBe('stop');
    // One run of bytes each: the padding's jump and, right after it, the entry NOP's short jump back.
    expect(stop.functions.map((f) => f.sites.map((x) => [x.addr, x.write.length]))).toEqual(p.functions.map((f) => [[f.report.siteAddress, HOTPATCH_PADDING_SIZE + 2]]));
    expect(planOn(sim, { object: sim.obj.path, patchPath: 'x', functions }, patchFile('bench_fix.so'), { consistency: 'function' }).mode).toBe('stop');
  });
});

describe('plan: every refusal', () => {
  const loop = () => new Simulated(loadedObject('loop-pie'));

  it('a request for nothing, or for an unknown mode', () => {
    expect(refusal(() => checkRequest({ changes: [{ functions: [], restore: [] }] })).code).toBe('NO_FUNCTIONS');
    expect(refusal(() => checkRequest({ changes: [patchCompute()], mode: 'fast' as never })).code).toBe('USAGE');
    checkRequest({ changes: [patchCompute()], mode: 'zero-stop' });
  });

  it('zero-stop where a function needs a stop, or with function consistency', () => {
    const e = refusal(() => planOn(loop(), patchCompute(), patchFile('loop_fix.so'), { mode: 'zero-stop' }));
    expect(e.code).toBe('NOT_HOT_PATCHABLE');
    expect(e.details).toEqual({ functions: ['compute'] });
    expect(e.message).toMatch(/-fpatchable-function-entry=7,5/);
    const zs = new Simulated(loadedObject('zerostop'));
    expect(refusal(() => planOn(zs, patchCompute(), patchFile('zerostop_fix.so'), { mode: 'zero-stop', consistency: 'function' })).code).toBe('NOT_HOT_PATCHABLE');
  });

  it('a function patched already (without replace), by someone else, or changed under us', () => {
    const sim = loop();
    const fix = patchFile('loop_fix.so');
    sim.apply(planOn(sim, patchCompute(), fix));
    expect(refusal(() => planOn(sim, patchCompute(), fix)).code).toBe('FUNCTION_ALREADY_PATCHED');
    const other = loop();
    const compute = symbolAddress(other.obj, 'compute');
    other.write(compute.address, Buffer.from([0xcc]));
    expect(refusal(() => planOn(other, patchCompute(), fix)).code).toBe('ENTRY_MISMATCH');
    expect(refusal(() => planOn(other, { object: other.obj.path, functions: [], restore: ['compute'] }, undefined, { requirePatched: true })).code).toBe('FOREIGN_CODE');
  });

  it('a revert of a function that is not patched', () => {
    const e = refusal(() => planOn(loop(), { object: '/opt/app/loop-pie', functions: [], restore: ['compute'] }, undefined, { requirePatched: true }));
    expect(e.code).toBe('NOT_PATCHED');
    // Without requirePatched there is simply nothing to do.
    expect(planOn(loop(), { object: '/opt/app/loop-pie', functions: [], restore: ['compute'] }, undefined).mode).toBeUndefined();
  });

  it('original bytes that are not the ones the patch was built for', () => {
    const sim = loop();
    const compute = symbolAddress(sim.obj, 'compute');
    const sha256 = createHash('sha256').update(sim.obj.elf.readVirtual(compute.address - BIAS, compute.size)).digest('hex');
    const change = (hash: string): ObjectChange => ({ object: sim.obj.path, patchPath: 'x', functions: [{ name: 'compute', replacement: 'compute_v2', original: { size: compute.size, sha256: hash } }] });
    expect(planOn(sim, change(sha256), patchFile('loop_fix.so')).mode).toBe('stop');
    expect(refusal(() => planOn(sim, change('0'.repeat(64)), patchFile('loop_fix.so'))).code).toBe('ORIGINAL_BYTES_MISMATCH');
  });

  it('functions to patch without a patch, a replacement the patch lacks or that is not a function', () => {
    expect(refusal(() => planOn(loop(), { object: '/opt/app/loop-pie', functions: [{ name: 'compute' }] }, undefined)).code).toBe('USAGE');
    const missing = refusal(() => planOn(loop(), patchCompute('compute_v9'), patchFile('loop_fix.so')));
    expect(missing.code).toBe('SYMBOL_NOT_FOUND');
    expect(missing.message).toMatch(/compute_v9/);
    const variable = refusal(() => planOn(new Simulated(loadedObject('spinentry')), patchCompute('stuck_v2_calls'), patchFile('spinentry_fix.so')));
    expect(variable.message).toMatch(/stuck_v2_calls in spinentry_fix\.so is an OBJECT symbol/);
  });

  it('a patch the engine cannot load (TLS, constructors)', () => {
    expect(refusal(() => planOn(loop(), patchCompute(), patchFile('patch_tls.so'))).message).toMatch(/TLS/i);
    expect(refusal(() => planOn(loop(), patchCompute(), patchFile('patch_ctor.so'))).message).toMatch(/constructor|init/i);
  });

  it('a function too short for the jump, and code that lands inside the bytes the jump overwrites', () => {
    const short = new Simulated(loadedObject('short'));
    const tiny = refusal(() => planOn(short, { object: short.obj.path, patchPath: 'x', functions: [{ name: 'tiny', replacement: 'tiny_v2' }] }, patchFile('short_fix.so')));
    expect(tiny.code).toBe('FUNCTION_TOO_SHORT');
    expect(tiny.message).toMatch(/tiny/);
    const back = new Simulated(loadedObject('backbranch'));
    expect(refusal(() => planOn(back, { object: back.obj.path, patchPath: 'x', functions: [{ name: 'count_up', replacement: 'count_up_v2' }] }, patchFile('backbranch_fix.so'))).code).toBe('BRANCH_INTO_JUMP');
  });

  it('an import nothing defines, or one only an IFUNC of another object provides', () => {
    const sim = loop();
    // helper_global_fix.so imports `helper` and `counter`, which loop-pie does not define.
    const fix = patchFile('helper_global_fix.so');
    expect(fix.imports.sort()).toEqual(['counter', 'helper']);
    const unbound = refusal(() => planOn(sim, patchCompute(), fix));
    expect(unbound.code).toBe('PATCH_UNRESOLVED_SYMBOL');
    expect(unbound.message).toMatch(/counter, helper/);
    const lib = { ...loadedObject('libgreet.so'), path: '/usr/lib/libpicky.so' };
    const ifunc = { ...lib.elf.dynamicSymbols.find((x) => x.defined)!, name: 'helper', type: 'GNU_IFUNC' as const };
    const picky = { ...lib, elf: { dynamicSymbols: [ifunc] } } as unknown as LoadedObject;
    expect(refusal(() => planOn(sim, patchCompute(), { ...fix, loaded: [sim.obj, picky] })).code).toBe('PATCH_IFUNC_SYMBOL');
  });

  it('a record too large for a mapping', () => {
    const e = refusal(() => planOn(loop(), patchCompute(), patchFile('loop_fix.so'), { label: { packageId: 'x'.repeat(17 << 20) } }));
    expect(e.code).toBe('TOO_MANY_SITES');
  });

  it('no room near the object, or none out of reach', () => {
    const sim = loop();
    // Everything from the bottom of user space to its top is taken, but for the object itself.
    sim.maps.splice(0, sim.maps.length, line(0x10000, sim.obj.start), ...sim.obj.mappings, line(sim.obj.end, USER_SPACE_END));
    expect(refusal(() => planOn(sim, patchCompute(), patchFile('loop_fix.so'))).code).toBe('NO_ROOM_NEAR_OBJECT');
    expect(refusal(() => planOn(sim, patchCompute(), patchFile('loop_fix.so'), { placement: 'far' })).code).toBe('NO_FAR_ROOM');
  });

  it('is not fooled by a mapping of another package at the same place', () => {
    // (A mapping is only re-used for the same package: the record's label is part of its content.)
    const sim = loop();
    const fix = patchFile('loop_fix.so');
    sim.apply(planOn(sim, patchCompute(), fix, { label: { packageId: 'a' } }));
    sim.apply(planOn(sim, { object: sim.obj.path, functions: [], restore: ['compute'] }, undefined));
    expect(planOn(sim, patchCompute(), fix, { label: { packageId: 'b' } }).patches[0].reused).toBeUndefined();
    expect(planOn(sim, patchCompute(), fix, { label: { packageId: 'a' } }).patches[0].reused).toBe(true);
    expect(sim.maps.filter((m) => isPatchMapping(m.path))).toHaveLength(1);
  });
});
