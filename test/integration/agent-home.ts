// Shared by the agent tests: run the CLI against one temporary HP_AGENT_HOME, and stop every
// daemon that home started (services are not our children, so nothing else would).
import fs from 'node:fs';
import path from 'node:path';
import { hpAgent, type CliResult } from './helpers.js';

export function hpAgentIn(home: string) {
  return (args: string[], opts: { json?: boolean } = {}): Promise<CliResult> => hpAgent(args, { ...opts, env: { ...process.env, HP_AGENT_HOME: home } });
}

/** SIGKILL every service recorded in the home's state and every process running its files. */
export async function stopHomeServices(home: string): Promise<void> {
  const pids = new Set<number>();
  try {
    const state = JSON.parse(fs.readFileSync(path.join(home, 'state.json'), 'utf8')) as { services?: { pid: number }[] };
    for (const s of state.services ?? []) pids.add(s.pid);
  } catch {
    // no state
  }
  const system = path.join(home, 'system') + path.sep;
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readlinkSync(`/proc/${name}/exe`).startsWith(system)) pids.add(Number(name));
    } catch {
      // gone or not ours to read
    }
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
