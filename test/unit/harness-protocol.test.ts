// The harness's line protocol on its own (src/harness/protocol.ts): the splitting and the matching
// of answers to requests that targets and socket clients share, checked without any process.
import { describe, expect, it } from 'vitest';
import { LineSplitter, RequestQueue } from '../../src/harness/protocol.js';

describe('the line protocol, without a process (protocol.ts)', () => {
  it('cuts a stream into lines whatever the chunks, dropping a "\\r" before "\\n" and keeping the rest', () => {
    const lines: string[] = [];
    const splitter = new LineSplitter((line) => lines.push(line));
    for (const chunk of ['RE', 'ADY\r\nok 1\n\nok', ' 2\r', '\n', 'half']) splitter.push(chunk);
    expect(lines).toEqual(['READY', 'ok 1', '', 'ok 2']);
    expect(splitter.rest()).toBe('half');
  });

  it('matches answers to requests in order; a late answer is dropped, not given to the next request; closing fails the rest', async () => {
    const written: string[] = [];
    const queue = new RequestQueue(
      (text) => written.push(text),
      () => 'test channel',
      () => '; context',
    );
    queue.deliver('nobody asked');
    const first = queue.request('a', 5_000);
    const second = queue.request('b', 5_000);
    await new Promise((r) => setTimeout(r, 0));
    expect(written).toEqual(['a\n']); // one at a time: b waits for a's answer
    queue.deliver('answer a');
    expect(await first).toBe('answer a');
    await new Promise((r) => setTimeout(r, 0));
    expect(written).toEqual(['a\n', 'b\n']);
    queue.deliver('answer b');
    expect(await second).toBe('answer b');

    const late = queue.request('slow', 20);
    await expect(late).rejects.toThrow(/test channel: no answer to "slow" within 20 ms; lines nobody asked for: \["nobody asked"\]; context/);
    const next = queue.request('next', 5_000);
    await new Promise((r) => setTimeout(r, 0));
    queue.deliver('answer slow'); // late: consumed by the abandoned request
    queue.deliver('answer next');
    expect(await next).toBe('answer next');

    await expect(queue.request('two\nlines', 100)).rejects.toThrow(/a request must be a single line/);
    const pending = queue.request('never', 5_000);
    await new Promise((r) => setTimeout(r, 0));
    queue.close((line) => new Error(`closed before ${line}`));
    await expect(pending).rejects.toThrow('closed before never');
    await expect(queue.request('after', 100)).rejects.toThrow('closed before after');
  });
});
