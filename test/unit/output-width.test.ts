// Tables and the progress bar fit the terminal: headers are never cut or wrapped, the widest
// columns give way first, long tables end with their row count, the count of a progress bar
// always shows.
import { describe, expect, it } from 'vitest';
import { progressBarSize } from '../../src/cli/agent.js';
import { SUMMARY_AFTER_ROWS, table } from '../../src/cli/output.js';

const header = ['PID', 'PROCESS', 'BASELINE', 'LEVEL', 'COMPLIANT', 'FUNCTIONS (from memory)'];
const row = ['12756', 'greetd', '2026.10', '1', 'yes', 'format_greeting=2026.10-hp1 add_numbers=original banner=2026.10-hp1'];

describe('tables that fit the terminal', () => {
  it('keep every line within 60 columns, the header whole, and cut the widest cell with an ellipsis', () => {
    const lines = table(header, [row, row], 60).split('\n');
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(60);
    expect(lines[0]).toContain('PID    PROCESS  BASELINE  LEVEL  COMPLIANT  FUNCTIONS');
    expect(lines[1]).toMatch(/…$/);
    expect(lines[1].startsWith('12756  greetd')).toBe(true);
  });

  it('print every cell whole when the terminal is wide enough (200 columns), and when writing to a pipe', () => {
    for (const width of [200, undefined]) {
      const lines = table(header, [row], width).split('\n');
      expect(lines[1]).toContain(row[5]);
      expect(lines[1]).not.toContain('…');
    }
  });

  it('cut cells before headers: a header is cut only when the headers alone are wider than the terminal', () => {
    const first = table(header.slice(0, 5), [row.slice(0, 5)], 45).split('\n')[0];
    for (const h of header.slice(0, 5)) expect(first).toContain(h);
    expect(table(header, [row], 40).split('\n').every((l) => l.length <= 40)).toBe(true);
  });

  it('end a long table with its row count', () => {
    const many = Array.from({ length: SUMMARY_AFTER_ROWS + 1 }, (_, i) => [String(i), 'x']);
    expect(table(['N', 'X'], many, 80).split('\n').at(-1)).toBe(`(${SUMMARY_AFTER_ROWS + 1} rows)`);
    expect(table(['N', 'X'], many.slice(1), 80)).not.toMatch(/rows\)$/);
  });

  it('leave the whole count of a progress bar on the line at any width', () => {
    for (const columns of [30, 40, 60, 80, 200]) {
      const size = progressBarSize(1000, columns);
      expect(size + 'patching  1000/1000 processes'.length).toBeLessThanOrEqual(Math.max(columns, 'patching  1000/1000 processes'.length + 1));
    }
    expect(progressBarSize(1000, undefined)).toBe(40);
  });
});
