/**
 * The fence's journal (native/fence_journal.cc): a thread held asleep in epoll_wait & co. during
 * a stop is pinned to one CPU for that stop, and a killed agent would leave it so. Whoever takes
 * the agent lock first gives back what an earlier agent left written down, then writes its own
 * there.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';

/** `lockDir`: the folder of the lock just taken. Returns how many threads got their mask back. */
export function adoptFenceJournal(lockDir: string): number {
  const dir = path.join(lockDir, 'fences');
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
