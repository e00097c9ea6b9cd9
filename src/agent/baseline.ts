/**
 * Baselines: installing one stages its files in a new system folder and makes a reboot
 * required — nothing running changes. The (simulated) reboot (reboot.ts) stops the services of
 * the running baseline, switches to the installed one, starts its services, and re-applies the
 * hotpatch level of the baseline it boots (as a real machine loads its installed hotpatches).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { HpError } from '../errors.js';
import type { BaselineManifest } from '../package/index.js';
import { writeFileAtomic } from './atomic.js';
import { baselineDir, writeBaselinePointer } from './home.js';
import type { ServiceSpec } from './services.js';

const BASELINE_MANIFEST = '.baseline.json';

export interface OpenedBaseline {
  manifest: BaselineManifest;
  payload: Map<string, Buffer>;
}

/** Writes the baseline's files into system/<id>/ (via a staging folder renamed into place). */
export async function stageBaseline(home: string, pkg: OpenedBaseline): Promise<{ dir: string; alreadyThere: boolean }> {
  const m = pkg.manifest;
  const dir = baselineDir(home, m.baselineId);
  const marker = path.join(dir, BASELINE_MANIFEST);
  if (fs.existsSync(marker)) {
    const existing = JSON.parse(fs.readFileSync(marker, 'utf8')) as BaselineManifest;
    if (existing.id === m.id) return { dir, alreadyThere: true };
    throw new HpError('BASELINE_CONFLICT', `baseline ${m.baselineId} is already installed from package ${existing.id}; refusing to overwrite it with ${m.id}. Nothing was changed`);
  }
  const staging = `${dir}.staging-${process.pid}`;
  await fs.promises.rm(staging, { recursive: true, force: true });
  try {
    for (const f of m.files) {
      const data = pkg.payload.get(f.payload);
      if (!data) throw new HpError('PACKAGE_TAMPERED', `payload ${f.payload} for ${f.path} is missing`);
      if (createHash('sha256').update(data).digest('hex') !== f.sha256) {
        throw new HpError('PACKAGE_TAMPERED', `payload ${f.payload} does not match the sha256 the manifest gives for ${f.path}`);
      }
      const target = path.join(staging, f.path);
      await fs.promises.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
      await writeFileAtomic(target, data, f.mode);
      await fs.promises.chmod(target, f.mode);
    }
    await writeFileAtomic(path.join(staging, BASELINE_MANIFEST), JSON.stringify(m, null, 2));
    await fs.promises.rename(staging, dir);
  } catch (e) {
    await fs.promises.rm(staging, { recursive: true, force: true });
    throw e;
  }
  return { dir, alreadyThere: false };
}

export function installedBaselineManifest(home: string, baselineId: string): BaselineManifest | undefined {
  const marker = path.join(baselineDir(home, baselineId), BASELINE_MANIFEST);
  return fs.existsSync(marker) ? (JSON.parse(fs.readFileSync(marker, 'utf8')) as BaselineManifest) : undefined;
}

/** The services of an installed baseline, as they are started (absolute file, arguments). */
export function serviceSpecs(home: string, baselineId: string): ServiceSpec[] {
  const m = installedBaselineManifest(home, baselineId);
  if (!m) throw new HpError('BASELINE_NOT_INSTALLED', `baseline ${baselineId} is not installed`);
  return m.services.map((svc) => ({ name: svc.name, file: path.join(baselineDir(home, baselineId), svc.file), args: svc.args, baselineId, readiness: svc.readiness }));
}

export { writeBaselinePointer };
