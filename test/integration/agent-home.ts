// Shared by the agent tests: run the CLI against one temporary HP_AGENT_HOME, and stop every
// daemon that home started (services are not our children, so nothing else would).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath, type CliResult } from './helpers.js';

export function hpAgentIn(home: string) {
  return (args: string[], opts: { json?: boolean } = {}): Promise<CliResult> => {
    const full = opts.json === false ? args : [...args, '--json'];
    return new Promise((resolve) => {
      execFile(process.execPath, [cliPath, ...full], { timeout: 60_000, env: { ...process.env, HP_AGENT_HOME: home } }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        let json: any;
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
        resolve({ code, stdout, stderr, json });
      });
    });
  };
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
