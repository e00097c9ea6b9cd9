// What a killed agent's fence leaves behind — threads pinned to one CPU — is written down before
// each stop and given back by the next agent (native/fence_journal.cc). Given back only to the
// process written down (PID and start time), and only to a thread still on one CPU: a mask the
// program set since is its own. (kill-points.test.ts kills a real agent while it holds threads.)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killTargetsAfterEach } from '../../src/harness/index.js';
import { native } from '../../src/native.js';
import { processStartTime } from '../../src/proc/stat.js';
import { allowedCpus, spawnWaiters } from './helpers.js';

killTargetsAfterEach(afterEach);

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function journalDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-fences-'));
  dirs.push(d);
  return d;
}

/** "0-2,5" → "0,1,2,5": the journal lists CPUs one by one. */
function expand(list: string): string {
  return list
    .split(',')
    .flatMap((part) => {
      const [a, b = a] = part.split('-').map(Number);
      return Array.from({ length: b - a + 1 }, (_, i) => String(a + i));
    })
    .join(',');
}

const ours = allowedCpus(process.pid).get(process.pid)!;
const pin = (tid: number, cpus: string) => execFileSync('taskset', ['-p', '-c', cpus, String(tid)], { stdio: 'ignore' });

describe.runIf(os.availableParallelism() >= 2)('the fence journal', () => {
  it('gives a thread left on one CPU its mask back, and removes the file', async () => {
    const t = await spawnWaiters();
    const [tid] = [...allowedCpus(t.pid).keys()].filter((x) => x !== t.pid);
    pin(tid, '0');
    const dir = journalDir();
    fs.writeFileSync(path.join(dir, `${t.pid}-1`), `start ${processStartTime(t.pid)}\n${tid} ${expand(ours)}\n`);
    expect(native.healFences(dir)).toBe(1);
    expect(allowedCpus(t.pid).get(tid)).toBe(ours);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(native.healFences(dir)).toBe(0);
  });

  it('leaves alone another process of the same PID, and a thread the program has moved since', async () => {
    const t = await spawnWaiters();
    const [a, b] = [...allowedCpus(t.pid).keys()].filter((x) => x !== t.pid);
    pin(a, '0');
    pin(b, '0,1');
    const dir = journalDir();
    const start = processStartTime(t.pid)!;
    fs.writeFileSync(path.join(dir, `${t.pid}-1`), `start ${start + 1}\n${a} ${expand(ours)}\n`);
    expect(native.healFences(dir)).toBe(0);
    expect(allowedCpus(t.pid).get(a)).toBe('0');
    fs.writeFileSync(path.join(dir, `${t.pid}-2`), `start ${start}\n${b} 1\n`);
    expect(native.healFences(dir)).toBe(0);
    expect(allowedCpus(t.pid).get(b)).toBe('0-1');
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
