import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HpError } from '../../src/errors.js';
import { appendHistory, readHistory } from '../../src/agent/history.js';
import { homeLayout } from '../../src/agent/home.js';

let home: string;

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-agent-history-'));
});

afterEach(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

const day = 86_400_000;
const now = new Date('2025-06-30T12:00:00.000Z');
const ago = (days: number) => new Date(now.getTime() - days * day).toISOString();

describe('update history', () => {
  it('appends one JSON line per entry, filling time and activityId', async () => {
    const entry = await appendHistory(home, { action: 'apply', packageId: 'hp-1', kb: 'KB5000001', result: 'Succeeded', detail: { pids: [1, 2] } });
    expect(entry.activityId).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(entry.time)).not.toBeNaN();
    const lines = fs.readFileSync(homeLayout(home).history, 'utf8').split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('');
    expect(JSON.parse(lines[0])).toEqual(entry);
    expect(fs.statSync(homeLayout(home).history).mode & 0o777).toBe(0o600);
  });

  it('reads newest first, within the last 30 days by default', async () => {
    await appendHistory(home, { time: ago(40), action: 'install', kb: 'KB1', result: 'Succeeded' });
    await appendHistory(home, { time: ago(2), action: 'apply', kb: 'KB3', result: 'Succeeded' });
    await appendHistory(home, { time: ago(10), action: 'reboot', result: 'Failed' });
    await appendHistory(home, { time: ago(2), action: 'revert', kb: 'KB3', result: 'Succeeded' });
    await appendHistory(home, { time: ago(29.9), action: 'refuse', kb: 'KB9', result: 'Refused', detail: { code: 'AGENT_BUSY' } });

    const recent = await readHistory(home, { now });
    expect(recent.corruptLines).toBe(0);
    // same time: the later-written first
    expect(recent.entries.map((e) => e.action)).toEqual(['revert', 'apply', 'reboot', 'refuse']);
    const all = await readHistory(home, { now, sinceDays: Infinity });
    expect(all.entries.map((e) => e.action)).toEqual(['revert', 'apply', 'reboot', 'refuse', 'install']);
    expect((await readHistory(home, { now, sinceDays: 5 })).entries).toHaveLength(2);
  });

  it('is empty when there is no history yet', async () => {
    expect(await readHistory(home)).toEqual({ entries: [], corruptLines: 0 });
  });

  it('skips and counts corrupt lines, and a torn last line does not swallow the next entry', async () => {
    await appendHistory(home, { time: ago(1), action: 'apply', result: 'Succeeded' });
    const file = homeLayout(home).history;
    fs.appendFileSync(file, 'not json\n{"time":"x","action":"apply","result":"Succeeded","activityId":"nope"}\n');
    // a writer killed mid-line: no trailing newline
    fs.appendFileSync(file, '{"time":"2025-06-29T00:00:00.000Z","act');
    await appendHistory(home, { time: ago(0.5), action: 'revert', result: 'Succeeded' });
    const read = await readHistory(home, { now });
    expect(read.corruptLines).toBe(3);
    expect(read.entries.map((e) => e.action)).toEqual(['revert', 'apply']);
  });

  it('refuses a malformed entry and writes nothing', async () => {
    const bad = appendHistory(home, { action: 'Apply Now', result: 'Succeeded' });
    await expect(bad).rejects.toBeInstanceOf(HpError);
    await expect(appendHistory(home, { action: 'apply', result: 'Maybe' as 'Failed' })).rejects.toThrow(/malformed history entry/);
    expect(fs.existsSync(homeLayout(home).history)).toBe(false);
  });

  it('concurrent appends never interleave inside a line', async () => {
    const detail = { blob: 'x'.repeat(3000) };
    await Promise.all(Array.from({ length: 40 }, (_, i) => appendHistory(home, { action: 'assess', result: 'Succeeded', detail: { ...detail, i } })));
    const read = await readHistory(home);
    expect(read.corruptLines).toBe(0);
    expect(new Set(read.entries.map((e) => (e.detail as { i: number }).i)).size).toBe(40);
  });
});
