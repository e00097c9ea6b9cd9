/** What the benchmark ran on: printed at the top of the report, so figures can be compared. */
import fs from 'node:fs';
import os from 'node:os';

export interface MachineInfo {
  /** Logical CPUs this process may use. */
  nproc: number;
  cpu: string;
  /** Kernel release (uname -r). */
  kernel: string;
  node: string;
  memoryGiB: number;
  /** The kernel's clock source (tsc and kvm-clock are read through the vDSO: no system call). */
  clocksource?: string;
  /** Load average (1, 5, 15 min) when the benchmark started: other work on the machine skews every figure. */
  loadAverage: number[];
  /** Load average when it ended (filled in at the end). */
  loadAverageEnd?: number[];
  /** libuv's thread pool size: the core's calls run there, so it caps in-process parallelism. */
  uvThreadpoolSize: number;
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    nproc: os.availableParallelism(),
    cpu: cpus[0]?.model.trim() || 'unknown',
    kernel: os.release(),
    node: process.version,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    clocksource: readText('/sys/devices/system/clocksource/clocksource0/current_clocksource'),
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
    uvThreadpoolSize: Number(process.env.UV_THREADPOOL_SIZE) || 4,
  };
}
