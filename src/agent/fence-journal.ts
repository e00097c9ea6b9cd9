/**
 * The fence's journal (native/fence_journal.cc): a thread held asleep in epoll_wait & co. during
 * a stop is pinned to one CPU for that stop, and a killed agent would leave it so. Whoever takes
 * the agent lock first gives back what an earlier agent left written down, then writes its own
 * there.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';

const journalDir = (lockDir: string): string => path.join(lockDir, 'fences');

/** `lockDir`: the folder of the lock just taken. Returns how many threads got their mask back. */
export function adoptFenceJournal(lockDir: string): number {
  const dir = journalDir(lockDir);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch {
    native.setFenceJournal('');
    return 0; // no journal: the fence still holds, only a dead agent's masks would go unrepaired
  }
  const healed = native.healFences(dir);
  native.setFenceJournal(dir);
  return healed;
}

/** As the lock is released: nothing more is written, and an empty journal folder goes. */
export function leaveFenceJournal(lockDir: string): void {
  native.setFenceJournal('');
  try {
    fs.rmdirSync(journalDir(lockDir));
  } catch {
    // not empty (a file of a fence still held by a worker of ours: the next agent heals it), or gone
  }
}
