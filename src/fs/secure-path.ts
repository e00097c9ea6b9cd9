/**
 * Whether a file the agent trusts could have been put there by someone else — the check ssh makes
 * of ~/.ssh and authorized_keys (StrictModes). The agent home holds the keys it trusts, its state
 * and its package store: if another user owns it, or anyone but its owner may write to it, any
 * user of the machine could plant a signing key and have root install their "hotpatch". So the
 * home, the trust store and each key file must belong to the agent's user (or root) and must not
 * be writable by group or others; otherwise the agent refuses them, naming the path and the fix.
 */
import { statSync, type Stats } from 'node:fs';
import { HpError, type ErrorCode } from '../errors.js';

const GROUP_OR_OTHER_WRITE = 0o022;

const octal = (mode: number) => '0' + (mode & 0o7777).toString(8).padStart(3, '0');

/** The agent's own user id (its effective one: whose rights it uses). */
export const agentUid = (): number => process.geteuid?.() ?? 0;

/**
 * Throws `code` unless `path` (stat'ed as `st`, or here: a symbolic link is judged by what it
 * points to) belongs to the agent's user or root and is not writable by group or others. `what`
 * names it in the message. A missing path passes (its creator will be the agent).
 */
export function checkNotTampered(path: string, what: string, code: ErrorCode, st?: Stats): void {
  if (!st) {
    try {
      st = statSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new HpError(code, `cannot check ${what} ${path}: ${(e as Error).message}`, { path });
    }
  }
  const me = agentUid();
  if (st.uid !== me && st.uid !== 0) {
    throw new HpError(
      code,
      `${what} ${path} belongs to user ${st.uid}, not to the agent's user (${me}) or root: that user could plant keys or change what the agent installs. Refused; if it is yours, fix it with: chown ${me} ${path}`,
      { path, uid: st.uid, expectedUid: me },
    );
  }
  if (st.mode & GROUP_OR_OTHER_WRITE) {
    throw new HpError(
      code,
      `${what} ${path} is writable by ${st.mode & 0o002 ? 'every user' : 'its group'} (mode ${octal(st.mode)}): anyone who can write there could plant keys or change what the agent installs. Refused; check what it holds, then fix it with: chmod go-w ${path}`,
      { path, mode: octal(st.mode) },
    );
  }
}
